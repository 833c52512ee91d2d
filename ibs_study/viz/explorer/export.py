"""Static views of a run's most confused predictions: one PNG each and one HTML page (no ipywidgets).

Each figure is drawn once. The PNG is composed of the explorer's raster views
(:mod:`ibs_study.viz.explorer.images`: the instance views with their GT outlines, the
colour-coded panoptic images), text drawn with PIL; no plot library and no browser is involved,
so it works offline on any machine. The HTML page holds, per prediction, the plotly figures the
widget shows (:mod:`ibs_study.viz.explorer.views`: instance views, covered-fraction bars), the
widget's status line and table, and a link to the PNG.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from ibs_study.atomic import atomic_write, write_text_atomic
from ibs_study.viz.explorer.data import ExplorerData, Selection
from ibs_study.viz.explorer.images import (
    GT_SOURCE,
    InstanceView,
    instance_views,
    panoptic_labels,
    panoptic_rgb,
    panoptic_source,
    run_order,
)
from ibs_study.viz.explorer.views import (
    INSTANCE_FIGURE_SIZE,
    MAX_BARS,
    bar_figure,
    image_figure,
    instance_view_parts,
    show_bars,
    show_image,
    status_html,
    table_html,
)
from ibs_study.viz.panoptic import RGB, draw_labels

logger = logging.getLogger(__name__)

__all__ = ["export_static", "selection_png"]

PANEL_WIDTH = 480  # pixels of a panel in the PNG; instance views are at most PANEL_HEIGHT high
PANEL_HEIGHT = 360
GAP = 10
TITLE_SIZE = 14  # font sizes in PNG pixels
LABEL_SIZE = 12
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-") or "x"


def _plain(text_html: str) -> list[str]:
    """The lines of a short HTML text (``<br>`` breaks, tags dropped, entities resolved)."""
    return [html.unescape(re.sub(r"<[^>]+>", "", line)) for line in text_html.split("<br>")]


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) uint8 scaled by ``scale``: pixels kept sharp when enlarged, averaged when reduced."""
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    return np.array(Image.fromarray(rgb).resize(size, resample))


def _text_block(lines: Sequence[str], width: int, size: int) -> np.ndarray:
    """(h, width, 3) uint8: ``lines`` in black on white, each wrapped at word boundaries to ``width``."""
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and measure.textlength(candidate, font=font) > width - 4:
                wrapped.append(current)
                current = word
            else:
                current = candidate
        wrapped.append(current)
    line_height = round(size * 1.35)
    canvas = Image.new("RGB", (width, line_height * len(wrapped) + 4), WHITE)
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(wrapped):
        draw.text((2, 2 + k * line_height), line, font=font, fill=BLACK)
    return np.asarray(canvas)


def _stack(blocks: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Blocks side by side (``axis`` 1) or one below the other (``axis`` 0), GAP white pixels between,
    padded with white to a common height (width)."""
    extent = max(block.shape[1 - axis] for block in blocks)
    parts = []
    for k, block in enumerate(blocks):
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[1 - axis] = (0, extent - block.shape[1 - axis])
        parts.append(np.pad(block, pad, constant_values=255))
        if k < len(blocks) - 1:
            gap_shape = [0, 0, 3]
            gap_shape[axis], gap_shape[1 - axis] = GAP, extent
            parts.append(np.full(gap_shape, 255, np.uint8))
    return np.concatenate(parts, axis=axis)


def _titled(rgb: np.ndarray, title: str) -> np.ndarray:
    """``rgb`` below its title."""
    return _stack([_text_block([title], rgb.shape[1], TITLE_SIZE), rgb], axis=0)


def _labelled(rgb: np.ndarray, labels: Sequence[tuple[float, float, str, RGB]]) -> np.ndarray:
    """``rgb`` with each (x, y, text, colour) label drawn at pixel (x, y) in its colour on a dark box."""
    by_color: dict[RGB, dict[tuple[int, int], str]] = {}
    for x, y, text, color in labels:
        by_color.setdefault(color, {})[(round(x), round(y))] = text
    for color, texts in by_color.items():
        rgb = draw_labels(rgb, texts, font_size=LABEL_SIZE, text_color=color, box_alpha=0.65)
    return rgb


def _instance_panel(view: InstanceView) -> np.ndarray:
    """The instance view enlarged (or reduced) to fit PANEL_WIDTH x PANEL_HEIGHT, its labels drawn in their
    outline colours, under its title."""
    height, width = view.rgb.shape[:2]
    scale = min(PANEL_WIDTH / width, PANEL_HEIGHT / height)
    x0, y0 = view.region[:2]
    labels = [
        ((x - x0 + 0.5) * scale, (y - y0 + 0.5) * scale, text, color) for x, y, text, color in view.labels
    ]
    return _titled(_labelled(_resize(view.rgb, scale), labels), view.title)


def _dashed_box(rgb: np.ndarray, region: tuple[int, int, int, int], dash: int = 6) -> None:
    """Draw the outline of ``region`` (x0, y0, x1, y1; end-exclusive) into ``rgb`` in white dashes, in place."""
    height, width = rgb.shape[:2]
    x0, y0 = max(0, region[0]), max(0, region[1])
    x1, y1 = min(width, region[2]) - 1, min(height, region[3]) - 1
    on_x = (np.arange(x0, x1 + 1) // dash) % 2 == 0
    on_y = (np.arange(y0, y1 + 1) // dash) % 2 == 0
    for row in (y0, y1):
        rgb[row, x0 : x1 + 1][on_x] = WHITE
    for col in (x0, x1):
        rgb[y0 : y1 + 1, col][on_y] = WHITE


def _panoptic_panel(
    data: ExplorerData, source: int, selection: Selection, region: tuple[int, int, int, int]
) -> np.ndarray:
    """The colour-coded panoptic image of ``source`` reduced (or enlarged) to PANEL_WIDTH, the instance views'
    ``region`` dashed, under its title."""
    image_id = selection.record.image_id
    view, colors = panoptic_source(data, source, image_id)
    scale = PANEL_WIDTH / view.id_map.shape[1]
    rgb = _resize(panoptic_rgb(data, view, colors, image_id), scale)
    _dashed_box(rgb, tuple(round(v * scale) for v in region))
    rgb = _labelled(
        rgb,
        [((x + 0.5) * scale, (y + 0.5) * scale, text, WHITE) for x, y, text in panoptic_labels(data, view)],
    )
    title = "ground truth" if source == GT_SOURCE else f"{view.title} (panoptic)"
    return _titled(rgb, f"{title}: {image_id}")


def selection_png(data: ExplorerData, selection: Selection, views: Sequence[InstanceView]) -> np.ndarray:
    """(H, W, 3) uint8 page of a selection: the status lines; the instance ``views``; the panoptic images of
    the ground truth and of the runs (primary first), the views' region dashed."""
    top = _stack([_instance_panel(view) for view in views], axis=1)
    region = views[0].region
    sources = [GT_SOURCE, *run_order(data, selection.run_index)]
    bottom = _stack([_panoptic_panel(data, source, selection, region) for source in sources], axis=1)
    width = max(top.shape[1], bottom.shape[1])
    caption = _text_block(_plain(status_html(data, selection)), width, TITLE_SIZE)
    page = _stack([caption, top, bottom], axis=0)
    return np.pad(page, [(GAP, GAP), (GAP, GAP), (0, 0)], constant_values=255)


def _html_section(
    data: ExplorerData,
    selection: Selection,
    views: Sequence[InstanceView],
    png_name: str,
    *,
    include_plotlyjs: bool | str,
    max_side: int,
    max_bars: int,
) -> str:
    """The page's part for one selection: status line, the widget's instance and bar figures, its table."""
    figures: list[go.Figure] = []
    for view in views:
        fig = image_figure(go.Figure, *INSTANCE_FIGURE_SIZE)
        show_image(fig, instance_view_parts(view, max_side))
        figures.append(fig)
    bars = bar_figure(go.Figure, len(views))
    show_bars(bars, data, selection, max_bars)
    figures.append(bars)
    stem = Path(png_name).stem
    divs = [
        fig.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs if k == 0 else False,
            div_id=f"{stem}_{k}",  # stable ids: a re-export differs only where the content does
        )
        for k, fig in enumerate(figures)
    ]
    return (
        f"<section id='{stem}'><p>{status_html(data, selection)} · <a href='{png_name}'>PNG</a></p>"
        f"<div style='display:flex;flex-wrap:wrap'>{''.join(divs)}</div>{table_html(data, selection)}</section>"
    )


