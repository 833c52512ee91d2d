"""Synthetic high-resolution street scenes written as a COCO-panoptic dataset.

The set is built to show the confusion problem of crop-based training (paper Sec. 3):

* a street layout in perspective: sky on top, a band of buildings and trees down to the
  ground, a road converging to a vanishing point, sidewalks beside it, all procedurally
  textured (deterministic from the seed);
* four thing classes (person, car, truck, bicycle) with tens of instances per image, placed on
  the ground plane so that the foot row sets the size (small near the horizon, large at the
  bottom, some covering a large part of a crop), occluding each other in painter's order;
* all instances of a class share one shape template; each draws its body colour from a few
  colours of its class (``instance_colours``, every scale), so look-alikes are often but not
  always told apart by colour, as cars and people are in real streets (with
  ``instance_colours=False`` every instance of a class has one colour, up to a small
  brightness jitter, and only position and context tell two apart); ``colour_jitter`` moves
  each instance's body colour by its own uniform offset per RGB channel, so that two
  instances of one palette colour look alike but are no longer copies of each other;
* ``colour_classes`` makes every (shape, body colour) pair its own thing class (24 thing
  classes instead of 4, :func:`synthetic_categories`): look-alikes are then always of one
  class, and two random crops rarely share a thing class, as on datasets with many thing
  classes (Mapillary Vistas has 37);
* optional crowd regions (a group of one thing class labelled as one ``iscrowd=1`` segment)
  and a few void poles (id 0, like Cityscapes' ignored classes).

Layout on disk (read it with :func:`ibs_study.data.datasets.synthetic`)::

    DIR/annotations/panoptic_{train,val}.json
    DIR/panoptic_{train,val}/{split}_{index:05d}.png    id PNGs (id = R + 256 G + 256^2 B)
    DIR/images/{train,val}/{split}_{index:05d}.png      RGB images
    DIR/synthetic.json                                   generation parameters, written last

Stuff segment ids equal their category id; thing and crowd segment ids are random 24-bit
ids above 65535 (unique within an image), so readers must go through ``segments_info``.
Every image is rendered from its own seed, derived from (seed, split, index): the files do
not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ibs_study.data.panoptic import (
    VOID_ID,
    CategoryInfo,
    ImageRecord,
    PanopticSample,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)
from ibs_study.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_VERSION",
    "INFO_FILE",
    "SyntheticScale",
    "SYNTHETIC_SCALES",
    "SYNTHETIC_CATEGORIES",
    "synthetic_categories",
    "colour_class_id",
    "COLOUR_CLASS_BASE",
    "ThingStyle",
    "THING_STYLES",
    "synthetic_parameters",
    "render_image",
    "generate_dataset",
    "read_generation_info",
    "generation_differences",
    "ensure_dataset",
]

# Bump when the rendering changes: ensure_dataset then refuses to reuse older datasets.
GENERATOR_VERSION = 4
INFO_FILE = "synthetic.json"
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
# Every generated path directly under the dataset root (what ``overwrite`` replaces).
_OUTPUT_NAMES = ("annotations", "images", "panoptic_train", "panoptic_val", INFO_FILE)


@dataclass(frozen=True)
class SyntheticScale:
    """A size preset.

    Args:
        name: preset name.
        height: full image height in pixels.
        width: full image width in pixels.
        crop_size: (H, W) of the training crops for this scale (a quarter of the image area,
            as 512x1024 crops of 1024x2048 Cityscapes images, except at the CPU scale: an
            eighth, see below).
        num_train: training images.
        num_val: validation images.
        things_per_image: (low, high) things placed per image before occlusion removes the
            hidden ones (inclusive).
        depth_exponent: exponent a of the depth density p(d) ~ d^-a; larger means more far
            (small) things relative to near (large) ones.
        instance_colours: every instance draws its body colour from its class's
            ``body_colours`` (False: all instances of a class share one colour, so that
            only position and context tell two apart; IBS then has little to learn from, see
            docs/results.md).
        colour_jitter: each instance's body colour moves by its own offset drawn uniformly in
            [-colour_jitter, +colour_jitter] per RGB channel (0: none; no random draw is made,
            so the other draws of the scene are unchanged).
    """

    name: str
    height: int
    width: int
    crop_size: tuple[int, int]
    num_train: int
    num_val: int
    things_per_image: tuple[int, int] = (70, 110)
    depth_exponent: float = 0.8
    instance_colours: bool = True
    colour_jitter: float = 0.0


# The dense scales place Cityscapes-like crowds of things. The CPU scale, where the study runs
# (docs/results.md), is sparser, with fewer far things, and crops an eighth of the image:
# tiny models trained for minutes on the dense scenes stayed too weak to show any confusion.
# On the cpu scale, about half of the things share their image with a thing of the same class
# and colour, but only a quarter share a 128 x 128 crop with one (measured in docs/results.md):
# crop training rarely has to tell such look-alikes apart, full-image inference must.
SYNTHETIC_SCALES: dict[str, SyntheticScale] = {
    "tiny": SyntheticScale("tiny", 64, 128, (32, 64), num_train=24, num_val=8),  # smoke tests
    "cpu": SyntheticScale(
        "cpu", 256, 512, (128, 128), num_train=300, num_val=60, things_per_image=(12, 20), depth_exponent=0.3
    ),
    "medium": SyntheticScale("medium", 512, 1024, (256, 512), num_train=500, num_val=100),
    "paper": SyntheticScale("paper", 1024, 2048, (512, 1024), num_train=500, num_val=100),
}

# Category ids, names, colours and supercategories follow Cityscapes.
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY = 7, 8, 11, 21, 23
PERSON, CAR, TRUCK, BICYCLE = 24, 26, 27, 33

SYNTHETIC_CATEGORIES: tuple[CategoryInfo, ...] = (
    CategoryInfo(ROAD, "road", False, (128, 64, 128), "flat"),
    CategoryInfo(SIDEWALK, "sidewalk", False, (244, 35, 232), "flat"),
    CategoryInfo(BUILDING, "building", False, (70, 70, 70), "construction"),
    CategoryInfo(VEGETATION, "vegetation", False, (107, 142, 35), "nature"),
    CategoryInfo(SKY, "sky", False, (70, 130, 180), "sky"),
    CategoryInfo(PERSON, "person", True, (220, 20, 60), "human"),
    CategoryInfo(CAR, "car", True, (0, 0, 142), "vehicle"),
    CategoryInfo(TRUCK, "truck", True, (0, 0, 70), "vehicle"),
    CategoryInfo(BICYCLE, "bicycle", True, (119, 11, 32), "vehicle"),
)

# Scene parameters. Lateral ground positions and widths are in units of the camera height
# (a car is about 0.7 wide); ``d`` = (foot row - horizon) / (H - horizon) is the normalised
# depth coordinate (0 at the horizon, 1 at the bottom row, larger below the image).
#
# Smallest visible part an instance may keep, as a fraction of the image area (20 pixels at
# 256x512, 315 at 1024x2048); instances occluded below it are dropped.
MIN_SEGMENT_FRACTION = 1.5e-4
# Fraction of images with one crowd region, and its number of members.
CROWD_PROBABILITY = 0.35
CROWD_MEMBERS = (4, 9)
# Void poles per image (inclusive range).
VOID_POLES = (0, 3)
# Horizon row and vanishing point column, as fractions of the image height and width.
HORIZON = (0.3, 0.4)
VANISHING_X = (0.25, 0.75)
# Width of each sidewalk.
SIDEWALK_WIDTH = (1.5, 3.0)


# ------------------------------------------------------------------------------- templates
#
# A template draws one instance in its own box. ``u`` is a (1, w) row of horizontal box
# coordinates (0 = left edge, 1 = right edge) and ``v`` an (h, 1) column of vertical ones
# (0 = top, 1 = bottom), at pixel centres; ``aspect`` is the box width / height. It returns
# the mask (h, w) bool and the part index (h, w) uint8 into the class palette (0 = body).

Template = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return ((u >= u0) & (u <= u1)) & ((v >= v0) & (v <= v1))


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _near_segment(
    x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float
) -> np.ndarray:
    """Points within distance ``r`` of segment a-b (all in units of the box height)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    s = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (x - ax - s * dx) ** 2 + (y - ay - s * dy) ** 2 <= r * r


