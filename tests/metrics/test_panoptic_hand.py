"""Hand-built cases of the panoptic metrics, every expected number worked out by hand.

Maps are 4 rows high; columns are listed per segment, so a segment of k columns has 4k pixels.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import Segment, id_runs, segments_from_id_map
from ibs_study.metrics.panoptic import (
    DEFAULT_THRESHOLDS,
    ConfusionRecord,
    PanopticEvaluator,
    curve_ratio_at,
    overlap_table,
    overlap_table_from_runs,
    rank_images_by_confusion,
)

ROAD, PERSON, CAR = 7, 24, 26  # category ids of the ``categories`` fixture


def columns(width: int, spans: dict[int, tuple[int, int]], height: int = 4) -> np.ndarray:
    """(height, width) id map: segment id -> [first, last] column (inclusive); the rest is void."""
    id_map = np.zeros((height, width), dtype=np.int32)
    for seg_id, (first, last) in spans.items():
        id_map[:, first : last + 1] = seg_id
    return id_map


def segments(id_map: np.ndarray, category_of: dict[int, int], crowd: tuple[int, ...] = ()) -> list[Segment]:
    return segments_from_id_map(id_map, category_of, {i: 1 for i in crowd})


def score(categories, gt_map, gt_segs, pred_map, pred_segs, **kwargs) -> dict:
    evaluator = PanopticEvaluator(categories, **kwargs)
    evaluator.process(gt_map, gt_segs, pred_map, pred_segs, image_id="img")
    return evaluator.summarize()


def merge_case() -> tuple[np.ndarray, list[Segment], np.ndarray, list[Segment]]:
    """GT: car A cols 0-5 (24 px), road col 6 (4 px), car B cols 7-9 (12 px).
    Prediction: one car C = A + B (36 px), road col 6."""
    gt = columns(10, {1: (0, 5), 2: (6, 6), 3: (7, 9)})
    gt_segs = segments(gt, {1: CAR, 2: ROAD, 3: CAR})
    pred = np.where(gt == 2, 50, 40).astype(np.int32)
    pred_segs = segments(pred, {40: CAR, 50: ROAD})
    return gt, gt_segs, pred, pred_segs


def test_perfect_prediction(categories):
    gt = columns(10, {5: (0, 3), 6: (4, 6), 7: (7, 9)})
    gt_segs = segments(gt, {5: ROAD, 6: CAR, 7: PERSON})
    pred = gt * 1000 + 3  # other ids, same segments
    pred_segs = segments(pred, {5003: ROAD, 6003: CAR, 7003: PERSON})
    result = score(categories, gt, gt_segs, pred, pred_segs)
    assert result["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 3}
    assert result["things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert result["stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert result["acc_th"] == 1.0 and result["prec_th"] == 1.0
    assert result["confusion_curve"]["ratio"] == [0.0] * len(DEFAULT_THRESHOLDS)
    assert result["confusion_curve"]["num_predictions"] == 2
    assert result["per_class"]["sky"] == {
        "pq": 0.0, "sq": 0.0, "rq": 0.0, "isthing": False, "category_id": 23, "tp": 0, "fp": 0, "fn": 0,
    }  # fmt: skip


def test_merge_of_two_instances(categories):
    result = score(categories, *merge_case())
    # car: C matches A with IoU 24/36 = 2/3; B is a false negative.
    assert result["per_class"]["car"]["tp"] == 1 and result["per_class"]["car"]["fn"] == 1
    assert result["per_class"]["car"]["fp"] == 0
    assert result["per_class"]["car"]["pq"] == pytest.approx((2 / 3) / 1.5, abs=1e-15)
    assert result["per_class"]["car"]["sq"] == pytest.approx(2 / 3, abs=1e-15)
    assert result["per_class"]["car"]["rq"] == pytest.approx(2 / 3, abs=1e-15)
    assert result["things"]["pq"] == pytest.approx(4 / 9, abs=1e-15) and result["things"]["n"] == 1
    assert result["all"]["pq"] == pytest.approx((4 / 9 + 1) / 2, abs=1e-15)
    assert result["all"]["sq"] == pytest.approx(5 / 6, abs=1e-15)
    # Acc^th: 24 of the 36 GT thing pixels; Prec^th: 24 of the 36 predicted thing pixels.
    assert result["acc_th"] == pytest.approx(2 / 3, abs=1e-15)
    assert result["prec_th"] == pytest.approx(2 / 3, abs=1e-15)
    assert result["pixels"] == {"tp_th": 24, "gt_th": 36, "pred_th": 36}
    # what Acc^th and Prec^th miss is B, covered by C whose own instance is A: confusion
    breakdown = result["thing_pixel_breakdown"]
    assert breakdown["gt_pixels"] == {
        "matched": 24,
        "unmatched_own": 0,
        "other_instance": 12,
        "stuff": 0,
        "unlabelled": 0,
    }
    assert breakdown["pred_pixels"] == {"matched": 24, "unmatched_own": 0, "other_instance": 12, "stuff": 0}
    assert breakdown["gt"]["other_instance"] == pytest.approx(1 / 3, abs=1e-15)
    # C covers all of A and all of B: confused at every threshold; 36 of 40 pixels makes it large.
    curve = result["confusion_curve"]
    assert curve["ratio"] == [1.0] * len(DEFAULT_THRESHOLDS)
    assert curve["by_size"]["L"]["ratio"] == [1.0] * len(DEFAULT_THRESHOLDS)
    assert curve["by_size"]["S"]["num_predictions"] == curve["by_size"]["M"]["num_predictions"] == 0


def test_merge_moves_pq_little_and_acc_much(categories):
    """Eight small correct cars plus one prediction merging two large cars (60 and 40 px)."""
    gt = np.full((10, 40), 1, dtype=np.int32)  # road
    gt[0:6, 0:10] = 2  # car A, 60 px
    gt[0:4, 10:20] = 3  # car B, 40 px
    small = {}
    for k in range(8):
        gt[8:10, 20 + 2 * k : 22 + 2 * k] = 10 + k  # 2 x 2 cars
        small[10 + k] = CAR
    gt_segs = segments(gt, {1: ROAD, 2: CAR, 3: CAR, **small})
    pred = gt * 7 + 1
    pred[(gt == 2) | (gt == 3)] = 999  # one car over A and B
    pred_segs = segments(pred, {8: ROAD, 999: CAR, **{7 * i + 1: CAR for i in small}})
    result = score(categories, gt, gt_segs, pred, pred_segs, size_bounds=(0.02, 0.2))
    # car: 9 TP (IoUs 1 x 8 and 60/100), 1 FN -> PQ = 8.6 / 9.5
    assert result["per_class"]["car"]["pq"] == pytest.approx(8.6 / 9.5, abs=1e-15)
    assert result["per_class"]["road"]["pq"] == 1.0
    # pixels: TP = 8 * 4 + 60, GT things = 32 + 100, predicted things = 32 + 100
    assert result["acc_th"] == pytest.approx(92 / 132, abs=1e-15)
    assert result["prec_th"] == pytest.approx(92 / 132, abs=1e-15)
    assert result["per_class"]["car"]["pq"] - result["acc_th"] > 0.2
    # One of nine thing predictions is confused; by size (8 and 80 px bounds): S 0/8, L 1/1.
    curve = result["confusion_curve"]
    assert curve["ratio"] == pytest.approx([1 / 9] * len(DEFAULT_THRESHOLDS), abs=1e-15)
    assert curve["by_size"]["S"] == {"ratio": [0.0] * 19, "num_predictions": 8}
    assert curve["by_size"]["M"] == {"ratio": [0.0] * 19, "num_predictions": 0}
    assert curve["by_size"]["L"] == {"ratio": [1.0] * 19, "num_predictions": 1}
    assert curve["size_bounds"] == [0.02, 0.2]


def test_thing_pixel_breakdown_of_fragments_wrong_class_stuff_and_void(categories):
    # GT (16 wide): car A cols 0-7 (32 px), person B cols 8-11 (16 px), road cols 12-15.
    gt = columns(16, {1: (0, 7), 2: (8, 11), 3: (12, 15)})
    gt_segs = segments(gt, {1: CAR, 2: PERSON, 3: ROAD})
    # car 4: cols 0-2 (IoU 12/32: a fragment of A), car 5: cols 3-7 + col 12 (IoU 20/36 > 0.5:
    # A's match, 4 px on road), road 6: cols 8 and 13-15 (4 px of B), B's cols 9-10 void,
    # car 7: col 11 (B's pixels, wrong class: own instance B, unmatched)
    pred = columns(16, {4: (0, 2), 5: (3, 7), 6: (13, 15), 7: (11, 11)})
    pred[:, 12] = 5
    pred[:, 8] = 6
    result = score(categories, gt, gt_segs, pred, segments(pred, {4: CAR, 5: CAR, 6: ROAD, 7: CAR}))
    assert result["pixels"] == {"tp_th": 20, "gt_th": 48, "pred_th": 40}
    breakdown = result["thing_pixel_breakdown"]
    assert breakdown["gt_pixels"] == {
        "matched": 20, "unmatched_own": 12 + 4, "other_instance": 0, "stuff": 4, "unlabelled": 8,
    }  # fmt: skip
    assert breakdown["pred_pixels"] == {"matched": 20, "unmatched_own": 16, "other_instance": 0, "stuff": 4}
    assert breakdown["gt"] == pytest.approx(
        {
            "matched": 20 / 48,
            "unmatched_own": 16 / 48,
            "other_instance": 0.0,
            "stuff": 4 / 48,
            "unlabelled": 8 / 48,
        },
        abs=1e-15,
    )
    assert breakdown["pred"]["matched"] == result["prec_th"] == pytest.approx(0.5, abs=1e-15)


def test_thing_pixel_breakdown_of_an_unmatched_merge_and_a_prediction_on_stuff_only(categories):
    # GT: car A cols 0-3, car B cols 4-5, road cols 6-11. Car 5 covers A, B and col 6 (IoU with
    # A 16/28: matched, own A); car 6 lies on road only (no own instance, all stuff).
    gt = columns(12, {1: (0, 3), 2: (4, 5), 3: (6, 11)})
    gt_segs = segments(gt, {1: CAR, 2: CAR, 3: ROAD})
    pred = columns(12, {5: (0, 6), 6: (9, 10), 7: (7, 8)})
    pred[:, 11] = 7
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: CAR, 7: ROAD}))
    breakdown = result["thing_pixel_breakdown"]
    assert breakdown["gt_pixels"] == {
        "matched": 16,
        "unmatched_own": 0,
        "other_instance": 8,
        "stuff": 0,
        "unlabelled": 0,
    }
    assert breakdown["pred_pixels"] == {
        "matched": 16,
        "unmatched_own": 0,
        "other_instance": 8,
        "stuff": 4 + 8,
    }


def test_thing_pixel_breakdown_without_ground_truth_things(categories):
    gt = columns(8, {1: (0, 7)})
    pred = columns(8, {2: (0, 3), 3: (4, 7)})
    result = score(categories, gt, segments(gt, {1: ROAD}), pred, segments(pred, {2: CAR, 3: ROAD}))
    assert result["thing_pixel_breakdown"]["gt"] == dict.fromkeys(result["thing_pixel_breakdown"]["gt"], 0.0)
    assert result["thing_pixel_breakdown"]["pred_pixels"]["stuff"] == 16
    empty = score(categories, np.zeros((4, 8), np.int32), [], np.zeros((4, 8), np.int32), [])
    assert empty["thing_pixel_breakdown"]["pred_pixels"] == dict.fromkeys(
        empty["thing_pixel_breakdown"]["pred"], 0
    )
    # an all-void GT image with a thing prediction: a record without match, nothing counted
    evaluator = PanopticEvaluator(categories)
    evaluator.process(
        np.zeros((4, 8), np.int32), [], pred, segments(pred, {2: CAR, 3: ROAD}), image_id="void"
    )
    assert [(r.segment_id, r.matched_gt_id, r.void_pixels) for r in evaluator.records] == [(2, None, 16)]
    assert evaluator.summarize()["pixels"] == {"tp_th": 0, "gt_th": 0, "pred_th": 0}


def test_iou_of_exactly_half_does_not_match(categories):
    gt = columns(10, {1: (0, 3), 2: (4, 5), 3: (6, 9)})
    gt_segs = segments(gt, {1: CAR, 2: ROAD, 3: CAR})
    pred = np.where(gt == 2, 2, 9).astype(np.int32)  # car 9 = A + B, IoU with each = 16/32
    result = score(categories, gt, gt_segs, pred, segments(pred, {2: ROAD, 9: CAR}))
    car = result["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"], car["pq"]) == (0, 1, 2, 0.0)
    assert result["acc_th"] == 0.0 and result["prec_th"] == 0.0


def test_void_in_ground_truth_and_prediction(categories):
    # GT: car cols 0-3, void cols 4-5, road cols 6-9. Prediction: car cols 0-5 (8 px on void),
    # void col 6, road cols 7-9.
    gt = columns(10, {1: (0, 3), 2: (6, 9)})
    gt_segs = segments(gt, {1: CAR, 2: ROAD})
    pred = columns(10, {5: (0, 5), 6: (7, 9)})
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: ROAD}))
    # car: IoU = 16 / (24 + 16 - 16 - 8) = 1; road: predicted void counts in the union: 12 / 16.
    assert result["per_class"]["car"]["pq"] == 1.0
    assert result["per_class"]["road"]["pq"] == 0.75
    assert result["all"]["pq"] == pytest.approx(0.875, abs=1e-15)
    # Prec^th leaves the 8 predicted car pixels on void out.
    assert result["pixels"] == {"tp_th": 16, "gt_th": 16, "pred_th": 16}


def test_mostly_void_prediction_is_no_false_positive(categories):
    # GT (16 wide): car cols 0-3, void cols 4-7, road cols 8-15.
    gt = columns(16, {1: (0, 3), 2: (8, 15)})
    gt_segs = segments(gt, {1: CAR, 2: ROAD})
    # person: cols 4-7 (16 void px) plus one road pixel -> 16/17 on void: ignored
    pred = columns(16, {5: (0, 3), 6: (4, 7), 7: (8, 15)})
    pred[0, 8] = 6
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: PERSON, 7: ROAD}))
    assert result["per_class"]["person"]["fp"] == 0
    assert result["things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert result["per_class"]["road"]["pq"] == pytest.approx(31 / 32, abs=1e-15)
    assert result["pixels"] == {"tp_th": 16, "gt_th": 16, "pred_th": 17}
    # person: cols 6-9 -> 8 of 16 px on void is not more than half: a false positive
    pred = columns(16, {5: (0, 3), 6: (6, 9), 7: (10, 15)})
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: PERSON, 7: ROAD}))
    assert result["per_class"]["person"]["fp"] == 1
    assert result["things"]["pq"] == 0.5 and result["things"]["n"] == 2
    assert result["per_class"]["road"]["pq"] == 0.75
    assert result["prec_th"] == pytest.approx(16 / 24, abs=1e-15)
    assert result["acc_th"] == 1.0


def test_crowd_regions(categories):
    # GT (12 wide): car A cols 0-3, car crowd cols 4-7, road cols 8-11.
    gt = columns(12, {1: (0, 3), 2: (4, 7), 3: (8, 11)})
    gt_segs = segments(gt, {1: CAR, 2: CAR, 3: ROAD}, crowd=(2,))
    pred = columns(12, {5: (0, 3), 6: (4, 7), 7: (8, 11)})
    # a car on the car crowd region: neither FP nor, for the crowd, FN
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: CAR, 7: ROAD}))
    assert result["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert result["pixels"] == {"tp_th": 16, "gt_th": 16, "pred_th": 16}
    # a person on the car crowd region: a false positive (crowd excuses its own class only),
    # but its pixels are outside Prec^th (crowd pixels are unlabeled for every class)
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: PERSON, 7: ROAD}))
    assert result["per_class"]["person"]["fp"] == 1
    assert result["things"]["pq"] == 0.5
    assert result["pixels"] == {"tp_th": 16, "gt_th": 16, "pred_th": 16}
    # a prediction exactly on the crowd region never matches it
    assert result["per_class"]["car"]["tp"] == 1 and result["per_class"]["car"]["fn"] == 0


def test_several_crowd_segments_of_one_class_all_count(categories, tmp_path, write_split):
    """The one documented difference from panopticapi, which keeps only the last crowd per class."""
    from panopticapi.evaluation import pq_compute

    gt = columns(16, {1: (0, 3), 2: (4, 5), 3: (6, 7), 4: (8, 15)})
    gt_segs = segments(gt, {1: CAR, 2: CAR, 3: CAR, 4: ROAD}, crowd=(2, 3))
    pred = columns(16, {5: (0, 3), 6: (4, 8), 7: (9, 15)})  # car 6: 8 + 8 crowd px and 4 road px
    pred_segs = segments(pred, {5: CAR, 6: CAR, 7: ROAD})
    result = score(categories, gt, gt_segs, pred, pred_segs)
    assert result["per_class"]["car"]["fp"] == 0 and result["per_class"]["car"]["pq"] == 1.0
    gt_json, gt_dir = write_split(tmp_path / "gt", [(1, gt, gt_segs)], categories)
    pred_json, pred_dir = write_split(tmp_path / "pred", [(1, pred, pred_segs)], categories)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    assert reference["per_class"][CAR]["pq"] == pytest.approx(2 / 3)  # 8/20 on the last crowd: FP


def test_confusion_thresholds(categories):
    # GT: car A cols 0-3, car B cols 4-7, road cols 8-11. Prediction C = A + col 4 (covers B by
    # 4/16 = 0.25), D = cols 5-7.
    gt = columns(12, {1: (0, 3), 2: (4, 7), 3: (8, 11)})
    gt_segs = segments(gt, {1: CAR, 2: CAR, 3: ROAD})
    pred = columns(12, {5: (0, 4), 6: (5, 7), 7: (8, 11)})
    result = score(categories, gt, gt_segs, pred, segments(pred, {5: CAR, 6: CAR, 7: ROAD}))
    curve = result["confusion_curve"]
    expected = [0.5 if t < 0.25 else 0.0 for t in DEFAULT_THRESHOLDS]
    assert curve["ratio"] == expected and expected.count(0.5) == 4
    # matches: C-A IoU 16/20, D-B IoU 12/16
    assert result["per_class"]["car"]["pq"] == pytest.approx((0.8 + 0.75) / 2, abs=1e-15)
    assert result["acc_th"] == pytest.approx(28 / 32, abs=1e-15)
    assert result["prec_th"] == pytest.approx(28 / 32, abs=1e-15)


def test_confusion_counts_any_thing_class_but_not_crowd(categories):
    gt = columns(12, {1: (0, 3), 2: (4, 7), 3: (8, 11)})
    pred = columns(12, {5: (0, 7), 6: (8, 11)})
    pred_segs = segments(pred, {5: CAR, 6: ROAD})
    two_classes = score(categories, gt, segments(gt, {1: CAR, 2: PERSON, 3: ROAD}), pred, pred_segs)
    assert two_classes["confusion_curve"]["ratio"] == [1.0] * 19
    with_crowd = score(categories, gt, segments(gt, {1: CAR, 2: CAR, 3: ROAD}, crowd=(2,)), pred, pred_segs)
    assert with_crowd["confusion_curve"]["ratio"] == [0.0] * 19


def test_confusion_records(categories):
    evaluator = PanopticEvaluator(categories)
    evaluator.process(*merge_case(), image_id="frankfurt_1")
    (record,) = evaluator.records  # one predicted thing segment
    assert (record.image_id, record.segment_id, record.category_id) == ("frankfurt_1", 40, CAR)
    assert (record.area, record.bbox, record.size, record.void_pixels) == (36, (0, 0, 10, 4), "L", 0)
    assert record.matched_gt_id == 1 and record.matched_iou == pytest.approx(2 / 3, abs=1e-15)
    assert [(o.gt_id, o.intersection, o.frac_of_gt) for o in record.overlaps] == [(1, 24, 1.0), (3, 12, 1.0)]
    assert [o.frac_of_pred for o in record.overlaps] == pytest.approx([2 / 3, 1 / 3], abs=1e-15)
    assert record.confusion_level == 1.0 and record.is_confused(0.95)
    assert [o.gt_id for o in record.covered_things(0.5)] == [1, 3]
    restored = ConfusionRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert restored == record


def test_rank_images_by_confusion(categories):
    gt, gt_segs, pred, pred_segs = merge_case()
    evaluator = PanopticEvaluator(categories)
    evaluator.process(gt, gt_segs, gt, gt_segs, image_id="clean")
    evaluator.process(gt, gt_segs, pred, pred_segs, image_id="confused")
    ranking = rank_images_by_confusion(evaluator.records, threshold=0.5)
    assert ranking == [
        {"image_id": "confused", "confused_area": 36, "num_confused": 1, "num_predictions": 1},
        {"image_id": "clean", "confused_area": 0, "num_confused": 0, "num_predictions": 2},
    ]


def test_accumulation_reset_and_default_image_ids(categories):
    meta = DatasetMeta.from_categories("four", categories)
    evaluator = PanopticEvaluator(meta)
    gt, gt_segs, pred, pred_segs = merge_case()
    evaluator.process(gt, gt_segs, pred, pred_segs)
    evaluator.process(gt, gt_segs, gt, gt_segs)
    result = evaluator.summarize()
    assert result["num_images"] == 2
    # car over both images: TP 1 + 2 (IoUs 2/3, 1, 1), FN 1 -> PQ = (8/3) / 3.5
    assert result["per_class"]["car"]["pq"] == pytest.approx((8 / 3) / 3.5, abs=1e-15)
    assert result["pixels"] == {"tp_th": 24 + 36, "gt_th": 72, "pred_th": 72}
    assert [r.image_id for r in evaluator.records] == [0, 1, 1]
    evaluator.reset()
    assert evaluator.summarize()["num_images"] == 0 and evaluator.records == []
    assert evaluator.summarize()["all"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_overlap_table_and_boxes():
    gt = columns(10, {1: (0, 5), 3: (7, 9)})
    pred = np.zeros((4, 10), dtype=np.int32)
    pred[1:3, 2:9] = 8
    table = overlap_table(
        gt, [Segment(3, CAR), Segment(1, CAR)], pred, [Segment(8, CAR)]
    )  # rows: void, 3, 1; columns: void, 8
    assert table.counts.tolist() == [[4 - 2, 2], [12 - 4, 4], [24 - 8, 8]]
    assert table.pred_bbox.tolist() == [[2, 1, 7, 2]]


def test_overlap_table_from_runs_equals_the_one_from_id_maps():
    """Over random pairs of blocky maps (runs of both maps often start together, at row starts
    always): the table counted from the runs of each map is the one counted from the maps."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        height, width = rng.integers(1, 9, size=2)
        gt = rng.integers(0, 4, size=(height, (width + 1) // 2)).repeat(2, axis=1)[:, :width]
        pred = rng.integers(0, 5, size=(height, width))
        pred[:, rng.random(width) < 0.5] = 0
        gt_segments = [Segment(int(i), CAR) for i in np.unique(gt) if i]
        pred_segments = [Segment(int(i), CAR) for i in np.unique(pred) if i]
        expected = overlap_table(gt, gt_segments, pred, pred_segments)
        table = overlap_table_from_runs(id_runs(gt), gt_segments, id_runs(pred), pred_segments)
        assert np.array_equal(table.counts, expected.counts)
        assert np.array_equal(table.pred_bbox, expected.pred_bbox)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ],
)
def test_torch_tensors_give_the_same_results(categories, device):
    gt, gt_segs, pred, pred_segs = merge_case()
    expected = score(categories, gt, gt_segs, pred, pred_segs)
    on_device = score(
        categories,
        torch.from_numpy(gt).to(device),
        gt_segs,
        torch.from_numpy(pred).to(device),
        pred_segs,
    )
    assert on_device == expected


def test_curve_ratio_at_reads_the_nearest_threshold():
    curve = {"thresholds": [0.1, 0.25, 0.5, 0.75], "ratio": [0.9, 0.6, 0.3, 0.05]}
    assert curve_ratio_at(curve, 0.5) == 0.3
    assert curve_ratio_at(curve, 0.0) == 0.9 and curve_ratio_at(curve, 1.0) == 0.05
    assert curve_ratio_at(curve, 0.3) == 0.6  # 0.05 from 0.25, 0.2 from 0.5
    assert curve_ratio_at(curve, 0.625) == 0.3  # equally near 0.5 and 0.75: the first
