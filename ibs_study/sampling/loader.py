"""Turning crop plans into training batches: :func:`apply_plan`, :class:`CropDataset`,
:func:`build_train_loader`.

The loader's batch sampler computes the plans of step ``s`` in the main process from
``(seed, rank, s)``; workers only read images and cut the planned crops, so a batch is
the same for any number of workers and resuming at step ``s`` needs no sampler state.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ibs_study.data.batch import Batch, CropTarget, collate, target_from_sample
from ibs_study.data.datasets import DatasetMeta, PanopticDataset
from ibs_study.data.panoptic import PanopticSample
from ibs_study.data.transforms import TrainAugmentation, crop, hflip
from ibs_study.sampling.index import SegmentIndex, image_sizes
from ibs_study.sampling.plans import CropPlan, PairedCropSampler, RandomCropSampler, SamplerConfig, step_rng

logger = logging.getLogger(__name__)

__all__ = [
    "apply_plan",
    "CropItem",
    "CropDataset",
    "StepPlanSampler",
    "build_sampler",
    "collate_crops",
    "build_train_loader",
    "FULL_IMAGE_PAD_MULTIPLE",
]

FULL_IMAGE_PAD_MULTIPLE = 32
# Decoded training images kept per process (a CPU-scale split, 300 x 256 x 512, takes ~270 MiB):
# every image is cut into crops many times, and decoding it is a large share of a CPU step.
DECODED_CACHE_BYTES = 512 * 2**20


def apply_plan(sample: PanopticSample, plan: CropPlan) -> tuple[PanopticSample, np.ndarray]:
    """Cut the planned crop: resize to ``plan.resize_hw``, take ``plan.crop_box``, flip.

    Only the part of the resized image inside the window is computed (Pillow's bilinear
    resize of the matching source box, and the same nearest-neighbour rows and columns as
    :func:`ibs_study.data.transforms.resize` for the id map), which gives the id map of
    ``resize`` then ``crop`` exactly and its image within one grey level, at a fraction of
    the cost when the image is enlarged.

    Returns:
        the crop (segments recomputed from its pixels) and ``pad_mask``: (h, w) bool, True
        where the window lies outside the resized image.
    """
    height, width = sample.height, sample.width
    out_h, out_w = plan.resize_hw
    top, left, crop_h, crop_w = plan.crop_box
    row0, row1 = max(top, 0), min(top + crop_h, out_h)
    col0, col1 = max(left, 0), min(left + crop_w, out_w)
    if row0 >= row1 or col0 >= col1:
        raise ValueError(
            f"image id {sample.image_id!r}: crop box {plan.crop_box} does not overlap the resized image {plan.resize_hw}"
        )
    rows = np.minimum(((np.arange(row0, row1) + 0.5) * (height / out_h)).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(col0, col1) + 0.5) * (width / out_w)).astype(np.int64), width - 1)
    id_region = sample.id_map[rows[:, None], cols[None, :]]
    if (out_h, out_w) == (height, width):
        image_region = sample.image[row0:row1, col0:col1]
    else:
        box = (col0 * width / out_w, row0 * height / out_h, col1 * width / out_w, row1 * height / out_h)
        image_region = np.asarray(
            Image.fromarray(sample.image).resize(
                (col1 - col0, row1 - row0), Image.Resampling.BILINEAR, box=box
            )
        )
    region = PanopticSample(sample.image_id, image_region, id_region, sample.segments)
    cropped, pad_mask = crop(region, top - row0, left - col0, crop_h, crop_w)
    if plan.flip:
        cropped = hflip(cropped)
        pad_mask = np.ascontiguousarray(pad_mask[:, ::-1])
    return cropped, pad_mask


@dataclass
class CropItem:
    """One planned crop, ready to collate.

    Attributes:
        image: (h, w, 3) uint8.
        target: its ground truth.
        image_id: dataset image id of the source image.
        plan: the plan it was cut by.
    """

    image: np.ndarray
    target: CropTarget
    image_id: str | int
    plan: CropPlan


class CropDataset(Dataset):
    """A dataset indexed by :class:`CropPlan`: ``dataset[plan]`` reads the image and cuts the crop.

    Decoded samples are kept (least recently used first out) while they fit in ``cache_bytes``;
    their arrays are read-only, so a crop never changes what a later one reads.

    Args:
        dataset: the panoptic training split.
        meta: label space of the targets (default ``dataset.meta``).
        min_pixels: a segment needs this many pixels in the crop to become a target.
        cache_bytes: memory for decoded samples (0: decode every time).
    """

    def __init__(
        self,
        dataset: PanopticDataset,
        meta: DatasetMeta | None = None,
        min_pixels: int = 1,
        cache_bytes: int = DECODED_CACHE_BYTES,
    ) -> None:
        self.dataset = dataset
        self.meta = meta or dataset.meta
        self.min_pixels = min_pixels
        self.cache_bytes = cache_bytes
        self._decoded: OrderedDict[int, PanopticSample] = OrderedDict()
        self._decoded_bytes = 0

    def sample(self, index: int) -> PanopticSample:
        """``dataset[index]`` with read-only arrays, from the cache when it holds it."""
        sample = self._decoded.get(index)
        if sample is not None:
            self._decoded.move_to_end(index)
            return sample
        sample = self.dataset[index]
        sample.image.setflags(write=False)
        sample.id_map.setflags(write=False)
        size = sample.image.nbytes + sample.id_map.nbytes
        if size <= self.cache_bytes:
            self._decoded[index] = sample
            self._decoded_bytes += size
            while self._decoded_bytes > self.cache_bytes:
                _, dropped = self._decoded.popitem(last=False)
                self._decoded_bytes -= dropped.image.nbytes + dropped.id_map.nbytes
        return sample

    def __getitem__(self, plan: CropPlan) -> CropItem:
        sample = self.sample(plan.image_index)
        cropped, pad_mask = apply_plan(sample, plan)
        target = target_from_sample(cropped, self.meta, pad_mask=pad_mask, min_pixels=self.min_pixels)
        return CropItem(image=cropped.image, target=target, image_id=sample.image_id, plan=plan)


def collate_crops(items: list[CropItem], pad_to_multiple: int | None = None) -> Batch:
    """A :class:`Batch` of crops with ``pair_class`` filled (``partner_index`` stays None)."""
    batch = collate(
        [item.image for item in items],
        [item.target for item in items],
        [item.image_id for item in items],
        pad_to_multiple=pad_to_multiple,
    )
    batch.pair_class = torch.tensor([item.plan.pair_class for item in items], dtype=torch.int64)
    return batch


class StepPlanSampler(Sampler):
    """Yields the plans of steps ``start_step, start_step + 1, ...`` forever, each drawn
    from :func:`step_rng` ``(seed, rank, step)``."""

    def __init__(
        self,
        sampler: RandomCropSampler | PairedCropSampler,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
    ) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def plans(self, step: int) -> list[CropPlan]:
        return self.sampler.plan_batch(step_rng(self.seed, self.rank, step), self.batch_size)

    def __iter__(self) -> Iterator[list[CropPlan]]:
        for step in itertools.count(self.start_step):
            yield self.plans(step)


def build_sampler(
    dataset: PanopticDataset,
    meta: DatasetMeta,
    sampler_cfg: SamplerConfig,
    augmentation: TrainAugmentation,
) -> RandomCropSampler | PairedCropSampler:
    """The crop sampler ``sampler_cfg.kind`` names (the paired one, and random crops centred on
    things, build or load the segment index)."""
    if sampler_cfg.kind == "paired":
        index = SegmentIndex.for_dataset(dataset, meta, cache_dir=sampler_cfg.cache_dir)
        return PairedCropSampler(index, sampler_cfg, augmentation, class_names=meta.class_names)
    if sampler_cfg.random_crop_centre == "thing" and augmentation.crop_size is not None:
        index = SegmentIndex.for_dataset(dataset, meta, cache_dir=sampler_cfg.cache_dir)
        return RandomCropSampler(index.image_hw, augmentation, thing_boxes=index.thing_boxes_by_image())
    return RandomCropSampler(image_sizes(dataset.records, str(dataset.json_path)), augmentation)


def build_train_loader(
    dataset: PanopticDataset,
    meta: DatasetMeta,
    sampler_cfg: SamplerConfig,
    augmentation: TrainAugmentation,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    min_pixels: int = 1,
) -> DataLoader:
    """An endless loader of training :class:`Batch` es for steps ``start_step, start_step + 1, ...``.

    Args:
        dataset: the training split.
        meta: label space of the targets.
        sampler_cfg: random or paired crops.
        augmentation: resize, crop size (None: full images, padded to a multiple of 32 per
            batch with the padding in ``ignore``) and flip.
        batch_size: crops per step on this process (paired: even); the global batch is
            ``world_size * batch_size``.
        seed: run seed; with ``rank`` and the step it fixes every plan.
        start_step: first step to produce (resuming).
        num_workers: DataLoader worker processes (the batches do not depend on it).
        rank / world_size: this process among the DDP processes; each rank draws its own
            plans, so pairs never straddle processes.
        min_pixels: a segment needs this many pixels in a crop to become a target.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size}) (world size {world_size})")
    if batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
    sampler = build_sampler(dataset, meta, sampler_cfg, augmentation)
    if isinstance(sampler, PairedCropSampler) and batch_size % 2:
        raise ValueError(
            f"paired crop sampling needs an even train.batch_size (per process), got {batch_size}"
        )
    logger.info(
        "%s crops for %s: %d per process x %d process(es) = %d per step, from step %d",
        sampler_cfg.kind,
        dataset.name,
        batch_size,
        world_size,
        batch_size * world_size,
        start_step,
    )
    pad = FULL_IMAGE_PAD_MULTIPLE if augmentation.crop_size is None else None
    return DataLoader(
        CropDataset(dataset, meta, min_pixels=min_pixels),
        batch_sampler=StepPlanSampler(sampler, batch_size, seed, rank, start_step),
        collate_fn=partial(collate_crops, pad_to_multiple=pad),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
