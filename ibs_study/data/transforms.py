"""Geometric transforms of panoptic samples: resize, crop (with padding), flip, train augmentation.

Every geometry function takes and returns a :class:`~ibs_study.data.panoptic.PanopticSample`:
the image is resampled bilinearly (antialiased when shrinking), the id map by nearest
neighbour, and the segments are recomputed from the pixels of the result (area, tight bbox);
segments with no pixel left are dropped, category and iscrowd are kept.

All randomness comes from an explicit ``numpy.random.Generator``; nothing reads global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from ibs_study.data.panoptic import VOID_ID, PanopticFormatError, PanopticSample, segments_from_id_map

logger = logging.getLogger(__name__)

__all__ = [
    "resize",
    "rescale",
    "resize_shortest_edge",
    "crop",
    "hflip",
    "random_crop_box",
    "TrainAugmentation",
]


# ------------------------------------------------------------------------ pixel-level helpers


def _with_pixels(sample: PanopticSample, image: np.ndarray, id_map: np.ndarray) -> PanopticSample:
    """A sample with new pixels; segments recomputed from ``id_map`` (empty ones dropped)."""
    category_of = {s.id: s.category_id for s in sample.segments}
    iscrowd_of = {s.id: s.iscrowd for s in sample.segments}
    try:
        segments = segments_from_id_map(id_map, category_of, iscrowd_of)
    except PanopticFormatError as err:
        raise PanopticFormatError(f"image id {sample.image_id!r}: {err}") from err
    return PanopticSample(image_id=sample.image_id, image=image, id_map=id_map, segments=segments)


def _check_size(height: int, width: int, what: str) -> None:
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"{what}: output size must be at least 1x1 pixels, got {height}x{width} (H x W)")


def _resize_pixels(
    image: np.ndarray, id_map: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (H, W, 3) uint8 bilinearly and id map (H, W) int32 by nearest neighbour."""
    h, w = id_map.shape
    if (h, w) == (height, width):
        return image, id_map
    # Pillow's bilinear filter widens its support when shrinking, i.e. it is antialiased.
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    # Nearest neighbour with pixel-centre alignment (the convention of Pillow's filters).
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return resized, id_map[rows[:, None], cols[None, :]]


def _crop_pixels(
    image: np.ndarray, id_map: np.ndarray, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window (top, left, height, width) of image and id map, zero-padded outside the image.

    Returns:
        image: (height, width, 3) uint8, 0 on padding.
        id_map: (height, width) int32, void on padding.
        pad_mask: (height, width) bool, True on padding.
    """
    h, w = id_map.shape
    out_image = np.zeros((height, width, 3), dtype=np.uint8)
    out_ids = np.full((height, width), VOID_ID, dtype=id_map.dtype)
    pad_mask = np.ones((height, width), dtype=bool)
    y0, y1 = max(top, 0), min(top + height, h)
    x0, x1 = max(left, 0), min(left + width, w)
    if y0 < y1 and x0 < x1:
        dst = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        out_image[dst] = image[y0:y1, x0:x1]
        out_ids[dst] = id_map[y0:y1, x0:x1]
        pad_mask[dst] = False
    return out_image, out_ids, pad_mask


def _shortest_edge_size(height: int, width: int, short: int, max_size: int | None) -> tuple[int, int]:
    if short < 1:
        raise ValueError(f"resize_shortest_edge: short must be >= 1, got {short}")
    scale = short / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


# ------------------------------------------------------------------------------ public API


def resize(sample: PanopticSample, height: int, width: int) -> PanopticSample:
    """Resize to (height, width): image bilinear (antialiased when shrinking), id map nearest."""
    _check_size(height, width, f"resize of image id {sample.image_id!r}")
    image, id_map = _resize_pixels(sample.image, sample.id_map, int(height), int(width))
    return _with_pixels(sample, image, id_map)


def rescale(sample: PanopticSample, factor: float) -> PanopticSample:
    """:func:`resize` to ``(round(H * factor), round(W * factor))``."""
    if not factor > 0:
        raise ValueError(f"rescale of image id {sample.image_id!r}: factor must be > 0, got {factor}")
    return resize(sample, round(sample.height * factor), round(sample.width * factor))


def resize_shortest_edge(sample: PanopticSample, short: int, max_size: int | None = None) -> PanopticSample:
    """Resize so that the shorter side is ``short``, unless the longer side would exceed ``max_size``
    (then the longer side is ``max_size``). The aspect ratio is kept up to rounding."""
    return resize(sample, *_shortest_edge_size(sample.height, sample.width, short, max_size))


def crop(
    sample: PanopticSample, top: int, left: int, height: int, width: int
) -> tuple[PanopticSample, np.ndarray]:
    """Window of size (height, width) at (top, left); the window may extend beyond the image.

    Pixels outside the image are padding: image 0, id void.

    Returns:
        the cropped sample (segments recomputed; those without pixels in the window dropped)
        and ``pad_mask``: (height, width) bool, True on padded pixels.
    """
    _check_size(height, width, f"crop of image id {sample.image_id!r}")
    image, id_map, pad_mask = _crop_pixels(
        sample.image, sample.id_map, int(top), int(left), int(height), int(width)
    )
    return _with_pixels(sample, image, id_map), pad_mask


def hflip(sample: PanopticSample) -> PanopticSample:
    """Mirror left-right."""
    image = np.ascontiguousarray(sample.image[:, ::-1])
    id_map = np.ascontiguousarray(sample.id_map[:, ::-1])
    return _with_pixels(sample, image, id_map)


def _crop_offset(size: int, crop_size: int, rng: np.random.Generator, point: float | None) -> int:
    """Uniform offset along one dimension (see :func:`random_crop_box`)."""
    if size <= crop_size:
        return 0
    low, high = 0, size - crop_size
    if point is not None:
        p = int(np.floor(point))
        low, high = max(low, p - crop_size + 1), min(high, p)
    return int(rng.integers(low, high + 1))


def random_crop_box(
    image_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    rng: np.random.Generator,
    contain_point: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Random (top, left) of a ``crop_hw`` window in an image of size ``image_hw``.

    Uniform over the offsets that keep the window inside the image. With
    ``contain_point=(y, x)`` (pixel coordinates; a fractional point lies in pixel
    ``(floor(y), floor(x))``), uniform over those offsets whose window also contains the
    point. Where the image is smaller than the crop in a dimension, the offset there is 0.
    """
    (h, w), (crop_h, crop_w) = image_hw, crop_hw
    if min(h, w, crop_h, crop_w) < 1:
        raise ValueError(f"random_crop_box: sizes must be positive, got image {image_hw}, crop {crop_hw}")
    y = x = None
    if contain_point is not None:
        y, x = contain_point
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"random_crop_box: contain_point {contain_point} lies outside the image of size {image_hw}"
            )
    top = _crop_offset(h, crop_h, rng, y)
    left = _crop_offset(w, crop_w, rng, x)
    return top, left


