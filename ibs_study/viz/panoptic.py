"""Colour-coded panoptic images in the paper's style (Figs. 2, 6, 8, 10, 12).

Every segment gets its own colour and a text label: stuff segments the colour of their
class, thing segments the class colour jittered per instance, so that no two segments of
an image share a colour. A prediction that covers several object instances therefore
shows as *one* colour and *one* label spread over them, which is how confusion appears
in the paper's panoptic figures.

Everything per pixel is vectorised: colours come from a palette lookup over the unique
ids, boundaries from neighbour comparisons, label positions from one distance transform
(the interior point of each segment farthest from its boundary).

Array functions return (H, W, 3) uint8 RGB; :func:`panoptic_panel` makes one a chart panel
(:mod:`ibs_study.viz.chart`), which :func:`plot_panoptic`, :func:`panoptic_plotly` and
:func:`side_by_side` draw with matplotlib / plotly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ibs_study.data.panoptic import VOID_ID, CategoryInfo, PanopticFormatError, Segment
from ibs_study.metrics.panoptic import overlap_table
from ibs_study.viz.chart import Chart, Panel, Picture, draw_panel, png_data_uri, render_plotly

logger = logging.getLogger(__name__)

__all__ = [
    "RGB",
    "PanopticView",
    "segment_colors",
    "matched_colors",
    "colorize",
    "segment_boundaries",
    "blend",
    "greyscale",
    "label_points",
    "segment_labels",
    "default_font_size",
    "draw_labels",
    "render_panoptic",
    "png_data_uri",
    "panoptic_panel",
    "plot_panoptic",
    "panoptic_plotly",
    "side_by_side",
]

RGB = tuple[int, int, int]
VOID_COLOR: RGB = (0, 0, 0)
# Thing colours stay within this many levels per channel of their class colour, and at
# least MIN_COLOR_DISTANCE (L1 over the three channels) from every other segment's colour.
THING_JITTER = 60
MIN_COLOR_DISTANCE = 24


@dataclass
class PanopticView:
    """One panoptic segmentation of an image, as drawn in a panel.

    Attributes:
        title: panel title (e.g. "ground truth", "crop + IBS").
        id_map: (H, W) integer segment ids, 0 = void.
        segments: one :class:`Segment` per non-void id of ``id_map``.
    """

    title: str
    id_map: np.ndarray
    segments: list[Segment]


def _category(categories: Mapping[int, CategoryInfo], segment: Segment) -> CategoryInfo:
    if segment.category_id not in categories:
        raise PanopticFormatError(f"segment id {segment.id}: unknown category id {segment.category_id}")
    return categories[segment.category_id]


def _far_enough(color: np.ndarray, taken: np.ndarray) -> bool:
    return not len(taken) or int(np.abs(taken - color).sum(axis=1).min()) >= MIN_COLOR_DISTANCE


def _fresh_color(base: RGB, taken: list[RGB], rng: np.random.Generator) -> RGB:
    """A colour near ``base`` (per-channel jitter) at least MIN_COLOR_DISTANCE from every taken colour."""
    taken_array = np.array(taken, dtype=np.int64).reshape(-1, 3)
    center = np.array(base, dtype=np.int64)
    for attempt in range(200):
        # widen the search when the neighbourhood of the class colour is crowded
        spread = THING_JITTER if attempt < 100 else 255
        candidate = np.clip(center + rng.integers(-spread, spread + 1, 3), 0, 255)
        if _far_enough(candidate, taken_array):
            return tuple(int(c) for c in candidate)  # type: ignore[return-value]
    raise RuntimeError(f"no free colour near {base} after 200 draws ({len(taken)} colours taken)")


def segment_colors(
    segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    *,
    seed: int = 0,
    fixed: Mapping[int, RGB] | None = None,
) -> dict[int, RGB]:
    """Colour of every segment: stuff takes its class colour, each thing a unique jittered one.

    Args:
        segments: the segments of one image.
        categories: dataset category id -> info (its ``color`` is the class colour).
        seed: thing colours depend only on (seed, segment id), so they are stable across calls.
        fixed: colours already decided for some segment ids (kept as given).

    Returns:
        segment id -> RGB. Thing colours differ from every other returned colour.
    """
    colors: dict[int, RGB] = dict(fixed or {})
    for segment in segments:
        category = _category(categories, segment)
        if segment.id not in colors and not category.isthing:
            colors[segment.id] = tuple(int(c) for c in category.color)  # type: ignore[assignment]
    for segment in sorted(segments, key=lambda s: s.id):
        if segment.id in colors:
            continue
        rng = np.random.default_rng([seed, segment.id])
        colors[segment.id] = _fresh_color(_category(categories, segment).color, list(colors.values()), rng)
    return colors


def matched_colors(
    reference: PanopticView,
    reference_colors: Mapping[int, RGB],
    view: PanopticView,
    categories: Mapping[int, CategoryInfo],
    *,
    seed: int = 0,
) -> dict[int, RGB]:
    """Colours for ``view`` that reuse the reference's colour where a thing segment matches it.

    Pairs (reference thing, view thing) of the same category are taken greedily by
    decreasing intersection, each reference colour at most once, so the same object has the
    same colour in every panel; a view segment that covers two reference instances takes
    the colour of the one it overlaps most, the other instance's colour is absent.

    Returns:
        segment id of ``view`` -> RGB (stuff: class colour; unmatched things: fresh colours).
    """
    counts = overlap_table(reference.id_map, reference.segments, view.id_map, view.segments).counts[1:, 1:]
    ref_rows, view_cols = np.nonzero(counts)
    order = np.argsort(-counts[ref_rows, view_cols], kind="stable")
    fixed: dict[int, RGB] = {}
    used_ref: set[int] = set()
    for row, col in zip(ref_rows[order].tolist(), view_cols[order].tolist()):
        ref_segment, segment = reference.segments[row], view.segments[col]
        if (
            segment.id in fixed
            or row in used_ref
            or ref_segment.category_id != segment.category_id
            or not _category(categories, segment).isthing
        ):
            continue
        fixed[segment.id] = reference_colors[ref_segment.id]
        used_ref.add(row)
    return segment_colors(view.segments, categories, seed=seed, fixed=fixed)


def colorize(id_map: np.ndarray, colors: Mapping[int, RGB], void_color: RGB = VOID_COLOR) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, each id painted with ``colors[id]`` (void: ``void_color``)."""
    ids, inverse = np.unique(id_map, return_inverse=True)
    palette = np.empty((len(ids), 3), dtype=np.uint8)
    for k, seg_id in enumerate(ids.tolist()):
        if seg_id == VOID_ID:
            palette[k] = void_color
        elif seg_id in colors:
            palette[k] = colors[seg_id]
        else:
            raise PanopticFormatError(f"segment id {seg_id} is in the id map but has no colour")
    return palette[inverse.reshape(id_map.shape)]


