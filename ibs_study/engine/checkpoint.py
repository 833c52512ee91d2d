"""Atomic checkpoints holding everything a run needs to continue bit for bit.

A checkpoint is a dict: ``model``, ``optimizer``, ``scheduler``, ``scaler`` (or None),
``step`` (optimiser steps done), ``config`` (the resolved config as a plain dict) and
``rng`` (Python, NumPy, torch CPU and CUDA generator states). The training data need no
state of their own: the crops of step ``s`` are a pure function of (seed, rank, s).

Files are written atomically (:func:`~ibs_study.atomic.atomic_write`), so a run killed while
saving leaves the previous checkpoint intact. Loading uses ``torch.load(weights_only=True)``:
only tensors and plain containers are accepted, never arbitrary pickled objects. A checkpoint
that cannot be read raises :class:`~ibs_study.errors.CheckpointError` naming it;
:func:`load_latest_checkpoint` falls back to the newest one that loads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibs_study.atomic import atomic_write
from ibs_study.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_latest_checkpoint",
    "latest_checkpoint",
    "checkpoint_record",
    "checkpoint_step",
    "rng_state",
    "restore_rng_state",
]

_NAME = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Generator states of Python, NumPy and torch (CPU and every CUDA device), as tensors."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what third-party code uses)
    return {
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            pos,
            has_gauss,
            float(state["numpy_gauss"][0]),
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], directory: str | os.PathLike, step: int, keep: int = 2) -> Path:
    """Write ``directory/step_{step:08d}.pt`` atomically and keep the newest ``keep`` files.

    Returns:
        The checkpoint path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    for old in _checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def _checkpoints(directory: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in directory.glob("step_*.pt") if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step a checkpoint file name records (``step_00000250.pt`` -> 250)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint name (step_<N>.pt)")
    return int(match.group(1))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    directory = Path(directory)
    found = _checkpoints(directory) if directory.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, truncated or not an ibs_study checkpoint (named).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: not a readable ibs_study checkpoint ({reason})") from None
    if not isinstance(state, dict) or not {"model", "step"} <= set(state):
        raise CheckpointError(f"{path}: not an ibs_study checkpoint (no model weights and step)")
    return state


def load_latest_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads, as (path, state); None when there is none.
    Each newer one that does not load (e.g. truncated by a full disk) is skipped with a warning.

    Raises:
        CheckpointError: there are checkpoints but none loads (names the newest).
    """
    found = _checkpoints(Path(directory)) if Path(directory).is_dir() else []
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as err:
            logger.warning("skipping %s; trying the checkpoint before it", err)
    if found:
        raise CheckpointError(
            f"{found[-1]}: none of the {len(found)} checkpoint(s) in {directory} is readable "
            "(truncated or damaged); train again into a new --out"
        )
    return None


def checkpoint_record(path: str | os.PathLike, state: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation records about the checkpoint it used: ``path``, ``step``, ``sha256``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "step": int(state["step"]), "sha256": digest.hexdigest()}
