"""Run directories: what a run records about itself, and the rules for reusing one.

A run directory holds ``config.yaml`` (the resolved config), ``environment.json``
(package versions, device, thread counts, git commit, command line, a synthetic dataset's
``synthetic.json``; one entry per start or resume), ``log.jsonl`` (one record per logged step),
``tensorboard/``, ``checkpoints/`` and the lock file ``.lock``.

Rules: a new run refuses an existing non-empty directory (nothing is overwritten); a
resume refuses a directory whose config differs from the requested one unless forced. One
process at a time trains or evaluates in a run directory (:func:`run_lock`). Every file is
written atomically (:mod:`ibs_study.atomic`); temporary files a killed process left are
removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ibs_study.atomic import TEMP_SUFFIX, atomic_write, remove_temp_files, write_json_atomic
from ibs_study.config import ExperimentConfig, config_from_dict, config_to_dict, save_config
from ibs_study.engine.data import data_record
from ibs_study.errors import ConfigError, RunDirError

logger = logging.getLogger(__name__)

__all__ = [
    "RunDirError",
    "prepare_run_dir",
    "config_differences",
    "environment_info",
    "git_commit",
    "read_run_config",
    "read_environment",
    "thread_info",
    "run_lock",
    "RunStart",
    "LOCK_FILE",
]

PACKAGES = ("ibs_study", "torch", "torchvision", "numpy", "scipy", "pillow", "pycocotools")
# keys that may differ between the original run and its resume
RESUME_MAY_DIFFER = ("train.device", "data.num_workers", "data.root", "train.threads")
LOCK_FILE = ".lock"
# environment variables that set the thread pools of torch and the libraries under it
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# environment variables that cap the instruction set of torch's CPU kernels (ATen) and of oneDNN's
CPU_ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# run directory this process holds locked -> (its open lock file, nesting depth)
_HELD_LOCKS: dict[Path, tuple[Any, int]] = {}


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir``'s lock (``flock`` on ``run_dir/.lock``, released when the process ends,
    however it ends) for the duration of the block; nested use in one process is allowed.

    Raises:
        RunDirError: another process holds it (its pid named); ``run_dir`` does not exist.
    """
    key = Path(run_dir).resolve()
    if key in _HELD_LOCKS:
        handle, depth = _HELD_LOCKS[key]
        _HELD_LOCKS[key] = (handle, depth + 1)
        try:
            yield
        finally:
            handle, depth = _HELD_LOCKS[key]
            _HELD_LOCKS[key] = (handle, depth - 1)
        return
    if not key.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    try:
        handle = open(key / LOCK_FILE, "a+")
    except OSError as err:  # a read-only run directory: nothing can be written into it either
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        logger.warning("%s is read-only: not locked", run_dir)
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirError(
            f"{run_dir} is in use by process {holder} (training or evaluating in it); "
            "wait for it to end or stop it, then run again"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD_LOCKS[key] = (handle, 1)
    try:
        yield
    finally:
        if _HELD_LOCKS[key][1] == 1:
            del _HELD_LOCKS[key]
            # unlock explicitly: forked children (data loader workers) share the open file, and
            # closing only this process's copy would leave the lock held while they live
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def thread_info() -> dict[str, Any]:
    """The thread counts torch computes with in this process and the environment variables that
    set them, as recorded in ``environment.json``."""
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what :func:`platform.processor` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_info() -> dict[str, Any]:
    """The CPU and the instruction set torch's kernels use on it (``AVX2``, ``AVX512``, ...), with
    the environment variables that cap it, as recorded in ``environment.json``: CPU results are
    bit-identical only between runs whose kernels use the same instruction set."""
    return {
        "model": cpu_model(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "environment": {name: os.environ.get(name) for name in CPU_ISA_VARIABLES},
    }


def read_environment(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of ``run_dir/environment.json`` (empty when there is none).

    Raises:
        RunDirError: the file is not the JSON list it should be (e.g. cut by a full disk).
    """
    path = Path(run_dir) / "environment.json"
    if not path.is_file():
        return []
    try:
        events = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(
            f"{path} is damaged ({err}); it only records the environment of earlier starts: move it "
            "aside (e.g. to environment.json.damaged) and run again"
        ) from None
    if not isinstance(events, list):
        raise RunDirError(f"{path} holds no list of start events; move it aside and run again")
    return events


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the git work tree containing ``path`` (the package by default), or None."""
    path = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment_info(device: torch.device | str) -> dict[str, Any]:
    """Versions, device and commit, as recorded in ``environment.json``."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.device(device)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "packages": versions,
        "device": str(device),
        "device_name": device_name,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "threads": thread_info(),
        "cpu": cpu_info(),
        "git_commit": git_commit(),
        "argv": sys.argv,
    }


def read_run_config(run_dir: str | os.PathLike) -> ExperimentConfig:
    """The resolved config a run directory was started with.

    Raises:
        RunDirError: no ``config.yaml``, or one that is not a YAML mapping.
        ConfigError: a key or value of it that is not valid (named, with the file).
    """
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0]
        raise RunDirError(
            f"{path}: not a readable config ({reason}); restore it or start a new run"
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: holds no config (a YAML mapping); restore it or start a new run")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """``key: a -> b`` for every dotted key whose value differs between two config dicts
    (:func:`~ibs_study.config.config_to_dict`), except the keys of :data:`RESUME_MAY_DIFFER`."""
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        full = f"{prefix}.{key}" if prefix else key
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, full)
        elif va != vb and full not in RESUME_MAY_DIFFER:
            out.append(f"{full}: {va!r} -> {vb!r}")
    return out


def _run_entries(run_dir: Path) -> list[Path]:
    """What ``run_dir`` holds besides its lock file and temporary files."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.name != LOCK_FILE and not p.name.endswith(TEMP_SUFFIX)]


def prepare_run_dir(
    run_dir: str | os.PathLike,
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    resume: bool,
    force: bool = False,
) -> Path:
    """Create or reopen ``run_dir`` and record the config and environment (atomically); remove
    the temporary files a killed process left in it and in its ``checkpoints/``. The caller holds
    the run's lock (:func:`run_lock`, or :class:`RunStart`, which does both).

    A resume whose ``environment.json`` is damaged keeps it as ``environment.json.damaged-<time>``
    (with a warning) and starts a new history.

    Raises:
        RunDirError: a new run into a non-empty directory; a resume of a directory that
            is not a run; a resume whose config differs (unless ``force``).
    """
    run_dir = Path(run_dir)
    if resume:
        saved = read_run_config(run_dir)
        changes = config_differences(config_to_dict(saved), config_to_dict(cfg))
        if changes and not force:
            raise RunDirError(
                f"{run_dir} was started with another config; refusing to resume with changes: "
                + "; ".join(changes[:8])
                + " (pass --force to resume anyway)"
            )
        if changes:
            logger.warning("resuming %s with a changed config (--force): %s", run_dir, "; ".join(changes))
    elif _run_entries(run_dir):
        raise RunDirError(
            f"{run_dir} already exists and is not empty; pass --resume to continue that run or choose another --out"
        )
    data = data_record(cfg)  # generates a missing synthetic set; a bad data.root fails before any write
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / "checkpoints"):
        for path in remove_temp_files(folder):
            logger.warning("removed %s, left by a process that was stopped while writing it", path)
    save_config(cfg, run_dir / "config.yaml")
    env_path = run_dir / "environment.json"
    history = []
    if resume:
        try:
            history = read_environment(run_dir)
        except RunDirError as err:
            kept = env_path.with_name(f"environment.json.damaged-{dt.datetime.now():%Y%m%dT%H%M%S}")
            os.replace(env_path, kept)
            logger.warning("%s; kept it as %s and started a new environment history", err, kept.name)
    history.append({"event": "resume" if resume else "start", **environment_info(device), **data})
    write_json_atomic(env_path, history)
    return run_dir


class RunStart:
    """A start of training in ``run_dir``: locks it (:func:`run_lock`) and prepares it
    (:func:`prepare_run_dir`) until :meth:`close`.

    :meth:`commit` marks this start's first checkpoint written. A start closed as failed before
    that (e.g. in the model build or at a non-finite first loss: nothing to resume from) leaves
    the directory as it found it, so the same command can run again: a new run removes what it
    wrote (and the directory, if it made it); a resume restores its ``config.yaml`` and
    ``environment.json`` (its log records past the checkpoint are rolled back by the next
    resume, as after a kill).

    Raises:
        RunDirError: as :func:`prepare_run_dir`; or another process holds the lock.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        cfg: ExperimentConfig,
        device: torch.device | str,
        *,
        resume: bool,
        force: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.committed = False
        self.prepared = False
        if resume:
            read_run_config(self.run_dir)  # a resume of a missing run makes no directory
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(run_lock(self.run_dir))
        except BaseException:
            if self.created:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self.was_empty = not _run_entries(self.run_dir)
        self.records = {
            name: _read_bytes(self.run_dir / name) for name in ("config.yaml", "environment.json")
        }
        try:
            prepare_run_dir(self.run_dir, cfg, device, resume=resume, force=force)
        except BaseException:
            self.close(failed=True)
            raise
        self.prepared = True

    def commit(self) -> None:
        """This start has written a checkpoint: its files stay, whatever happens next."""
        self.committed = True

    def close(self, failed: bool) -> None:
        """Release the lock; after a failure before :meth:`commit`, first undo this start."""
        undo = failed and not self.committed
        if undo and self.resume:
            _restore_files(self.run_dir, self.records)
        elif undo and self.was_empty and not self.created:
            for path in _run_entries(self.run_dir):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if undo and self.prepared and (self.resume or self.was_empty):
            logger.warning(
                "%s: the start failed before writing a checkpoint; the folder is as it was, so the "
                "same command can run again",
                self.run_dir,
            )
        self._lock.close()
        if undo and self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _restore_files(run_dir: Path, records: dict[str, bytes | None]) -> None:
    """Put the files of ``records`` (name -> content, None: absent) back as they were."""
    for name, content in records.items():
        path = run_dir / name
        if content is None:
            path.unlink(missing_ok=True)
        elif _read_bytes(path) != content:
            with atomic_write(path, "wb") as f:
                f.write(content)
