"""Ground truth of Panoptic FCN for one crop, built with tensor operations (no per-pixel loops).

Following the official ``GenerateGT`` (Panoptic FCN, as used by the IBS code):

* Masks go to the stride-4 resolution of the feature encoder by bilinear interpolation
  (soft masks); a thing's centre is the mass centre of its positive stride-4 pixels.
* A thing is assigned to every FPN level whose scale range holds ``sqrt(box area)`` (box
  in input pixels); ranges overlap, so one thing can be supervised on two levels, and
  each (thing, level) assignment counts as one ground-truth thing in the losses.
* On its levels a thing draws a Gaussian peak (value 1 at the integer centre, CornerNet
  radius from the box size with ``min_overlap``, ``sigma = (2 r + 1) / gaussian_sigma``,
  a square window of half-width r) into its class channel; overlapping peaks keep the maximum.
* Region targets for the stuff branch: per region class (every class, or only stuff
  classes) the stride-4 semantic map, bilinearly resized to each level, clamped to 1,
  with values below 0.5 set to 0. A class is present on a level where this is non-zero.
* Kernels of a thing are gathered inside its region on a level: the stride-4 soft mask
  resized to the level, above 0.1 (the official rule), plus the centre pixel so that the
  region is never empty.

Additions to the official generator: ``ignore`` pixels (void, crowd, padding) of the
:class:`~ibs_study.data.batch.CropTarget` give ``valid`` maps that the losses use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ibs_study.data.batch import CropTarget

__all__ = [
    "ThingLevelTargets",
    "CropTargets",
    "TargetSpec",
    "gaussian_radius",
    "draw_gaussians",
    "mass_centers",
    "downsample_masks",
    "build_crop_targets",
]


@dataclass
class ThingLevelTargets:
    """The things assigned to one FPN level of one crop.

    Attributes:
        masks: (N, h4, w4) float soft masks at stride 4 (dice targets).
        classes: (N,) int64 thing-class index (0..T-1, the centre-heatmap channel).
        regions: (N, h, w) bool, where this thing's kernels may be gathered on the level.
        centers: (N, 2) int64 (x, y) peak positions on the level.
        segments: (N,) int64 index of each thing among the crop target's segments.
    """

    masks: torch.Tensor
    classes: torch.Tensor
    regions: torch.Tensor
    centers: torch.Tensor
    segments: torch.Tensor

    def __len__(self) -> int:
        return int(self.classes.shape[0])


@dataclass
class CropTargets:
    """Panoptic FCN's targets of one crop, per level (index l over the head levels).

    Attributes:
        heatmaps: [L] (T, h_l, w_l) float Gaussian centre targets.
        things: [L] the things assigned to each level.
        region_scores: [L] (R, h_l, w_l) float stuff-region targets.
        semantic: (R, h4, w4) float soft semantic map per region class at stride 4.
        valid: [L] (h_l, w_l) bool, False where the level's cell is mostly ignored.
        valid4: (h4, w4) bool, the same at stride 4.
    """

    heatmaps: list[torch.Tensor]
    things: list[ThingLevelTargets]
    region_scores: list[torch.Tensor]
    semantic: torch.Tensor
    valid: list[torch.Tensor]
    valid4: torch.Tensor


@dataclass(frozen=True)
class TargetSpec:
    """What the generator needs to know about the model.

    Attributes:
        thing_index: (K,) int64 contiguous label -> thing-class index, -1 for stuff.
        region_index: (K,) int64 contiguous label -> region-class index, -1 if none.
        num_thing_classes: T. num_region_classes: R.
        scale_ranges: per level (low, high) of ``sqrt(box area)`` in input pixels.
        min_overlap: CornerNet radius parameter.
        gaussian_sigma: sigma = diameter / gaussian_sigma.
        max_things: at most this many things per level and crop (official TENSOR_DIM).
    """

    thing_index: torch.Tensor
    region_index: torch.Tensor
    num_thing_classes: int
    num_region_classes: int
    scale_ranges: tuple[tuple[float, float], ...]
    min_overlap: float
    gaussian_sigma: float
    max_things: int


def gaussian_radius(box_wh: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CornerNet's Gaussian radius: the smallest of three radii at which a box shifted by it
    still overlaps the original by ``min_overlap`` IoU.

    Args:
        box_wh: (N, 2) float box width and height (on the heatmap's grid).

    Returns:
        (N,) float radius.
    """
    width, height = box_wh[:, 0], box_wh[:, 1]
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(r1, torch.minimum(r2, r3))


