"""Crop plans: where each training crop comes from, decided before any pixel is read.

A :class:`CropPlan` fixes one crop completely (image, resize, window, flip). The plans of
training step ``s`` on rank ``r`` are a pure function of ``(seed, r, s)`` (see
:func:`step_rng`), so resuming needs no sampler state and the batches do not depend on
the number of DataLoader workers.

* :class:`RandomCropSampler`: the usual random resize, uniform crop offset and flip.
* :class:`PairedCropSampler`: class-aware paired crops (Sec. 4.2): per pair, a class
  drawn uniformly among those present in at least two images, one of its segments in
  each of two images, both images rescaled so these segments have a similar size (thing
  classes), and crops that contain each segment's bbox centre. Pair mates are crops
  2k and 2k+1 of the batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ibs_study.data.transforms import TrainAugmentation, random_crop_box
from ibs_study.sampling.index import SegmentIndex

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLER_KINDS",
    "PAIR_CLASS_POOLS",
    "RANDOM_CROP_CENTRES",
    "ResizeConfig",
    "SamplerConfig",
    "CropPlan",
    "RandomCropSampler",
    "PairedCropSampler",
    "step_rng",
    "thing_pair_resize",
]

SAMPLER_KINDS = ("random", "paired")
PAIR_CLASS_POOLS = ("all", "thing")
RANDOM_CROP_CENTRES = ("uniform", "thing")


@dataclass
class ResizeConfig:
    """A random resize with :class:`~ibs_study.data.transforms.TrainAugmentation`'s rules.

    Args:
        resize_mode: ``"scale"`` (factor uniform in ``scale_range``) or ``"shortest_edge"``
            (shorter side a uniform choice among ``short_edges``, longer side capped by
            ``max_size``).
    """

    resize_mode: str = "scale"
    scale_range: tuple[float, float] = (0.5, 2.0)
    short_edges: tuple[int, ...] = ()
    max_size: int | None = None

    def __post_init__(self) -> None:
        try:
            self.augmentation()
        except ValueError as err:
            raise ValueError(f"sampler.stuff_resize: {err}") from err

    def augmentation(self) -> TrainAugmentation:
        """A resize-only :class:`TrainAugmentation` (its ``output_size`` draws the size)."""
        return TrainAugmentation(
            resize_mode=self.resize_mode,  # type: ignore[arg-type]
            scale_range=self.scale_range,
            short_edges=self.short_edges,
            max_size=self.max_size,
            crop_size=None,
            flip_prob=0.0,
        )


@dataclass
class SamplerConfig:
    """Training crop sampler (config keys ``sampler.*``). Defaults: the official Cityscapes values.

    Args:
        kind: ``"random"`` (random crops or full images) or ``"paired"`` (Sec. 4.2).
        random_crop_centre: where a random crop lies: ``"uniform"`` (a uniform offset) or
            ``"thing"`` (a uniform offset among the windows that contain the bbox centre of one
            non-crowd thing of the image, drawn uniformly; images without things: uniform), the
            official Panoptic FCN crop baseline (RandomCropWithInstance, CROP.MINIMUM_INST_AREA=1).
        pair_classes: the classes a pair is drawn for: ``"all"``, uniform over thing and
            stuff classes (official), or ``"thing"``, uniform over thing classes only (every
            pair centred on a thing, so both crops always hold a thing of one class).
        distinct_images: the two crops of a pair come from two different images (the
            official code draws both with replacement and can pick one image twice: False).
        pair_sizes: S values; thing pairs rescale each image so that sqrt(bbox area) of the
            chosen segment is S, one S drawn per pair (official Cityscapes: 32 ... 512).
        min_short_side / max_short_side: the thing rescale factor is clamped so the shorter
            image side stays within these (official Cityscapes: 512 / 3096).
        max_long_side: then, if the longer side exceeds this, the image is scaled down to
            it (official Cityscapes: 6192).
        stuff_resize: random resize of stuff-class pairs, per crop; None: the training
            augmentation's resize.
        cache_dir: segment-index cache folder; None: ``~/.cache/ibs_study``.
    """

    kind: str = "random"
    random_crop_centre: str = "uniform"
    pair_classes: str = "all"
    distinct_images: bool = True
    pair_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    min_short_side: int = 512
    max_short_side: int = 3096
    max_long_side: int = 6192
    stuff_resize: ResizeConfig | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler.kind must be one of {list(SAMPLER_KINDS)}, got {self.kind!r}")
        if self.random_crop_centre not in RANDOM_CROP_CENTRES:
            raise ValueError(
                f"sampler.random_crop_centre must be one of {list(RANDOM_CROP_CENTRES)}, got "
                f"{self.random_crop_centre!r}"
            )
        if self.pair_classes not in PAIR_CLASS_POOLS:
            raise ValueError(
                f"sampler.pair_classes must be one of {list(PAIR_CLASS_POOLS)}, got {self.pair_classes!r}"
            )
        if not self.pair_sizes or min(self.pair_sizes) < 1:
            raise ValueError(f"sampler.pair_sizes must list positive sizes, got {self.pair_sizes}")
        if not 1 <= self.min_short_side <= self.max_short_side:
            raise ValueError(
                f"sampler.min_short_side ({self.min_short_side}) must be >= 1 and <= sampler.max_short_side "
                f"({self.max_short_side})"
            )
        if self.max_long_side < self.min_short_side:
            raise ValueError(
                f"sampler.max_long_side ({self.max_long_side}) must be >= sampler.min_short_side "
                f"({self.min_short_side})"
            )


@dataclass(frozen=True)
class CropPlan:
    """One training crop, fully decided.

    Attributes:
        image_index: index of the image in the dataset.
        resize_hw: (H', W') the whole image is resized to first.
        crop_box: (top, left, height, width) window in the resized image; it may extend
            beyond the image (padded). Full-image mode: ``(0, 0, H', W')``.
        flip: mirror the crop left-right.
        pair_class: contiguous class the pair was sampled for; -1 for random crops.
        segment_id: the chosen segment of ``pair_class`` (0 for random crops).
        pair_size: S of a thing pair (sqrt(bbox area) the segment was scaled to, unless
            clamped); 0 for stuff pairs and random crops.
    """

    image_index: int
    resize_hw: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flip: bool
    pair_class: int = -1
    segment_id: int = 0
    pair_size: float = 0.0


def _resized_bbox_centre(
    bbox: np.ndarray, image_hw: tuple[int, int], resize_hw: tuple[int, int]
) -> tuple[float, float]:
    """(y, x) of the centre of an (x, y, w, h) ``bbox`` of an ``image_hw`` image once resized to
    ``resize_hw``; it lies inside the resized image (y + h / 2 < height)."""
    x, y, w, h = (int(v) for v in bbox)
    return (y + h / 2) * resize_hw[0] / image_hw[0], (x + w / 2) * resize_hw[1] / image_hw[1]


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator of the plans of training step ``step`` on rank ``rank``."""
    return np.random.default_rng([seed, rank, step])


