"""Running experiments from notebooks and scripts: one run, a set of runs, the study, the logs.

* :func:`launch_training`: train a preset into a run directory, in this process (one device)
  or as a ``torchrun`` subprocess (several GPUs), optionally calling back with the log as it
  grows (live loss curves);
* :func:`read_log`: a run's ``log.jsonl`` as columns;
* :func:`run_study`: the study's rows x seeds plus sweeps, collected into the
  ``synthetic_results.json`` schema (with ``sweeps``);
* :func:`smoke_overrides`: the tiny settings a quick end-to-end check uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ibs_study.config import resolve_config
from ibs_study.study.grid import RunSpec, oracle_runs, run_grid

if TYPE_CHECKING:
    from ibs_study.study.results import StudyResults
    from ibs_study.study.specs import StudyRow

logger = logging.getLogger(__name__)

__all__ = [
    "project_root",
    "smoke_overrides",
    "notebook_overrides",
    "launch_training",
    "read_log",
    "run_study",
]

LogColumns = dict[str, np.ndarray]


def project_root() -> Path:
    """The source checkout holding the package (where ``data/`` and ``runs/`` live), else the cwd."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else Path.cwd()


def smoke_overrides(data_root: str | os.PathLike, steps: int = 3) -> list[str]:
    """Settings of a quick end-to-end run: the tiny synthetic set (generated at ``data_root``),
    32x64 crops, 4 crops per step, ``steps`` steps, CPU, 2 evaluation images.

    Inference keeps every thing candidate (score thresholds 0): a model trained for a few
    steps scores below the official thresholds, and a smoke run should still produce
    predicted things for the metrics, the confusion records and the explorer.
    """
    return [
        f"data.root={data_root}",
        "data.synthetic_scale=tiny",
        "data.crop_size=[32, 64]",
        "train.batch_size=4",
        f"train.max_steps={steps}",
        "train.log_every=1",
        f"train.checkpoint_every={steps}",
        "train.device=cpu",
        "eval.max_images=2",
        "model.panoptic_fcn.center_threshold=0.0",
        "model.panoptic_fcn.rescored_score_threshold=0.0",
        "model.panoptic_fcn.thing_score_threshold=0.0",
        "model.mask2former.object_mask_threshold=0.0",
    ]