def draw_gaussians(
    num_classes: int,
    size: tuple[int, int],
    classes: torch.Tensor,
    centers: torch.Tensor,
    radii: torch.Tensor,
    sigma_factor: float,
) -> torch.Tensor:
    """Gaussian peaks, one per object, merged per class by maximum.

    Peak k is ``exp(-(dx^2 + dy^2) / (2 s^2))`` with ``s = (2 r_k + 1) / sigma_factor`` on
    the square ``|dx|, |dy| <= r_k`` around ``centers[k]`` (1 at the centre, 0 outside);
    values below float64 machine epsilon are set to 0 (the official rule).

    Args:
        num_classes: C, heatmap channels. size: (h, w).
        classes: (N,) int64 channel of each peak.
        centers: (N, 2) int64 (x, y).
        radii: (N,) int64 radius >= 0.

    Returns:
        (C, h, w) float heatmap.
    """
    h, w = size
    device = centers.device
    heatmap = torch.zeros((num_classes, h, w), device=device)
    if classes.numel() == 0:
        return heatmap
    dx = torch.arange(w, device=device)[None, None, :] - centers[:, 0, None, None]  # (N, 1, w)
    dy = torch.arange(h, device=device)[None, :, None] - centers[:, 1, None, None]  # (N, h, 1)
    radius = radii[:, None, None]
    sigma = (2 * radius + 1).float() / sigma_factor
    peaks = torch.exp(-(dx**2 + dy**2).float() / (2 * sigma**2))  # (N, h, w)
    inside = (dx.abs() <= radius) & (dy.abs() <= radius)
    peaks = torch.where(inside & (peaks >= torch.finfo(torch.float64).eps), peaks, 0.0)
    for channel in torch.unique(classes).tolist():
        heatmap[channel] = peaks[classes == channel].amax(0)
    return heatmap


