"""Run helpers for notebooks (ibs_study.study.runs): overrides, logs, in-process and torchrun training, the study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ibs_study.config import ConfigError
from ibs_study.study.runs import (
    launch_training,
    notebook_overrides,
    project_root,
    read_log,
    run_study,
    smoke_overrides,
)
from ibs_study.study.specs import study_rows


def test_read_log_columns_with_gaps_and_a_line_being_written(tmp_path):
    records = [
        {"step": 1, "loss_total": 2.0, "loss_ibs": 0.5},
        {"step": 2, "loss_total": 1.5},
        {"step": 3, "loss_total": 1.0, "loss_ibs": 0.25, "lr": 0.01},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / "log.jsonl").write_text(text + '{"step": 4, "loss_to')  # the last line is incomplete
    log = read_log(tmp_path)
    assert list(log) == ["step", "loss_ibs", "loss_total", "lr"]
    assert log["step"].tolist() == [1, 2, 3]
    assert log["loss_ibs"][0] == 0.5 and math.isnan(log["loss_ibs"][1]) and log["loss_ibs"][2] == 0.25
    assert math.isnan(log["lr"][0]) and log["lr"][2] == 0.01
    (tmp_path / "log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="log.jsonl, line 2: not a JSON record"):
        read_log(tmp_path)
    assert read_log(tmp_path / "absent") == {}


def test_notebook_overrides(tmp_path):
    smoke = notebook_overrides(smoke=True, out_dir=tmp_path, extra=["seed=4"])
    assert smoke == [*smoke_overrides(tmp_path / "data_tiny", 3), "seed=4"]
    assert f"data.root={tmp_path / 'data_tiny'}" in smoke and "train.max_steps=3" in smoke
    assert notebook_overrides(smoke=True, out_dir=tmp_path, data_root="d", steps=5)[:1] == ["data.root=d"]
    assert "train.max_steps=5" in notebook_overrides(smoke=True, out_dir=tmp_path, steps=5)
    full = notebook_overrides(smoke=False, out_dir=tmp_path, data_root="d", steps=200, extra=["ibs.weight=2"])
    assert full == ["data.root=d", "train.max_steps=200", "ibs.weight=2"]
    assert notebook_overrides(smoke=False, out_dir=tmp_path) == []


def test_launch_training_in_process_calls_back_with_the_log(tmp_path):
    seen = []
    run_dir = launch_training(
        "synthetic_pfcn_crop_ibs",
        tmp_path / "run",
        smoke_overrides(tmp_path / "data"),
        on_log=lambda log: seen.append(log["step"].tolist()),
        poll_s=0.2,
        progress=False,
    )
    assert run_dir == tmp_path / "run" and (run_dir / "checkpoints" / "step_00000003.pt").is_file()
    assert seen and seen[-1] == [1.0, 2.0, 3.0]  # the final call sees the whole log
    assert all(len(a) < len(b) for a, b in zip(seen, seen[1:]))  # only called when the log grew


def test_launch_training_rejects_a_bad_override_before_creating_the_run(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        launch_training("synthetic_pfcn_crop", tmp_path / "run", ["train.nope=1"], progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="nproc must be >= 1"):
        launch_training("synthetic_pfcn_crop", tmp_path / "run", nproc=0, progress=False)


@pytest.mark.slow
def test_launch_training_with_torchrun_two_processes(tmp_path):
    overrides = smoke_overrides(tmp_path / "data", steps=2)
    run_dir = launch_training(
        "synthetic_pfcn_crop_ibs", tmp_path / "ddp", overrides, nproc=2, poll_s=0.5, progress=False
    )
    assert read_log(run_dir)["step"].tolist() == [1.0, 2.0]
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment[0]["world_size"] == 2
    assert "--nproc_per_node=2" in (tmp_path / "ddp.torchrun.log").read_text()


def test_launch_training_reports_a_failed_torchrun_with_its_output(tmp_path, monkeypatch):
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\necho 'rank 0 exploded'\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setattr("ibs_study.study.runs.sys.executable", str(script))
    overrides = smoke_overrides(tmp_path / "data", steps=2)
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\)(.|\n)*rank 0 exploded"):
        launch_training(
            "synthetic_pfcn_crop", tmp_path / "ddp", overrides, nproc=2, poll_s=0.1, progress=False
        )


def test_run_study_collect_only_names_a_missing_run(tmp_path):
    rows = [row for row in study_rows("cpu", ["pfcn"]) if row.setting == "crop"]
    with pytest.raises(FileNotFoundError, match="pfcn_crop_s0"):
        run_study(tmp_path / "runs", rows, [0], overrides=smoke_overrides(tmp_path / "data"), train=False)


def test_project_root_is_the_checkout_holding_the_package():
    assert project_root() == Path(__file__).resolve().parents[2]
