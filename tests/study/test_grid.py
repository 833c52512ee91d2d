"""The study's one runner (ibs_study.study.grid): in this process and as subprocesses, a finished run
only read, a run directory of another config refused before anything runs."""

from __future__ import annotations

import os
import sys

import pytest

from ibs_study.engine.run_dir import RunDirError
from ibs_study.errors import RunsFailedError
from ibs_study.study import grid
from ibs_study.study.grid import (
    RunSpec,
    _commands,
    oracle_pending,
    oracle_runs,
    run_commands,
    run_grid,
    run_in_process,
)
from ibs_study.study.runs import smoke_overrides


def test_run_in_process_trains_once_then_reads(tmp_path):
    spec = RunSpec("crop", "synthetic_pfcn_crop", tuple(smoke_overrides(tmp_path / "data", steps=2)))
    metrics = run_in_process(spec, tmp_path / "runs")
    checkpoint = tmp_path / "runs" / "crop" / "checkpoints" / "step_00000002.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert {"all", "things", "acc_th", "prec_th", "confusion_curve"} <= set(metrics)
    assert metrics["num_images"] == 2
    again = run_grid([spec], tmp_path / "runs", parallel=0, progress=False)
    assert again == {"crop": metrics} and checkpoint.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="parallel must be >= 0"):
        run_grid([spec], tmp_path / "runs", parallel=-1)
    # the same folder asked for another experiment (here 3 steps, or another seed) is refused,
    # in process and by the subprocess grid, before anything runs; nothing is touched
    longer = RunSpec("crop", "synthetic_pfcn_crop", (*spec.overrides, "train.max_steps=3"))
    with pytest.raises(RunDirError, match=r"train\.max_steps: 2 -> 3"):
        run_grid([longer], tmp_path / "runs", parallel=0, progress=False)
    reseeded = RunSpec("crop", "synthetic_pfcn_crop", (*spec.overrides, "seed=5"))
    with pytest.raises(RunDirError, match=r"runs/crop holds a run of another config.*seed: \d+ -> 5"):
        run_grid([reseeded], tmp_path / "runs", parallel=1, progress=False)
    assert checkpoint.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "runs" / "crop" / "checkpoints").iterdir()) == [
        "step_00000002.pt"
    ]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_commands_runs_each_chain_in_order_and_names_the_failed_one(tmp_path):
    """Chains run their commands in order, side by side; a failing command stops its own chain
    only, and the error (raised after all chains ended) names it and its log."""
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    chains = [
        (
            tmp_path / "a.log",
            [[*_python(touch), str(tmp_path / "a1"), "1"], [*_python(touch), str(tmp_path / "a2"), "2"]],
        ),
        (
            tmp_path / "b.log",
            [
                _python("import sys; print('broken'); sys.exit(3)"),
                [*_python(touch), str(tmp_path / "b2"), "x"],
            ],
        ),
        (tmp_path / "c.log", []),  # nothing to do
    ]
    with pytest.raises(RunsFailedError, match=r"runs failed: b \(exit 3; see .*b\.log\)$"):
        run_commands(chains, parallel=2, threads=1, progress=False)
    assert (tmp_path / "a1").read_text() == "1" and (tmp_path / "a2").read_text() == "2"
    assert not (tmp_path / "b2").exists()  # the failed chain stopped
    assert "broken" in (tmp_path / "b.log").read_text() and not (tmp_path / "c.log").exists()


def test_the_oracle_joins_a_run_s_chain_only_where_it_is_pending(tmp_path):
    spec = RunSpec("crop", "synthetic_pfcn_crop")
    run_dir = tmp_path / "crop"
    new = _commands(spec, run_dir, "new", 1, oracle=True)
    assert [c[3] for c in new] == ["train", "evaluate", "oracle"]
    assert _commands(spec, run_dir, "new", 1) == new[:2]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000002.pt").write_bytes(b"")
    assert [c[3:] for c in _commands(spec, run_dir, "done", 1, logits=True)] == [
        ["oracle", str(run_dir), "--no-progress", "--logits"]
    ]
    (run_dir / "eval_val").mkdir()
    (run_dir / "eval_val" / "oracle_confusion.json").write_text("{}")  # newer than the checkpoint
    assert _commands(spec, run_dir, "done", 1, oracle=True) == []
    assert oracle_pending(run_dir, logits=True)  # oracle_logits.json is still missing


def _fake_run(run_dir, *, evaluated: bool, oracle_measured: bool = False):
    """A run directory with a checkpoint at time 100, ``eval_val/metrics.json`` at 200 when
    ``evaluated`` and ``eval_val/oracle_confusion.json`` at 300 when ``oracle_measured``."""
    checkpoint = run_dir / "checkpoints" / "step_00000002.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    os.utime(checkpoint, (100, 100))
    (run_dir / "eval_val").mkdir()
    for name, stamp, wanted in (
        ("metrics.json", 200, evaluated),
        ("oracle_confusion.json", 300, oracle_measured),
    ):
        if wanted:
            (run_dir / "eval_val" / name).write_text("{}")
            os.utime(run_dir / "eval_val" / name, (stamp, stamp))
    return run_dir


def test_oracle_runs_measures_evaluated_runs_only_as_subprocesses_logged_beside_them(tmp_path, monkeypatch):
    """The scheduler path: each evaluated run whose oracle file is missing gets one command, its
    output in ``<run_dir>.oracle.log``; a run still training and a measured run are left alone."""
    pending = _fake_run(tmp_path / "runs" / "pending", evaluated=True)
    training = _fake_run(tmp_path / "runs" / "training", evaluated=False)
    measured = _fake_run(tmp_path / "runs" / "measured", evaluated=True, oracle_measured=True)
    write = "import pathlib, sys; print('measured', sys.argv[1]); pathlib.Path(sys.argv[1]).write_text('{}')"
    monkeypatch.setattr(
        grid,
        "_oracle_command",
        lambda run_dir, logits: _python(write) + [str(run_dir / "eval_val" / "oracle_confusion.json")],
    )
    assert oracle_runs(
        [pending, training, measured, tmp_path / "runs" / "absent"], parallel=2, progress=False
    ) == [pending]
    assert (pending / "eval_val" / "oracle_confusion.json").is_file()
    assert "measured" in (tmp_path / "runs" / "pending.oracle.log").read_text()
    assert not (training / "eval_val" / "oracle_confusion.json").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "measured",
        "pending",
        "pending.oracle.log",
        "training",
    ]
    assert oracle_runs([pending, training, measured], parallel=2, progress=False) == []
