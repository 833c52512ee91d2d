"""Crash-safe run folders: atomic writes, the run lock, retry in place, resume past damage,
evaluations that record their source and appear at once, and train.threads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ibs_study.atomic as atomic
from ibs_study.cli import main
from ibs_study.config import resolve_config
from ibs_study.engine.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from ibs_study.engine.evaluate import evaluate_run
from ibs_study.engine.run_dir import LOCK_FILE, read_environment
from ibs_study.engine.train import train
from ibs_study.errors import CheckpointError, DataError, RunDirError

TINY = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.batch_size=4",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.device=cpu",
]


def _cfg(root: Path, *extra: str):
    return resolve_config(preset="synthetic_pfcn_crop", overrides=[f"data.root={root}", *TINY, *extra])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from ibs_study.data.synthetic import ensure_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    ensure_dataset(root, scale="tiny", workers=1)
    return root


@pytest.fixture
def trained(data_root, tmp_path) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4."""
    run = tmp_path / "run"
    train(_cfg(data_root, "train.max_steps=4"), run, progress=False)
    return run


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


# ------------------------------------------------------------------------------- atomic writes


def test_a_failed_checkpoint_write_leaves_the_previous_files_and_no_temp_file(trained, monkeypatch):
    folder = trained / "checkpoints"
    before = _files(folder)
    state = load_checkpoint(folder / "step_00000004.pt")
    monkeypatch.setattr(atomic.os, "replace", _enospc)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(state, folder, 6)
    assert _files(folder) == before  # no step_6 file, no .tmp


def test_a_failed_environment_write_on_resume_leaves_a_readable_run(data_root, trained, monkeypatch):
    before = (trained / "environment.json").read_bytes()
    replace = os.replace

    def environment_fails(source, target):
        (_enospc if Path(target).name == "environment.json" else replace)(source, target)

    monkeypatch.setattr(atomic.os, "replace", environment_fails)
    with pytest.raises(OSError, match="No space left"):
        train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False)
    monkeypatch.undo()
    assert (trained / "environment.json").read_bytes() == before
    assert not [p for p in trained.rglob("*") if p.name.endswith(".tmp")]
    assert train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False).steps == 4


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_start(data_root, trained):
    leftovers = [
        trained / "checkpoints" / "step_00000006.pt.4242.tmp",
        trained / "config.yaml.4242.tmp",
        trained / "environment.json.4242.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"cut")
    train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False)
    assert not any(path.exists() for path in leftovers)


def test_a_cut_environment_json_never_blocks_resume(data_root, trained):
    env = trained / "environment.json"
    env.write_bytes(env.read_bytes()[:100])
    with pytest.raises(RunDirError, match=r"environment.json is damaged .*move it aside"):
        read_environment(trained)
    result = train(_cfg(data_root, "train.max_steps=6"), trained, resume=True, force=True, progress=False)
    assert result.steps == 6
    assert [e["event"] for e in read_environment(trained)] == ["resume"]
    (kept,) = trained.glob("environment.json.damaged-*")
    assert len(kept.read_bytes()) == 100


# ------------------------------------------------------------------------------- the run lock

_HOLD = """
import sys, time
from ibs_study.engine.run_dir import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_process_is_refused_while_one_holds_the_run(data_root, trained, capsys):
    log_before = (trained / "log.jsonl").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(trained)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        in_use = rf"{trained} is in use by process {holder.pid} "
        with pytest.raises(RunDirError, match=in_use):
            train(_cfg(data_root, "train.max_steps=6"), trained, resume=True, force=True, progress=False)
        with pytest.raises(RunDirError, match=in_use):
            evaluate_run(trained, max_images=1, progress=False)
        args = ["train", "--preset", "synthetic_pfcn_crop", "--out", str(trained), "--resume"]
        args += [a for item in [f"data.root={data_root}", *TINY] for a in ("--set", item)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("ibs-study train: error: ") and f"process {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1
        assert (trained / "log.jsonl").read_bytes() == log_before
    finally:
        holder.kill()
        holder.wait()
    # the lock ends with its process, however it ends
    assert train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False).steps == 4


# ------------------------------------------------------------------------------- retry in place


def _failing_build(cfg, meta):
    raise RuntimeError("model build failed")


def _nan_at_step_1(build):
    """``build_model`` whose model's loss is NaN at its second step (after one optimiser step)."""

    def build_nan(cfg, meta):
        model, calls = build(cfg, meta), []
        forward = model.forward

        def forward_nan(images, targets):
            out = forward(images, targets)
            calls.append(1)
            if len(calls) == 2:
                out.losses["loss_seg_th"] = out.losses["loss_seg_th"] * float("nan")
            return out

        model.forward = forward_nan
        return model

    return build_nan


