"""Run directories: what a run records about itself, and the rules for reusing one.

A run directory holds ``config.yaml`` (the resolved config), ``environment.json``
(package versions, device, git commit, command line, a synthetic dataset's ``synthetic.json``;
one entry per start or resume),
``log.jsonl`` (one record per logged step), ``tensorboard/`` and ``checkpoints/``.

Rules: a new run refuses an existing non-empty directory (nothing is overwritten); a
resume refuses a directory whose config differs from the requested one unless forced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ibs_study.config import ExperimentConfig, config_from_dict, config_to_dict, save_config
from ibs_study.engine.data import data_record
from ibs_study.errors import RunDirError

logger = logging.getLogger(__name__)

__all__ = [
    "RunDirError",
    "prepare_run_dir",
    "config_differences",
    "environment_info",
    "git_commit",
    "read_run_config",
]

PACKAGES = ("ibs_study", "torch", "torchvision", "numpy", "scipy", "pillow", "pycocotools")
# keys that may differ between the original run and its resume
RESUME_MAY_DIFFER = ("train.device", "data.num_workers", "data.root")


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
        "git_commit": git_commit(),
        "argv": sys.argv,
    }


def read_run_config(run_dir: str | os.PathLike) -> ExperimentConfig:
    """The resolved config a run directory was started with."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml)")
    with open(path) as f:
        return config_from_dict(yaml.safe_load(f))


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


def prepare_run_dir(
    run_dir: str | os.PathLike,
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    resume: bool,
    force: bool = False,
) -> Path:
    """Create or reopen ``run_dir`` and record the config and environment.

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
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(
            f"{run_dir} already exists and is not empty; pass --resume to continue that run or choose another --out"
        )
    data = data_record(cfg)  # generates a missing synthetic set; a bad data.root fails before any write
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    env_path = run_dir / "environment.json"
    history = json.loads(env_path.read_text()) if resume and env_path.is_file() else []
    history.append({"event": "resume" if resume else "start", **environment_info(device), **data})
    env_path.write_text(json.dumps(history, indent=2))
    return run_dir