def _parts(shape: tuple[int, int], *masks: np.ndarray) -> np.ndarray:
    """Part index map: 0 (body) where no mask holds, else k for the last mask k (1-based) that holds."""
    part = np.zeros(shape, dtype=np.uint8)
    for k, mask in enumerate(masks, start=1):
        part[np.broadcast_to(mask, shape)] = k
    return part


def _car(u: np.ndarray, v: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Rear view: body, a narrower cabin with a dark window, tail lights, plate, wheels.
    Palette: body, window, lights, plate, tyres."""
    shape = (v.shape[0], u.shape[1])
    body = _box(u, v, 0.0, 1.0, 0.40, 0.86) & ~_box(np.abs(u - 0.5), v, 0.47, 0.5, 0.40, 0.46)
    inset = 0.13 + 0.12 * (0.42 - v) / 0.36  # (h, 1): the cabin narrows towards the roof
    cabin = (np.abs(u - 0.5) <= 0.5 - inset) & ((v >= 0.06) & (v < 0.42))
    window = (np.abs(u - 0.5) <= 0.45 - inset) & ((v >= 0.11) & (v < 0.37))
    wheels = _box(np.abs(u - 0.5), v, 0.26, 0.45, 0.80, 1.0)
    lights = _box(np.abs(u - 0.5), v, 0.33, 0.46, 0.47, 0.56)
    plate = _box(u, v, 0.39, 0.61, 0.62, 0.71)
    return body | cabin | wheels, _parts(shape, window, lights, plate, wheels & ~body)


def _person(u: np.ndarray, v: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Front view: head with hair, a long coat with shoulders, two legs.
    Palette: coat, skin, hair, trousers, shoes."""
    shape = (v.shape[0], u.shape[1])
    head = _ellipse(u, v, 0.5, 0.085, 0.2, 0.075) | _box(u, v, 0.42, 0.58, 0.14, 0.18)
    shoulder_inset = 0.12 + 0.2 * np.clip((0.22 - v) / 0.06, 0.0, 1.0)  # (h, 1)
    coat = (np.abs(u - 0.5) <= 0.5 - shoulder_inset) & ((v >= 0.16) & (v <= 0.68))
    legs = _box(np.abs(u - 0.5), v, 0.04, 0.26, 0.66, 1.0)
    return head | coat | legs, _parts(shape, head, head & (v < 0.055), legs & ~coat, legs & (v > 0.95))


def _bicycle(u: np.ndarray, v: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Side view: two thick wheels, frame tubes, saddle and handlebar, all in the body colour
    but the saddle. Palette: body, saddle."""
    shape = (v.shape[0], u.shape[1])
    x, y = u * aspect, v  # units of the box height, so circles stay round
    r = 0.31
    rear, front = (0.33, 0.69), (aspect - 0.33, 0.69)
    wheels = np.zeros(shape, dtype=bool)
    for cx, cy in (rear, front):
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        wheels |= (d2 <= r * r) & (d2 >= (0.62 * r) ** 2)
    crank, seat, head = (0.5 * aspect, 0.72), (0.42 * aspect, 0.22), (0.75 * aspect, 0.24)
    frame = np.zeros(shape, dtype=bool)
    for a, b in ((rear, crank), (rear, seat), (seat, crank), (crank, head), (seat, head), (head, front)):
        frame |= _near_segment(x, y, a, b, 0.045)
    saddle = _ellipse(u, v, 0.42, 0.12, 0.09, 0.06)
    bar = _near_segment(x, y, head, (0.8 * aspect, 0.05), 0.04) | _ellipse(u, v, 0.8, 0.06, 0.07, 0.05)
    return wheels | frame | saddle | bar, _parts(shape, saddle)


def _truck(u: np.ndarray, v: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Rear view: a tall cargo box with door seams, bumper, wheels. Palette: box, seams, rubber, lights."""
    shape = (v.shape[0], u.shape[1])
    box = _box(u, v, 0.0, 1.0, 0.0, 0.82)
    seams = box & ((np.abs(u - 0.5) < 0.012) | (v > 0.78))
    bumper = _box(u, v, 0.03, 0.97, 0.82, 0.88)
    wheels = _box(np.abs(u - 0.5), v, 0.18, 0.44, 0.85, 1.0)
    lights = _box(np.abs(u - 0.5), v, 0.38, 0.47, 0.70, 0.76)
    return box | bumper | wheels, _parts(shape, seams, bumper | wheels, lights)


@dataclass(frozen=True)
class ThingStyle:
    """How one thing class looks and where it stands.

    Args:
        category_id: dataset category id.
        template: draws the instance in its box (same for every instance of the class).
        palette: RGB colour of each template part; ``palette[0]`` is the body colour. All
            instances of the class share it (up to a small brightness jitter).
        height_factor: box height / (foot row - horizon row), i.e. the object height in
            units of the camera height: the size follows the foot row.
        aspect: box width / box height.
        frequency: relative share among the placed instances.
        depth_range: allowed normalised depth d = (foot row - horizon) / (H - horizon); d > 1
            puts the foot below the image (a near instance cut by the border).
        lane: ``road``, ``sidewalk`` or ``kerb`` (either side of a road edge).
        body_colours: the body colours an instance draws from when instances vary in colour
            (``instance_colours``); ``palette[0]`` is among them.
    """

    category_id: int
    template: Template
    palette: tuple[tuple[int, int, int], ...]
    height_factor: float
    aspect: float
    frequency: float
    depth_range: tuple[float, float]
    lane: str
    body_colours: tuple[tuple[int, int, int], ...] = ()

    @property
    def color(self) -> tuple[int, int, int]:
        """The body colour."""
        return self.palette[0]


_TYRE = (25, 25, 28)
_TAIL_LIGHT = (210, 35, 30)
THING_STYLES: tuple[ThingStyle, ...] = (
    ThingStyle(
        PERSON, _person, ((170, 40, 48), (225, 185, 150), (60, 40, 30), (40, 42, 55), (20, 20, 20)),
        0.77, 0.4, 0.4, (0.05, 1.1), "sidewalk",
        body_colours=((170, 40, 48), (40, 60, 150), (40, 120, 60), (215, 180, 40), (120, 50, 130), (230, 230, 225)),
    ),
    ThingStyle(
        CAR, _car, ((48, 82, 168), (35, 45, 60), _TAIL_LIGHT, (225, 225, 215), _TYRE),
        0.56, 1.3, 0.36, (0.05, 1.05), "road",
        body_colours=((48, 82, 168), (175, 35, 35), (235, 235, 230), (30, 30, 34), (40, 120, 75), (225, 175, 35)),
    ),
    ThingStyle(
        TRUCK, _truck, ((228, 226, 214), (150, 150, 150), _TYRE, _TAIL_LIGHT),
        1.12, 0.85, 0.06, (0.05, 0.7), "road",
        body_colours=((228, 226, 214), (220, 180, 40), (170, 40, 40), (50, 90, 160), (60, 120, 70), (225, 120, 40)),
    ),
    ThingStyle(
        BICYCLE, _bicycle, ((236, 176, 30), (30, 25, 25)), 0.46, 1.65, 0.18, (0.05, 1.0), "kerb",
        body_colours=((236, 176, 30), (200, 40, 40), (40, 80, 190), (40, 150, 70), (235, 235, 235), (150, 60, 170)),
    ),
)  # fmt: skip
_STYLE_OF = {s.category_id: s for s in THING_STYLES}

# First category id of the colour classes: id = COLOUR_CLASS_BASE + 10 * style index + colour index.
COLOUR_CLASS_BASE = 40


def colour_class_id(style: ThingStyle, colour_index: int) -> int:
    """The category id of ``style``'s body colour ``colour_index`` when colours are classes."""
    if not 0 <= colour_index < len(style.body_colours):
        raise ValueError(
            f"category {style.category_id} has {len(style.body_colours)} body colours, "
            f"not index {colour_index}"
        )
    return COLOUR_CLASS_BASE + 10 * THING_STYLES.index(style) + colour_index


def synthetic_categories(colour_classes: bool = False) -> tuple[CategoryInfo, ...]:
    """The dataset's categories: :data:`SYNTHETIC_CATEGORIES`, or with ``colour_classes`` the
    five stuff classes and one thing class per (shape, body colour), named ``"car 2"`` (the
    shape's name and the colour's index in its ``body_colours``) and drawn in that colour."""
    if not colour_classes:
        return SYNTHETIC_CATEGORIES
    by_id = {c.id: c for c in SYNTHETIC_CATEGORIES}
    stuff = tuple(c for c in SYNTHETIC_CATEGORIES if not c.isthing)
    things = tuple(
        CategoryInfo(
            colour_class_id(style, k),
            f"{by_id[style.category_id].name} {k}",
            True,
            colour,
            by_id[style.category_id].supercategory,
        )
        for style in THING_STYLES
        for k, colour in enumerate(style.body_colours)
    )
    return stuff + things


# Brightness and size jitter of an instance (multiplicative, uniform in [1 - j, 1 + j]).
_BRIGHTNESS_JITTER = 0.05
_SIZE_JITTER = 0.07


# --------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    """Scene geometry. ``t = (x - vanish_x) / (y - horizon)`` is constant along a line through
    the vanishing point, i.e. a lateral position on the ground plane."""

    height: int
    width: int
    horizon: float
    vanish_x: float
    road: tuple[float, float]  # t of the left and right road edges
    walk: tuple[float, float]  # t of the outer sidewalk edges

    @property
    def ground_depth(self) -> float:
        return self.height - self.horizon


def _sample_layout(height: int, width: int, rng: np.random.Generator) -> _Layout:
    horizon = height * rng.uniform(*HORIZON)
    vanish_x = width * rng.uniform(*VANISHING_X)
    ground = height - horizon
    road_left = (width * rng.uniform(-0.25, 0.15) - vanish_x) / ground
    road_right = (width * rng.uniform(0.85, 1.25) - vanish_x) / ground
    walk = (road_left - rng.uniform(*SIDEWALK_WIDTH), road_right + rng.uniform(*SIDEWALK_WIDTH))
    return _Layout(height, width, horizon, vanish_x, (road_left, road_right), walk)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """(height, width) float32 value noise in about [0, 1] with features of about ``cell`` pixels."""
    cell = max(cell, 1.0)
    grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.random((grid_h, grid_w), dtype=np.float32)
    size = (int(np.ceil(grid_w * cell)), int(np.ceil(grid_h * cell)))
    return np.asarray(Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC))[:height, :width]


@dataclass(frozen=True)
class _Noise:
    """Smooth value noise in about [0, 1] (bicubic overshoots a little), stored at a reduced
    resolution: one value per ``step`` = ``cell / samples_per_cell`` pixels."""

    field: np.ndarray  # (ceil(H / step), ceil(W / step)) float32
    step: int

    @classmethod
    def sample(
        cls, rng: np.random.Generator, height: int, width: int, cell: float, samples_per_cell: int = 32
    ) -> _Noise:
        step = max(1, int(cell // samples_per_cell))
        return cls(_smooth_noise(rng, -(-height // step), -(-width // step), cell / step), step)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Noise at integer pixel positions ``rows``, ``cols`` (same shape)."""
        return self.field[rows // self.step, cols // self.step]


@dataclass(frozen=True)
class _Facades:
    """Per image column: facade kind (building or vegetation), top row, colour, window periods."""

    kind: np.ndarray  # (W,) int32 category id
    top: np.ndarray  # (W,) float32 row of the skyline
    color: np.ndarray  # (W, 3) float32
    window_period: np.ndarray  # (W, 2) float32 (rows, columns)


def _sample_facades(layout: _Layout, rng: np.random.Generator) -> _Facades:
    """Buildings and trees of random widths; the skyline rises away from the vanishing point,
    as nearer facades look taller."""
    h, w = layout.height, layout.width
    kind = np.empty(w, dtype=np.int32)
    top = np.empty(w, dtype=np.float32)
    color = np.empty((w, 3), dtype=np.float32)
    period = np.empty((w, 2), dtype=np.float32)
    x = 0
    while x < w:
        span = max(2, int(w * rng.uniform(0.03, 0.12)))
        rise = h * 0.4 * abs(min(x + span / 2, w) - layout.vanish_x) / w
        if rng.random() < 0.3:
            kind[x : x + span] = VEGETATION
            top[x : x + span] = layout.horizon - h * rng.uniform(0.05, 0.16) - rise
            color[x : x + span] = (62, 104, 42) + rng.uniform(-8, 8, size=3)
        else:
            kind[x : x + span] = BUILDING
            top[x : x + span] = layout.horizon - h * rng.uniform(0.06, 0.2) - rise
            color[x : x + span] = rng.uniform(120, 175) + rng.uniform(-12, 12, size=3) * (0.4, 0.4, 1.0)
        period[x : x + span] = h * rng.uniform(0.03, 0.05, size=2)
        x += span
    bumps = _smooth_noise(rng, 1, w, h * 0.03)[0] * h * 0.04  # leafy crowns
    top = np.where(kind == VEGETATION, top - bumps, top)
    return _Facades(kind, np.clip(top, h * 0.03, layout.horizon - 2), color, period)


def _frac(x: np.ndarray) -> np.ndarray:
    """``x - floor(x)``, in [0, 1): the same as ``x % 1.0``, an order of magnitude faster."""
    return x - np.floor(x)


def _background(layout: _Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stuff label map and textured image.

    Returns:
        labels: (H, W) int32 stuff category ids, 0 on void poles.
        planes: (3, H, W) float32 RGB planes (one plane per channel: scattering into a
            contiguous plane is faster than into interleaved pixels).
    """
    h, w = layout.height, layout.width
    facades = _sample_facades(layout, rng)
    ys = np.arange(h, dtype=np.float32) + 0.5
    xs = np.arange(w, dtype=np.float32) + 0.5
    labels = np.where(ys[:, None] < facades.top[None, :], SKY, facades.kind[None, :]).astype(np.int32)
    first_ground = int(np.searchsorted(ys, layout.horizon, side="right"))
    # Lateral ground position of every pixel below the horizon.
    t = (xs[None, :] - layout.vanish_x) / (ys[first_ground:, None] - layout.horizon)
    ground = labels[first_ground:]
    ground[(t >= layout.walk[0]) & (t <= layout.walk[1])] = SIDEWALK
    ground[(t >= layout.road[0]) & (t <= layout.road[1])] = ROAD

    coarse = _Noise.sample(rng, h, w, h / 12)
    clouds = _Noise.sample(rng, h, w, h / 6)
    leaves = _Noise.sample(rng, h, w, h / 60, samples_per_cell=8)
    lanes = int(rng.integers(2, 5))
    planes = np.empty((3, h * w), dtype=np.float32)
    flat = labels.ravel()

    def region(category: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices, rows and columns (int32) and pixel-centre y and x (float32) of a region."""
        idx = np.flatnonzero(flat == category)
        rows, cols = np.divmod(idx.astype(np.int32), np.int32(w))
        return idx, rows, cols, rows + np.float32(0.5), cols + np.float32(0.5)

    def paint(idx: np.ndarray, color: np.ndarray | tuple, factor: np.ndarray | None = None) -> None:
        """Pixels ``idx`` get ``color`` (3,) or (3, N), times ``factor`` (N,) if given."""
        for c in range(3):
            np.put(planes[c], idx, color[c] if factor is None else color[c] * factor)

    # Sky: vertical gradient and soft clouds.
    idx, rows, cols, _, _ = region(SKY)
    frac = np.clip(ys / layout.horizon, 0, 1)
    gradient = (np.outer((92, 146, 212), 1 - frac) + np.outer((186, 210, 234), frac)).astype(
        np.float32
    )  # (3, H)
    cover = np.clip((clouds.at(rows, cols) - 0.55) * 3.0, 0, 1)
    paint(idx, gradient[:, rows] * (1 - cover) + 240 * cover)
    # Buildings: per-building colour and a grid of windows below the roof.
    idx, rows, cols, y, x = region(BUILDING)
    below_roof = y - facades.top[cols]
    period_y, period_x = facades.window_period[cols].T
    windows = (
        (_frac(below_roof / period_y) > 0.35) & (_frac(x / period_x) > 0.3) & (below_roof > 0.5 * period_y)
    )
    paint(idx, facades.color.T[:, cols], 0.925 + 0.15 * coarse.at(rows, cols))
    paint(idx[windows], (58, 66, 82))
    # Vegetation: foliage with two noise octaves.
    idx, rows, cols, _, _ = region(VEGETATION)
    paint(idx, facades.color.T[:, cols], 0.6 + 0.5 * leaves.at(rows, cols) + 0.3 * coarse.at(rows, cols))
    # Road: grainy asphalt, solid edge lines, dashed lane lines (dashes periodic in ground depth).
    idx, rows, cols, y, x = region(ROAD)
    dy = y - np.float32(layout.horizon)
    t_px = (x - np.float32(layout.vanish_x)) / dy
    road_l, road_r = layout.road
    marking = (np.abs(t_px - road_l - 0.08) < 0.04) | (np.abs(t_px - road_r + 0.08) < 0.04)
    dashes = _frac(layout.ground_depth * 3.0 / dy) < 0.45  # ground depth is ~ 1 / dy
    for k in range(1, lanes):
        marking |= (np.abs(t_px - road_l - (road_r - road_l) * k / lanes) < 0.035) & dashes
    marking &= dy > 2.0
    grain = rng.random(len(idx), dtype=np.float32)
    paint(idx, (96, 96, 102), 0.89 + 0.12 * grain + 0.1 * coarse.at(rows, cols))
    paint(idx[marking], (218, 218, 210))
    # Sidewalk: paving tiles in perspective and a light kerb along the road.
    idx, rows, cols, y, x = region(SIDEWALK)
    dy = y - np.float32(layout.horizon)
    t_px = (x - np.float32(layout.vanish_x)) / dy
    tiles = ((_frac(t_px / 0.55) < 0.07) | (_frac(layout.ground_depth / 0.3 / dy) < 0.09)) & (dy > 2.0)
    kerb = (np.abs(t_px - road_l) < 0.12) | (np.abs(t_px - road_r) < 0.12)
    grain = rng.random(len(idx), dtype=np.float32)
    paint(
        idx,
        (168, 156, 150),
        (0.92 + 0.08 * grain + 0.08 * coarse.at(rows, cols))
        * np.where(tiles, np.float32(0.82), np.float32(1)),
    )
    paint(idx[kerb], (196, 196, 192))

    planes = planes.reshape(3, h, w)
    _add_void_poles(layout, rng, labels, planes)
    return labels, planes


def _add_void_poles(
    layout: _Layout, rng: np.random.Generator, labels: np.ndarray, planes: np.ndarray
) -> None:
    """Thin poles on the sidewalks, labelled void (as classes ignored in evaluation)."""
    h, w = labels.shape
    for _ in range(int(rng.integers(VOID_POLES[0], VOID_POLES[1] + 1))):
        dy = rng.uniform(0.15, 0.9) * layout.ground_depth
        side = int(rng.integers(2))
        x = layout.vanish_x + (layout.road[side] + (0.25 if side else -0.25)) * dy
        half = max(0.5, 0.04 * dy)
        foot = layout.horizon + dy
        x0, x1 = max(int(x - half), 0), min(int(np.ceil(x + half)), w)
        y0, y1 = max(int(foot - 2.6 * dy), 0), min(int(foot), h)
        if x0 < x1 and y0 < y1:
            labels[y0:y1, x0:x1] = VOID_ID
            planes[:, y0:y1, x0:x1] = np.array((112, 112, 118), np.float32)[:, None, None]


# --------------------------------------------------------------------------------- things


@dataclass(frozen=True)
class _Member:
    """One drawn instance: its box in image pixels and its look."""

    top: float
    left: float
    height: float
    width: float
    style: ThingStyle
    brightness: float
    body: tuple[float, float, float]


@dataclass(frozen=True)
class _Thing:
    """A thing segment: one member, or several for a crowd region."""

    category_id: int
    iscrowd: int
    foot: float  # bottom row of the nearest member: painter's order key
    members: tuple[_Member, ...]


def _lane_interval(
    layout: _Layout, lane: str, half_width: float, rng: np.random.Generator
) -> tuple[float, float]:
    """A t-interval of the given lane on a random side, shrunk by the half width of the thing."""
    (road_l, road_r), (walk_l, walk_r) = layout.road, layout.walk
    if lane == "road":
        low, high = road_l + half_width, road_r - half_width
    elif lane == "sidewalk":
        low, high = (
            (walk_l + half_width, road_l - half_width)
            if rng.random() < 0.5
            else (road_r + half_width, walk_r - half_width)
        )
    elif lane == "kerb":
        edge = road_l if rng.random() < 0.5 else road_r
        low, high = edge - 0.6, edge + 0.6
    else:
        raise ValueError(f"unknown lane {lane!r} (road | sidewalk | kerb)")
    if low > high:  # narrower than the thing: stand in the middle
        low = high = (low + high) / 2
    return low, high


def _sample_depth(rng: np.random.Generator, low: float, high: float, a: float) -> float:
    """Normalised depth d with density ~ d^-a on [low, high] (inverse CDF)."""
    q = rng.random()
    if a == 1.0:
        return float(low * (high / low) ** q)
    e = 1.0 - a
    return float((low**e + q * (high**e - low**e)) ** (1.0 / e))


def _member(
    layout: _Layout,
    style: ThingStyle,
    depth: float,
    t: float,
    scale: float,
    brightness: float,
    body: tuple[float, float, float],
) -> _Member:
    dy = depth * layout.ground_depth
    height = style.height_factor * dy * scale
    width = height * style.aspect
    x_centre = layout.vanish_x + t * dy
    return _Member(layout.horizon + dy - height, x_centre - width / 2, height, width, style, brightness, body)


def _jitter(rng: np.random.Generator, amount: float) -> float:
    return float(rng.uniform(1 - amount, 1 + amount))


def _check_colour_jitter(colour_jitter: float) -> None:
    if not 0 <= colour_jitter <= 255:
        raise ConfigError(f"colour_jitter must be in [0, 255] (RGB levels), got {colour_jitter}")


def _body_colour(
    style: ThingStyle,
    rng: np.random.Generator,
    instance_colours: bool,
    colour_jitter: float,
    colour_index: int | None = None,
) -> tuple[int, tuple[float, float, float]]:
    """``(index, colour)``: the class's one colour (index -1) without ``instance_colours``,
    else one of its ``body_colours`` and its index (drawn per instance unless ``colour_index``
    is given); the colour moved by a uniform offset in [-colour_jitter, colour_jitter] per
    channel (no draw when 0: the scene's other draws are those of a scene without jitter)."""
    if not instance_colours:
        index, body = -1, style.color
    else:
        index = int(rng.integers(len(style.body_colours))) if colour_index is None else colour_index
        body = style.body_colours[index]
    if colour_jitter <= 0:
        return index, body
    offset = rng.uniform(-colour_jitter, colour_jitter, size=3)
    return index, tuple(float(c) for c in np.clip(np.asarray(body, dtype=np.float64) + offset, 0, 255))


def _check_colour_classes(colour_classes: bool, instance_colours: bool) -> None:
    if colour_classes and not instance_colours:
        raise ConfigError(
            "colour_classes needs instance_colours: without per-instance body colours every "
            "shape has one colour, so there are no colour classes to make"
        )


def _sample_things(
    layout: _Layout,
    rng: np.random.Generator,
    crowd_probability: float,
    things_per_image: tuple[int, int],
    depth_exponent: float,
    instance_colours: bool,
    colour_jitter: float,
    colour_classes: bool,
) -> list[_Thing]:
    """The things placed in a scene (before occlusion): single instances and maybe a crowd."""
    cumulative = np.cumsum([s.frequency for s in THING_STYLES])
    things = []
    for _ in range(int(rng.integers(things_per_image[0], things_per_image[1] + 1))):
        style = THING_STYLES[int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))]
        depth = _sample_depth(rng, *style.depth_range, depth_exponent)
        scale = _jitter(rng, _SIZE_JITTER)
        half_width = 0.5 * style.height_factor * style.aspect * scale
        t = rng.uniform(*_lane_interval(layout, style.lane, half_width, rng))
        brightness = _jitter(rng, _BRIGHTNESS_JITTER)
        colour_index, body = _body_colour(style, rng, instance_colours, colour_jitter)
        member = _member(layout, style, depth, t, scale, brightness, body)
        category = colour_class_id(style, colour_index) if colour_classes else style.category_id
        things.append(_Thing(category, 0, member.top + member.height, (member,)))
    if rng.random() < crowd_probability:
        things.append(_sample_crowd(layout, rng, instance_colours, colour_jitter, colour_classes))
    return things


def _sample_crowd(
    layout: _Layout,
    rng: np.random.Generator,
    instance_colours: bool,
    colour_jitter: float,
    colour_classes: bool,
) -> _Thing:
    """A row of overlapping people on a sidewalk or parked bicycles along a kerb (with
    ``colour_classes``, all of one body colour: a crowd segment has one class)."""
    style = _STYLE_OF[PERSON] if rng.random() < 0.65 else _STYLE_OF[BICYCLE]
    crowd_colour = int(rng.integers(len(style.body_colours))) if colour_classes else None
    depth = rng.uniform(0.12, 0.5)
    count = int(rng.integers(CROWD_MEMBERS[0], CROWD_MEMBERS[1] + 1))
    t_width = style.height_factor * style.aspect
    spacing = 0.55 * t_width
    low, high = _lane_interval(layout, style.lane, 0.5 * t_width, rng)
    t0 = rng.uniform(low, max(low, high - spacing * (count - 1)))
    members = [
        _member(
            layout,
            style,
            depth * _jitter(rng, 0.05),
            t0 + k * spacing + rng.uniform(-0.1, 0.1) * t_width,
            _jitter(rng, _SIZE_JITTER),
            _jitter(rng, _BRIGHTNESS_JITTER),
            _body_colour(style, rng, instance_colours, colour_jitter, crowd_colour)[1],
        )
        for k in range(count)
    ]
    members.sort(key=lambda m: m.top + m.height)  # far first inside the group
    category = colour_class_id(style, crowd_colour) if colour_classes else style.category_id
    return _Thing(category, 1, members[-1].top + members[-1].height, tuple(members))


def _window(thing: _Thing, height: int, width: int) -> tuple[slice, slice] | None:
    """The image-clipped window around all members of a thing; None when outside the image."""
    top = max(0, int(np.floor(min(m.top for m in thing.members))))
    left = max(0, int(np.floor(min(m.left for m in thing.members))))
    bottom = min(height, int(np.ceil(max(m.top + m.height for m in thing.members))))
    right = min(width, int(np.ceil(max(m.left + m.width for m in thing.members))))
    if top >= bottom or left >= right:
        return None
    return slice(top, bottom), slice(left, right)


def _draw(thing: _Thing, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a thing on its window.

    Returns:
        mask: (h, w) bool, the thing's pixels.
        colour: (h, w, 3) float32 RGB: each member's part colours (its own body colour)
            times its brightness jitter and the light from above.
    """
    rows, cols = window
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    mask = np.zeros(shape, dtype=bool)
    colour = np.zeros((*shape, 3), dtype=np.float32)
    for m in thing.members:  # painter's order within a crowd
        r0, c0 = max(rows.start, int(np.floor(m.top))), max(cols.start, int(np.floor(m.left)))
        r1 = min(rows.stop, int(np.ceil(m.top + m.height)))
        c1 = min(cols.stop, int(np.ceil(m.left + m.width)))
        if r0 >= r1 or c0 >= c1:
            continue
        v = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - m.top) / m.height)[:, None]
        u = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - m.left) / m.width)[None, :]
        m_mask, m_part = m.style.template(u, v, m.style.aspect)
        sub = (slice(r0 - rows.start, r1 - rows.start), slice(c0 - cols.start, c1 - cols.start))
        palette = np.asarray((m.body, *m.style.palette[1:]), dtype=np.float32)  # (parts, 3)
        shade = np.broadcast_to(m.brightness * (1.06 - 0.14 * v), m_mask.shape)[m_mask]
        mask[sub] |= m_mask
        colour[sub][m_mask] = palette[m_part[m_mask]] * shade[:, None]
    return mask, colour


def _new_ids(rng: np.random.Generator, count: int) -> list[int]:
    """Distinct random segment ids in [65536, 2^24): above the two-byte range, like real datasets."""
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < count:
        for value in rng.integers(65536, 2**24, size=count - len(ids)).tolist():
            if value not in seen:
                seen.add(value)
                ids.append(value)
    return ids


def render_image(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    image_id: str | int = "synthetic",
    min_segment_pixels: int | None = None,
    crowd_probability: float = CROWD_PROBABILITY,
    things_per_image: tuple[int, int] = SYNTHETIC_SCALES["paper"].things_per_image,
    depth_exponent: float = SYNTHETIC_SCALES["paper"].depth_exponent,
    instance_colours: bool = SYNTHETIC_SCALES["paper"].instance_colours,
    colour_jitter: float = SYNTHETIC_SCALES["paper"].colour_jitter,
    colour_classes: bool = False,
) -> PanopticSample:
    """Render one street scene in memory.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        rng: the only source of randomness.
        image_id: id given to the sample.
        min_segment_pixels: things left with fewer visible pixels are dropped (default:
            ``MIN_SEGMENT_FRACTION`` of the image area, at least 16).
        crowd_probability: chance that the image gets a crowd region (0 disables crowds).
        things_per_image: (low, high) things placed before occlusion (inclusive).
        depth_exponent: exponent a of the depth density p(d) ~ d^-a of the things.
        instance_colours: each instance draws its body colour from its class's ``body_colours``.
        colour_jitter: per-instance uniform offset of the body colour, per RGB channel (>= 0).
        colour_classes: label each thing with its (shape, body colour) class
            (:func:`synthetic_categories`); needs ``instance_colours``.

    Returns:
        the sample: image (H, W, 3) uint8, id_map (H, W) int32, segments sorted by id.
    """
    if height < 32 or width < 32:
        raise ValueError(f"synthetic images must be at least 32x32 pixels, got {height}x{width} (H x W)")
    _check_colour_jitter(colour_jitter)
    _check_colour_classes(colour_classes, instance_colours)
    if min_segment_pixels is None:
        min_segment_pixels = max(16, round(MIN_SEGMENT_FRACTION * height * width))
    layout = _sample_layout(height, width, rng)
    labels, planes = _background(layout, rng)
    if not 0 <= things_per_image[0] <= things_per_image[1]:
        raise ValueError(
            f"things_per_image must be (low, high) with 0 <= low <= high, got {things_per_image}"
        )
    things = _sample_things(
        layout,
        rng,
        crowd_probability,
        tuple(things_per_image),
        depth_exponent,
        instance_colours,
        colour_jitter,
        colour_classes,
    )
    thing_ids = _new_ids(rng, len(things))

    # Nearest first: each thing keeps the pixels no nearer thing has taken, which is painter's
    # order (far first, near last) except that a dropped thing leaves its pixels to the
    # things behind it instead of to the background.
    id_map = labels
    taken = np.zeros((height, width), dtype=bool)
    category_of = {c.id: c.id for c in SYNTHETIC_CATEGORIES if not c.isthing}
    iscrowd_of: dict[int, int] = {}
    for thing, seg_id in sorted(zip(things, thing_ids), key=lambda pair: -pair[0].foot):
        window = _window(thing, height, width)
        if window is None or int(np.count_nonzero(~taken[window])) < min_segment_pixels:
            continue  # hidden behind nearer things whatever its shape: skip drawing it
        mask, colour = _draw(thing, window)
        visible = mask & ~taken[window]
        if int(np.count_nonzero(visible)) < min_segment_pixels:
            continue
        taken[window] |= visible
        id_map[window][visible] = seg_id
        visible_colour = colour[visible]  # (n, 3)
        for c in range(3):
            planes[c][window][visible] = visible_colour[:, c]
        category_of[seg_id] = thing.category_id
        iscrowd_of[seg_id] = thing.iscrowd
    np.clip(planes, 0, 255, out=planes)
    planes += 0.5  # the uint8 cast truncates: this rounds
    image = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):
        image[..., c] = planes[c]
    segments = segments_from_id_map(id_map, category_of, iscrowd_of)
    return PanopticSample(image_id=image_id, image=image, id_map=id_map, segments=segments)


# ------------------------------------------------------------------------------ on disk


def synthetic_parameters(
    scale: str = "cpu",
    num_train: int | None = None,
    num_val: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    colour_jitter: float | None = None,
    colour_classes: bool = False,
) -> dict:
    """The generation parameters (what ``synthetic.json`` records); ``None`` takes the scale's value.

    With a custom height/width the crop size keeps the scale's share of the image.
    """
    if scale not in SYNTHETIC_SCALES:
        raise ConfigError(f"unknown synthetic scale {scale!r}; valid scales: {sorted(SYNTHETIC_SCALES)}")
    preset = SYNTHETIC_SCALES[scale]
    height = preset.height if height is None else int(height)
    width = preset.width if width is None else int(width)
    num_train = preset.num_train if num_train is None else int(num_train)
    num_val = preset.num_val if num_val is None else int(num_val)
    colour_jitter = preset.colour_jitter if colour_jitter is None else float(colour_jitter)
    _check_colour_jitter(colour_jitter)
    _check_colour_classes(bool(colour_classes), preset.instance_colours)
    if height < 32 or width < 32:
        raise ConfigError(
            f"synthetic images must be at least 32x32 pixels, got height={height}, width={width}"
        )
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ConfigError(f"need num_train >= 0 and num_val >= 0, not both 0; got {num_train} and {num_val}")
    crop = (
        max(1, round(preset.crop_size[0] * height / preset.height)),
        max(1, round(preset.crop_size[1] * width / preset.width)),
    )
    return {
        "generator_version": GENERATOR_VERSION,
        "scale": scale,
        "height": height,
        "width": width,
        "crop_size": list(crop),
        "num_train": num_train,
        "num_val": num_val,
        "seed": int(seed),
        "min_segment_pixels": max(16, round(MIN_SEGMENT_FRACTION * height * width)),
        "crowd_probability": CROWD_PROBABILITY,
        "things_per_image": list(preset.things_per_image),
        "depth_exponent": preset.depth_exponent,
        "instance_colours": preset.instance_colours,
        "colour_jitter": colour_jitter,
        "colour_classes": bool(colour_classes),
    }


def _image_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _generate_one(index: int, root: Path, split: str, params: dict) -> ImageRecord:
    """Render image ``index`` of ``split`` from its own seed and write its two PNGs."""
    rng = np.random.default_rng(np.random.SeedSequence([params["seed"], _SPLIT_CODE[split], index]))
    name = _image_name(split, index)
    sample = render_image(
        params["height"],
        params["width"],
        rng,
        image_id=name,
        min_segment_pixels=params["min_segment_pixels"],
        crowd_probability=params["crowd_probability"],
        things_per_image=tuple(params["things_per_image"]),
        depth_exponent=params["depth_exponent"],
        instance_colours=params["instance_colours"],
        colour_jitter=params["colour_jitter"],
        colour_classes=params["colour_classes"],
    )
    Image.fromarray(sample.image).save(root / "images" / split / f"{name}.png", compress_level=1)
    write_id_png(root / f"panoptic_{split}" / f"{name}.png", sample.id_map)
    return ImageRecord(
        image_id=name,
        file_name=f"{name}.png",
        width=sample.width,
        height=sample.height,
        png_name=f"{name}.png",
        segments=sample.segments,
    )


def _prepare_output(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove only what a generation writes."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root}: folder is not empty; choose an empty or new folder, or pass overwrite=True "
                f"(CLI: --overwrite) to replace the synthetic dataset in it"
            )
        (root / INFO_FILE).unlink(missing_ok=True)  # first: an interruption now leaves it incomplete
        for name in _OUTPUT_NAMES:
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        logger.info("%s: removed the previous synthetic dataset", root)


def generate_dataset(
    out: str | os.PathLike,
    scale: str = "cpu",
    num_train: int | None = None,
    num_val: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    colour_jitter: float | None = None,
    colour_classes: bool = False,
) -> Path:
    """Generate the synthetic dataset in COCO-panoptic format (layout in the module docstring).

    Args:
        out: output folder; must be absent or empty unless ``overwrite``.
        scale: size preset from :data:`SYNTHETIC_SCALES`.
        num_train: training images (default: the scale's); 0 skips the split.
        num_val: validation images (default: the scale's); 0 skips the split.
        height: image height (default: the scale's).
        width: image width (default: the scale's).
        seed: base seed; image i of a split uses the seed (seed, split, i).
        workers: processes (default: ``os.cpu_count()``); the files do not depend on it.
        overwrite: replace the generated files of an existing dataset in ``out`` (other files
            in the folder are left alone).
        colour_jitter: per-instance body-colour offset per RGB channel (default: the scale's).
        colour_classes: one thing class per (shape, body colour) (:func:`synthetic_categories`).

    Returns:
        the dataset root.
    """
    from tqdm.auto import tqdm

    params = synthetic_parameters(
        scale, num_train, num_val, height, width, seed, colour_jitter, colour_classes
    )
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    root = Path(out)
    _prepare_output(root, overwrite)
    logger.info(
        "generating %d + %d synthetic images of %dx%d in %s with %d worker(s)",
        params["num_train"], params["num_val"], params["height"], params["width"], root, workers,
    )  # fmt: skip
    for split in SPLITS:
        count = params[f"num_{split}"]
        if count == 0:
            continue
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
        job = partial(_generate_one, root=root, split=split, params=params)
        progress = partial(tqdm, total=count, desc=f"synthetic {split}", unit="img")
        if workers == 1 or count == 1:
            records = [job(i) for i in progress(range(count))]
        else:
            # a worker that dies (killed, out of memory) breaks the pool: an error, never a hang
            with ProcessPoolExecutor(min(workers, count)) as pool:
                try:
                    records = list(
                        progress(pool.map(job, range(count), chunksize=max(1, count // (8 * workers))))
                    )
                except BrokenProcessPool as err:
                    raise RuntimeError(
                        f"{root}: a generation worker process died while writing the {split} split "
                        "(killed, e.g. out of memory); the dataset is incomplete: generate it again "
                        "with --overwrite (fewer --workers use less memory)"
                    ) from err
        write_panoptic_json(
            root / "annotations" / f"panoptic_{split}.json",
            records,
            synthetic_categories(params["colour_classes"]),
            info={"description": f"ibs_study synthetic street scenes, {split} split", "generator": params},
        )
    info_path = root / INFO_FILE
    tmp = info_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, info_path)  # written last: its presence marks a complete generation
    return root


# Parameters added after datasets were generated without them, with the value those datasets had.
_PARAMETERS_BEFORE_RECORDED = {"colour_jitter": 0.0, "colour_classes": False}


def read_generation_info(root: str | os.PathLike) -> dict | None:
    """The parameters in ``root/synthetic.json``, or None when the file is absent."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"{path}: not valid JSON ({err}); regenerate the dataset with `ibs-study synth`"
        ) from None
    if not isinstance(info, dict):
        raise DataError(
            f"{path}: holds no generation parameters; regenerate the dataset with `ibs-study synth`"
        )
    return info


def generation_differences(found: dict, expected: dict) -> dict[str, tuple]:
    """``{parameter: (found value, expected value)}`` where a generation's ``synthetic.json``
    (``found``) differs from :func:`synthetic_parameters` output (``expected``); a parameter
    added after ``found`` was written counts as its old fixed value."""
    found = {**_PARAMETERS_BEFORE_RECORDED, **found}
    return {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}


def ensure_dataset(
    root: str | os.PathLike,
    scale: str = "cpu",
    seed: int = 0,
    *,
    colour_jitter: float | None = None,
    colour_classes: bool = False,
    workers: int | None = None,
    strict: bool = True,
) -> Path:
    """The synthetic dataset of ``scale``, ``seed``, ``colour_jitter`` (default: the scale's) and
    ``colour_classes`` at ``root``: generated when ``root`` is absent or empty, reused when it
    holds a complete generation with the same parameters (a ``synthetic.json`` written before a
    parameter existed counts as that parameter's old fixed value), or with any parameters
    unless ``strict``.

    Raises:
        DataError: ``root`` holds something else, an incomplete generation (no
            ``synthetic.json``), a generation without a split the parameters ask for, or (with
            ``strict``) a generation with other parameters; the message names them.
    """
    root = Path(root)
    expected = synthetic_parameters(
        scale, seed=seed, colour_jitter=colour_jitter, colour_classes=colour_classes
    )
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return generate_dataset(
            root,
            scale=scale,
            seed=seed,
            workers=workers,
            colour_jitter=colour_jitter,
            colour_classes=colour_classes,
        )
    found = read_generation_info(root)
    if found is None:
        raise DataError(
            f"{root}: not a complete synthetic dataset (no {INFO_FILE}: an interrupted generation or "
            f"other files); delete the folder or regenerate with `ibs-study synth --out {root} --overwrite` "
            "(a COCO-panoptic folder made by another tool: data.dataset=coco_panoptic)"
        )
    differences = generation_differences(found, expected)
    if differences and strict:
        listed = ", ".join(f"{k}: found {a!r}, expected {b!r}" for k, (a, b) in differences.items())
        options = f" --colour-jitter {expected['colour_jitter']:g}" if expected["colour_jitter"] else ""
        options += " --colour-classes" if expected["colour_classes"] else ""
        raise DataError(
            f"{root}: holds a synthetic dataset with other parameters ({listed}); use another folder "
            f"or regenerate with "
            f"`ibs-study synth --out {root} --scale {scale} --seed {seed}{options} --overwrite`"
        )
    checked = found if differences else expected
    for split in SPLITS:
        if checked.get(f"num_{split}") and not (root / "annotations" / f"panoptic_{split}.json").is_file():
            raise DataError(
                f"{root}: {INFO_FILE} is present but annotations/panoptic_{split}.json is missing"
            )
    logger.info(
        "%s: reusing the synthetic dataset (scale %s, seed %s)", root, found.get("scale"), found.get("seed")
    )
    return root
