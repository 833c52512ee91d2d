"""The study's one runner: train and evaluate a set of runs (presets, overrides, seeds).

Each run is training into its own run directory followed by evaluation (and, when asked, the
oracle-embedding confusion). :func:`run_grid` runs them as parallel subprocesses (``ibs-study
train``, ``ibs-study evaluate``, ``ibs-study oracle``; :func:`run_commands` schedules them), each limited to
``threads`` CPU threads (on a CPU, a few single-threaded runs side by side are faster than one
run using every core), or with ``parallel=0`` one after the other in this process
(:func:`run_in_process`: no interpreter start-up per run, for tiny runs). A finished run (its
``eval_<split>/metrics.json`` exists and is newer than its last checkpoint) is not run again; a
killed run resumes from its last checkpoint. A run directory holding a run of another config
(other steps, seed, preset, ...) is refused before anything runs, so its results are never
reported as the asked run's; so is a synthetic data root holding another generation than a
run's config asks for (:func:`prepare_spec_data`). The demo, the study, the follow-ups and the
notebooks all use it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ibs_study.config import config_to_dict, resolve_config
from ibs_study.engine.checkpoint import checkpoint_step, latest_checkpoint
from ibs_study.engine.data import ensure_synthetic
from ibs_study.engine.run_dir import RunDirError, config_differences, read_run_config
from ibs_study.errors import RunsFailedError
from ibs_study.input_files import expect, read_json

logger = logging.getLogger(__name__)

__all__ = [
    "RunSpec",
    "run_grid",
    "run_commands",
    "oracle_runs",
    "oracle_pending",
    "run_in_process",
    "run_status",
    "check_run_matches",
    "prepare_spec_data",
    "read_metrics",
]


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid.

    Args:
        name: short label (also the run directory name under the grid's folder).
        preset: preset name.
        overrides: ``key=value`` config overrides.
        split: evaluation split (None: the config's ``data.val_split``).
    """

    name: str
    preset: str
    overrides: tuple[str, ...] = ()
    split: str | None = None
    tags: dict = field(default_factory=dict, hash=False, compare=False)


def _eval_dir(run_dir: Path, split: str | None) -> Path:
    return run_dir / f"eval_{split or 'val'}"


def run_status(run_dir: Path, split: str | None = None) -> str:
    """``done`` (evaluated after the last checkpoint), ``trained``, ``partial`` or ``new``."""
    metrics = _eval_dir(run_dir, split) / "metrics.json"
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is not None and metrics.is_file() and metrics.stat().st_mtime >= checkpoint.stat().st_mtime:
        return "done"
    if (run_dir / "config.yaml").is_file():
        finished = (
            checkpoint is not None and checkpoint_step(checkpoint) >= read_run_config(run_dir).train.max_steps
        )
        return "trained" if finished else "partial"
    return "new"


