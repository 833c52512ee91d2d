"""Training engine: run directories, logs, checkpoints, NaN stop, resume rules, evaluation outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ibs_study.cli import main
from ibs_study.config import resolve_config
from ibs_study.data.datasets import synthetic as open_synthetic
from ibs_study.data.panoptic import check_segments_match_png, load_panoptic_json, read_id_png
from ibs_study.engine.checkpoint import latest_checkpoint, load_checkpoint
from ibs_study.engine.data import open_split
from ibs_study.engine.evaluate import evaluate_run, rescore_run
from ibs_study.engine.optim import build_optimizer, lr_factor
from ibs_study.engine.run_dir import RunDirError
from ibs_study.engine.train import set_matmul_precision, step_generator, train, train_loader, train_step
from ibs_study.errors import ConfigError
from ibs_study.models.build import build_model

TINY = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.batch_size=4",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.device=cpu",
]


def _cfg(root: Path, preset: str = "synthetic_pfcn_crop_ibs", *extra: str):
    return resolve_config(preset=preset, overrides=[f"data.root={root}", *TINY, *extra])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic"


def test_train_writes_run_dir_logs_and_checkpoints(data_root, tmp_path):
    cfg = _cfg(data_root, "synthetic_pfcn_crop_ibs", "train.max_steps=3")
    result = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.steps == 3 and result.last_checkpoint == run / "checkpoints" / "step_00000003.pt"
    assert (run / "config.yaml").is_file()
    env = json.loads((run / "environment.json").read_text())
    assert env[0]["event"] == "start" and env[0]["packages"]["torch"] and env[0]["device"] == "cpu"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert {"loss_total", "loss_ibs", "lr"} <= set(record)
        own = sum(v for k, v in record.items() if k.startswith("loss_") and k != "loss_total")
        assert record["loss_total"] == pytest.approx(own, rel=1e-5)
        assert 0.0 <= record["ibs_pairs_share_thing_class"] <= 1.0
    state = load_checkpoint(result.last_checkpoint)
    assert state["step"] == 3 and set(state) >= {"model", "optimizer", "scheduler", "rng", "config"}
    assert any(run.glob("tensorboard/events.*"))
    # checkpoints are pruned to the newest two, written atomically (no temp files left)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000003.pt"]


def test_existing_run_dir_is_never_overwritten(data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"already exists and is not empty; pass --resume"):
        train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=1"), run, progress=False)
    assert (run / "notes.txt").read_text() == "mine"


def test_cli_reports_bad_input_as_one_error_line(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--preset", "synthetic_pfcn_crop", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibs-study train: error: ") and "already exists and is not empty" in err
    assert "Traceback" not in err and (run / "notes.txt").read_text() == "mine"
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "other")]) == 2
    assert "ibs-study train: error: unknown preset 'nope'; valid presets: [" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_resume_with_another_config_is_refused_unless_forced(data_root, tmp_path):
    run = tmp_path / "run"
    train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=2"), run, progress=False)
    other = _cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=2", "ibs.weight=3")
    with pytest.raises(RunDirError, match=r"refusing to resume with changes: ibs.weight: 1.0 -> 3.0"):
        train(other, run, resume=True, progress=False)
    result = train(other, run, resume=True, force=True, progress=False)
    assert result.steps == 2  # already at max_steps: nothing left to do


def test_nan_loss_stops_with_step_and_term_and_keeps_last_checkpoint(data_root, tmp_path, monkeypatch):
    import ibs_study.engine.train as engine

    real_build = engine.build_model
    calls = {"n": 0}

    def build_with_nan_at_step_3(cfg, meta):
        model = real_build(cfg, meta)
        forward = model.forward

        def forward_with_nan(images, targets):
            out = forward(images, targets)
            calls["n"] += 1
            if calls["n"] == 4:  # the 4th step (index 3)
                out.losses["loss_seg_th"] = out.losses["loss_seg_th"] * float("nan")
            return out

        model.forward = forward_with_nan
        return model

    monkeypatch.setattr(engine, "build_model", build_with_nan_at_step_3)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"step 3: non-finite loss term\(s\) \['loss_seg_th'\]"):
        train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=6"), run, progress=False)
    assert latest_checkpoint(run / "checkpoints").name == "step_00000002.pt"
    assert load_checkpoint(run / "checkpoints" / "step_00000002.pt")["step"] == 2


def test_non_finite_step_changes_no_weight_and_no_optimiser_state(data_root):
    """The finiteness check runs after the backward pass (one host read per step) but before
    the optimiser: a failing step leaves the model and the optimiser as they were."""
    cfg = _cfg(data_root, "synthetic_m2f_crop_ibs")
    dataset = open_split(cfg, cfg.data.train_split)
    batches = iter(train_loader(cfg, dataset))
    model = build_model(cfg.model, dataset.meta).train()
    optimizer = build_optimizer(model, cfg.optimizer)
    values = train_step(model, next(batches), cfg, optimizer, None, 0, step_generator(0, 0, 0))
    terms = [v for k, v in values.items() if k.startswith("loss_") and k != "loss_total"]
    assert "loss_ibs" in values and values["loss_total"] == pytest.approx(sum(terms), rel=1e-5)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = copy.deepcopy(optimizer.state_dict())
    forward = model.forward

    def forward_with_inf(images, targets):
        output = forward(images, targets)
        output.losses["loss_dice"] = output.losses["loss_dice"] * float("inf")
        return output

    model.forward = forward_with_inf
    with pytest.raises(
        FloatingPointError, match=r"step 1: non-finite loss term\(s\) \['loss_dice'\].*before the"
    ):
        train_step(model, next(batches), cfg, optimizer, None, 1, step_generator(0, 0, 1))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    after = optimizer.state_dict()
    assert after["state"].keys() == moments["state"].keys()
    for key, state in moments["state"].items():
        assert all(torch.equal(state[name], after["state"][key][name]) for name in state)


def test_paired_sampler_needs_an_even_batch(data_root):
    with pytest.raises(ValueError, match=r"train.batch_size=5 must be even"):
        _cfg(data_root, "synthetic_pfcn_crop_ibs", "train.batch_size=5")


@pytest.fixture
def matmul_precision():
    """Restore torch's process-wide float32 matmul precision after the test."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_matmul_precision_is_set_for_cuda_training_only(matmul_precision):
    torch.set_float32_matmul_precision("highest")
    tf32 = resolve_config(overrides=["train.float32_matmul_precision=high"])
    set_matmul_precision(tf32, torch.device("cpu"))
    assert torch.get_float32_matmul_precision() == "highest"
    set_matmul_precision(tf32, torch.device("cuda", 0))  # sets the flag; needs no GPU
    assert torch.get_float32_matmul_precision() == "high"
    set_matmul_precision(resolve_config(), torch.device("cuda", 0))  # the default: true float32
    assert torch.get_float32_matmul_precision() == "highest"


