"""Instance AP (pycocotools) and the instance Acc^th / Prec^th on hand-built cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ibs_study.data.datasets import coco_panoptic_folder
from ibs_study.data.panoptic import PanopticFormatError, PanopticSample, segments_from_id_map
from ibs_study.metrics.instance import (
    InstanceResults,
    evaluate_instances,
    read_instance_results,
    resolve_overlaps,
)

ROAD, PERSON, CAR = 7, 24, 26


def sample_with_sizes() -> PanopticSample:
    """200 x 300 road with a small (10 x 10), a medium (50 x 50) and a large (120 x 120) thing."""
    id_map = np.full((200, 300), 1, dtype=np.int32)
    id_map[5:15, 5:15] = 2  # car, 100 px: small
    id_map[20:70, 20:70] = 3  # car, 2500 px: medium
    id_map[75:195, 150:270] = 4  # person, 14400 px: large
    segments = segments_from_id_map(id_map, {1: ROAD, 2: CAR, 3: CAR, 4: PERSON})
    return PanopticSample("s", np.zeros((200, 300, 3), np.uint8), id_map, segments)


def masks_of(sample: PanopticSample, ids: list[int]) -> np.ndarray:
    return np.stack([sample.id_map == i for i in ids])


def test_perfect_predictions(categories):
    sample = sample_with_sizes()
    prediction = InstanceResults(
        masks_of(sample, [2, 3, 4]), np.array([0.9, 0.8, 0.7]), np.array([CAR, CAR, PERSON])
    )
    result = evaluate_instances([sample], {"s": prediction}, categories=categories)
    for key in ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "acc_th", "prec_th"):
        assert result[key] == pytest.approx(1.0, abs=1e-12), key
    assert result["num_images"] == 1 and result["num_detections"] == 3


def test_a_higher_scored_false_positive_halves_ap(categories):
    sample = sample_with_sizes()
    wrong = np.zeros((200, 300), dtype=bool)
    wrong[150:190, 10:60] = True  # on road
    masks = np.stack([sample.id_map == 3, wrong])
    prediction = {"masks": masks, "scores": np.array([0.9, 0.95]), "category_ids": np.array([CAR, CAR])}
    gt = sample_with_sizes()
    gt.id_map[gt.id_map == 2] = 1  # keep one car and the person
    gt.id_map[gt.id_map == 4] = 1
    gt.segments = segments_from_id_map(gt.id_map, {1: ROAD, 3: CAR})
    result = evaluate_instances([gt], {"s": prediction}, categories=categories)
    # ranked FP then TP: precision 1/2 at recall 1 -> AP 0.5 at every IoU threshold; person has no GT
    assert result["ap"] == pytest.approx(0.5, abs=1e-12) and result["ap50"] == pytest.approx(0.5, abs=1e-12)
    assert result["ap_m"] == pytest.approx(0.5, abs=1e-12)
    assert result["ap_s"] is None and result["ap_l"] is None
    # pixels: TP 2500 of 2500 GT; predicted 2500 + 2000
    assert result["acc_th"] == 1.0 and result["prec_th"] == pytest.approx(2500 / 4500, abs=1e-12)
    # the 2000 pixels Prec^th misses are the false positive's, on road
    assert result["thing_pixel_breakdown"]["pred_pixels"] == {
        "matched": 2500, "unmatched_own": 0, "other_instance": 0, "stuff": 2000,
    }  # fmt: skip


def overlap_case():
    """10 x 20: car cols 0-9; mask 1 = the car, mask 2 = cols 5-14."""
    id_map = np.full((10, 20), 1, dtype=np.int32)
    id_map[:, :10] = 2
    sample = PanopticSample(
        0, np.zeros((10, 20, 3), np.uint8), id_map, segments_from_id_map(id_map, {1: ROAD, 2: CAR})
    )
    masks = np.zeros((2, 10, 20), dtype=bool)
    masks[0, :, :10] = True
    masks[1, :, 5:15] = True
    return sample, masks


@pytest.mark.parametrize(
    "scores, acc, prec",
    [
        ((0.9, 0.6), 1.0, 100 / 150),  # the car mask wins its pixels; mask 2 keeps 50 road pixels
        ((0.6, 0.9), 0.0, 0.0),  # mask 2 takes cols 5-14: neither visible part has IoU > 0.5
        ((0.9, 0.3), 1.0, 1.0),  # mask 2 is below the 0.5 score threshold
    ],
)
def test_overlapping_masks_resolved_by_score(categories, scores, acc, prec):
    sample, masks = overlap_case()
    prediction = InstanceResults(masks, np.array(scores), np.array([CAR, CAR]))
    result = evaluate_instances([sample], {0: prediction}, categories=categories)
    assert result["acc_th"] == pytest.approx(acc, abs=1e-12)
    assert result["prec_th"] == pytest.approx(prec, abs=1e-12)


def test_resolve_overlaps():
    _, masks = overlap_case()
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    id_map, visible = resolve_overlaps(rles, np.array([0.2, 0.7]), (10, 20))
    assert visible.tolist() == [50, 100]
    assert (id_map[:, :5] == 1).all() and (id_map[:, 5:15] == 2).all() and (id_map[:, 15:] == 0).all()


def test_detection_on_crowd_is_ignored(categories):
    id_map = np.full((60, 60), 1, dtype=np.int32)
    id_map[0:20, 0:20] = 2
    id_map[30:60, 30:60] = 3
    segments = segments_from_id_map(id_map, {1: ROAD, 2: CAR, 3: CAR}, {3: 1})
    sample = PanopticSample(0, np.zeros((60, 60, 3), np.uint8), id_map, segments)
    prediction = InstanceResults(masks_of(sample, [2, 3]), np.array([0.9, 0.95]), np.array([CAR, CAR]))
    result = evaluate_instances([sample], {0: prediction}, categories=categories)
    assert result["ap"] == pytest.approx(1.0, abs=1e-12)
    assert result["acc_th"] == 1.0 and result["prec_th"] == 1.0  # crowd pixels are outside Prec^th


def test_results_json_and_dataset_ground_truth(tmp_path, write_split, categories):
    sample = sample_with_sizes()
    json_path, png_dir = write_split(tmp_path / "gt", [("s", sample.id_map, sample.segments)], categories)
    (tmp_path / "images").mkdir()
    Image.fromarray(sample.image).save(tmp_path / "images" / "0.jpg")
    dataset = coco_panoptic_folder(json_path, png_dir, tmp_path / "images")
    masks = masks_of(sample, [2, 3, 4])
    entries = []
    for mask, score, category in zip(masks, (0.9, 0.4, 0.7), (CAR, CAR, PERSON)):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        entries.append(
            {
                "image_id": "s",
                "category_id": category,
                "segmentation": dict(rle, counts=rle["counts"].decode()),
                "score": score,
            }
        )
    results_path = tmp_path / "instances.json"
    results_path.write_text(json.dumps(entries))
    read = read_instance_results(results_path)
    assert set(read) == {"s"} and read["s"].scores.tolist() == [0.9, 0.4, 0.7]
    from_json = evaluate_instances(dataset, read)
    in_memory = evaluate_instances(
        [sample],
        {"s": InstanceResults(masks, np.array([0.9, 0.4, 0.7]), np.array([CAR, CAR, PERSON]))},
        categories=categories,
    )
    assert from_json == in_memory
    assert from_json["ap"] == pytest.approx(1.0) and from_json["acc_th"] == pytest.approx(
        (100 + 14400) / 17000
    )


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"annotations": []}, "expected a list of detections"),
        ([{"image_id": 1, "category_id": 26, "score": 1.0}], "detection 0 lacks key(s) ['segmentation']"),
        ([{"image_id": 1, "category_id": 26, "score": 1.0, "segmentation": [[0, 0, 5, 0, 5, 5]]}], "not RLE"),
    ],
)
def test_bad_results_json(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PanopticFormatError, match=str(path).replace(".", r"\.")) as error:
        read_instance_results(path)
    assert fragment in str(error.value)


def test_bad_predictions(categories):
    sample = sample_with_sizes()
    good = InstanceResults(masks_of(sample, [2]), np.array([0.9]), np.array([CAR]))
    with pytest.raises(PanopticFormatError, match="absent from the ground truth, e.g. image id 'other'"):
        evaluate_instances([sample], {"s": good, "other": good}, categories=categories)
    with pytest.raises(PanopticFormatError, match="no instance predictions for image id 's'"):
        evaluate_instances([sample], {}, categories=categories)
    assert evaluate_instances([sample], {}, categories=categories, allow_missing=True)["acc_th"] == 0.0
    road = InstanceResults(masks_of(sample, [1]), np.array([0.9]), np.array([ROAD]))
    with pytest.raises(PanopticFormatError, match="image id 's': instance 0 has category id 7.*not a thing"):
        evaluate_instances([sample], {"s": road}, categories=categories)
    small = InstanceResults(np.zeros((1, 20, 30), dtype=bool), np.array([0.9]), np.array([CAR]))
    with pytest.raises(PanopticFormatError, match=r"image id 's': instance masks must be \(N, 200, 300\)"):
        evaluate_instances([sample], {"s": small}, categories=categories)
    uneven = InstanceResults(masks_of(sample, [2]), np.array([0.9, 0.5]), np.array([CAR]))
    with pytest.raises(PanopticFormatError, match="1 masks, 2 scores and 1 category ids"):
        evaluate_instances([sample], {"s": uneven}, categories=categories)
