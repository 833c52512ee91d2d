"""The study's one runner (ibs_study.study.grid): in this process and as subprocesses, a finished run
only read, a run directory of another config refused before anything runs."""

from __future__ import annotations

import pytest

from ibs_study.engine.run_dir import RunDirError
from ibs_study.study.grid import RunSpec, run_grid, run_in_process
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