def mass_centers(soft_masks: torch.Tensor) -> torch.Tensor:
    """Mass centres (x, y) of the positive pixels of each mask (official ``CENTER_TYPE: mass``).

    Args:
        soft_masks: (N, h, w) float.

    Returns:
        (N, 2) float (x, y); NaN for a mask without positive pixels.
    """
    positive = (soft_masks > 0).float()
    count = positive.sum((1, 2))
    ys = torch.arange(soft_masks.shape[1], device=soft_masks.device, dtype=torch.float32)
    xs = torch.arange(soft_masks.shape[2], device=soft_masks.device, dtype=torch.float32)
    cx = (positive.sum(1) * xs).sum(1) / count
    cy = (positive.sum(2) * ys).sum(1) / count
    return torch.stack([cx, cy], dim=1)


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float (x1, y1, x2, y2), x2/y2 exclusive; masks must be non-empty."""
    rows = masks.any(2)
    cols = masks.any(1)
    h, w = masks.shape[1:]
    y1 = rows.float().argmax(1)
    x1 = cols.float().argmax(1)
    y2 = h - rows.flip(1).float().argmax(1)
    x2 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x1, y1, x2, y2], dim=1).float()


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) downsampling of binary masks, as the official generator does.

    For an exact factor of 4 (the padded input and the stride-4 encoder) bilinear sampling
    reads pixels 4i+1 and 4i+2 in each direction with weight 1/2, so the result is the mean
    of four strided slices; the masks are never copied to float at full resolution.

    Args:
        masks: (N, H, W) bool. size: (h, w).

    Returns:
        (N, h, w) float in [0, 1].
    """
    h, w = masks.shape[-2:]
    if (h, w) != (4 * size[0], 4 * size[1]):
        return _resize(masks.float(), size)
    total = masks.new_zeros((masks.shape[0], *size), dtype=torch.float32)
    for dy in (1, 2):
        for dx in (1, 2):
            total += masks[:, dy::4, dx::4]
    return total / 4


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) float -> (N, *size), bilinear, align_corners=False (as the official generator)."""
    if maps.shape[0] == 0:
        return maps.new_zeros((0, *size))
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def build_crop_targets(
    target: CropTarget,
    padded_size: tuple[int, int],
    encoder_size: tuple[int, int],
    level_sizes: list[tuple[int, int]],
    spec: TargetSpec,
    crop: int = 0,
) -> CropTargets:
    """Panoptic FCN's targets for one crop.

    Args:
        target: the crop's ground truth at image resolution (H, W) <= ``padded_size``;
            the rest of the padded input is ignored.
        padded_size: (H_pad, W_pad) of the network input.
        encoder_size: (h4, w4) of the stride-4 feature-encoder output.
        level_sizes: (h_l, w_l) of each head level (P3..P7).
        spec: model facts (class indices, scale ranges, Gaussian parameters).
        crop: index of the crop in the batch, for error messages.
    """
    if len(level_sizes) != len(spec.scale_ranges):
        raise ValueError(f"{len(level_sizes)} head levels but {len(spec.scale_ranges)} instance scale ranges")
    h, w = target.masks.shape[-2:]
    pad = (0, padded_size[1] - w, 0, padded_size[0] - h)
    if pad[1] < 0 or pad[3] < 0:
        raise ValueError(f"crop {crop}: target size {(h, w)} exceeds the network input {padded_size}")
    device = target.masks.device
    masks = F.pad(target.masks, pad)  # (N, H_pad, W_pad) bool
    ignore = F.pad(target.ignore, pad, value=True)
    masks4 = downsample_masks(masks, encoder_size)  # (N, h4, w4)
    valid4 = downsample_masks(ignore[None], encoder_size)[0] < 0.5

    labels = target.labels.to(device)
    thing_classes = spec.thing_index.to(device)[labels]
    region_classes = spec.region_index.to(device)[labels]
    semantic = torch.zeros((spec.num_region_classes, *encoder_size), device=device)
    in_region = region_classes >= 0
    semantic.index_add_(0, region_classes[in_region], masks4[in_region])

    is_thing = (thing_classes >= 0) & masks.flatten(1).any(1)
    thing_masks, thing_masks4 = masks[is_thing], masks4[is_thing]
    thing_classes = thing_classes[is_thing]
    thing_segments = torch.nonzero(is_thing).flatten()
    boxes = _boxes(thing_masks)  # (N, 4) in input pixels
    scales = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    stride4 = (padded_size[0] / encoder_size[0], padded_size[1] / encoder_size[1])
    centers4 = mass_centers(thing_masks4)  # (N, 2) (x, y) at stride 4, NaN where empty at stride 4
    vanished = torch.isnan(centers4[:, 0])
    if vanished.any():  # a thing too thin for the stride-4 grid: its full-resolution centre, scaled
        scale = torch.tensor([stride4[1], stride4[0]], device=device)
        centers4[vanished] = (mass_centers(thing_masks[vanished].float()) + 0.5) / scale - 0.5

    heatmaps, things, region_scores, valid = [], [], [], []
    for level, ((low, high), (lh, lw)) in enumerate(zip(spec.scale_ranges, level_sizes, strict=True)):
        assigned = (scales >= low) & (scales <= high)
        count = int(assigned.sum())
        if count > spec.max_things:
            raise ValueError(
                f"crop {crop}: {count} things on head level {level}, more than the limit "
                f"tensor_dim={spec.max_things}; raise panoptic_fcn.tensor_dim"
            )
        to_level = torch.tensor([lw / encoder_size[1], lh / encoder_size[0]], device=device)
        centers = (centers4[assigned] * to_level).long()  # truncation, as the official code
        centers[:, 0].clamp_(0, lw - 1)
        centers[:, 1].clamp_(0, lh - 1)
        box = boxes[assigned]
        box_wh = torch.stack(
            [(box[:, 2] - box[:, 0]) * lw / padded_size[1], (box[:, 3] - box[:, 1]) * lh / padded_size[0]],
            dim=1,
        )
        radii = gaussian_radius(box_wh, spec.min_overlap).clamp(min=0).long()
        classes = thing_classes[assigned]
        heatmaps.append(
            draw_gaussians(spec.num_thing_classes, (lh, lw), classes, centers, radii, spec.gaussian_sigma)
        )
        level_masks4 = thing_masks4[assigned]
        regions = _resize(level_masks4, (lh, lw)) > 0.1
        regions[torch.arange(count, device=device), centers[:, 1], centers[:, 0]] = True
        things.append(ThingLevelTargets(level_masks4, classes, regions, centers, thing_segments[assigned]))

        scores = _resize(semantic, (lh, lw)).clamp(max=1.0)
        region_scores.append(torch.where(scores < 0.5, 0.0, scores))
        valid.append(_resize(valid4[None].float(), (lh, lw))[0] >= 0.5)
    return CropTargets(heatmaps, things, region_scores, semantic, valid, valid4)
