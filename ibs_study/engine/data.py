"""Opening the dataset split a config names (generating the synthetic set when missing).

A synthetic ``data.root`` that already holds a complete generation is used as it is, whatever
its parameters: the ``data.synthetic_*`` keys decide only what is generated where ``data.root``
does not exist yet (:func:`ensure_synthetic`; the study runner asks for ``strict`` reuse).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ibs_study.config import ExperimentConfig
from ibs_study.data.datasets import PanopticDataset, open_dataset
from ibs_study.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["open_split", "ensure_synthetic", "data_record", "split_layout"]

# what ``data.root`` of each real dataset must hold, for the message when it does not exist
_REAL_DATASET_ROOTS = {
    "cityscapes": "the Cityscapes folder holding gtFine/ and leftImg8bit/",
    "mapillary_vistas": "the Mapillary Vistas folder holding training/ and validation/",
    "coco_panoptic": "the COCO-panoptic folder (data.coco_panoptic.* name its files when they are not "
    "annotations/panoptic_SPLIT.json, panoptic_SPLIT/ and images/SPLIT/)",
}


def _synthetic_parameters(cfg: ExperimentConfig) -> dict[str, Any]:
    from ibs_study.data.synthetic import synthetic_parameters

    return synthetic_parameters(
        cfg.data.synthetic_scale,
        seed=cfg.data.synthetic_seed,
        colour_jitter=cfg.data.synthetic_colour_jitter,
        colour_classes=cfg.data.synthetic_colour_classes,
    )


def ensure_synthetic(cfg: ExperimentConfig, root: str | Path | None = None, *, strict: bool = False) -> None:
    """Generate the synthetic set of ``data.synthetic_scale`` / ``data.synthetic_seed`` /
    ``data.synthetic_colour_jitter`` / ``data.synthetic_colour_classes`` at ``root`` (default
    ``data.root``) when it does not exist; a complete generation there is reused whatever its
    parameters, or only with those parameters when ``strict``. Nothing for a real dataset.

    Raises:
        DataError: ``root`` holds no complete synthetic generation, or (``strict``) another one.
    """
    if cfg.data.dataset != "synthetic":
        return
    from ibs_study.data.synthetic import ensure_dataset

    ensure_dataset(
        Path(root if root is not None else cfg.data.root),
        scale=cfg.data.synthetic_scale,
        seed=cfg.data.synthetic_seed,
        colour_jitter=cfg.data.synthetic_colour_jitter,
        colour_classes=cfg.data.synthetic_colour_classes,
        strict=strict,
    )


def data_record(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a run's ``environment.json`` records about its data, after :func:`ensure_synthetic`:
    ``{"synthetic": <the generation's synthetic.json>}`` for a synthetic ``data.root`` (empty for
    a real dataset). Logs one warning when that generation differs from ``data.synthetic_*``.

    Raises:
        DataError: no usable synthetic generation at ``data.root``; a real dataset's root missing.
    """
    if cfg.data.dataset != "synthetic":
        _check_root(cfg, Path(cfg.data.root))
        return {}
    from ibs_study.data.synthetic import generation_differences, read_generation_info

    ensure_synthetic(cfg)
    found = read_generation_info(cfg.data.root) or {}
    differences = generation_differences(found, _synthetic_parameters(cfg))
    if differences:
        listed = ", ".join(
            f"{key} {ours!r} (preset {theirs!r})" for key, (ours, theirs) in differences.items()
        )
        logger.warning(
            "data.root=%s holds its own synthetic generation, used as it is: %s; the data.synthetic_* keys "
            "only decide what is generated where data.root does not exist",
            cfg.data.root,
            listed,
        )
    return {"synthetic": found}


def _check_root(cfg: ExperimentConfig, root: Path) -> None:
    """Raise a :class:`DataError` naming ``data.root`` when a real dataset's root does not exist."""
    if cfg.data.dataset in _REAL_DATASET_ROOTS and not root.is_dir():
        raise DataError(
            f"data.root={root}: no such folder for data.dataset={cfg.data.dataset}; set data.root "
            f"(--set data.root=PATH) to {_REAL_DATASET_ROOTS[cfg.data.dataset]}"
        )


def split_layout(cfg: ExperimentConfig, split: str) -> dict[str, Any]:
    """The keyword arguments that locate ``split`` of a ``coco_panoptic`` dataset: its
    ``data.coco_panoptic.train_*`` keys for ``data.train_split``, ``val_*`` for ``data.val_split``
    (the default layout for any other split); empty for the other datasets."""
    if cfg.data.dataset != "coco_panoptic":
        return {}
    role = "train" if split == cfg.data.train_split else "val" if split == cfg.data.val_split else None
    if role is None:
        return {}
    paths = cfg.data.coco_panoptic
    return {
        "json_path": getattr(paths, f"{role}_json"),
        "png_dir": getattr(paths, f"{role}_png_dir"),
        "image_dir": getattr(paths, f"{role}_image_dir"),
        "keys": f"data.coco_panoptic.{role}",
    }


def open_split(
    cfg: ExperimentConfig, split: str, *, prepare: bool = True, root: str | Path | None = None
) -> PanopticDataset:
    """The ``split`` of ``cfg.data`` (or of ``root``).

    With ``prepare``, a synthetic ``data.root`` that does not exist is generated first
    (:func:`ensure_synthetic`; an existing complete generation is used as it is). A ``root``
    given here must hold the dataset: nothing is generated at, say, a mistyped ``--data``.

    Raises:
        DataError: the dataset root does not exist, or lacks the split's files.
    """
    if prepare and root is None:
        ensure_synthetic(cfg)
    root = Path(root if root is not None else cfg.data.root)
    _check_root(cfg, root)
    return open_dataset(cfg.data.dataset, root, split, **split_layout(cfg, split))