def export_static(
    data: ExplorerData,
    out_dir: str | os.PathLike,
    top_k: int = 6,
    *,
    run: int = 0,
    threshold: float = 0.5,
    category_id: int | None = None,
    size: str | None = None,
    include_plotlyjs: bool | str = True,
    max_side: int = 640,
    max_bars: int = MAX_BARS,
) -> list[Path]:
    """A PNG per prediction (:func:`selection_png`) and one HTML page of the ``top_k`` most confused
    predictions of ``run`` (:meth:`ExplorerData.records` under the class and size filters).

    Each shows the image region with the predicted mask and the GT instances it covers (outlined, with
    covered fractions), the other run's prediction covering the same object, and what they cover at
    ``threshold``; the PNG adds the full colour-coded panoptic images (GT | runs), the page the
    covered-fraction bars and table. Every file is written atomically.

    Args:
        out_dir: created if missing; existing files of the same names are an error.
        include_plotlyjs: passed to plotly (True embeds plotly.js: the page works offline; a path
            ending in .js loads that file).
        max_side: long side, in pixels, of the instance images embedded in the page.
        max_bars: GT things in a bar chart.

    Returns:
        The PNG paths, most confused first, then the HTML page.

    Raises:
        FileExistsError: one of the files exists already (nothing is written).
    """
    out_dir = Path(out_dir)
    label = data.runs[run].label
    records = data.records(run, category_id=category_id, size=size)[:top_k]
    html_path = out_dir / f"confusion_views_{_slug(label)}.html"
    planned = [
        out_dir / f"{rank:02d}_{_slug(label)}_{_slug(str(r.image_id))}_pred{r.segment_id}.png"
        for rank, r in enumerate(records, 1)
    ]
    existing = [p for p in [*planned, html_path] if p.exists()]
    if existing:
        raise FileExistsError(
            f"{existing[0]} exists; export_static does not overwrite (choose another out_dir)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for rank, (record, path) in enumerate(
        tqdm(list(zip(records, planned)), desc="exporting confusion views", disable=len(records) < 3), 1
    ):
        selection = data.select(run, record.image_id, record.segment_id, threshold)
        views = instance_views(data, selection)
        with atomic_write(path, "wb") as f:
            Image.fromarray(selection_png(data, selection, views)).save(f, format="PNG")
        sections.append(
            _html_section(
                data,
                selection,
                views,
                path.name,
                include_plotlyjs=include_plotlyjs if rank == 1 else False,
                max_side=max_side,
                max_bars=max_bars,
            )
        )
    title = f"Most confused predictions of {label} (T = {threshold:.2f})"
    write_text_atomic(
        html_path,
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h2>{title}</h2>{''.join(sections) or '<p>no predicted thing segments</p>'}</body></html>",
    )
    logger.info("wrote %d confusion views to %s", len(planned), out_dir)
    return [*planned, html_path]