@dataclass
class TrainAugmentation:
    """Random resize, then (optionally) a random crop, then a random horizontal flip.

    Args:
        resize_mode: ``"scale"``: factor uniform in ``scale_range``; ``"shortest_edge"``: the
            shorter side is a uniform choice among ``short_edges``, capped by ``max_size``.
        scale_range: (low, high) resize factors for ``"scale"``.
        short_edges: candidate shorter-side lengths for ``"shortest_edge"``.
        max_size: longest side allowed by ``"shortest_edge"`` (None: no cap).
        crop_size: (H, W) of the crop, padded where the resized image is smaller; None for
            full-image mode (the resized image itself, with an all-False pad mask).
        flip_prob: probability of a horizontal flip.
    """

    resize_mode: Literal["scale", "shortest_edge"] = "scale"
    scale_range: tuple[float, float] = (0.5, 2.0)
    short_edges: tuple[int, ...] = ()
    max_size: int | None = None
    crop_size: tuple[int, int] | None = None
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.resize_mode == "scale":
            low, high = self.scale_range
            if not 0 < low <= high:
                raise ValueError(
                    f"TrainAugmentation: scale_range must satisfy 0 < low <= high, got {self.scale_range}"
                )
        elif self.resize_mode == "shortest_edge":
            if not self.short_edges or min(self.short_edges) < 1:
                raise ValueError(
                    f"TrainAugmentation: resize_mode 'shortest_edge' needs positive short_edges, got {self.short_edges}"
                )
        else:
            raise ValueError(
                f"TrainAugmentation: unknown resize_mode {self.resize_mode!r} (scale | shortest_edge)"
            )
        if self.crop_size is not None and min(self.crop_size) < 1:
            raise ValueError(f"TrainAugmentation: crop_size must be positive, got {self.crop_size}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"TrainAugmentation: flip_prob must lie in [0, 1], got {self.flip_prob}")

    def output_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """Draw the resized (H, W) of an image of size (height, width)."""
        if self.resize_mode == "scale":
            factor = float(rng.uniform(*self.scale_range))
            return max(1, round(height * factor)), max(1, round(width * factor))
        short = int(self.short_edges[int(rng.integers(len(self.short_edges)))])
        return _shortest_edge_size(height, width, short, self.max_size)

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> tuple[PanopticSample, np.ndarray]:
        """Augment one sample.

        Returns:
            the augmented sample and ``pad_mask``: (H', W') bool, True on padding.
        """
        image, id_map = _resize_pixels(
            sample.image, sample.id_map, *self.output_size(*sample.id_map.shape, rng)
        )
        if self.crop_size is None:
            pad_mask = np.zeros(id_map.shape, dtype=bool)
        else:
            top, left = random_crop_box(id_map.shape, self.crop_size, rng)
            image, id_map, pad_mask = _crop_pixels(image, id_map, top, left, *self.crop_size)
        if rng.random() < self.flip_prob:
            image = np.ascontiguousarray(image[:, ::-1])
            id_map = np.ascontiguousarray(id_map[:, ::-1])
            pad_mask = np.ascontiguousarray(pad_mask[:, ::-1])
        return _with_pixels(sample, image, id_map), pad_mask
