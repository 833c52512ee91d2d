"""The panoptic evaluator against panopticapi, hotcoco, torchmetrics and a brute-force
pixel-mask reference, on many random street scenes with random merges, splits, shifts,
drops and wrong classes; plus invariance properties."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ibs_study.data.datasets import CITYSCAPES_META
from ibs_study.data.panoptic import Segment
from ibs_study.metrics.panoptic import (
    DEFAULT_THRESHOLDS,
    GT_THING_PIXEL_FATES,
    PRED_THING_PIXEL_FATES,
    PanopticEvaluator,
    evaluate_panoptic_folders,
)
from tests.fixtures.simulate import perturb_prediction, street_scene

CATEGORIES = CITYSCAPES_META.by_id()
GROUPS = (("all", "All"), ("things", "Things"), ("stuff", "Stuff"))


def random_case(seed: int, height: int = 32, width: int = 64, **perturbation) -> tuple:
    """(gt map, gt segments, pred map, pred segments) with error rates drawn from the seed."""
    rng = np.random.default_rng(seed)
    gt, gt_segs = street_scene(height, width, CATEGORIES, rng, num_things=int(rng.integers(3, 15)))
    rates = {
        "merge_prob": rng.uniform(0, 0.6),
        "split_prob": rng.uniform(0, 0.3),
        "max_shift": int(rng.integers(0, 4)),
        "drop_prob": rng.uniform(0, 0.2),
        "wrong_class_prob": rng.uniform(0, 0.2),
        "fill_void": bool(rng.random() < 0.5),
    }
    rates.update(perturbation)
    pred, pred_segs = perturb_prediction(gt, gt_segs, CATEGORIES, rng, **rates)
    return gt, gt_segs, pred, pred_segs


@pytest.fixture(scope="module")
def random_split(tmp_path_factory):
    """40 random images written as GT and prediction folders (integer image ids, as hotcoco needs)."""
    from ibs_study.data.panoptic import ImageRecord, write_id_png, write_panoptic_json

    root = tmp_path_factory.mktemp("random_split")
    gt_records, pred_records, cases = [], [], []
    for side in ("gt", "pred"):
        (root / side).mkdir()
    for seed in range(40):
        gt, gt_segs, pred, pred_segs = case = random_case(seed)
        cases.append(case)
        write_id_png(root / "gt" / f"{seed}.png", gt)
        write_id_png(root / "pred" / f"{seed}.png", pred)
        gt_records.append(ImageRecord(seed, f"{seed}.jpg", 64, 32, f"{seed}.png", gt_segs))
        pred_records.append(ImageRecord(seed, f"{seed}.jpg", 64, 32, f"{seed}.png", pred_segs))
    write_panoptic_json(root / "gt.json", gt_records, CATEGORIES.values())
    write_panoptic_json(root / "pred.json", pred_records, CATEGORIES.values())
    paths = (root / "gt.json", root / "gt", root / "pred.json", root / "pred")
    return paths, cases


def assert_same_pq(ours: dict, reference: dict, tolerance: float) -> None:
    for key, ref_key in GROUPS:
        assert ours[key]["n"] == reference[ref_key]["n"], key
        for metric in ("pq", "sq", "rq"):
            assert ours[key][metric] == pytest.approx(reference[ref_key][metric], abs=tolerance), (
                key,
                metric,
            )
    for category in CATEGORIES.values():
        for metric in ("pq", "sq", "rq"):
            ours_value = ours["per_class"][category.name][metric]
            assert ours_value == pytest.approx(reference["per_class"][category.id][metric], abs=tolerance)


def test_equals_panopticapi(random_split):
    from panopticapi.evaluation import pq_compute

    (gt_json, gt_dir, pred_json, pred_dir), _ = random_split
    ours, _ = evaluate_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    assert_same_pq(ours, reference, 1e-9)
    assert 0.2 < ours["all"]["pq"] < 0.9  # the random errors do matter


def test_equals_hotcoco(random_split):
    from hotcoco.panoptic import pq_compute

    (gt_json, gt_dir, pred_json, pred_dir), _ = random_split
    ours, _ = evaluate_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    for key, ref_key in GROUPS:
        assert ours[key]["n"] == reference[ref_key]["n"]
        for metric in ("pq", "sq", "rq"):
            assert ours[key][metric] == pytest.approx(reference[ref_key][metric], abs=1e-9)


def test_two_workers_equal_one(random_split):
    paths, _ = random_split
    one, one_records = evaluate_panoptic_folders(*paths, workers=1)
    two, two_records = evaluate_panoptic_folders(*paths, workers=2)
    assert one_records == two_records
    for key in ("all", "things", "stuff"):
        assert two[key] == pytest.approx(one[key], abs=1e-12)
    assert (two["acc_th"], two["prec_th"], two["confusion_curve"], two["thing_pixel_breakdown"]) == (
        one["acc_th"],
        one["prec_th"],
        one["confusion_curve"],
        one["thing_pixel_breakdown"],
    )
    assert two["timing"]["workers"] == 2 and one["num_images"] == two["num_images"] == 40


def test_metrics_without_records_are_the_same(random_split):
    """``keep_records=False`` (what ``ibs-study score`` asks) changes no number, only drops the records."""
    paths, _ = random_split
    with_records, records = evaluate_panoptic_folders(*paths, workers=2)
    without, no_records = evaluate_panoptic_folders(*paths, workers=2, keep_records=False)
    assert len(records) > 100 and no_records == []
    del with_records["timing"], without["timing"]
    assert without == with_records


def test_folder_and_memory_apis_agree(random_split):
    paths, cases = random_split
    from_folders, records = evaluate_panoptic_folders(*paths)
    evaluator = PanopticEvaluator(CATEGORIES)
    for seed, case in enumerate(cases):
        evaluator.process(*case, image_id=seed)
    in_memory = evaluator.summarize()
    del from_folders["timing"], from_folders["num_missing"]
    assert in_memory == from_folders
    assert evaluator.records == records


# --------------------------------------------------------------------------- brute force


def brute_force(cases: list[tuple], thresholds=DEFAULT_THRESHOLDS) -> tuple[float, float, list[float]]:
    """Acc^th, Prec^th and the confusion curve from per-segment boolean masks, pair by pair."""
    tp = gt_px = pred_px = 0
    confused = np.zeros(len(thresholds))
    num_pred = 0
    for gt, gt_segs, pred, pred_segs in cases:
        void = gt == 0
        crowd = np.zeros(gt.shape, dtype=bool)
        for g in gt_segs:
            if g.iscrowd:
                crowd |= gt == g.id
        for g in gt_segs:
            if CATEGORIES[g.category_id].isthing and not g.iscrowd:
                gt_px += int((gt == g.id).sum())
        for p in pred_segs:
            if not CATEGORIES[p.category_id].isthing:
                continue
            p_mask = pred == p.id
            pred_px += int((p_mask & ~void & ~crowd).sum())
            covered = 0
            fractions = []
            for g in gt_segs:
                g_mask = gt == g.id
                inter = int((g_mask & p_mask).sum())
                if CATEGORIES[g.category_id].isthing and not g.iscrowd:
                    fractions.append(inter / g_mask.sum())
                if g.iscrowd or g.category_id != p.category_id:
                    continue
                union = int((g_mask | p_mask).sum()) - int((p_mask & void).sum())
                if inter / union > 0.5:
                    tp += inter
                    covered += 1
            assert covered <= 1
            num_pred += 1
            confused += np.array([sum(f > t for f in fractions) >= 2 for t in thresholds])
    return tp / gt_px, tp / pred_px, (confused / num_pred).tolist()


def test_acc_prec_and_curve_equal_brute_force():
    cases = [random_case(100 + seed, 24, 40) for seed in range(25)]
    evaluator = PanopticEvaluator(CATEGORIES)
    for case in cases:
        evaluator.process(*case)
    result = evaluator.summarize()
    acc, prec, curve = brute_force(cases)
    assert result["acc_th"] == pytest.approx(acc, abs=1e-12)
    assert result["prec_th"] == pytest.approx(prec, abs=1e-12)
    assert result["confusion_curve"]["ratio"] == pytest.approx(curve, abs=1e-12)
    assert max(curve) > 0 and 0 < acc < 1 and 0 < prec < 1


def brute_force_fates(cases: list[tuple]) -> tuple[dict[str, int], dict[str, int]]:
    """GT and predicted thing pixels by fate, pixel by pixel from boolean masks (module docstring
    of ibs_study.metrics.panoptic): each thing prediction's own GT is its match, else the
    earliest-listed non-crowd GT thing it shares the most pixels with."""
    gt_fate = dict.fromkeys(GT_THING_PIXEL_FATES, 0)
    pred_fate = dict.fromkeys(PRED_THING_PIXEL_FATES, 0)
    for gt, gt_segs, pred, pred_segs in cases:
        void = gt == 0
        is_thing = {s.id: CATEGORIES[s.category_id].isthing for s in (*gt_segs, *pred_segs)}
        gt_things = [g for g in gt_segs if is_thing[g.id] and not g.iscrowd]
        own, matched = {}, {}
        for p in pred_segs:
            p_mask = pred == p.id
            for g in gt_segs:
                g_mask = gt == g.id
                union = int((g_mask | p_mask).sum()) - int((p_mask & void).sum())
                inter = int((g_mask & p_mask).sum())
                if not g.iscrowd and g.category_id == p.category_id and inter / union > 0.5:
                    matched[p.id] = g.id
            best = max(gt_things, key=lambda g: int(((gt == g.id) & p_mask).sum()), default=None)
            if p.id in matched:
                own[p.id] = matched[p.id]
            elif best is not None and ((gt == best.id) & p_mask).any():
                own[p.id] = best.id
        thing_gt_ids = {g.id for g in gt_things}
        stuff_gt_ids = {g.id for g in gt_segs if not is_thing[g.id] and not g.iscrowd}
        for g_id, p_id in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            p_thing = p_id != 0 and is_thing[p_id]
            if g_id in thing_gt_ids:
                if p_id == 0:
                    gt_fate["unlabelled"] += 1
                elif not p_thing:
                    gt_fate["stuff"] += 1
                elif own.get(p_id) == g_id:
                    gt_fate["matched" if p_id in matched else "unmatched_own"] += 1
                else:
                    gt_fate["other_instance"] += 1
            if p_thing and g_id in thing_gt_ids:
                if own.get(p_id) == g_id:
                    pred_fate["matched" if p_id in matched else "unmatched_own"] += 1
                else:
                    pred_fate["other_instance"] += 1
            elif p_thing and g_id in stuff_gt_ids:
                pred_fate["stuff"] += 1
    return gt_fate, pred_fate


def test_thing_pixel_breakdown_equals_brute_force():
    cases = [random_case(300 + seed, 16, 32, merge_prob=0.5, split_prob=0.3) for seed in range(20)]
    evaluator = PanopticEvaluator(CATEGORIES)
    for case in cases:
        evaluator.process(*case)
    result = evaluator.summarize()
    breakdown = result["thing_pixel_breakdown"]
    gt_fate, pred_fate = brute_force_fates(cases)
    assert breakdown["gt_pixels"] == gt_fate and breakdown["pred_pixels"] == pred_fate
    assert sum(gt_fate.values()) == result["pixels"]["gt_th"]
    assert sum(pred_fate.values()) == result["pixels"]["pred_th"]
    assert (
        breakdown["gt"]["matched"] == result["acc_th"] and breakdown["pred"]["matched"] == result["prec_th"]
    )
    assert sum(breakdown["gt"].values()) == pytest.approx(1.0, abs=1e-12)
    assert sum(breakdown["pred"].values()) == pytest.approx(1.0, abs=1e-12)
    assert all(gt_fate[name] > 0 for name in GT_THING_PIXEL_FATES)  # the cases exercise every fate
    assert all(pred_fate[name] > 0 for name in PRED_THING_PIXEL_FATES)


# --------------------------------------------------------------------------- torchmetrics


def as_torchmetrics_input(id_map: np.ndarray, segments: list[Segment]) -> torch.Tensor:
    """(1, H, W, 2) (category id, instance id) with category 0 (unknown: void) for id 0."""
    category = np.zeros(int(id_map.max()) + 1, dtype=np.int64)
    for s in segments:
        category[s.id] = s.category_id
    return torch.from_numpy(np.stack([category[id_map], id_map.astype(np.int64)], axis=-1))[None]


def test_agrees_with_torchmetrics_where_it_applies():
    """torchmetrics has no crowd, merges stuff segments per class, treats predicted void as
    ignorable and computes IoU in float32. The cases avoid the first three: no crowd, one
    segment per stuff class (the simulated predictions keep that), no predicted void
    (``fill_void``). For the fourth: unions here are below 2^11 pixels, so an IoU differs from
    1/2 by at least 2^-12, far more than float32 rounding (2^-24): the IoU > 0.5 decisions
    agree, and the sums agree to float32 precision."""
    from torchmetrics.detection import PanopticQuality

    things = {c.id for c in CATEGORIES.values() if c.isthing}
    stuffs = {c.id for c in CATEGORIES.values() if not c.isthing}
    metric = PanopticQuality(things=things, stuffs=stuffs, return_sq_and_rq=True)
    evaluator = PanopticEvaluator(CATEGORIES)
    for seed in range(20):
        rng = np.random.default_rng(200 + seed)
        gt, gt_segs = street_scene(24, 40, CATEGORIES, rng, num_things=8, crowd_prob=0.0)
        pred, pred_segs = perturb_prediction(gt, gt_segs, CATEGORIES, rng, merge_prob=0.4, fill_void=True)
        case = (gt, gt_segs, pred, pred_segs)
        assert gt.size < 2**11 and (pred != 0).all()
        evaluator.process(*case)
        metric.update(as_torchmetrics_input(case[2], case[3]), as_torchmetrics_input(case[0], case[1]))
    pq, sq, rq = metric.compute().tolist()
    ours = evaluator.summarize()["all"]
    assert (ours["pq"], ours["sq"], ours["rq"]) == pytest.approx((pq, sq, rq), rel=1e-6)


# --------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_ground_truth_against_itself_is_perfect(seed):
    rng = np.random.default_rng(seed)
    gt, gt_segs = street_scene(24, 48, CATEGORIES, rng, num_things=int(rng.integers(1, 12)), crowd_prob=0.5)
    evaluator = PanopticEvaluator(CATEGORIES)
    evaluator.process(gt, gt_segs, gt, gt_segs)
    result = evaluator.summarize()
    present = {s.category_id for s in gt_segs if not s.iscrowd}
    assert result["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": len(present)}
    if result["pixels"]["gt_th"]:
        assert result["acc_th"] == result["prec_th"] == 1.0
    assert max(result["confusion_curve"]["ratio"]) == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariant_to_segment_ids_and_order(seed):
    gt, gt_segs, pred, pred_segs = random_case(seed, 24, 48)
    rng = np.random.default_rng(seed + 1)

    def relabel(id_map, segments):
        new_ids = rng.choice(np.arange(1, 2**24), size=len(segments), replace=False)
        lookup = dict(zip([s.id for s in segments], new_ids.tolist()))
        mapping = np.zeros(int(id_map.max()) + 1, dtype=np.int64)
        for old, new in lookup.items():
            mapping[old] = new
        moved = [Segment(lookup[s.id], s.category_id, s.iscrowd, s.area, s.bbox, s.score) for s in segments]
        return mapping[id_map], moved

    def summary(*case):
        evaluator = PanopticEvaluator(CATEGORIES, keep_records=False)
        evaluator.process(*case)
        return evaluator.summarize()

    reference = summary(gt, gt_segs, pred, pred_segs)
    assert summary(*relabel(gt, gt_segs), *relabel(pred, pred_segs)) == reference
    shuffled = summary(
        gt,
        [gt_segs[i] for i in rng.permutation(len(gt_segs))],
        pred,
        [pred_segs[i] for i in rng.permutation(len(pred_segs))],
    )
    for key in ("all", "things", "stuff"):
        assert shuffled[key] == pytest.approx(reference[key], abs=1e-12)
    assert shuffled["pixels"] == reference["pixels"]
    assert shuffled["confusion_curve"] == reference["confusion_curve"]


# The scores of the random split as the evaluator gave them before threads replaced worker
# processes and the PNG kernel became a cached library (7c6788a): scoring must not change them.
EXPECTED_RANDOM_SPLIT = {
    "all": {"pq": 0.717479147066376, "sq": 0.9051450041152784, "rq": 0.7787351422183201, "n": 19},
    "things": {"pq": 0.41548769556221454, "sq": 0.8468125884569602, "rq": 0.4896614039449807, "n": 8},
    "stuff": {"pq": 0.9371092936148572, "sq": 0.9475685791395101, "rq": 0.9889705882352942, "n": 11},
    "acc_th": 0.5121769098219414,
    "prec_th": 0.5819356522874111,
}
EXPECTED_CONFUSED = [80, 65, 59, 47, 43, 39, 34, 31, 29, 25, 24, 23, 23, 20, 20, 17, 15, 14, 14]  # of 335


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_scores_are_those_of_the_earlier_evaluator(random_split, workers):
    paths, _ = random_split
    results, records = evaluate_panoptic_folders(*paths, workers=workers)
    assert {key: results[key] for key in EXPECTED_RANDOM_SPLIT} == EXPECTED_RANDOM_SPLIT
    curve = results["confusion_curve"]
    assert curve["num_predictions"] == len(records) == 335
    assert curve["ratio"] == [count / 335 for count in EXPECTED_CONFUSED]
