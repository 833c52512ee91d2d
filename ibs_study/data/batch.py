"""What the models train on: per-crop targets and the collated batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import VOID_ID, PanopticSample

__all__ = ["CropTarget", "Batch", "target_from_sample", "collate"]


@dataclass
class CropTarget:
    """Ground truth of one crop.

    Attributes:
        masks: (N, H, W) bool, one mask per non-crowd segment present in the crop.
        labels: (N,) int64 contiguous class labels (see :class:`DatasetMeta`).
        is_thing: (N,) bool, True for thing segments.
        ignore: (H, W) bool, pixels no loss may use: void, crowd and padding.
        segment_ids: (N,) int64 segment ids of the source image (for tracing).
    """

    masks: torch.Tensor
    labels: torch.Tensor
    is_thing: torch.Tensor
    ignore: torch.Tensor
    segment_ids: torch.Tensor

    def to(self, device: torch.device | str) -> CropTarget:
        return CropTarget(
            *(getattr(self, f).to(device, non_blocking=True) for f in self.__dataclass_fields__)
        )

    @property
    def num_things(self) -> int:
        return int(self.is_thing.sum())


def target_from_sample(
    sample: PanopticSample,
    meta: DatasetMeta,
    *,
    pad_mask: np.ndarray | None = None,
    min_pixels: int = 1,
) -> CropTarget:
    """Build a :class:`CropTarget` from a (cropped) sample.

    Args:
        sample: the crop; ``segments`` must describe ``id_map``.
        meta: gives contiguous labels and thing/stuff per category.
        pad_mask: (H, W) bool, True where the crop is padding (added to ``ignore``).
        min_pixels: a segment needs at least this many pixels in the crop to become a
            target (Mask2Former's crop fix uses 2: "more than one pixel").
    """
    id_map = sample.id_map
    ignore = id_map == VOID_ID
    if pad_mask is not None:
        ignore |= pad_mask
    kept = []
    for seg in sample.segments:
        if seg.iscrowd:
            ignore |= id_map == seg.id
        elif seg.area >= min_pixels:
            kept.append(seg)
    ids = np.array([s.id for s in kept], dtype=np.int64)
    masks = id_map[None] == ids[:, None, None] if kept else np.zeros((0,) + id_map.shape, dtype=bool)
    labels = np.array([meta.contiguous_of[s.category_id] for s in kept], dtype=np.int64)
    return CropTarget(
        masks=torch.from_numpy(masks),
        labels=torch.from_numpy(labels),
        is_thing=torch.from_numpy(meta.is_thing[labels] if kept else np.zeros(0, dtype=bool)),
        ignore=torch.from_numpy(ignore),
        segment_ids=torch.from_numpy(ids),
    )


@dataclass
class Batch:
    """A training batch of equally sized crops.

    Attributes:
        images: (B, 3, H, W) uint8 RGB; models normalise internally.
        targets: one :class:`CropTarget` per crop.
        partner_index: (B,) int64, the crop whose features each crop's thing embeddings
            meet in the IBS loss, or None when no partner was assigned.
        image_ids: dataset image id of each crop.
        pair_class: (B,) int64 contiguous class each pair was sampled for (-1: random crop).
    """

    images: torch.Tensor
    targets: list[CropTarget]
    partner_index: torch.Tensor | None = None
    image_ids: list = field(default_factory=list)
    pair_class: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=True),
            targets=[t.to(device) for t in self.targets],
            partner_index=None if self.partner_index is None else self.partner_index.to(device),
            image_ids=self.image_ids,
            pair_class=self.pair_class,
        )


def _pad_target(target: CropTarget, height: int, width: int) -> CropTarget:
    """``target`` padded at the bottom and right to (height, width); padding is ignored."""
    h, w = target.ignore.shape
    masks = torch.zeros((target.masks.shape[0], height, width), dtype=target.masks.dtype)
    masks[:, :h, :w] = target.masks
    ignore = torch.ones((height, width), dtype=target.ignore.dtype)
    ignore[:h, :w] = target.ignore
    return CropTarget(masks, target.labels, target.is_thing, ignore, target.segment_ids)


def collate(
    images: list[np.ndarray],
    targets: list[CropTarget],
    image_ids: list,
    *,
    pad_to_multiple: int | None = None,
) -> Batch:
    """Stack (H, W, 3) uint8 crops into a :class:`Batch` (no partners yet).

    Args:
        pad_to_multiple: None: all crops must have one size. Otherwise crops of any size
            are zero-padded at the bottom and right to the largest height and width of the
            batch, rounded up to this multiple (full-image training); padded pixels are
            added to each target's ``ignore``.
    """
    if pad_to_multiple is None:
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"all crops of a batch must have one size, got {sorted(shapes)}")
        stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return Batch(images=stacked, targets=targets, image_ids=list(image_ids))
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    height = -(-max(im.shape[0] for im in images) // pad_to_multiple) * pad_to_multiple
    width = -(-max(im.shape[1] for im in images) // pad_to_multiple) * pad_to_multiple
    padded_images = np.zeros((len(images), height, width, 3), dtype=np.uint8)
    for k, im in enumerate(images):
        padded_images[k, : im.shape[0], : im.shape[1]] = im
    stacked = torch.from_numpy(padded_images).permute(0, 3, 1, 2).contiguous()
    padded = [_pad_target(t, height, width) for t in targets]
    return Batch(images=stacked, targets=padded, image_ids=list(image_ids))
