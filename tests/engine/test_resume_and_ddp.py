"""A training process killed with SIGKILL resumes to bit-identical weights; torchrun DDP on CPU (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ibs_study.engine.checkpoint import load_checkpoint

TINY = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.batch_size=4",
    "train.log_every=1",
    "train.device=cpu",
]


def _train_command(data_root: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "ibs_study",
        "train",
        "--preset",
        "synthetic_pfcn_crop_ibs",
        "--out",
        str(run_dir),
    ]
    for item in [
        f"data.root={data_root}",
        *TINY,
        f"train.max_steps={steps}",
        "train.checkpoint_every=3",
        *extra,
    ]:
        command += ["--set", item]
    return [*command, "--no-progress"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from ibs_study.data.synthetic import ensure_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    ensure_dataset(root, scale="tiny")
    return root


def _final_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}.pt")["model"]


@pytest.mark.slow
def test_sigkill_then_resume_gives_bit_identical_weights(data_root, tmp_path):
    steps = 9
    reference = tmp_path / "reference"
    subprocess.run(_train_command(data_root, reference, steps), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(data_root, killed, steps), env=_env(), stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "step_00000003.pt"
    deadline = time.monotonic() + 120
    while not first.exists():  # kill right after the first checkpoint, mid-run
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "checkpoints" / f"step_{steps:08d}.pt").exists()

    subprocess.run(
        _train_command(data_root, killed, steps) + ["--resume"], check=True, env=_env(), capture_output=True
    )
    expected, resumed = _final_weights(reference, steps), _final_weights(killed, steps)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), f"{name} differs after resume"
    # the log holds every step once; records of rolled-back steps were moved aside, not lost
    logged = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
    rolled_back = killed / "log.rolled_back.jsonl"
    if rolled_back.exists():
        assert all(json.loads(line)["step"] > 3 for line in rolled_back.read_text().splitlines())


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    """Two gloo processes; the synthetic dataset does not exist yet (rank 0 generates it first)."""
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        "-m", "ibs_study", *_train_command(tmp_path / "fresh_data", run_dir, 3)[3:],
    ]  # fmt: skip
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "step_00000003.pt")
    assert state["step"] == 3
    env_records = (run_dir / "environment.json").read_text()
    assert '"world_size": 2' in env_records
    # one log line per step from rank 0 only
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 3