def check_run_matches(spec: RunSpec, run_dir: str | os.PathLike) -> None:
    """Refuse to reuse ``run_dir`` for ``spec`` when it holds a run of another config.

    Raises:
        RunDirError: the run directory's ``config.yaml`` differs from ``spec``'s resolved config
            (keys and both values named; ``data.root``, ``train.device`` and
            ``data.num_workers`` may differ, as on resume).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return
    wanted = resolve_config(preset=spec.preset, overrides=spec.overrides)
    changes = config_differences(config_to_dict(read_run_config(run_dir)), config_to_dict(wanted))
    if changes:
        raise RunDirError(
            f"{run_dir} holds a run of another config than {spec.preset} with {list(spec.overrides)} "
            f"(saved -> asked: {'; '.join(changes[:8])}); its results would be reported as this "
            "run's, so it is not reused: remove it or choose another folder"
        )


def prepare_spec_data(specs: Sequence[RunSpec]) -> None:
    """Generate, before any run starts, the synthetic dataset each spec's config names where its
    ``data.root`` does not exist, and check an existing one (once per data root and parameters).

    Raises:
        DataError: a data root holds another generation than a spec's ``data.synthetic_*`` ask
            for (a single run would use it as it is; a spec's results must come from its own data).
    """
    seen = set()
    for spec in specs:
        cfg = resolve_config(preset=spec.preset, overrides=spec.overrides)
        data = cfg.data
        key = (data.dataset, data.root, data.synthetic_scale, data.synthetic_seed)
        key += (data.synthetic_colour_jitter, data.synthetic_colour_classes)
        if key not in seen:
            seen.add(key)
            ensure_synthetic(cfg, strict=True)


def read_metrics(run_dir: str | os.PathLike, split: str | None = None) -> dict:
    """The ``metrics.json`` an evaluation wrote for ``run_dir``.

    Raises:
        RunDirError: there is none (the run is missing, or was not evaluated).
        DataError: it cannot be read or lacks the panoptic metrics the study reads (names the
            file and the key).
    """
    path = _eval_dir(Path(run_dir), split) / "metrics.json"
    if not path.is_file():
        what = "no such run directory" if not Path(run_dir).is_dir() else "not evaluated yet"
        raise RunDirError(f"{path} not found: {what} (`ibs-study evaluate {run_dir}`)")
    metrics = expect(read_json(path, "metrics JSON"), dict, "the top level", path)
    if "all" in metrics:  # panoptic (an instance evaluation has only top-level numbers)
        number = (int, float, type(None))
        for section in ("all", "things", "stuff"):
            expect(expect(metrics.get(section), dict, section, path).get("pq"), number, f"{section}.pq", path)
        for key in ("acc_th", "prec_th"):
            expect(metrics.get(key), number, key, path)
    return metrics


def oracle_pending(run_dir: Path, logits: bool = False) -> bool:
    """Whether ``run_dir/eval_val/oracle_confusion.json`` (with ``logits`` also
    ``oracle_logits.json``) is missing or older than the run's newest checkpoint."""
    from ibs_study.study.oracle import ORACLE_FILE, ORACLE_LOGITS_FILE

    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    paths = [
        run_dir / "eval_val" / name
        for name in ((ORACLE_FILE, ORACLE_LOGITS_FILE) if logits else (ORACLE_FILE,))
    ]
    return any(
        not path.is_file() or (checkpoint is not None and path.stat().st_mtime < checkpoint.stat().st_mtime)
        for path in paths
    )


def _measure_oracle_in_process(run_dir: Path, logits: bool) -> None:
    from ibs_study.study.oracle import oracle_confusion_run, oracle_logits_run

    if logits:
        oracle_logits_run(run_dir, progress=False)
    oracle_confusion_run(run_dir, progress=False)


def run_in_process(
    spec: RunSpec,
    root: str | os.PathLike,
    *,
    progress: bool = False,
    oracle: bool = False,
    logits: bool = False,
) -> dict:
    """Train and evaluate one spec in this process under ``root/<spec.name>`` (like one run of
    :func:`run_grid`: a finished run is only read, a partial one resumed, ``oracle`` / ``logits``
    measured where pending); returns its metrics."""
    from ibs_study.engine.evaluate import evaluate_run
    from ibs_study.engine.train import train

    run_dir = Path(root) / spec.name
    check_run_matches(spec, run_dir)
    prepare_spec_data([spec])
    status = run_status(run_dir, spec.split)
    if status in ("new", "partial"):
        cfg = resolve_config(preset=spec.preset, overrides=spec.overrides)
        train(cfg, run_dir, resume=status == "partial", progress=progress)
    if status != "done":
        out = _eval_dir(run_dir, spec.split) if spec.split else None
        evaluate_run(run_dir, split=spec.split, out_dir=out, progress=progress)
    if (oracle or logits) and oracle_pending(run_dir, logits):
        _measure_oracle_in_process(run_dir, logits)
    return read_metrics(run_dir, spec.split)


_PYTHON = [sys.executable, "-m", "ibs_study"]


def _oracle_command(run_dir: Path, logits: bool) -> list[str]:
    return [*_PYTHON, "oracle", str(run_dir), "--no-progress", *(["--logits"] if logits else [])]


def _commands(
    spec: RunSpec, run_dir: Path, status: str, threads: int, oracle: bool = False, logits: bool = False
) -> list[list[str]]:
    """The subprocess commands that bring the run from ``status`` to evaluated (and measured)."""
    python = _PYTHON
    train = [*python, "train", "--preset", spec.preset, "--out", str(run_dir), "--no-progress"]
    for item in spec.overrides:
        train += ["--set", item]
    train += ["--set", f"train.threads={threads}"]  # recorded in the run's config (see run_grid)
    evaluate = [*python, "evaluate", str(run_dir), "--no-progress"]
    if spec.split:
        evaluate += ["--split", spec.split, "--out", str(_eval_dir(run_dir, spec.split))]
    commands = {"new": [train, evaluate], "partial": [[*train, "--resume"], evaluate], "trained": [evaluate]}
    chain = commands.get(status, [])
    if (oracle or logits) and (chain or oracle_pending(run_dir, logits)):
        chain = [*chain, _oracle_command(run_dir, logits)]
    return chain


def run_commands(
    chains: Sequence[tuple[Path, list[list[str]]]],
    *,
    parallel: int,
    threads: int,
    progress: bool = True,
    desc: str = "runs",
    done: int = 0,
) -> None:
    """Run each ``(log file, commands)`` chain: its commands one after the other, their output
    appended to the log file, ``parallel`` chains at a time, with ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS`` set to ``threads``; ``done`` counts finished chains on the progress bar.

    Raises:
        RunsFailedError: after every chain has ended, naming each that failed and its log file.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = [(Path(log), commands) for log, commands in chains if commands]
    running: list[tuple[Path, list[list[str]], subprocess.Popen, Any]] = []
    failed: list[str] = []
    bar = tqdm(total=done + len(pending), initial=done, desc=desc, disable=not progress)

    def start(log: Path, commands: list[list[str]], handle: Any) -> None:
        handle.write(f"$ {' '.join(commands[0])}\n")
        handle.flush()
        proc = subprocess.Popen(commands[0], stdout=handle, stderr=subprocess.STDOUT, env=env)
        running.append((log, commands[1:], proc, handle))

    while pending or running:
        while pending and len(running) < parallel:
            log, commands = pending.pop(0)
            start(log, commands, open(log, "a"))
        time.sleep(0.5)
        ended = [chain for chain in running if chain[2].poll() is not None]
        running[:] = [chain for chain in running if chain not in ended]
        for log, rest, proc, handle in ended:
            if proc.returncode == 0 and rest:
                start(log, rest, handle)
                continue
            handle.close()
            bar.update(1)
            if proc.returncode != 0:
                failed.append(f"{log.stem} (exit {proc.returncode}; see {log})")
    bar.close()
    if failed:
        raise RunsFailedError(f"{desc} failed: " + "; ".join(failed))


def run_grid(
    specs: Sequence[RunSpec],
    root: str | os.PathLike,
    *,
    parallel: int = 2,
    threads: int = 1,
    progress: bool = True,
    oracle: bool = False,
    logits: bool = False,
) -> dict[str, dict]:
    """Train and evaluate every spec under ``root/<spec.name>``; returns name -> metrics.
    ``oracle``: then measure each run's oracle-embedding confusion (``ibs-study oracle``) where it
    is missing or older than the last checkpoint; ``logits``: also the oracle logit analysis.

    ``parallel >= 1``: that many subprocesses at once. ``parallel == 0``: one after the other
    in this process (:func:`run_in_process`; the caller sets the torch thread count, ``threads``
    is not applied).

    With subprocesses, each run trains with ``train.threads=threads`` (and ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS`` set to it), whatever its preset says: its ``config.yaml`` records the
    threads it used. Runs that are already done are only read. A run that fails raises
    :class:`~ibs_study.errors.RunsFailedError` naming it and its log file (``root/<name>.log``) after the
    other runs have finished; an existing run directory of another config raises
    :class:`~ibs_study.engine.run_dir.RunDirError` before anything runs
    (:func:`check_run_matches`), a data root of another synthetic generation
    :class:`~ibs_study.errors.DataError` (:func:`prepare_spec_data`).
    """
    if parallel < 0:
        raise ValueError(f"parallel must be >= 0, got {parallel}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    for spec in specs:
        check_run_matches(spec, root / spec.name)
    prepare_spec_data(specs)
    if parallel == 0:
        return {
            spec.name: run_in_process(spec, root, oracle=oracle, logits=logits)
            for spec in tqdm(specs, desc="runs", disable=not progress)
        }
    chains = []
    for spec in specs:
        run_dir = root / spec.name
        status = run_status(run_dir, spec.split)
        chains.append((root / f"{spec.name}.log", _commands(spec, run_dir, status, threads, oracle, logits)))
    done = sum(1 for _, commands in chains if not commands)
    run_commands(chains, parallel=parallel, threads=threads, progress=progress, done=done)
    return {spec.name: read_metrics(root / spec.name, spec.split) for spec in specs}


def oracle_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    parallel: int = 2,
    threads: int = 1,
    progress: bool = True,
    logits: bool = False,
) -> list[Path]:
    """``ibs-study oracle`` (``--logits`` with ``logits``) for every evaluated run directory
    (:func:`run_status` ``done``) whose oracle measurements are pending (:func:`oracle_pending`),
    scheduled as :func:`run_grid`'s runs (``parallel`` 0: in this process); returns the run
    directories it measured. A run still training or not yet evaluated is left alone.

    Raises:
        RunsFailedError: a measurement failed (naming the run and its log ``<run_dir>.oracle.log``).
    """
    if parallel < 0:
        raise ValueError(f"parallel must be >= 0, got {parallel}")
    todo = [Path(d) for d in run_dirs if run_status(Path(d)) == "done" and oracle_pending(Path(d), logits)]
    if parallel == 0:
        for run_dir in tqdm(todo, desc="oracle confusion", unit="run", disable=not progress or not todo):
            _measure_oracle_in_process(run_dir, logits)
        return todo
    chains = [(d.parent / f"{d.name}.oracle.log", [_oracle_command(d, logits)]) for d in todo]
    run_commands(chains, parallel=parallel, threads=threads, progress=progress, desc="oracle confusion")
    return todo
    for parent in {run_dir.parent for run_dir in todo}:
        chains = [(f"{d.name}.oracle", [_oracle_command(d, logits)]) for d in todo if d.parent == parent]
        run_commands(
            chains, parent, parallel=parallel, threads=threads, progress=progress, desc="oracle confusion"
        )
    return todo
