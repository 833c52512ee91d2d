"""Problem-analysis computations (ibs_study.study.analysis) on a hand-built dataset with known numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from ibs_study.config import load_preset
from ibs_study.data.datasets import synthetic as open_synthetic
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    PanopticSample,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)
from ibs_study.data.transforms import random_crop_box
from ibs_study.study.analysis import (
    instance_counts,
    merge_instances,
    merge_sweep,
    segment_sizes,
    setting_differences,
    shared_class_fractions,
    size_shares,
)
from ibs_study.study.results import ResultRow, StudyResults, Summary
from ibs_study.study.runs import smoke_overrides

ROAD, SKY, PERSON, CAR = 7, 23, 24, 26
CATEGORIES = {
    ROAD: CategoryInfo(ROAD, "road", False, (128, 64, 128)),
    SKY: CategoryInfo(SKY, "sky", False, (70, 130, 180)),
    PERSON: CategoryInfo(PERSON, "person", True, (220, 20, 60)),
    CAR: CategoryInfo(CAR, "car", True, (0, 0, 142)),
}
CAR_A, CAR_B, CAR_C, PERSON_P, CROWD = 101, 102, 103, 201, 300


def hand_image() -> PanopticSample:
    """10 x 20 (200 px): sky rows 0:2, road elsewhere; car A 48 px, car B 36 px, car C 4 px,
    person P 4 px and a 4-px crowd of persons (not an instance)."""
    ids = np.full((10, 20), ROAD, dtype=np.int32)
    ids[:2] = SKY
    ids[2:8, 0:8] = CAR_A
    ids[2:8, 10:16] = CAR_B
    ids[8:10, 17:19] = CAR_C
    ids[3:5, 18:20] = PERSON_P
    ids[8:10, 0:2] = CROWD
    category_of = {ROAD: ROAD, SKY: SKY, CAR_A: CAR, CAR_B: CAR, CAR_C: CAR, PERSON_P: PERSON, CROWD: PERSON}
    segments = segments_from_id_map(ids, category_of, {CROWD: 1})
    return PanopticSample("hand", np.zeros((10, 20, 3), np.uint8), ids, segments)


@pytest.fixture(scope="module")
def hand_dataset(tmp_path_factory):
    """The hand image twice (ids 'a' and 'b') in the synthetic folder layout, val split."""
    root = tmp_path_factory.mktemp("hand")
    sample = hand_image()
    (root / "images" / "val").mkdir(parents=True)
    (root / "panoptic_val").mkdir()
    records = []
    for name in ("a", "b"):
        Image.fromarray(sample.image).save(root / "images" / "val" / f"{name}.png")
        write_id_png(root / "panoptic_val" / f"{name}.png", sample.id_map)
        records.append(ImageRecord(name, f"{name}.png", 20, 10, f"{name}.png", sample.segments))
    write_panoptic_json(root / "annotations" / "panoptic_val.json", records, list(CATEGORIES.values()))
    return open_synthetic(root, "val")


# ------------------------------------------------------------------------ instance counts


def test_instance_counts_match_brute_force_on_the_documented_crops(hand_dataset):
    counts = instance_counts(hand_dataset, (4, 6), crops_per_image=5, seed=3)
    assert counts.per_image.tolist() == [4, 4]  # A, B, C, P; the crowd is no instance
    assert counts.per_image_one_class.tolist() == [3, 3]  # three cars
    assert counts.per_crop.shape == (2, 5) and counts.crop_size == (4, 6)
    sample = hand_image()
    things = {CAR_A: CAR, CAR_B: CAR, CAR_C: CAR, PERSON_P: PERSON}
    for index in range(2):
        rng = np.random.default_rng(np.random.SeedSequence([3, index]))  # the documented seeding
        for k in range(5):
            top, left = random_crop_box((10, 20), (4, 6), rng)
            present = set(np.unique(sample.id_map[top : top + 4, left : left + 6]).tolist()) & set(things)
            assert counts.per_crop[index, k] == len(present)
            per_class = [sum(things[i] == c for i in present) for c in (CAR, PERSON)]
            assert counts.per_crop_one_class[index, k] == max(per_class)
    assert counts.ratio == pytest.approx(4 / counts.per_crop.mean())


def test_instance_counts_whole_image_crop_sees_every_instance(hand_dataset):
    counts = instance_counts(hand_dataset, (10, 20), crops_per_image=3)
    assert (counts.per_crop == 4).all() and counts.ratio == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"crop_size": (0, 4)}, {"crop_size": (4, 4), "crops_per_image": 0}])
def test_instance_counts_bad_arguments(hand_dataset, kwargs):
    with pytest.raises(ValueError, match="crop_size|crops_per_image"):
        instance_counts(hand_dataset, **kwargs)


# --------------------------------------------------------------------------- segment sizes


def test_segment_sizes_and_shares_by_size(hand_dataset):
    sizes = segment_sizes(hand_dataset, max_images=1)
    # road, sky, A, B, C, P (the crowd is left out); fractions of the 200-px image
    assert sorted(sizes.area.tolist()) == sorted([200 - 40 - 48 - 36 - 4 - 4 - 4, 40, 48, 36, 4, 4])
    assert sizes.isthing.sum() == 4
    assert sorted(sizes.fraction[sizes.isthing].tolist()) == pytest.approx([0.02, 0.02, 0.18, 0.24])
    shares = size_shares(sizes)  # bounds 32^2 / 96^2 over 640x480: 0.0033 and 0.03
    assert shares["S"] == {"segments": 0.0, "pixels": 0.0, "count": 0}
    assert shares["M"]["count"] == 2 and shares["M"]["segments"] == 0.5
    assert shares["M"]["pixels"] == pytest.approx(8 / 92)
    assert shares["L"]["pixels"] == pytest.approx(84 / 92)
    custom = size_shares(sizes, bounds=(0.03, 0.2))  # A alone is L now
    assert (custom["S"]["count"], custom["M"]["count"], custom["L"]["count"]) == (2, 1, 1)


# ----------------------------------------------------------------------- merge worked example


def test_merging_two_cars_scored_by_hand():
    sample = hand_image()
    pred, segments, merged = merge_instances(sample, CATEGORIES, 2)
    assert merged == [CAR_A, CAR_B]
    assert (pred[sample.id_map == CAR_B] == CAR_A).all() and (pred[sample.id_map == CROWD] == 0).all()
    union = next(s for s in segments if s.id == CAR_A)
    assert union.area == 84 and union.category_id == CAR
    outcome = merge_sweep(sample, CATEGORIES, [1, 2, 3])
    perfect, two, three = (o.row() for o in outcome)
    assert perfect["pq"] == 1.0 and perfect["acc_th"] == 1.0 and perfect["prec_th"] == 1.0
    # k = 2: the union matches A (IoU 48/84 > 0.5), B is a false negative
    car_pq = (48 / 84 + 1.0) / (2 + 0.5)
    assert two["pq_th"] == pytest.approx((car_pq + 1.0) / 2)
    assert two["pq"] == pytest.approx((car_pq + 3.0) / 4)  # road, sky, person perfect
    assert two["acc_th"] == pytest.approx(56 / 92) and two["prec_th"] == pytest.approx(56 / 92)
    assert two["confused_at_0.5"] == pytest.approx(1 / 3)  # the union covers all of A and B
    # k = 3: IoU 48/88 still matches A; B and C are false negatives
    assert three["pq"] == pytest.approx((48 / 88 / 2 + 3.0) / 4)
    assert three["acc_th"] == pytest.approx(52 / 92)
    # the point of the example: PQ moves far less than Acc^th
    assert 1 - two["pq"] < (1 - two["acc_th"]) / 3
    assert [o.merged_area for o in outcome] == [48, 84, 88]


def test_merge_rejects_more_instances_than_the_class_has():
    with pytest.raises(ValueError, match="num_merged=4 but car has 3 instance"):
        merge_instances(hand_image(), CATEGORIES, 4)
    with pytest.raises(ValueError, match="category id 7 has no instance"):
        merge_instances(hand_image(), CATEGORIES, 1, category_id=ROAD)


def test_merge_picks_the_class_with_most_merged_pixels():
    _, _, merged = merge_instances(hand_image(), CATEGORIES, 1)
    assert merged == [CAR_A]
    _, _, merged = merge_instances(hand_image(), CATEGORIES, 1, category_id=PERSON)
    assert merged == [PERSON_P]


# ---------------------------------------------------------------------- sampler statistic


def test_shared_class_fractions_are_deterministic_per_batch_fractions(tmp_path):
    cfg = load_preset("synthetic_pfcn_crop_ibs", smoke_overrides(tmp_path / "data"))
    first = shared_class_fractions(cfg, batches=3)
    again = shared_class_fractions(cfg, batches=3)
    assert list(first) == ["random crops, random partner", "paired sampler, pair mate"]
    for label, values in first.items():
        assert values.shape == (3,)
        np.testing.assert_array_equal(values, again[label])
        # B = 4 ordered pairs per batch
        np.testing.assert_allclose(values * 4, np.round(values * 4))
        assert ((values >= 0) & (values <= 1)).all()
    with pytest.raises(ValueError, match="batches must be >= 1"):
        shared_class_fractions(cfg, batches=0)


# ---------------------------------------------------------------------- study differences


def _row(setting: str, seeds: list[int], values: list[float]) -> ResultRow:
    return ResultRow("pfcn", setting, tuple(seeds), 1, {"acc_th": Summary.of(values)})


def test_setting_differences_are_paired_by_seed():
    rows = (_row("crop", [0, 1, 2], [0.5, 0.6, 0.7]), _row("crop_ibs", [2, 0], [0.9, 0.6]))
    results = StudyResults("cpu", None, None, rows)
    diff = setting_differences(results, "pfcn", "crop", "crop_ibs", ["acc_th", "pq"])
    assert list(diff) == ["acc_th"]  # pq is in neither row
    d = diff["acc_th"]
    assert d["seeds"] == [0, 2] and d["per_seed"] == pytest.approx([0.1, 0.2])
    # mean 0.15; t(0.975, 1) = 12.706, sd 0.0707 / sqrt(2) = 0.05
    assert d["mean"] == pytest.approx(0.15)
    assert d["ci95"] == pytest.approx([0.15 - 12.7062 * 0.05, 0.15 + 12.7062 * 0.05], abs=1e-4)
    with pytest.raises(KeyError, match="no row \\('pfcn', 'full'\\)"):
        setting_differences(results, "pfcn", "full", "crop")
    results = dataclasses.replace(results, rows=(rows[0], _row("crop_ibs", [5, 6], [0.9, 0.6])))
    with pytest.raises(ValueError, match="share no seed"):
        setting_differences(results, "pfcn", "crop", "crop_ibs")
