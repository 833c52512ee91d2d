"""Training crop sampling: random crops and class-aware paired crops (Sec. 4.2).

* :mod:`~ibs_study.sampling.index`: per-class segment index from the JSON, cached on disk;
* :mod:`~ibs_study.sampling.plans`: :class:`SamplerConfig`, :class:`CropPlan` and the two
  samplers, pure functions of ``(seed, rank, step)``;
* :mod:`~ibs_study.sampling.loader`: plans to crops to :class:`~ibs_study.data.batch.Batch`.

IBS partner assignment lives with the loss: :func:`ibs_study.losses.assign_partners`.

The names below load their submodule on first use, so importing
:mod:`~ibs_study.sampling.plans` (the config does) does not import torch, which only
:mod:`~ibs_study.sampling.loader` needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE = {
    "IndexCacheError": "index",
    "SegmentIndex": "index",
    "default_cache_dir": "index",
    "image_sizes": "index",
    "CropDataset": "loader",
    "CropItem": "loader",
    "StepPlanSampler": "loader",
    "apply_plan": "loader",
    "build_sampler": "loader",
    "build_train_loader": "loader",
    "collate_crops": "loader",
    "PAIR_CLASS_POOLS": "plans",
    "RANDOM_CROP_CENTRES": "plans",
    "SAMPLER_KINDS": "plans",
    "CropPlan": "plans",
    "PairedCropSampler": "plans",
    "RandomCropSampler": "plans",
    "ResizeConfig": "plans",
    "SamplerConfig": "plans",
    "step_rng": "plans",
    "thing_pair_resize": "plans",
}

__all__ = list(_SUBMODULE)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SUBMODULE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
