"""Opening the dataset split a config names (generating the synthetic set when missing)."""

from __future__ import annotations

import logging
from pathlib import Path

from ibs_study.config import ExperimentConfig
from ibs_study.data.datasets import PanopticDataset, open_dataset

logger = logging.getLogger(__name__)

__all__ = ["open_split"]


def open_split(
    cfg: ExperimentConfig, split: str, *, prepare: bool = True, root: str | Path | None = None
) -> PanopticDataset:
    """The ``split`` of ``cfg.data`` (or of ``root``).

    With ``prepare`` and a synthetic dataset whose root does not exist, the synthetic set
    of ``data.synthetic_scale`` / ``data.synthetic_seed`` / ``data.synthetic_colour_jitter`` /
    ``data.synthetic_colour_classes`` is generated there first (and an existing one must have
    been generated with them).
    """
    root = Path(root if root is not None else cfg.data.root)
    if cfg.data.dataset == "synthetic" and prepare:
        from ibs_study.data.synthetic import ensure_dataset

        ensure_dataset(
            root,
            scale=cfg.data.synthetic_scale,
            seed=cfg.data.synthetic_seed,
            colour_jitter=cfg.data.synthetic_colour_jitter,
            colour_classes=cfg.data.synthetic_colour_classes,
        )
    return open_dataset(cfg.data.dataset, root, split)
