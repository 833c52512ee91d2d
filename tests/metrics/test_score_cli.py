"""``ibs-study score`` end to end: printed table, JSON contract, confusion-curve CSV, errors."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ibs_study.cli import main
from ibs_study.data.datasets import CITYSCAPES_META
from ibs_study.data.panoptic import write_id_png
from ibs_study.metrics.panoptic import DEFAULT_THRESHOLDS
from tests.fixtures.simulate import perturb_prediction, street_scene

CATEGORIES = CITYSCAPES_META.by_id()


@pytest.fixture
def folders(tmp_path, write_split) -> list[str]:
    rng = np.random.default_rng(7)
    gt, pred = [], []
    for k in range(4):
        id_map, segments = street_scene(48, 96, CATEGORIES, rng, num_things=12)
        gt.append((f"img{k}", id_map, segments))
        pred.append((f"img{k}", *perturb_prediction(id_map, segments, CATEGORIES, rng, merge_prob=0.5)))
    gt_json, gt_dir = write_split(tmp_path / "gt", gt, CATEGORIES)
    pred_json, pred_dir = write_split(tmp_path / "pred", pred, CATEGORIES)
    return [
        "--gt-json",
        str(gt_json),
        "--gt-dir",
        str(gt_dir),
        "--pred-json",
        str(pred_json),
        "--pred-dir",
        str(pred_dir),
    ]


def test_score_writes_json_and_csv(folders, tmp_path, capsys):
    out_json, out_csv = tmp_path / "m.json", tmp_path / "curve.csv"
    assert (
        main(["score", *folders, "--json", str(out_json), "--curve-csv", str(out_csv), "--workers", "2"]) == 0
    )
    printed = capsys.readouterr().out
    results = json.loads(out_json.read_text())

    required = {
        "all",
        "things",
        "stuff",
        "per_class",
        "acc_th",
        "prec_th",
        "confusion_curve",
        "thing_pixel_breakdown",
        "num_images",
        "timing",
    }
    assert required <= set(results)
    for group in ("all", "things", "stuff"):
        assert set(results[group]) == {"pq", "sq", "rq", "n"}
        assert all(0 <= results[group][m] <= 1 for m in ("pq", "sq", "rq"))
    assert set(results["per_class"]) == {c.name for c in CATEGORIES.values()}
    assert {"pq", "sq", "rq", "isthing"} <= set(results["per_class"]["car"])
    assert results["per_class"]["car"]["isthing"] is True and results["per_class"]["road"]["isthing"] is False
    assert {"thresholds", "ratio"} <= set(results["confusion_curve"])
    assert results["confusion_curve"]["thresholds"] == list(DEFAULT_THRESHOLDS)
    assert (
        set(results["timing"]) == {"total_s", "per_image_s", "workers"} and results["timing"]["workers"] == 2
    )
    assert results["num_images"] == 4 and 0 < results["acc_th"] < 1 and 0 < results["prec_th"] < 1

    # the table prints percentages of the same numbers
    assert f"{100 * results['all']['pq']:7.1f}" in printed.splitlines()[2]
    assert f"Acc^th  {100 * results['acc_th']:5.1f}" in printed
    breakdown = results["thing_pixel_breakdown"]
    assert set(breakdown["gt"]) == {"matched", "unmatched_own", "other_instance", "stuff", "unlabelled"}
    assert set(breakdown["pred"]) == {"matched", "unmatched_own", "other_instance", "stuff"}
    assert f"other_instance {100 * breakdown['pred']['other_instance']:.1f}" in printed
    assert "4 images in" in printed

    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["threshold", "ratio", "ratio_S", "ratio_M", "ratio_L"]
    assert [float(r["threshold"]) for r in rows] == list(DEFAULT_THRESHOLDS)
    assert [float(r["ratio"]) for r in rows] == results["confusion_curve"]["ratio"]
    assert [float(r["ratio_L"]) for r in rows] == results["confusion_curve"]["by_size"]["L"]["ratio"]


def test_score_reports_bad_input(folders, tmp_path, capsys):
    pred_json = Path(folders[5])
    data = json.loads(pred_json.read_text())
    data["annotations"] = data["annotations"][1:]
    pred_json.write_text(json.dumps(data))
    assert main(["score", *folders]) == 2
    assert "no prediction for 1 of 4" in capsys.readouterr().err
    assert main(["score", *folders, "--allow-missing"]) == 0
    assert "1 image(s) had no prediction and count as all false negatives" in capsys.readouterr().out


def test_score_as_a_command(folders, tmp_path):
    out_json = tmp_path / "m.json"
    env = dict(
        os.environ, PYTHONWARNINGS="error::DeprecationWarning:torchvision.io.image"
    )  # no per-call warning
    run = subprocess.run(
        [sys.executable, "-m", "ibs_study", "score", *folders, "--json", str(out_json)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Things" in run.stdout and json.loads(out_json.read_text())["num_images"] == 4


def _drop_png(pred_json: Path, pred_dir: Path) -> None:
    (pred_dir / "1.png").unlink()


def _non_utf8_json(pred_json: Path, pred_dir: Path) -> None:
    pred_json.write_bytes(b'{"annotations": ["\xff\xfe caf\xe9"]}')


def _truncated_json(pred_json: Path, pred_dir: Path) -> None:
    pred_json.write_text(pred_json.read_text()[:-20])


def _edit_annotation(image_id: str, **changes) -> Callable[[Path, Path], None]:
    def edit(pred_json: Path, pred_dir: Path) -> None:
        data = json.loads(pred_json.read_text())
        annotation = next(a for a in data["annotations"] if a["image_id"] == image_id)
        for key, change in changes.items():
            annotation[key] = change(annotation[key])
        pred_json.write_text(json.dumps(data))

    return edit


def _garbage_png(pred_json: Path, pred_dir: Path) -> None:
    data = (pred_dir / "0.png").read_bytes()
    (pred_dir / "0.png").write_bytes(data[: len(data) // 2])  # truncated inside its image data


def _small_png(pred_json: Path, pred_dir: Path) -> None:
    write_id_png(pred_dir / "2.png", np.zeros((24, 48), dtype=np.int64))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (_drop_png, r"png/1\.png: prediction PNG for image id 'img1' not found"),
        (_non_utf8_json, r"panoptic\.json: the panoptic JSON is not UTF-8 text"),
        (_truncated_json, r"panoptic\.json: the panoptic JSON is not valid JSON"),
        (
            _edit_annotation("img2", segments_info=lambda _: None),
            r"panoptic\.json: image id 'img2': segments_info must be a list, got None",
        ),
        (
            _edit_annotation("img1", segments_info=lambda s: [*s[:1], {"id": "x", "category_id": 26}]),
            r"panoptic\.json: image id 'img1': segments_info\[1\]\.id must be an integer, got 'x'",
        ),
        (_garbage_png, r"image id 'img0': .*png/0\.png: not a readable PNG \(truncated"),
        (
            _edit_annotation("img3", segments_info=lambda s: [*s, {"id": 999, "category_id": 26}]),
            r"png/3\.png \(image id 'img3'\): segment id 999 is listed in the JSON but absent from the PNG",
        ),
        (
            _small_png,
            r"png/2\.png \(image id 'img2'\): size \(24, 48\) \(H, W\) differs from the ground truth's",
        ),
    ],
)
def test_bad_predictions_are_one_line_errors(folders, capsys, damage, expected):
    damage(Path(folders[5]), Path(folders[7]))
    assert main(["score", *folders, "--workers", "2"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ibs-study score: error: "), captured.err
    assert re.search(expected, lines[0]), lines[0]
    assert captured.out == ""


def test_a_bad_prediction_png_exits_2_without_traceback(folders):
    _garbage_png(Path(folders[5]), Path(folders[7]))
    run = subprocess.run(
        [sys.executable, "-m", "ibs_study", "score", *folders], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert "image id 'img0'" in run.stderr and "0.png: not a readable PNG" in run.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_ground_truth_png_decoded_ahead_keeps_its_error_and_its_turn(folders, capsys, workers):
    """The first ground-truth PNGs decode while the prediction JSON is read: a truncated one is
    still named with its image id, and a broken prediction JSON is still reported first."""
    gt_png = Path(folders[3]) / "1.png"
    gt_png.write_bytes(gt_png.read_bytes()[:100])
    assert main(["score", *folders, "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"ibs-study score: error: image id 'img1': .*gt/png/1\.png: not a readable PNG \(.*", err
    )
    _truncated_json(Path(folders[5]), Path(folders[7]))
    assert main(["score", *folders, "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"ibs-study score: error: .*panoptic\.json: the panoptic JSON is not valid JSON.*", err
    ), err
