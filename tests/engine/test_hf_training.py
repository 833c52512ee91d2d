"""transformers' models through the CLI: two training steps of every synthetic HF preset, and an
evaluation whose COCO-panoptic files give panopticapi's PQ."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ibs_study.cli import main  # noqa: E402
from ibs_study.data.panoptic import check_segments_match_png, load_panoptic_json, read_id_png  # noqa: E402

PRESETS = (
    "synthetic_hf_m2f_crop",
    "synthetic_hf_m2f_crop_ibs",
    "synthetic_hf_eomt_crop",
    "synthetic_hf_eomt_crop_ibs",
)
TINY = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.log_every=1",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic"


def _train(preset: str, data_root: Path, run: Path) -> list[dict]:
    overrides = [arg for item in [f"data.root={data_root}", *TINY] for arg in ("--set", item)]
    assert main(["train", "--preset", preset, "--out", str(run), "--no-progress", *overrides]) == 0
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", PRESETS)
def test_two_steps_are_finite_and_log_the_ibs_term(preset, data_root, tmp_path):
    records = _train(preset, data_root, tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2]
    ibs = preset.endswith("_ibs")
    for record in records:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
        assert ("loss_ibs" in record) is ibs
        assert {"loss_mask", "loss_dice", "loss_cross_entropy", "loss_mask_0"} <= set(record)
        if ibs:
            assert record["loss_ibs"] > 0 and record["matched_things"] > 0


def test_evaluation_writes_coco_panoptic_with_panopticapis_pq(data_root, tmp_path):
    """Every query kept (thresholds 0), so the two-step model predicts segments in every image;
    the files are valid and panopticapi reads the same PQ, SQ and RQ from them."""
    from panopticapi.evaluation import pq_compute

    run = tmp_path / "run"
    _train("synthetic_hf_eomt_crop_ibs", data_root, run)
    out = tmp_path / "eval"
    keep_all = [
        "model.hf.object_mask_threshold=0",
        "model.hf.mask_threshold=0",
        "model.hf.overlap_threshold=0",
    ]
    args = ["evaluate", str(run), "--out", str(out), "--no-progress"]
    assert main([*args, *[a for item in keep_all for a in ("--set", item)]]) == 0
    ours = json.loads((out / "metrics.json").read_text())
    predictions = load_panoptic_json(out / "predictions.json")
    assert sum(len(record.segments) for record in predictions.records) > 0
    for record in predictions.records:
        png = out / "predictions" / record.png_name
        check_segments_match_png(read_id_png(png), record.segments, png_path=png, image_id=record.image_id)
    gt_json = data_root / "annotations" / "panoptic_val.json"
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(
            str(gt_json),
            str(out / "predictions.json"),
            str(data_root / "panoptic_val"),
            str(out / "predictions"),
        )
    for key, ref_key in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert ours[key]["n"] == reference[ref_key]["n"]
        for metric in ("pq", "sq", "rq"):
            assert ours[key][metric] == pytest.approx(reference[ref_key][metric], abs=1e-9), (key, metric)
