"""Merges (Panoptic FCN's paste-by-score, Mask2Former's argmax), upsampling and the prediction writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import (
    CategoryInfo,
    PanopticFormatError,
    check_segments_match_png,
    load_panoptic_json,
    read_id_png,
)
from ibs_study.models.postprocess import (
    InstancePrediction,
    MaskLogits,
    PanopticPrediction,
    PanopticPredictionWriter,
    argmax_merge,
    paste_by_score,
    upsample_logits,
    write_instance_predictions,
    write_panoptic_predictions,
)

# contiguous labels: road 0, sky 1 (stuff); person 2, car 3 (things)
META = DatasetMeta.from_categories(
    "toy",
    [
        CategoryInfo(7, "road", False),
        CategoryInfo(23, "sky", False),
        CategoryInfo(24, "person", True),
        CategoryInfo(26, "car", True),
    ],
)
ROAD, SKY, PERSON, CAR = 0, 1, 2, 3


def _box(h: int, w: int, rows: slice, cols: slice, value: float = 0.9) -> torch.Tensor:
    mask = torch.full((h, w), 0.1)
    mask[rows, cols] = value
    return mask


def _segments(prediction: PanopticPrediction) -> dict[int, tuple[int, float]]:
    return {s.id: (s.category_id, s.score) for s in prediction.segments}


# ------------------------------------------------------------------------ paste_by_score


def test_paste_by_score_hand_case():
    h, w = 8, 8
    things = torch.stack(
        [
            _box(h, w, slice(0, 4), slice(0, 4)),  # A: score 0.9, pasted first
            _box(h, w, slice(1, 4), slice(0, 4)),  # B: 12 px, all covered by A -> dropped
            _box(h, w, slice(3, 7), slice(0, 4)),  # C: 16 px, 4 covered (25% <= 50%) -> free part
            _box(h, w, slice(6, 8), slice(6, 8)),  # D: score below the threshold
            torch.full((h, w), 0.4),  # E: empty after thresholding
        ]
    )
    thing_scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.95])
    thing_labels = torch.tensor([CAR, CAR, PERSON, CAR, PERSON])
    stuff = torch.stack(
        [
            _box(h, w, slice(0, 8), slice(4, 8), 0.8),  # sky wins the right half
            _box(h, w, slice(0, 8), slice(0, 8), 0.5),  # road elsewhere
            _box(h, w, slice(7, 8), slice(0, 8), 0.9),  # car semantic: wins row 7, skipped
        ]
    )
    stuff_labels = torch.tensor([SKY, ROAD, CAR])
    stuff_scores = torch.tensor([0.6, 0.7, 0.3])
    prediction = paste_by_score(
        things,
        thing_scores,
        thing_labels,
        stuff,
        stuff_scores,
        stuff_labels,
        META,
        stuff_area_limit=3,
        image_id="img",
    )
    expected = np.zeros((h, w), np.int32)
    expected[0:4, 0:4] = 1  # A
    expected[4:7, 0:4] = 2  # C's free part
    # road wins the left half but finds it taken by things (no segment); sky gets the right
    # half except row 7, where the car semantic wins and is skipped (void)
    expected[0:7, 4:8] = 3
    np.testing.assert_array_equal(prediction.id_map, expected)
    assert _segments(prediction) == {
        1: (26, pytest.approx(0.9)),
        2: (24, pytest.approx(0.7)),
        3: (23, pytest.approx(0.6)),
    }
    assert prediction.image_id == "img"
    seg = {s.id: s for s in prediction.segments}
    assert seg[2].area == 12 and seg[2].bbox == (0, 4, 4, 3)


def test_paste_by_score_stuff_area_limit_and_road():
    h, w = 6, 10
    stuff = torch.stack(
        [_box(h, w, slice(0, 6), slice(0, 9), 0.8), _box(h, w, slice(0, 6), slice(9, 10), 0.8)]
    )
    empty = torch.zeros((0, h, w))
    none = torch.zeros(0)
    kwargs = dict(stuff_scores=torch.tensor([0.5, 0.4]), stuff_labels=torch.tensor([ROAD, SKY]), meta=META)
    wide = paste_by_score(empty, none, none.long(), stuff, stuff_area_limit=7, **kwargs)
    # sky covers 6 pixels < 7: dropped and left void; road 54 pixels
    assert _segments(wide) == {1: (7, pytest.approx(0.5))}
    assert (wide.id_map[:, 9] == 0).all() and (wide.id_map[:, :9] == 1).all()
    small = paste_by_score(empty, none, none.long(), stuff, stuff_area_limit=6, **kwargs)
    assert _segments(small) == {1: (7, pytest.approx(0.5)), 2: (23, pytest.approx(0.4))}


def test_paste_by_score_repeated_stuff_labels_merge():
    h, w = 4, 4
    stuff = torch.stack([_box(h, w, slice(0, 2), slice(0, 4)), _box(h, w, slice(2, 4), slice(0, 4))])
    prediction = paste_by_score(
        torch.zeros((0, h, w)),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.long),
        stuff,
        torch.tensor([0.3, 0.6]),
        torch.tensor([ROAD, ROAD]),
        META,
        stuff_area_limit=1,
    )
    assert (prediction.id_map == 1).all() and _segments(prediction) == {1: (7, pytest.approx(0.6))}


def test_paste_by_score_without_any_mask_is_void():
    empty = torch.zeros((0, 5, 7))
    none = torch.zeros(0)
    prediction = paste_by_score(empty, none, none.long(), empty, none, none.long(), META)
    assert prediction.id_map.shape == (5, 7) and prediction.id_map.dtype == np.int32
    assert not prediction.id_map.any() and prediction.segments == []


def _random_low_res(seed: int, n: int, h: int = 6, w: int = 10) -> torch.Tensor:
    """(n, h, w) logits: a random box of positive logits per mask, over noise."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, h, w, generator=generator) - 3.0
    for k in range(n):
        top = int(torch.randint(0, h - 1, (1,), generator=generator))
        left = int(torch.randint(0, w - 1, (1,), generator=generator))
        height = int(torch.randint(1, h - top + 1, (1,), generator=generator))
        width = int(torch.randint(1, w - left + 1, (1,), generator=generator))
        logits[k, top : top + height, left : left + width] += 6.0
    return logits