@pytest.mark.parametrize("failure", ["model build", "NaN at step 1"])
@pytest.mark.parametrize("existing", [False, True])
def test_a_start_that_fails_before_its_first_checkpoint_can_be_run_again(
    data_root, tmp_path, monkeypatch, existing, failure
):
    import ibs_study.engine.train as engine

    run = tmp_path / "run"
    if existing:
        run.mkdir()
    cfg = _cfg(data_root, "train.max_steps=3", "train.checkpoint_every=3")
    if failure == "model build":
        monkeypatch.setattr(engine, "build_model", _failing_build)
        with pytest.raises(RuntimeError, match="model build failed"):
            train(cfg, run, progress=False)
    else:
        monkeypatch.setattr(engine, "build_model", _nan_at_step_1(engine.build_model))
        with pytest.raises(FloatingPointError, match="step 1: non-finite"):
            train(cfg, run, progress=False)
    if existing:  # as it was: empty (the lock file aside)
        assert [p.name for p in run.iterdir() if p.name != LOCK_FILE] == []
    else:
        assert not run.exists()
    monkeypatch.undo()
    assert train(cfg, run, progress=False).steps == 3


def test_a_resume_that_fails_before_its_first_checkpoint_restores_its_records(
    data_root, trained, monkeypatch
):
    import ibs_study.engine.train as engine

    before = {name: (trained / name).read_bytes() for name in ("config.yaml", "environment.json")}
    monkeypatch.setattr(engine, "build_model", _failing_build)
    changed = _cfg(data_root, "train.max_steps=6", "ibs.weight=2")
    with pytest.raises(RuntimeError, match="model build failed"):
        train(changed, trained, resume=True, force=True, progress=False)
    assert {name: (trained / name).read_bytes() for name in before} == before


# ------------------------------------------------------------------------------- resume past damage


@pytest.mark.parametrize("last_line", ['{"step": 3, "loss_to', "   "])
def test_resume_drops_a_partial_or_blank_last_log_line(data_root, trained, caplog, last_line):
    log = trained / "log.jsonl"
    (trained / "checkpoints" / "step_00000004.pt").unlink()  # killed after step 3: resume from 2
    lines = log.read_text().splitlines()[:3]
    log.write_text("\n".join(lines) + "\n" + last_line)
    with caplog.at_level(logging.WARNING):
        train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False)
    assert "log.jsonl: dropped line 4" in caplog.text
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    rolled_back = (trained / "log.rolled_back.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in rolled_back] == [3]


def test_a_damaged_log_line_before_the_last_is_named(data_root, trained):
    log = trained / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = "garbage"
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=r"log.jsonl: line 2 is not a JSON record"):
        train(_cfg(data_root, "train.max_steps=6"), trained, resume=True, force=True, progress=False)