def test_lr_schedule_warmup_then_poly():
    cfg = resolve_config(overrides=["optimizer.warmup_steps=10", "optimizer.warmup_factor=0.001"])
    assert lr_factor(0, 100, cfg.optimizer) == pytest.approx(0.001)
    assert lr_factor(5, 100, cfg.optimizer) == pytest.approx((1 - 0.05) ** 0.9 * (0.001 * 0.5 + 0.5))
    assert lr_factor(50, 100, cfg.optimizer) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, cfg.optimizer) == 0.0


def test_evaluate_writes_valid_predictions_and_metrics(data_root, tmp_path):
    run = tmp_path / "run"
    train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=2"), run, progress=False)
    metrics = evaluate_run(run, max_images=3, progress=False)
    out = run / "eval_val"
    assert set(metrics) >= {
        "all",
        "things",
        "stuff",
        "per_class",
        "acc_th",
        "prec_th",
        "confusion_curve",
        "timing",
    }
    assert metrics["num_images"] == 3
    gt = open_synthetic(data_root, "val")
    predictions = load_panoptic_json(out / "predictions.json", gt.meta.by_id(), allow_empty=True)
    assert [r.image_id for r in predictions.records] == [r.image_id for r in gt.records[:3]]
    for record in predictions.records:
        png = out / "predictions" / record.png_name
        check_segments_match_png(read_id_png(png), record.segments, png_path=png, image_id=record.image_id)
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 3
    assert (out / "confusion_records.jsonl").is_file()
    assert metrics["thing_pixel_breakdown"]["gt"]["matched"] == metrics["acc_th"]


def test_rescore_adds_new_metrics_from_stored_predictions_and_changes_nothing_else(
    data_root, tmp_path, capsys
):
    run = tmp_path / "run"
    train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=2"), run, progress=False)
    evaluated = evaluate_run(run, max_images=3, progress=False)
    out = run / "eval_val"
    records = (out / "confusion_records.jsonl").read_text()
    older = {
        k: v for k, v in evaluated.items() if k != "thing_pixel_breakdown"
    }  # as evaluated before it existed
    (out / "metrics.json").write_text(json.dumps(older))
    (run / "checkpoints").rename(run / "no_checkpoints")  # no model is needed
    assert main(["evaluate", str(run), "--rescore", "--no-progress"]) == 0
    assert "rescoring changed none of the earlier values" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(evaluated))
    assert (out / "confusion_records.jsonl").read_text() == records
    # values that would change (here: a tampered Acc^th) are kept unless forced
    tampered = {**evaluated, "acc_th": evaluated["acc_th"] + 0.25}
    (out / "metrics.json").write_text(json.dumps(tampered))
    assert main(["evaluate", str(run), "--rescore", "--no-progress"]) == 2
    assert "would change 1 earlier value(s), e.g. acc_th" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(tampered))
    assert main(["evaluate", str(run), "--rescore", "--force", "--no-progress"]) == 0
    assert "values changed by rescoring: acc_th" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["acc_th"] == evaluated["acc_th"]
    # bad input: inference options, a missing prediction, nothing evaluated
    assert main(["evaluate", str(run), "--rescore", "--max-images", "2"]) == 2
    assert "--max-images has no effect with --rescore" in capsys.readouterr().err
    predictions = json.loads((out / "predictions.json").read_text())
    missing = predictions["annotations"].pop(1)["image_id"]
    (out / "predictions.json").write_text(json.dumps(predictions))
    assert main(["evaluate", str(run), "--rescore", "--no-progress"]) == 2
    assert f"no prediction for image id {missing!r}" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--rescore", "--out", str(tmp_path / "nowhere")]) == 2
    assert "nothing to rescore" in capsys.readouterr().err