@pytest.mark.parametrize("seed", range(4))
def test_paste_by_score_chunked_equals_unchunked_and_logits_equal_probs(seed):
    thing_logits, stuff_logits = _random_low_res(seed, 9), _random_low_res(100 + seed, 5)
    generator = torch.Generator().manual_seed(seed)
    thing_scores = torch.rand(9, generator=generator)
    thing_labels = torch.randint(PERSON, CAR + 1, (9,), generator=generator)
    stuff_labels = torch.tensor([ROAD, SKY, CAR, ROAD, SKY])
    stuff_scores = torch.rand(5, generator=generator)
    geometry = dict(padded_size=(24, 40), image_size=(22, 37), output_size=(30, 50))
    results = []
    for chunk_size in (1, 4, 64):
        results.append(
            paste_by_score(
                MaskLogits(thing_logits, **geometry),
                thing_scores,
                thing_labels,
                MaskLogits(stuff_logits, **geometry),
                stuff_scores,
                stuff_labels,
                META,
                stuff_area_limit=20,
                chunk_size=chunk_size,
            )
        )
    full = dict(chunk_size=3, stuff_area_limit=20)
    thing_probs = upsample_logits(thing_logits, **geometry).sigmoid()
    stuff_probs = upsample_logits(stuff_logits, **geometry).sigmoid()
    results.append(
        paste_by_score(
            thing_probs, thing_scores, thing_labels, stuff_probs, stuff_scores, stuff_labels, META, **full
        )
    )
    for other in results[1:]:
        np.testing.assert_array_equal(other.id_map, results[0].id_map)
        assert other.segments == results[0].segments
    assert len(results[0].segments) >= 2


def test_paste_by_score_checks_lengths():
    with pytest.raises(ValueError, match="thing_scores must have shape"):
        paste_by_score(
            torch.zeros(2, 3, 3),
            torch.zeros(3),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(0, 3, 3),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            META,
        )


# -------------------------------------------------------------------------- argmax_merge