def test_resume_and_evaluate_fall_back_past_a_truncated_newest_checkpoint(
    data_root, trained, tmp_path, caplog
):
    newest = trained / "checkpoints" / "step_00000004.pt"
    intact = load_checkpoint(newest)["model"]
    newest.write_bytes(newest.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_run(trained, out_dir=tmp_path / "e", max_images=1, progress=False)
    assert metrics["checkpoint"]["step"] == 2 and "skipping " + str(newest) in caplog.text
    # resume from step 2 redoes steps 3 and 4 to the same weights
    assert train(_cfg(data_root, "train.max_steps=4"), trained, resume=True, progress=False).steps == 4
    redone = load_checkpoint(newest)["model"]
    assert all(torch.equal(redone[k], intact[k]) for k in intact)


def test_an_unreadable_checkpoint_is_one_line_naming_it(trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained / "checkpoints" / "step_00000004.pt").read_bytes()[:500])
    assert main(["evaluate", str(trained), "--checkpoint", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ibs-study evaluate: error: {bad}: not a readable ibs_study checkpoint")
    assert len(err.strip().splitlines()) == 1
    for path in (trained / "checkpoints").glob("*.pt"):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"step_00000004.pt: none of the 2 checkpoint\(s\)"):
        load_latest_checkpoint(trained / "checkpoints")


# ------------------------------------------------------------------------------- evaluation outputs


def test_evaluation_records_its_source_and_another_source_needs_out_or_force(data_root, trained, tmp_path):
    own = evaluate_run(trained, max_images=2, progress=False)
    newest = trained / "checkpoints" / "step_00000004.pt"
    assert own["checkpoint"] == {
        "path": str(newest),
        "step": 4,
        "sha256": hashlib.sha256(newest.read_bytes()).hexdigest(),
    }
    assert own["data_root"] == str(data_root) and own["split"] == "val"
    stored = json.loads((trained / "eval_val" / "metrics.json").read_text())
    assert stored["checkpoint"]["step"] == 4 and stored["split"] == "val"
    before = _files(trained / "eval_val")
    older = trained / "checkpoints" / "step_00000002.pt"
    with pytest.raises(
        RunDirError,
        match=r"eval_val holds an earlier evaluation of this run; evaluating checkpoint .*--out FOLDER .*--force",
    ):
        evaluate_run(trained, checkpoint=older, max_images=2, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(data_root, copy)
    with pytest.raises(
        RunDirError, match=r"evaluating data root .*copy \(not the run's own\) would replace it"
    ):
        evaluate_run(trained, data_root=copy, max_images=2, progress=False)
    assert _files(trained / "eval_val") == before
    # the run's own checkpoint named explicitly is the run's own evaluation
    evaluate_run(trained, checkpoint=newest, max_images=2, progress=False)
    elsewhere = evaluate_run(
        trained, checkpoint=older, out_dir=tmp_path / "old", max_images=2, progress=False
    )
    assert elsewhere["checkpoint"]["step"] == 2
    assert json.loads((trained / "eval_val" / "metrics.json").read_text())["checkpoint"]["step"] == 4
    forced = evaluate_run(trained, checkpoint=older, max_images=2, force=True, progress=False)
    assert json.loads((trained / "eval_val" / "metrics.json").read_text()) == forced


def test_a_killed_evaluation_leaves_the_old_outputs_whole(trained, monkeypatch):
    import ibs_study.engine.evaluate as evaluate

    evaluate_run(trained, max_images=3, progress=False)
    (trained / "eval_val" / "oracle_confusion.json").write_text("{}")
    before = _files(trained / "eval_val")
    real, calls = evaluate.predict_full_image, []

    def predict_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "predict_full_image", predict_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(trained, max_images=3, progress=False)
    assert _files(trained / "eval_val") == before
    assert sorted(p.name for p in trained.iterdir() if p.name.startswith(".eval")) == []
    monkeypatch.undo()
    evaluate_run(trained, max_images=2, progress=False)
    after = _files(trained / "eval_val")
    assert after["oracle_confusion.json"] == b"{}"  # not an evaluation output: kept
    assert len([n for n in after if n.startswith("predictions/")]) == 2  # no PNG of the old run


def test_evaluate_never_generates_data_at_a_typo(trained, tmp_path, capsys):
    typo = tmp_path / "synthetc"
    with pytest.raises(DataError, match=r"synthetc: no such dataset folder \(--data\)"):
        evaluate_run(trained, data_root=typo, out_dir=tmp_path / "e", progress=False)
    assert main(["evaluate", str(trained), "--data", str(typo), "--out", str(tmp_path / "e")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err
    assert not typo.exists() and not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------- threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_same_threads_give_bit_identical_weights_and_are_recorded(data_root, tmp_path, restore_threads):
    weights = []
    for name in ("a", "b"):
        torch.set_num_threads(1)  # train.threads wins over what the process had
        result = train(
            _cfg(data_root, "train.max_steps=3", "train.threads=2"), tmp_path / name, progress=False
        )
        weights.append(load_checkpoint(result.last_checkpoint)["model"])
        (event,) = read_environment(tmp_path / name)
        assert event["threads"]["torch_intra_op"] == 2 == torch.get_num_threads()
        assert event["threads"]["torch_inter_op"] >= 1
        assert event["threads"]["environment"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
        # the instruction set of the CPU kernels: results are bit-identical only within one
        assert event["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
        assert event["cpu"]["model"] and set(event["cpu"]["environment"]) >= {"ATEN_CPU_CAPABILITY"}
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_the_presets_one_thread_trains_as_the_study_runner_does(data_root, tmp_path):
    """The study runner trains with OMP_NUM_THREADS=1 (engine.grid); the synthetic presets'
    train.threads=1 gives the same weights without it, so the stored results stay valid."""
    weights = {}
    for name, env, extra in [
        ("runner", dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"), ["train.threads=null"]),
        ("preset", {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}, []),
    ]:
        command = [sys.executable, "-m", "ibs_study", "train", "--preset", "synthetic_pfcn_crop_ibs"]
        command += ["--out", str(tmp_path / name), "--no-progress"]
        for item in [f"data.root={data_root}", *TINY, "train.max_steps=3", *extra]:
            command += ["--set", item]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        weights[name] = load_checkpoint(tmp_path / name / "checkpoints" / "step_00000003.pt")["model"]
    assert all(torch.equal(weights["runner"][k], weights["preset"][k]) for k in weights["runner"])


def test_the_synthetic_presets_train_with_one_thread_as_the_study():
    assert resolve_config(preset="synthetic_pfcn_crop_ibs").train.threads == 1
    assert resolve_config(preset="cityscapes_pfcn_crop").train.threads is None


# ------------------------------------------------------------------------------- damaged records


def test_damaged_run_records_are_one_line_errors_naming_the_file(trained, tmp_path, capsys):
    state = load_checkpoint(trained / "checkpoints" / "step_00000004.pt")
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3)  # a checkpoint of another model
    other = tmp_path / "other.pt"
    torch.save(state, other)
    assert main(["evaluate", str(trained), "--checkpoint", str(other), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"ibs-study evaluate: error: {other}: its weights do not fit the model of {trained}"
    )
    evaluate_run(trained, max_images=1, progress=False)
    metrics = trained / "eval_val" / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:50])
    assert main(["evaluate", str(trained), "--rescore"]) == 2
    assert f"error: {metrics}: not an evaluation's metrics" in capsys.readouterr().err
    config = trained / "config.yaml"
    config.write_bytes(b"train: {max_steps: [\n")
    assert main(["evaluate", str(trained), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"error: {config}: not a readable config" in err and len(err.strip().splitlines()) == 1


def test_the_grid_trains_each_run_with_its_threads(tmp_path):
    from ibs_study.study.grid import RunSpec, _commands

    spec = RunSpec("crop", "synthetic_pfcn_crop", ("train.max_steps=3",))
    train_command, evaluate_command = _commands(spec, tmp_path / "crop", "new", threads=2)
    assert train_command[-2:] == ["--set", "train.threads=2"]  # after the spec's own overrides
    assert "train.threads=2" not in evaluate_command  # evaluate applies the run's recorded threads