def segment_boundaries(id_map: np.ndarray, thickness: int = 1, *, image_border: bool = False) -> np.ndarray:
    """(H, W) bool, True on pixels with a 4-neighbour of another id (both sides of each edge).

    Args:
        id_map: (H, W) integer ids.
        thickness: boundary width in pixels on each side (>= 1).
        image_border: also mark the outermost rows and columns.
    """
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    edge = np.zeros(id_map.shape, dtype=bool)
    vertical = id_map[1:] != id_map[:-1]
    horizontal = id_map[:, 1:] != id_map[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if image_border:
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
    if thickness > 1:
        edge = ndimage.binary_dilation(edge, iterations=thickness - 1)
    return edge


def greyscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 grey: the ITU-R BT.601 luma in every channel."""
    luma = np.rint(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def blend(image: np.ndarray, colored: np.ndarray, alpha: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``round((1 - alpha) * image + alpha * colored)`` where ``mask`` is True, ``image`` elsewhere.

    Args:
        image, colored: (H, W, 3) uint8.
        alpha: weight of ``colored`` in [0, 1].
        mask: (H, W) bool; default everywhere.

    Returns:
        (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if image.shape != colored.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image and colored must both be (H, W, 3); got {image.shape} and {colored.shape}")
    mixed = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colored.astype(np.float32))
    mixed = mixed.astype(np.uint8)
    if mask is None:
        return mixed
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {image.shape[:2]}, got {mask.shape}")
    return np.where(mask[..., None], mixed, image)


def label_points(id_map: np.ndarray, segment_ids: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
    """An interior point (x, y) per segment: its pixel farthest from any boundary or the image border.

    Args:
        id_map: (H, W) integer ids.
        segment_ids: which segments (default: every non-void id present).

    Returns:
        segment id -> (x, y) pixel that belongs to that segment.

    Raises:
        PanopticFormatError: a requested segment id has no pixel in ``id_map``.
    """
    present = np.unique(id_map)
    ids = present[present != VOID_ID] if segment_ids is None else np.array(list(segment_ids), dtype=np.int64)
    missing = np.setdiff1d(ids, present)
    if len(missing):
        raise PanopticFormatError(f"segment id(s) {missing[:10].tolist()} have no pixel in the id map")
    if not len(ids):
        return {}
    distance = ndimage.distance_transform_edt(~segment_boundaries(id_map, image_border=True))
    positions = ndimage.maximum_position(distance, labels=id_map, index=ids)
    return {int(seg_id): (int(col), int(row)) for seg_id, (row, col) in zip(ids.tolist(), positions)}


def segment_labels(segments: Sequence[Segment], categories: Mapping[int, CategoryInfo]) -> dict[int, str]:
    """Text label per segment: the class name, plus a short per-class number for things ("car 2")."""
    labels: dict[int, str] = {}
    count: dict[int, int] = {}
    for segment in sorted(segments, key=lambda s: s.id):
        category = _category(categories, segment)
        if category.isthing:
            count[category.id] = count.get(category.id, 0) + 1
            labels[segment.id] = f"{category.name} {count[category.id]}"
        else:
            labels[segment.id] = category.name
    return labels


def default_font_size(height: int, width: int) -> int:
    """A readable label size for an image of this size (about 1/45 of the short side, at least 9 px)."""
    return max(9, round(min(height, width) / 45))


def draw_labels(
    rgb: np.ndarray,
    labels: Mapping[tuple[int, int], str],
    *,
    font_size: int | None = None,
    text_color: RGB = (255, 255, 255),
    box_color: RGB = (0, 0, 0),
    box_alpha: float = 0.6,
) -> np.ndarray:
    """Text centred at each (x, y) on a translucent box, kept inside the image.

    Args:
        rgb: (H, W, 3) uint8.
        labels: (x, y) -> text.
        font_size: pixel size (default: :func:`default_font_size`).

    Returns:
        A new (H, W, 3) uint8 array.
    """
    height, width = rgb.shape[:2]
    font = ImageFont.load_default(size=font_size or default_font_size(height, width))
    canvas = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pad = 2
    for (x, y), text in labels.items():
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left, bottom - top
        x0 = min(max(x - text_w // 2, pad), max(width - text_w - pad, pad))
        y0 = min(max(y - text_h // 2, pad), max(height - text_h - pad, pad))
        draw.rectangle(
            (x0 - pad, y0 - pad, x0 + text_w + pad, y0 + text_h + pad),
            fill=(*box_color, round(255 * box_alpha)),
        )
        draw.text((x0 - left, y0 - top), text, font=font, fill=(*text_color, 255))
    return np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"))


def render_panoptic(
    id_map: np.ndarray,
    segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    *,
    image: np.ndarray | None = None,
    alpha: float = 0.6,
    colors: Mapping[int, RGB] | None = None,
    boundaries: bool = True,
    boundary_color: RGB = (255, 255, 255),
    labels: bool = True,
    font_size: int | None = None,
    grey_void: bool = True,
) -> np.ndarray:
    """The colour-coded panoptic image: segment colours, boundaries and text labels.

    Args:
        id_map: (H, W) integer segment ids, 0 = void.
        segments: one per non-void id.
        categories: dataset category id -> info.
        image: optional (H, W, 3) uint8 to draw on (colours blended with ``alpha``; void shows the image).
        colors: segment id -> RGB (default: :func:`segment_colors`).
        boundaries: draw segment boundaries in ``boundary_color``.
        labels: draw "class n" labels at each segment's interior point.
        grey_void: show the image in grey (:func:`greyscale`) on void, so that an object no
            segment covers cannot be mistaken for a segment of its own colours.

    Returns:
        (H, W, 3) uint8.
    """
    colors = colors if colors is not None else segment_colors(segments, categories)
    rgb = colorize(id_map, colors)
    if image is not None:
        if image.shape != (*id_map.shape, 3):
            raise ValueError(f"image must be (H, W, 3) = {(*id_map.shape, 3)}, got {image.shape}")
        rgb = blend(image, rgb, alpha, mask=id_map != VOID_ID)
        if grey_void:
            void = id_map == VOID_ID
            rgb[void] = greyscale(image)[void]
    if boundaries:
        rgb[segment_boundaries(id_map)] = boundary_color
    if labels and segments:
        texts = segment_labels(segments, categories)
        points = label_points(id_map, [s.id for s in segments])
        rgb = draw_labels(rgb, {points[i]: texts[i] for i in points}, font_size=font_size)
    return rgb


def panoptic_panel(
    id_map: np.ndarray,
    segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    *,
    labels: bool = True,
    font_size: float = 7.0,
    title: str | None = None,
    **options: Any,
) -> Panel:
    """The colour-coded panoptic image as a chart panel: segment colours and boundaries in the
    image (:func:`render_panoptic` with ``options``: image, alpha, colors, ...), the "class n"
    labels as text of ``font_size`` points at each segment's interior point."""
    rgb = render_panoptic(id_map, segments, categories, labels=False, **options)
    texts: tuple[tuple[float, float, str], ...] = ()
    if labels and segments:
        names = segment_labels(segments, categories)
        points = label_points(id_map, [s.id for s in segments])
        texts = tuple((x, y, names[seg_id]) for seg_id, (x, y) in points.items())
    return Panel(
        title=title, picture=Picture(rgb, texts, font_size), legend=None, grid=None, title_size=font_size + 3
    )


def plot_panoptic(
    ax: Axes,
    id_map: np.ndarray,
    segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    **options: Any,
) -> None:
    """Draw the :func:`panoptic_panel` (same options) on a matplotlib axis, labels as vector text."""
    draw_panel(ax, panoptic_panel(id_map, segments, categories, **options))


def panoptic_plotly(
    id_map: np.ndarray,
    segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    *,
    max_side: int = 1024,
    **options: Any,
) -> go.Figure:
    """A plotly figure of the :func:`panoptic_panel` (same options; labels as annotations).

    The image trace is in original pixel coordinates (x right, y down) even when the
    encoded PNG is downscaled to ``max_side``, so click and hover positions index ``id_map``.
    """
    panel = panoptic_panel(id_map, segments, categories, **options)
    return render_plotly(Chart((panel,)), max_side=max_side)


def side_by_side(
    image: np.ndarray,
    views: Sequence[PanopticView],
    categories: Mapping[int, CategoryInfo],
    *,
    alpha: float = 0.6,
    labels: bool = True,
    consistent_colors: bool = True,
    panel_width: float = 5.0,
    font_size: float = 7.0,
) -> Figure:
    """Panels of the same image side by side, e.g. ground truth | run A | run B.

    Args:
        image: (H, W, 3) uint8 shown under every panel.
        views: the panels; the first is the colour reference.
        categories: dataset category id -> info.
        consistent_colors: give a thing in later panels the colour of the reference thing it
            overlaps most (:func:`matched_colors`), so the same object keeps its colour.

    Returns:
        A matplotlib figure with one axis per view.
    """
    if not views:
        raise ValueError("side_by_side needs at least one view")
    height, width = image.shape[:2]
    for view in views:
        if view.id_map.shape != (height, width):
            raise ValueError(
                f"view {view.title!r}: id map {view.id_map.shape} differs from image {(height, width)}"
            )
    fig = Figure(figsize=(panel_width * len(views), panel_width * height / width + 0.5), layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    reference_colors = segment_colors(views[0].segments, categories)
    for ax, view in zip(axes, views):
        colors = (
            reference_colors
            if view is views[0]
            else (matched_colors(views[0], reference_colors, view, categories) if consistent_colors else None)
        )
        plot_panoptic(
            ax,
            view.id_map,
            view.segments,
            categories,
            image=image,
            alpha=alpha,
            colors=colors,
            labels=labels,
            font_size=font_size,
            title=view.title,
        )
    return fig
