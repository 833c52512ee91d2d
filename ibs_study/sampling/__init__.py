"""Training crop sampling: random crops and class-aware paired crops (Sec. 4.2).

* :mod:`~ibs_study.sampling.index`: per-class segment index from the JSON, cached on disk;
* :mod:`~ibs_study.sampling.plans`: :class:`SamplerConfig`, :class:`CropPlan` and the two
  samplers, pure functions of ``(seed, rank, step)``;
* :mod:`~ibs_study.sampling.loader`: plans to crops to :class:`~ibs_study.data.batch.Batch`.

IBS partner assignment lives with the loss: :func:`ibs_study.losses.assign_partners`.
"""

from ibs_study.sampling.index import IndexCacheError, SegmentIndex, default_cache_dir, image_sizes
from ibs_study.sampling.loader import (
    CropDataset,
    CropItem,
    StepPlanSampler,
    apply_plan,
    build_sampler,
    build_train_loader,
    collate_crops,
)
from ibs_study.sampling.plans import (
    PAIR_CLASS_POOLS,
    RANDOM_CROP_CENTRES,
    SAMPLER_KINDS,
    CropPlan,
    PairedCropSampler,
    RandomCropSampler,
    ResizeConfig,
    SamplerConfig,
    step_rng,
    thing_pair_resize,
)

__all__ = [
    "IndexCacheError",
    "SegmentIndex",
    "default_cache_dir",
    "image_sizes",
    "CropDataset",
    "CropItem",
    "StepPlanSampler",
    "apply_plan",
    "build_sampler",
    "build_train_loader",
    "collate_crops",
    "PAIR_CLASS_POOLS",
    "RANDOM_CROP_CENTRES",
    "SAMPLER_KINDS",
    "CropPlan",
    "PairedCropSampler",
    "RandomCropSampler",
    "ResizeConfig",
    "SamplerConfig",
    "step_rng",
    "thing_pair_resize",
]