@dataclass
class RandomCropSampler:
    """Random crops: a uniform image (with replacement), ``augmentation``'s random resize, a
    uniform crop offset and a random flip; full images when ``augmentation.crop_size`` is None.

    Random draws follow :meth:`TrainAugmentation.__call__`'s order, so a plan drawn with a
    generator describes what the augmentation would do with that generator. With
    ``thing_boxes`` (``sampler.random_crop_centre: thing``) the window instead contains the bbox
    centre of one of the image's things, drawn uniformly (a draw the augmentation does not make).

    Args:
        image_hw: (I, 2) (height, width) of every image.
        augmentation: resize, crop size and flip probability.
        thing_boxes: per image, (n_i, 4) (x, y, w, h) boxes of its non-crowd things
            (:meth:`SegmentIndex.thing_boxes_by_image`); None: uniform offsets.
    """

    image_hw: np.ndarray
    augmentation: TrainAugmentation
    thing_boxes: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.thing_boxes is not None:
            if len(self.thing_boxes) != len(self.image_hw):
                raise ValueError(
                    f"thing_boxes has {len(self.thing_boxes)} images, image_hw {len(self.image_hw)}"
                )
            if not any(len(boxes) for boxes in self.thing_boxes):
                raise ValueError(
                    "sampler.random_crop_centre='thing' centres crops on things, but no image of this dataset "
                    "has a non-crowd thing segment"
                )

    def plan_crop(self, rng: np.random.Generator) -> CropPlan:
        image = int(rng.integers(len(self.image_hw)))
        height, width = (int(v) for v in self.image_hw[image])
        out_hw = self.augmentation.output_size(height, width, rng)
        crop_hw = self.augmentation.crop_size
        if crop_hw is None:
            box = (0, 0, *out_hw)
        else:
            box = (
                *random_crop_box(out_hw, crop_hw, rng, contain_point=self._thing_centre(image, out_hw, rng)),
                *crop_hw,
            )
        flip = bool(rng.random() < self.augmentation.flip_prob)
        return CropPlan(image_index=image, resize_hw=out_hw, crop_box=box, flip=flip)

    def _thing_centre(
        self, image: int, out_hw: tuple[int, int], rng: np.random.Generator
    ) -> tuple[float, float] | None:
        """The resized bbox centre (y, x) of a uniformly drawn thing of ``image``; None for uniform crops."""
        if self.thing_boxes is None or not len(self.thing_boxes[image]):
            return None
        box = self.thing_boxes[image][rng.integers(len(self.thing_boxes[image]))]
        return _resized_bbox_centre(box, tuple(self.image_hw[image]), out_hw)

    def plan_batch(self, rng: np.random.Generator, batch_size: int) -> list[CropPlan]:
        return [self.plan_crop(rng) for _ in range(batch_size)]


