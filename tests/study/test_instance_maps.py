"""Instance predictions written as a panoptic folder for the explorer (ibs_study.study.instance_maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ibs_study.config import load_preset, save_config
from ibs_study.data.panoptic import read_id_png
from ibs_study.engine.data import open_split
from ibs_study.metrics.instance import evaluate_instances, read_instance_results
from ibs_study.metrics.io import load_prediction_json
from ibs_study.metrics.panoptic import ConfusionRecord, PanopticEvaluator
from ibs_study.study.instance_maps import instance_eval_to_panoptic
from ibs_study.study.runs import smoke_overrides


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory):
    """A hand-made evaluated instance run on the tiny synthetic val split (2 images evaluated).

    Image 0: every non-crowd thing predicted exactly (score 0.9), one mask merging its two
    largest cars (score 0.95, wins their pixels) and one car mask at score 0.3 (below the
    threshold). Image 1: no prediction at all.
    """
    root = tmp_path_factory.mktemp("instance_run")
    cfg = load_preset("synthetic_m2f_instance_crop", smoke_overrides(root / "data"))
    dataset = open_split(cfg, "val")
    run_dir = root / "run"
    (run_dir / "eval_val").mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")
    sample = dataset[0]
    categories = dataset.meta.by_id()
    things = [s for s in sample.segments if categories[s.category_id].isthing and not s.iscrowd]
    cars = sorted((s for s in things if categories[s.category_id].name == "car"), key=lambda s: -s.area)[:2]
    entries = [
        {
            "image_id": sample.image_id,
            "category_id": s.category_id,
            "score": 0.9,
            "segmentation": _rle(sample.id_map == s.id),
        }
        for s in things
    ]
    merged = np.isin(sample.id_map, [c.id for c in cars])
    entries.append(
        {
            "image_id": sample.image_id,
            "category_id": cars[0].category_id,
            "score": 0.95,
            "segmentation": _rle(merged),
        }
    )
    entries.append(
        {
            "image_id": sample.image_id,
            "category_id": cars[0].category_id,
            "score": 0.3,
            "segmentation": _rle(sample.id_map == cars[1].id),
        }
    )
    (run_dir / "eval_val" / "instances.json").write_text(json.dumps(entries))
    (run_dir / "eval_val" / "metrics.json").write_text(json.dumps({"num_images": 2}))
    return run_dir, dataset, sample, cars, len(things)


def test_instance_predictions_become_a_panoptic_folder(instance_run, tmp_path):
    run_dir, dataset, sample, cars, num_things = instance_run
    out = instance_eval_to_panoptic(run_dir, tmp_path / "maps")
    annotations = load_prediction_json(out / "predictions.json", dataset.meta.by_id())
    by_image = {record.image_id: record for record in annotations.records}
    assert list(by_image) == [dataset.records[0].image_id, dataset.records[1].image_id]
    assert by_image[dataset.records[1].image_id].segments == []  # no prediction: empty map
    segments = by_image[sample.image_id].segments
    # the merged mask (score 0.95) takes both cars' pixels: their own masks are empty and dropped;
    # the 0.3 mask is below the threshold
    assert len(segments) == num_things - 2 + 1
    assert sorted(s.score for s in segments)[-1] == pytest.approx(0.95)
    assert all(s.score >= 0.5 for s in segments)
    records = [
        ConfusionRecord.from_json(json.loads(line)) for line in (out / "confusion_records.jsonl").open()
    ]
    assert len(records) == len(segments)
    merged = max(records, key=lambda r: r.area)
    assert merged.area == cars[0].area + cars[1].area
    assert sorted(o.gt_id for o in merged.covered_things(0.5)) == sorted(c.id for c in cars)
    with pytest.raises(FileExistsError, match="predictions.json exists"):
        instance_eval_to_panoptic(run_dir, out)


def test_pixel_metrics_of_the_folder_equal_the_instance_evaluator(instance_run, tmp_path):
    run_dir, dataset, _, _, _ = instance_run
    out = instance_eval_to_panoptic(run_dir, tmp_path / "maps")
    evaluator = PanopticEvaluator(dataset.meta)
    for index, record in enumerate(
        load_prediction_json(out / "predictions.json", dataset.meta.by_id()).records
    ):
        pred = read_id_png(out / "predictions" / record.png_name)
        evaluator.process(dataset.read_id_map(index), dataset.records[index].segments, pred, record.segments)
    results = evaluator.summarize()
    expected = evaluate_instances(
        (dataset[i] for i in range(2)),
        read_instance_results(run_dir / "eval_val" / "instances.json"),
        categories=dataset.meta.by_id(),
        allow_missing=True,
    )
    assert results["acc_th"] == pytest.approx(expected["acc_th"])
    assert results["prec_th"] == pytest.approx(expected["prec_th"])
    assert 0 < expected["acc_th"] < 1


def test_a_panoptic_run_is_refused(tmp_path):
    cfg = load_preset("synthetic_pfcn_crop", smoke_overrides(tmp_path / "data"))
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.yaml")
    with pytest.raises(ValueError, match="eval.task is 'panoptic'"):
        instance_eval_to_panoptic(tmp_path / "run", tmp_path / "maps")
