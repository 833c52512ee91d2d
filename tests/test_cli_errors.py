"""Bad input to any command ends in one line ``ibs-study COMMAND: error: ...`` naming the culprit,
with exit status 2 and no traceback; a bug keeps its traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ibs_study import cli
from ibs_study.cli import main
from ibs_study.config import resolve_config, save_config

METRICS = {"all": {"pq": 0.5}, "things": {"pq": 0.4}, "stuff": {"pq": 0.6}, "acc_th": 0.3, "prec_th": 0.2}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic dataset, copies of it with one fault each, two evaluated run folders
    (no checkpoints: enough for ``compare``) and a few broken files."""
    root = tmp_path_factory.mktemp("cli_errors")
    data = root / "data"
    assert main(["synth", "--out", str(data), "--scale", "tiny", "--num-train", "1", "--num-val", "1"]) == 0

    def faulty(name: str, fault) -> Path:
        copy = root / name
        shutil.copytree(data, copy)
        path = copy / "annotations" / "panoptic_val.json"
        content = json.loads(path.read_text())
        written = fault(content)
        path.write_bytes(written if isinstance(written, bytes) else json.dumps(content).encode())
        return copy

    def segments_null(d):
        d["annotations"][0]["segments_info"] = None

    def segment_id_text(d):
        d["annotations"][0]["segments_info"][0]["id"] = "seven"

    def annotations_object(d):
        d["annotations"] = {"0": d["annotations"][0]}

    def not_utf8(d):
        d["categories"][0]["name"] = "CAFE"
        return json.dumps(d).replace("CAFE", "caf\xe9").encode("latin-1")

    def truncated(d):
        return json.dumps(d).encode()[:200]

    paths = {
        "data": data,
        "segments_null": faulty("segments_null", segments_null),
        "segment_id_text": faulty("segment_id_text", segment_id_text),
        "annotations_object": faulty("annotations_object", annotations_object),
        "not_utf8": faulty("not_utf8", not_utf8),
        "truncated": faulty("truncated", truncated),
    }
    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=["train.max_steps=3"])
    for name, metrics in (("a_s0", json.dumps(METRICS)), ("b_s0", '{"all": {"pq": 0.5}, "thi')):
        run = root / "runs" / name
        (run / "eval_val").mkdir(parents=True)
        save_config(cfg, run / "config.yaml")
        (run / "eval_val" / "metrics.json").write_text(metrics)
    paths["runs"] = root / "runs"
    files = {
        "latin1.json": '{"name": "caf\xe9"}'.encode("latin-1"),
        "results_rows_null.json": b'{"rows": null}',
        "results_row_lacks.json": b'{"rows": [{"model": "pfcn", "setting": "crop"}]}',
        "metrics.json": json.dumps(METRICS).encode(),
        "bad_syntax.yaml": b"optimizer: {lr: [1,\n",
        "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "base_number.yaml": b"_base_: 3\n",
        "a_file": b"",
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
        paths[name] = root / name
    paths["root"] = root
    return paths


def _train(world, *settings: str) -> list[str]:
    argv = ["train", "--preset", "synthetic_pfcn_crop", "--out", str(world["root"] / "new_run")]
    for item in settings:
        argv += ["--set", item]
    return argv


# (id, argv from the fixture's paths, text the one line must hold)
CASES = [
    ("synth-height-0", lambda w: ["synth", "--out", str(w["root"] / "s"), "--height", "0"], "--height"),
    ("synth-num-train-neg", lambda w: ["synth", "--out", str(w["root"] / "s"), "--num-train", "-3"], "--num-train"),
    ("synth-workers-0", lambda w: ["synth", "--out", str(w["root"] / "s"), "--workers", "0"], "--workers"),
    ("synth-jitter-nan", lambda w: ["synth", "--out", str(w["root"] / "s"), "--colour-jitter", "nan"], "nan"),
    ("synth-jitter-300", lambda w: ["synth", "--out", str(w["root"] / "s"), "--colour-jitter", "300"], "colour_jitter"),
    ("synth-height-8", lambda w: ["synth", "--out", str(w["root"] / "s"), "--height", "8"], "32x32"),
    ("synth-no-images", lambda w: ["synth", "--out", str(w["root"] / "s"), "--num-train", "0", "--num-val", "0"], "num_train"),
    ("synth-out-not-empty", lambda w: ["synth", "--out", str(w["data"]), "--scale", "tiny"], "not empty"),
    ("synth-out-file", lambda w: ["synth", "--out", str(w["a_file"])], "a_file exists and is not a folder"),
    ("stats-segments-null", lambda w: ["stats", str(w["segments_null"]), "--split", "val"], "segments_info"),
    ("stats-segment-id-text", lambda w: ["stats", str(w["segment_id_text"]), "--split", "val"], "segments_info[0].id"),
    ("stats-annotations-object", lambda w: ["stats", str(w["annotations_object"]), "--split", "val"], "'annotations' must be a list"),
    ("stats-not-utf8", lambda w: ["stats", str(w["not_utf8"]), "--split", "val"], "not_utf8/annotations/panoptic_val.json: the panoptic JSON is not UTF-8"),
    ("stats-truncated", lambda w: ["stats", str(w["truncated"]), "--split", "val"], "truncated/annotations/panoptic_val.json: the panoptic JSON is not valid JSON"),
    ("stats-kind", lambda w: ["stats", str(w["data"]), "--kind", "kitti"], "--kind"),
    ("stats-crop-0", lambda w: ["stats", str(w["data"]), "--crop", "0", "4"], "--crop"),
    ("train-lr-nan", lambda w: _train(w, "optimizer.lr=nan"), "optimizer.lr=nan"),
    ("train-lr-inf", lambda w: _train(w, "optimizer.lr=inf"), "optimizer.lr=inf"),
    ("train-ibs-weight-neg", lambda w: _train(w, "ibs.weight=-1"), "ibs.weight"),
    ("train-threshold", lambda w: _train(w, "model.panoptic_fcn.thing_score_threshold=-0.5"), "model.panoptic_fcn.thing_score_threshold"),
    ("train-batch-0", lambda w: _train(w, "train.batch_size=0"), "train.batch_size"),
    ("train-workers-neg", lambda w: _train(w, "data.num_workers=-1"), "data.num_workers"),
    ("train-weight-decay-neg", lambda w: _train(w, "optimizer.weight_decay=-0.1"), "optimizer.weight_decay"),
    ("train-device", lambda w: _train(w, "train.device=tpu"), "train.device"),
    ("train-root-empty", lambda w: _train(w, "data.root="), "data.root is empty"),
    ("train-scale-range-order", lambda w: _train(w, "data.scale_range=[2, 1]"), "data.scale_range"),
    ("train-set-yaml", lambda w: _train(w, "data.crop_size=[1,"), "data.crop_size"),
    ("train-set-no-equals", lambda w: _train(w, "optimizer.lr"), "optimizer.lr"),
    ("train-config-syntax", lambda w: ["train", "--config", str(w["bad_syntax.yaml"]), "--out", "x"], "bad_syntax.yaml: not valid YAML"),
    ("train-config-latin1", lambda w: ["train", "--config", str(w["latin1.yaml"]), "--out", "x"], "latin1.yaml: the config file is not UTF-8"),
    ("train-config-base", lambda w: ["train", "--config", str(w["base_number.yaml"]), "--out", "x"], "_base_"),
    ("train-preset", lambda w: ["train", "--preset", "nope", "--out", "x"], "unknown preset 'nope'"),
    ("train-out-file", lambda w: ["train", "--preset", "synthetic_pfcn_crop", "--out", str(w["a_file"])], "a_file"),
    ("evaluate-max-images", lambda w: ["evaluate", str(w["runs"] / "a_s0"), "--max-images", "-1"], "--max-images"),
    ("evaluate-device", lambda w: ["evaluate", str(w["runs"] / "a_s0"), "--device", "tpu"], "tpu"),
    ("evaluate-split-empty", lambda w: ["evaluate", str(w["runs"] / "a_s0"), "--split", ""], "--split"),
    ("evaluate-no-run", lambda w: ["evaluate", str(w["root"] / "absent")], "absent: not a run directory"),
    ("oracle-max-images", lambda w: ["oracle", str(w["runs"] / "a_s0"), "--max-images", "0"], "--max-images"),
    ("compare-truncated-metrics", lambda w: ["compare", str(w["runs"] / "a"), str(w["runs"] / "b"), "--seeds", "0"], "b_s0/eval_val/metrics.json: the metrics JSON is not valid JSON"),
    ("compare-seed-twice", lambda w: ["compare", str(w["runs"] / "a"), str(w["runs"] / "a"), "--seeds", "0", "0"], "repeat a seed"),
    ("compare-seed-neg", lambda w: ["compare", str(w["runs"] / "a"), str(w["runs"] / "a"), "--seeds", "-1"], "--seeds"),
    ("compare-metric", lambda w: ["compare", str(w["runs"] / "a"), str(w["runs"] / "a"), "--seeds", "0", "--metrics", "pqq"], "['pqq']"),
    ("figures-metrics-json", lambda w: ["figures", "--results", str(w["metrics.json"]), "--out", str(w["root"] / "f")], "metrics.json: not a study results JSON"),
    ("figures-not-utf8", lambda w: ["figures", "--results", str(w["latin1.json"]), "--out", str(w["root"] / "f")], "latin1.json: the results JSON is not UTF-8"),
    ("figures-rows-null", lambda w: ["figures", "--results", str(w["results_rows_null.json"]), "--out", str(w["root"] / "f")], "rows must be a list"),
    ("figures-row-lacks", lambda w: ["figures", "--results", str(w["results_row_lacks.json"]), "--out", str(w["root"] / "f")], "rows[0] lacks"),
    ("figures-top-k", lambda w: ["figures", "--top-k", "0"], "--top-k"),
    ("operating-curve-nan", lambda w: ["operating-curve", str(w["runs"] / "a_s0"), "--values", "nan"], "nan"),
    ("presets-unknown", lambda w: ["presets", "nope"], "unknown preset 'nope'"),
    ("presets-extra", lambda w: ["presets", "synthetic_pfcn_crop", "more"], "unrecognized arguments: more"),
    ("demo-steps", lambda w: ["demo", "--steps", "0"], "--steps"),
    ("score-workers", lambda w: ["score", "--gt-json", "g", "--gt-dir", "g", "--pred-json", "p", "--pred-dir", "p", "--workers", "0"], "--workers"),
]  # fmt: skip


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as done:  # argparse
        status = done.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("make_argv, culprit", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_naming_the_culprit(world, make_argv, culprit, capsys):
    argv = make_argv(world)
    status, err = _run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ibs-study {argv[0]}: error: "), lines[0]
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only input errors are reported as one line: anything else propagates (its traceback shows)."""

    def broken(args):
        return {}["missing"]

    help_text, add_arguments, _ = cli.COMMANDS["presets"]
    monkeypatch.setitem(cli.COMMANDS, "presets", (help_text, add_arguments, broken))
    with pytest.raises(KeyError, match="missing"):
        main(["presets"])
    assert "error:" not in capsys.readouterr().err


def test_weights_that_cannot_be_downloaded_name_the_key(monkeypatch):
    """Offline, pretrained weights missing from torch's cache are a ConfigError naming the key."""
    import urllib.error

    import torchvision.models._api

    from ibs_study.config import ConfigError
    from ibs_study.models.backbone import BackboneConfig, build_backbone

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=r"model\.backbone\.weights='IMAGENET1K_V1'.*weights=null"):
        build_backbone(BackboneConfig(name="resnet18", weights="IMAGENET1K_V1"))


def test_a_missing_dataset_root_is_the_only_message(tmp_path, capsys, caplog):
    """``stats`` on a folder that does not exist: the one error line, no warning before it."""
    missing = tmp_path / "no_such_dataset"
    status, err = _run(["stats", str(missing)], capsys)
    assert status == 2 and err.strip().splitlines() == [
        f"ibs-study stats: error: {missing}: synthetic dataset root (data.root) not found; generate one "
        f"with `ibs-study synth --out {missing}`"
    ]
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