def thing_pair_resize(
    image_hw: tuple[int, int], bbox_wh: tuple[int, int], pair_size: float, cfg: SamplerConfig
) -> tuple[int, int]:
    """Resized (H', W') that makes sqrt(bbox area) equal ``pair_size``, within the clamps.

    The factor ``pair_size / sqrt(w h)`` is clamped so that the shorter side stays within
    ``[cfg.min_short_side, cfg.max_short_side]``; then, if the longer side exceeds
    ``cfg.max_long_side``, the image is scaled down to it (official order).
    """
    height, width = image_hw
    short, long = min(height, width), max(height, width)
    factor = pair_size / math.sqrt(bbox_wh[0] * bbox_wh[1])
    factor = min(max(factor, cfg.min_short_side / short), cfg.max_short_side / short)
    factor = min(factor, cfg.max_long_side / long)
    return max(1, round(height * factor)), max(1, round(width * factor))


@dataclass
class PairedCropSampler:
    """Class-aware paired crops (Sec. 4.2); a batch is ``[A1, B1, A2, B2, ...]``.

    Per pair: (1) a class uniform over the classes present in >= 2 images (thing and
    stuff, or thing only when ``cfg.pair_classes == "thing"``); (2) two images holding it
    (distinct unless ``cfg.distinct_images`` is False); (3) one of its non-crowd segments
    in each; (4) thing class: each image is rescaled so that sqrt(bbox area) of its segment
    is S (one S per pair from ``cfg.pair_sizes``, :func:`thing_pair_resize`); stuff class:
    an independent random resize per crop;
    (5) a crop of ``augmentation.crop_size`` at a uniform offset among the windows that
    contain the segment's bbox centre; then an independent flip per crop.

    Args:
        index: the dataset's :class:`SegmentIndex`.
        cfg: sampler settings.
        augmentation: crop size, flip probability and (unless ``cfg.stuff_resize``) the
            stuff-pair resize.
        class_names: names of the contiguous labels, for messages.
    """

    index: SegmentIndex
    cfg: SamplerConfig
    augmentation: TrainAugmentation
    class_names: list[str] | None = None
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.augmentation.crop_size is None:
            raise ValueError("sampler.kind='paired' needs a crop size (data.crop_size), not full images")
        names = self.class_names or [str(k) for k in range(self.index.num_classes)]
        counts = self.index.images_per_class()
        things_only = self.cfg.pair_classes == "thing"
        pool = self.index.is_thing if things_only else np.ones(len(counts), dtype=bool)
        self.labels = np.flatnonzero(pool & (counts >= 2))
        excluded = np.flatnonzero(pool & (counts < 2))
        if len(excluded):
            logger.warning(
                "paired crop sampling never draws %d class(es) found in fewer than two images: %s",
                len(excluded),
                ", ".join(f"{names[k]} ({counts[k]} image{'s' if counts[k] != 1 else ''})" for k in excluded),
            )
        if not len(self.labels):
            kind = "thing class" if things_only else "class"
            listed = {names[k]: int(counts[k]) for k in np.flatnonzero(pool)}
            raise ValueError(
                f"paired crop sampling (sampler.pair_classes={self.cfg.pair_classes!r}) needs a {kind} with "
                f"non-crowd segments in at least two images; this dataset has none (images per {kind}: {listed})"
            )
        self._stuff_resize = (
            self.cfg.stuff_resize.augmentation() if self.cfg.stuff_resize else self.augmentation
        )

    def plan_pair(self, rng: np.random.Generator) -> tuple[CropPlan, CropPlan]:
        label = int(self.labels[rng.integers(len(self.labels))])
        entries = self.index.entries_of(label)
        picks = rng.choice(len(entries), size=2, replace=not self.cfg.distinct_images)
        pair_size = None
        if self.index.is_thing[label]:
            pair_size = float(self.cfg.pair_sizes[rng.integers(len(self.cfg.pair_sizes))])
        first, second = (self._plan_crop(rng, label, entries[int(k)], pair_size) for k in picks)
        return first, second

    def _plan_crop(
        self, rng: np.random.Generator, label: int, entry: int, pair_size: float | None
    ) -> CropPlan:
        rows = self.index.segment_rows(entry)
        row = rows[int(rng.integers(len(rows)))]
        image = int(self.index.entry_image[entry])
        height, width = (int(v) for v in self.index.image_hw[image])
        bbox = self.index.segment_bbox[row]
        if pair_size is not None:
            out_h, out_w = thing_pair_resize(
                (height, width), (int(bbox[2]), int(bbox[3])), pair_size, self.cfg
            )
        else:
            out_h, out_w = self._stuff_resize.output_size(height, width, rng)
        centre = _resized_bbox_centre(bbox, (height, width), (out_h, out_w))
        crop_hw = self.augmentation.crop_size
        top, left = random_crop_box((out_h, out_w), crop_hw, rng, contain_point=centre)
        return CropPlan(
            image_index=image,
            resize_hw=(out_h, out_w),
            crop_box=(top, left, *crop_hw),
            flip=bool(rng.random() < self.augmentation.flip_prob),
            pair_class=label,
            segment_id=int(self.index.segment_id[row]),
            pair_size=pair_size or 0.0,
        )

    def plan_batch(self, rng: np.random.Generator, batch_size: int) -> list[CropPlan]:
        if batch_size % 2 or batch_size < 2:
            raise ValueError(
                f"paired crop sampling fills batches with pairs: train.batch_size (per process) must be even "
                f"and >= 2, got {batch_size}"
            )
        return [plan for _ in range(batch_size // 2) for plan in self.plan_pair(rng)]