def test_argmax_merge_hand_case():
    h, w = 6, 6
    probs = torch.stack(
        [
            _box(h, w, slice(0, 3), slice(0, 3), 0.9),  # q0 car, score 0.9 -> wins its box
            _box(h, w, slice(0, 3), slice(1, 4), 0.9),  # q1 car 0.8: wins only column 3 (3 of 9) -> dropped
            _box(h, w, slice(3, 6), slice(0, 3), 0.9),  # q2 road 0.7
            _box(h, w, slice(3, 6), slice(3, 6), 0.9),  # q3 road 0.6 -> merges with q2
            _box(h, w, slice(0, 3), slice(4, 6), 0.6),  # q4 sky 0.5
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([CAR, CAR, ROAD, ROAD, SKY])
    prediction = argmax_merge(probs, scores, labels, META, image_id=3)
    expected = np.zeros((h, w), np.int32)
    expected[0:3, 0:3] = 1
    # column 3 of rows 0..2 is won by q1, which is dropped -> void
    expected[3:6, :] = 2
    expected[0:3, 4:6] = 3
    np.testing.assert_array_equal(prediction.id_map, expected)
    assert _segments(prediction) == {
        1: (26, pytest.approx(0.9)),
        2: (7, pytest.approx(0.7)),
        3: (23, pytest.approx(0.5)),
    }
    assert prediction.image_id == 3


def test_argmax_merge_low_confidence_winner_leaves_void():
    probs = torch.stack([torch.full((2, 2), 0.45), torch.full((2, 2), 0.3)])
    probs[0, 0, 0] = 0.9
    prediction = argmax_merge(
        probs, torch.tensor([0.9, 0.9]), torch.tensor([CAR, PERSON]), META, overlap_threshold=0.0
    )
    np.testing.assert_array_equal(prediction.id_map, [[1, 0], [0, 0]])


def _reference_argmax_merge(probs, scores, labels, overlap_threshold, mask_threshold=0.5):
    """Mask2Former's panoptic_inference loop, written directly on full tensors."""
    weighted = scores.view(-1, 1, 1) * probs
    ids = weighted.argmax(0)
    panoptic = torch.zeros(probs.shape[1:], dtype=torch.int32)
    current, stuff_memory, category = 0, {}, {}
    for k in range(probs.shape[0]):
        label = int(labels[k])
        mask_area = (ids == k).sum().item()
        original_area = (probs[k] >= mask_threshold).sum().item()
        mask = (ids == k) & (probs[k] >= mask_threshold)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not META.is_thing[label]:
                if label in stuff_memory:
                    panoptic[mask] = stuff_memory[label]
                    continue
                stuff_memory[label] = current + 1
            current += 1
            panoptic[mask] = current
            category[current] = META.categories[label].id
    return panoptic.numpy(), category


@pytest.mark.parametrize("seed", range(6))
def test_argmax_merge_matches_the_reference_loop_chunked_or_not(seed):
    logits = _random_low_res(seed, 13)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(13, generator=generator)
    labels = torch.randint(0, 4, (13,), generator=generator)
    geometry = dict(padded_size=(24, 40), image_size=(24, 37))
    probs = upsample_logits(logits, **geometry).sigmoid()
    expected, category = _reference_argmax_merge(probs, scores, labels, overlap_threshold=0.5)
    for masks, chunk_size in [(probs, 13), (probs, 1), (MaskLogits(logits, **geometry), 4)]:
        prediction = argmax_merge(masks, scores, labels, META, overlap_threshold=0.5, chunk_size=chunk_size)
        np.testing.assert_array_equal(prediction.id_map, expected)
        assert {s.id: s.category_id for s in prediction.segments} == category
    assert len(category) >= 2


def test_argmax_merge_without_queries_is_void():
    prediction = argmax_merge(torch.zeros(0, 4, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long), META)
    assert prediction.id_map.shape == (4, 5) and not prediction.id_map.any() and prediction.segments == []


# ---------------------------------------------------------------------------- upsampling


def test_upsample_logits_crops_the_padding_then_resizes():
    logits = torch.zeros(2, 4, 6)
    logits[:, :3, :5] = 5.0  # valid part of a 16x24 input padded from 12x20
    logits[1] *= -1
    out = upsample_logits(logits, padded_size=(16, 24), image_size=(12, 20), output_size=(6, 10))
    assert out.shape == (2, 6, 10)
    direct = F.interpolate(logits[None], size=(16, 24), mode="bilinear", align_corners=False)[0, :, :12, :20]
    direct = F.interpolate(direct[None], size=(6, 10), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, direct)
    torch.testing.assert_close(upsample_logits(logits, (16, 24), (12, 20), (6, 10), chunk_size=1), out)
    assert out[0, 0, 0] == 5.0 and out[1, 0, 0] == -5.0
    with pytest.raises(ValueError, match="exceeds padded_size"):
        upsample_logits(logits, padded_size=(16, 24), image_size=(17, 20))


def test_mask_logits_subset_and_probs():
    logits = _random_low_res(0, 5)
    masks = MaskLogits(logits, padded_size=(12, 20), image_size=(12, 20))
    assert len(masks) == 5 and masks.size == (12, 20)
    picked = masks.subset(torch.tensor([4, 1]))
    torch.testing.assert_close(picked.probs(0, 2), masks.probs(0, 5)[[4, 1]])


# ------------------------------------------------------------------------------- writers


def _prediction(image_id, seed: int) -> PanopticPrediction:
    probs = upsample_logits(_random_low_res(seed, 6), (24, 40), (24, 40)).sigmoid()
    labels = torch.tensor([CAR, PERSON, CAR, ROAD, SKY, ROAD])
    return argmax_merge(
        probs, torch.linspace(0.9, 0.4, 6), labels, META, overlap_threshold=0.3, image_id=image_id
    )


def test_panoptic_writer_round_trip(tmp_path):
    predictions = [_prediction("frankfurt_000000_000294", 0), _prediction("b", 1)]
    assert all(len(p.segments) >= 2 for p in predictions)
    json_path = write_panoptic_predictions(tmp_path, predictions, META)
    assert json_path == tmp_path / "predictions.json"
    loaded = load_panoptic_json(json_path)
    assert [c.id for c in loaded.categories.values()] == [7, 23, 24, 26]
    for record, prediction in zip(loaded.records, predictions, strict=True):
        assert record.image_id == prediction.image_id and (record.height, record.width) == (24, 40)
        id_map = read_id_png(tmp_path / "predictions" / record.png_name)
        np.testing.assert_array_equal(id_map, prediction.id_map)
        check_segments_match_png(id_map, record.segments, png_path=record.png_name, image_id=record.image_id)
        assert [(s.id, s.category_id, s.area, s.bbox) for s in record.segments] == [
            (s.id, s.category_id, s.area, s.bbox) for s in prediction.segments
        ]
        assert [s.score for s in record.segments] == pytest.approx([s.score for s in prediction.segments])


def test_panoptic_writer_rejects_bad_predictions(tmp_path):
    good = _prediction("a", 0)
    with pytest.raises(PanopticFormatError, match="image id 'a' is predicted twice"):
        write_panoptic_predictions(tmp_path, [good, good], META)
    bad_category = PanopticPrediction(good.id_map, [s for s in good.segments], "c")
    first = bad_category.segments[0]
    bad_category.segments[0] = type(first)(first.id, 99, 0, first.area, first.bbox, first.score)
    with pytest.raises(PanopticFormatError, match=f"segment id {first.id}: category id 99"):
        write_panoptic_predictions(tmp_path, [bad_category], META)
    unlisted = PanopticPrediction(good.id_map, good.segments[1:], "d")
    with pytest.raises(PanopticFormatError, match=rf"image id 'd': segment id\(s\) \[{first.id}\]"):
        write_panoptic_predictions(tmp_path, [unlisted], META)
    with pytest.raises(PanopticFormatError, match="cannot name"):
        write_panoptic_predictions(tmp_path, [PanopticPrediction(good.id_map, good.segments, "x/y")], META)


def test_instance_writer_round_trip(tmp_path):
    masks = np.zeros((3, 7, 9), bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 0, :] = True
    masks[2, 6, 8] = True
    prediction = InstancePrediction(
        masks, np.array([0.9, 0.5, 0.1], np.float32), np.array([26, 24, 26], np.int64), image_id="img"
    )
    path = write_instance_predictions(tmp_path / "instances.json", [prediction])
    results = json.loads(path.read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [("img", 26), ("img", 24), ("img", 26)]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.5, 0.1])
    assert [r["bbox"] for r in results] == [[2, 1, 3, 3], [0, 0, 9, 1], [8, 6, 1, 1]]
    for result, mask in zip(results, masks, strict=True):
        rle = {"size": result["segmentation"]["size"], "counts": result["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), mask)
    with pytest.raises(ValueError, match="image id 'img': 3 masks"):
        write_instance_predictions(
            tmp_path / "x.json", [InstancePrediction(masks, np.zeros(2), np.zeros(3), "img")]
        )


def test_streaming_panoptic_writer_writes_pngs_on_add_and_json_on_close(tmp_path):
    writer = PanopticPredictionWriter(tmp_path / "out", META)
    writer.add(_prediction(7, 2))
    assert (tmp_path / "out" / "predictions" / "7.png").is_file()
    assert not (tmp_path / "out" / "predictions.json").exists()
    with pytest.raises(PanopticFormatError, match="image id 7 is predicted twice"):
        writer.add(_prediction(7, 3))
    writer.add(_prediction(8, 3))
    loaded = load_panoptic_json(writer.close())
    assert [r.image_id for r in loaded.records] == [7, 8]


def test_paste_by_score_drops_a_fully_covered_thing_even_at_overlap_one():
    full = torch.full((1, 4, 4), 0.9)
    things = torch.cat([full, full, _box(4, 4, slice(0, 1), slice(0, 1))[None]])
    none = torch.zeros(0)
    prediction = paste_by_score(
        things,
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([CAR, CAR, PERSON]),
        torch.zeros((0, 4, 4)),
        none,
        none.long(),
        META,
        overlap_threshold=1.0,
    )
    assert (prediction.id_map == 1).all() and [s.id for s in prediction.segments] == [1]