def test_mask2former_instance_preset_trains_and_evaluates(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(data_root, "synthetic_m2f_instance_crop_ibs", "train.max_steps=2")
    train(cfg, run, progress=False)
    metrics = evaluate_run(run, max_images=2, progress=False)
    assert {"ap", "ap50", "ap_l", "acc_th", "prec_th", "thing_pixel_breakdown"} <= set(metrics)
    assert (run / "eval_val" / "instances.json").is_file()
    rescored, previous = rescore_run(run, progress=False)
    assert rescored == previous == json.loads(json.dumps(metrics))
    assert torch.isfinite(
        torch.tensor(json.loads((run / "log.jsonl").read_text().splitlines()[-1])["loss_ibs"])
    )


@pytest.fixture(scope="module")
def trained_pfcn(data_root, tmp_path_factory) -> Path:
    """A tiny Panoptic FCN crop run (4 steps), shared by the inference-setting tests."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(_cfg(data_root, "synthetic_pfcn_crop", "train.max_steps=4"), run, progress=False)
    return run


SCORE_KEY = "model.panoptic_fcn.thing_score_threshold"


def test_inference_overrides_need_their_own_folder_and_inference_keys(trained_pfcn, tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs an output folder of its own"):
        evaluate_run(trained_pfcn, overrides=[f"{SCORE_KEY}=0.1"], progress=False)
    with pytest.raises(ConfigError, match="only inference settings can change after training"):
        evaluate_run(trained_pfcn, out_dir=tmp_path / "e", overrides=["train.max_steps=3"], progress=False)
    with pytest.raises(ConfigError, match="the weights do not fit the model built with"):
        evaluate_run(
            trained_pfcn,
            out_dir=tmp_path / "e",
            overrides=["model.panoptic_fcn.kernel_channels=8"],
            progress=False,
        )
    assert not (trained_pfcn / "eval_val").exists()  # nothing was written for the refused calls
    assert main(["evaluate", str(trained_pfcn), "--set", f"{SCORE_KEY}=0.1", "--no-progress"]) == 2
    assert "needs an output folder of its own (--out)" in capsys.readouterr().err
    out = tmp_path / "low"
    args = [
        "evaluate",
        str(trained_pfcn),
        "--set",
        f"{SCORE_KEY}=0.1",
        "--out",
        str(out),
        "--max-images",
        "2",
    ]
    assert main([*args, "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["inference_overrides"] == [f"{SCORE_KEY}=0.1"]


def test_operating_curve_pastes_fewer_thing_pixels_as_the_score_threshold_rises(
    trained_pfcn, tmp_path, capsys
):
    from ibs_study.study.operating import OPERATING_FILE, operating_curve

    values = [0.0, 0.05, 0.2, 0.6, 1.01]
    out = tmp_path / "curve"
    curve = operating_curve(trained_pfcn, SCORE_KEY, values, out_dir=out, device="cpu", progress=False)
    assert [p["value"] for p in curve["points"]] == values
    assert json.loads((out / OPERATING_FILE).read_text()) == curve
    pasted = [json.loads((out / repr(v) / "metrics.json").read_text())["pixels"]["pred_th"] for v in values]
    # things are pasted in descending score order: a lower threshold only adds things on free pixels
    assert pasted == sorted(pasted, reverse=True) and pasted[0] > 0
    assert pasted[-1] == 0 and curve["points"][-1]["metrics"]["acc_th"] == 0.0  # no score reaches 1.01
    # each point is the evaluation with that setting, and a second call reads it instead of redoing it
    stamps = [(out / repr(v) / "metrics.json").stat().st_mtime_ns for v in values]
    assert operating_curve(trained_pfcn, SCORE_KEY, values, out_dir=out, progress=False) == curve
    assert [(out / repr(v) / "metrics.json").stat().st_mtime_ns for v in values] == stamps
    with pytest.raises(ValueError, match="values of .* repeat"):
        operating_curve(trained_pfcn, SCORE_KEY, [0.1, 0.1], out_dir=out)
    assert main(["operating-curve", str(trained_pfcn), "--values", "0.2", "0.6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "thing_score_threshold" in printed and "Prec^th" in printed and len(printed.strip().splitlines()) == 3
    )
    assert main(["operating-curve", str(trained_pfcn), "--key", "data.root", "--values", "1"]) == 2
    assert "only inference settings" in capsys.readouterr().err