def notebook_overrides(
    *,
    smoke: bool,
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    steps: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``key=value`` overrides a notebook applies to its presets.

    Args:
        smoke: quick end-to-end check: :func:`smoke_overrides` with the tiny synthetic set
            at ``data_root`` (default ``<out_dir>/data_tiny``), ``steps`` steps (default 3).
        out_dir: the notebook's output folder.
        data_root: dataset root; None keeps the preset's ``data.root`` (outside smoke).
        steps: ``train.max_steps``; None keeps the preset's (outside smoke).
        extra: further overrides, applied last.
    """
    if smoke:
        root = data_root if data_root is not None else Path(out_dir) / "data_tiny"
        return [*smoke_overrides(root, steps or 3), *extra]
    out = [f"data.root={data_root}"] if data_root is not None else []
    return [*out, *([f"train.max_steps={steps}"] if steps else []), *extra]


# ----------------------------------------------------------------------------------- logs


def read_log(run_dir: str | os.PathLike) -> LogColumns:
    """``RUN_DIR/log.jsonl`` as columns: ``step`` and every logged name, NaN where a record lacks it.

    Returns an empty dict when the log does not exist or is empty (training not started).
    """
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the last line, still being written
            raise ValueError(f"{path}, line {number}: not a JSON record") from None
    if not records:
        return {}
    names = ["step"] + sorted({k for r in records for k in r} - {"step"})
    return {name: np.array([r.get(name, math.nan) for r in records], dtype=np.float64) for name in names}


# ------------------------------------------------------------------------------ training


def _watch(
    run_dir: Path, running: Callable[[], bool], on_log: Callable[[LogColumns], None] | None, every_s: float
) -> None:
    """Call ``on_log`` with the log whenever it grew, while ``running()``, and once at the end."""
    seen = -1
    while True:
        alive = running()
        log = read_log(run_dir)
        steps = len(log.get("step", ()))
        if on_log is not None and steps != seen and steps:
            on_log(log)
            seen = steps
        if not alive:
            return
        time.sleep(every_s)


def launch_training(
    preset: str,
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    nproc: int = 1,
    resume: bool = False,
    on_log: Callable[[LogColumns], None] | None = None,
    poll_s: float = 5.0,
    progress: bool = True,
) -> Path:
    """Train ``preset`` (with ``key=value`` overrides) into ``out_dir``.

    ``nproc == 1``: :func:`ibs_study.engine.train.train` in this process (on a worker
    thread, so the log can be watched). ``nproc > 1``: ``torchrun --nproc_per_node=nproc
    -m ibs_study train ...`` as a subprocess, its output in ``<out_dir>.torchrun.log``.
    While training runs, ``on_log`` receives the log columns (:func:`read_log`) every
    ``poll_s`` seconds when they changed, and once at the end.

    Returns:
        The run directory.

    Raises:
        RuntimeError: the torchrun subprocess failed (the message has its last output lines).
    """
    from ibs_study.engine.train import train

    run_dir = Path(out_dir)
    cfg = resolve_config(preset=preset, overrides=overrides)  # fails here on a bad override
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nproc == 1:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(train, cfg, run_dir, resume=resume, progress=progress)
            _watch(run_dir, lambda: not job.done(), on_log, poll_s)
            job.result()
        return run_dir
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += ["-m", "ibs_study", "train", "--preset", preset, "--out", str(run_dir), "--no-progress"]
    command += [arg for item in overrides for arg in ("--set", item)] + (["--resume"] if resume else [])
    log_path = run_dir.parent / f"{run_dir.name}.torchrun.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log_file:
        log_file.write("$ " + " ".join(command) + "\n")
        log_file.flush()
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        bar = tqdm(total=cfg.train.max_steps, desc=f"{preset} ({nproc} processes)", disable=not progress)

        def update(log: LogColumns) -> None:
            bar.n = int(log["step"][-1])
            bar.refresh()
            if on_log is not None:
                on_log(log)

        _watch(run_dir, lambda: proc.poll() is None, update, poll_s)
        bar.close()
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise RuntimeError(
            f"torchrun training of {preset} failed (exit {proc.returncode}); {log_path}:\n{tail}"
        )
    return run_dir


# ------------------------------------------------------------------------------- run sets


def run_device(run_dir: str | os.PathLike) -> str:
    """The device a run trained on, from its ``environment.json`` (the last start event)."""
    path = Path(run_dir) / "environment.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no environment.json (not a started run)")
    starts = [event for event in json.loads(path.read_text()) if event.get("event") == "start"]
    if not starts:
        raise ValueError(f"{path}: records no start event")
    return str(starts[-1].get("device_name") or starts[-1].get("device"))


def run_study(
    root: str | os.PathLike,
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    sweeps: Mapping[str, Sequence[RunSpec]] | None = None,
    scale: str = "cpu",
    parallel: int = 2,
    threads: int = 1,
    progress: bool = True,
    train: bool = True,
    oracle: bool = True,
    logits: bool = False,
) -> StudyResults:
    """Run (or read) the study's rows x seeds and its sweeps; return their results.

    Args:
        root: folder of all run directories.
        rows: :class:`~ibs_study.study.specs.StudyRow` s (:func:`~ibs_study.study.specs.study_rows`).
        seeds: seeds of every row.
        steps: training steps (None: the presets').
        overrides: ``key=value`` applied to every row run (sweep specs carry their own).
        sweeps: sweep name -> its specs (:func:`~ibs_study.study.specs.sweep_specs`).
        scale, parallel, threads, progress: recorded scale; see :func:`~ibs_study.study.grid.run_grid`.
        train: False only collects runs that exist (a missing one is an error naming it).
        oracle: measure the oracle-embedding confusion of every run that lacks it (right after
            its evaluation when training; :func:`~ibs_study.study.grid.oracle_runs` otherwise), so the rows carry the ``oracle_*`` metrics and table 5.
        logits: also the oracle logit analysis (``ibs-study oracle --logits``), so the rows
            carry the ``logit_*`` metrics and ``embedding_norm``.

    Returns:
        :func:`~ibs_study.study.results.collect_results` with ``sweeps``: name ->
        :func:`~ibs_study.study.results.collect_sweep` points (only when sweeps are given).
    """
    from ibs_study.engine.run_dir import git_commit
    from ibs_study.study.results import collect_results, collect_sweep
    from ibs_study.study.specs import study_specs, sweep_anchors

    specs = study_specs(rows, seeds, steps=steps, overrides=overrides)
    sweep_runs = [spec for group in (sweeps or {}).values() for spec in group]
    if train:
        run_grid([*specs, *sweep_runs], root, parallel=parallel, threads=threads, progress=progress,
                 oracle=oracle, logits=logits)  # fmt: skip
    elif oracle:
        # Runs not evaluated yet are left to collect_results, whose error names them.
        run_dirs = [Path(root) / spec.name for spec in [*specs, *sweep_runs]]
        oracle_runs(run_dirs, parallel=parallel, threads=threads, progress=progress, logits=logits)
    device = run_device(Path(root) / f"{rows[0].key}_s{seeds[0]}")
    results = collect_results(
        root,
        rows,
        seeds,
        scale=scale,
        device=device,
        commit=git_commit(),
    )
    if not sweeps:
        return results
    points = {
        name: collect_sweep(root, [*group, *sweep_anchors(rows, seeds, group, overrides)])
        for name, group in sweeps.items()
    }
    return dataclasses.replace(results, sweeps=points)
