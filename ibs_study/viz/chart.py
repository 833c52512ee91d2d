"""Figures described once as data and drawn by one matplotlib and one plotly renderer.

A :class:`Chart` holds what a figure shows, independent of the backend: panels side by side,
each with lines (optional filled bands and error whiskers), grouped bars (95 % whiskers and
single values as dots), horizontal rules, or an image with boxed text labels; titles, axis
labels, ticks, colours and where the legend goes. :func:`render_matplotlib` draws it as a
static :class:`matplotlib.figure.Figure` (PNG / SVG, made without pyplot: works headless);
:func:`render_plotly` as an interactive plotly figure (HTML). A figure kind is a function that
builds its chart; it has no drawing code of its own.

Line styles and markers are given as matplotlib writes them (``"-"``, ``"--"``, ``":"``,
``"-."``; ``"o"``, ``"s"``, ``"x"``, ``"."``); colours as ``#rrggbb``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image
from plotly.subplots import make_subplots

__all__ = [
    "PALETTE",
    "Line",
    "Bars",
    "HLine",
    "Picture",
    "Panel",
    "Chart",
    "draw_panel",
    "render_matplotlib",
    "render_plotly",
    "png_data_uri",
]

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
_PLOTLY_DASH = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
_PLOTLY_MARKER = {"o": "circle", "s": "square", "x": "x", ".": "circle"}
_PX_PER_PT = 4 / 3  # plotly sizes fonts in CSS pixels, matplotlib in points
Bounds = tuple[Sequence[float], Sequence[float]]


@dataclass(frozen=True)
class Line:
    """N points ``(x, y)`` joined in order.

    Attributes:
        label: legend entry (None: none).
        dash: line style; ``""`` draws the markers only.
        band: (low, high), N values each: a filled band around the line.
        error: (low, high), N values each: vertical whiskers from low to high at each point.
        xerror: (low, high), N values each: horizontal whiskers.
        point_labels: N texts written beside the points ("" or absent: none).
        marker_size: in points; ``hollow`` draws the markers as rings.
        legend: False keeps the line out of the legend (a line with no points and a label is a
            legend entry alone, e.g. for a set of unlabelled rules).
    """

    label: str | None
    x: Sequence[float]
    y: Sequence[float]
    color: str
    dash: str = "-"
    marker: str | None = None
    width: float = 1.8
    band: Bounds | None = None
    error: Bounds | None = None
    xerror: Bounds | None = None
    point_labels: Sequence[str] = ()
    marker_size: float = 4.0
    hollow: bool = False
    legend: bool = True


@dataclass(frozen=True)
class Bars:
    """One member of a grouped bar chart: a bar per category of its panel (NaN: no bar).

    Attributes:
        values: one per category.
        error: (low, high), one per category (NaN: no whisker).
        points: per category the single values (e.g. per seed) drawn as dots.
    """

    label: str
    values: Sequence[float]
    color: str
    error: Bounds | None = None
    points: Sequence[Sequence[float]] = ()


@dataclass(frozen=True)
class HLine:
    """A horizontal rule across the panel at ``y``."""

    y: float
    color: str = "black"
    dash: str = "-"
    width: float = 0.6


@dataclass(frozen=True)
class Picture:
    """An H x W x 3 uint8 image in pixel coordinates (x right, y down) with boxed text labels.

    Attributes:
        labels: (x, y, text) per label, centred at pixel (x, y).
        label_size: font size of the labels in points.
    """

    rgb: np.ndarray
    labels: tuple[tuple[float, float, str], ...] = ()
    label_size: float = 7.0


@dataclass(frozen=True)
class Panel:
    """One set of axes.

    Attributes:
        categories: the x tick labels of the bar groups (with ``bars``).
        xticks: (positions, labels) of the x axis.
        xlim, ylim: axis limits, None for an end left to the data.
        legend: "inside" (where it fits), "right" (beside the axes) or None.
        grid: "both", "y" or None.
        tick_rotation: degrees of the category labels; rotated labels are set in 8 points.
    """

    title: str | None = None
    xlabel: str = ""
    ylabel: str = ""
    lines: tuple[Line, ...] = ()
    bars: tuple[Bars, ...] = ()
    categories: tuple[str, ...] = ()
    hlines: tuple[HLine, ...] = ()
    picture: Picture | None = None
    xticks: tuple[Sequence[float], Sequence[str]] | None = None
    xlog: bool = False
    xlim: tuple[float | None, float | None] = (None, None)
    ylim: tuple[float | None, float | None] = (None, None)
    legend: str | None = "inside"
    grid: str | None = "both"
    tick_rotation: float = 0.0
    title_size: float = 10.0


@dataclass(frozen=True)
class Chart:
    """Panels in one row under an optional common title; ``size`` in inches (the static figure)."""

    panels: tuple[Panel, ...]
    title: str | None = None
    size: tuple[float, float] = (5.5, 3.6)


# ----------------------------------------------------------------------------- matplotlib


def _spans(values: np.ndarray, bounds: Bounds | None) -> np.ndarray | None:
    """matplotlib's ``xerr`` / ``yerr`` of (low, high) bounds: (2, N), the distances below and above."""
    if bounds is None:
        return None
    low, high = (np.asarray(b, dtype=float) for b in bounds)
    return np.stack([values - low, high - values])


def _draw_line(ax: Axes, line: Line) -> None:
    x, y = np.asarray(line.x, dtype=float), np.asarray(line.y, dtype=float)
    label = line.label if line.legend else None
    style = {"color": line.color, "ls": line.dash or "none", "lw": line.width, "label": label}
    if line.marker:
        style |= {"marker": line.marker, "ms": line.marker_size}
        if line.hollow:
            style |= {"mfc": "none", "mec": line.color, "mew": 1.5}
    if line.error is not None or line.xerror is not None:
        whiskers = {"xerr": _spans(x, line.xerror), "yerr": _spans(y, line.error)}
        ax.errorbar(x, y, capsize=2 if line.xerror is None else 1.5, elinewidth=0.8, **whiskers, **style)
    else:
        ax.plot(x, y, **style)
    if line.band is not None:
        ax.fill_between(x, *line.band, color=line.color, alpha=0.18, lw=0)
    for px, py, text in zip(x, y, line.point_labels):
        if text:
            ax.annotate(
                text, (px, py), xytext=(4, 3), textcoords="offset points", fontsize=7, color=line.color
            )


def _draw_bars(ax: Axes, panel: Panel) -> None:
    width = 0.8 / max(len(panel.bars), 1)
    x = np.arange(len(panel.categories))
    for k, bars in enumerate(panel.bars):
        positions = x - 0.4 + width * (k + 0.5)
        values = np.asarray(bars.values, dtype=float)
        ax.bar(positions, values, width * 0.92, color=bars.color, label=bars.label, alpha=0.85)
        if bars.error is not None:
            ax.errorbar(
                positions,
                values,
                yerr=_spans(values, bars.error),
                fmt="none",
                ecolor="black",
                capsize=2,
                lw=1,
            )
        for pos, points in zip(positions, bars.points):
            ax.plot([pos] * len(points), points, ".", color="black", ms=3, alpha=0.6)
    rotated = {"rotation": panel.tick_rotation, "ha": "right", "fontsize": 8} if panel.tick_rotation else {}
    ax.set_xticks(x, panel.categories, **rotated)


def draw_panel(ax: Axes, panel: Panel) -> None:
    """Draw ``panel`` on a matplotlib axis (what :func:`render_matplotlib` does per panel)."""
    if panel.picture is not None:
        ax.imshow(panel.picture.rgb, interpolation="nearest")
        for x, y, text in panel.picture.labels:
            ax.text(
                x,
                y,
                text,
                fontsize=panel.picture.label_size,
                color="white",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.55, "linewidth": 0},
            )
        ax.set_axis_off()
    if panel.bars:
        _draw_bars(ax, panel)
    for line in panel.lines:
        _draw_line(ax, line)
    for rule in panel.hlines:
        ax.axhline(rule.y, color=rule.color, ls=rule.dash, lw=rule.width)
    if panel.xlog:
        ax.set_xscale("log")
    if panel.xticks is not None:
        ax.set_xticks(*panel.xticks)
        ax.minorticks_off()
    if panel.xlim != (None, None):
        ax.set_xlim(*panel.xlim)
    if panel.ylim != (None, None):
        ax.set_ylim(*panel.ylim)
    if panel.xlabel:
        ax.set_xlabel(panel.xlabel)
    if panel.ylabel:
        ax.set_ylabel(panel.ylabel)
    if panel.title:
        ax.set_title(panel.title, fontsize=panel.title_size)
    if panel.grid:
        ax.grid(axis=panel.grid, alpha=0.3)
    if panel.legend and (panel.bars or any(line.label and line.legend for line in panel.lines)):
        outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if panel.legend == "right" else {}
        ax.legend(fontsize=8, frameon=False, **outside)


def render_matplotlib(chart: Chart) -> Figure:
    """The static figure of ``chart`` (constrained layout, no pyplot)."""
    fig = Figure(figsize=chart.size, layout="constrained")
    axes = fig.subplots(1, len(chart.panels), squeeze=False)[0]
    for ax, panel in zip(axes, chart.panels):
        draw_panel(ax, panel)
    if chart.title:
        fig.suptitle(chart.title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------- plotly


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _finite(values: Sequence[float]) -> list[float | None]:
    """NaN as None: plotly leaves no bar, whisker or point there."""
    return [None if v is None or math.isnan(v) else float(v) for v in values]


def _whiskers(values: Sequence[float], bounds: Bounds | None) -> dict | None:
    """plotly's ``error_y`` / ``error_x`` for whiskers from (low, high) to each value's bounds."""
    if bounds is None:
        return None
    low, high = bounds
    plus = [h - v for v, h in zip(values, high)]
    minus = [v - lo for v, lo in zip(values, low)]
    return {"type": "data", "array": _finite(plus), "arrayminus": _finite(minus), "visible": True}


def _line_traces(line: Line, show_legend: bool) -> list[go.Scatter]:
    traces = []
    name = line.label or ""
    if line.band is not None:
        low, high = line.band
        traces.append(
            go.Scatter(
                x=list(line.x) + list(line.x)[::-1],
                y=list(high) + list(low)[::-1],
                fill="toself",
                fillcolor=_rgba(line.color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
        )
    mode = "lines" if line.dash else "markers"
    if line.marker and line.dash:
        mode = "lines+markers"
    marker = {
        "symbol": _PLOTLY_MARKER.get(line.marker or "o", "circle"),
        "color": "rgba(0,0,0,0)" if line.hollow else line.color,
        "size": round(line.marker_size * 1.5),
        "line": {"color": line.color, "width": 1.5 if line.hollow else 0},
    }
    labels = list(line.point_labels)
    traces.append(
        go.Scatter(
            x=list(line.x),
            y=list(line.y),
            mode=mode + ("+text" if any(labels) else ""),
            name=name,
            legendgroup=name,
            showlegend=show_legend,
            line={"color": line.color, "dash": _PLOTLY_DASH.get(line.dash, "solid"), "width": line.width},
            marker=marker,
            error_y=_whiskers(line.y, line.error),
            error_x=_whiskers(line.x, line.xerror),
            text=labels or None,
            textposition="top right",
            textfont={"color": line.color, "size": round(7 * _PX_PER_PT)},
        )
    )
    return traces


def _bar_trace(bars: Bars, categories: Sequence[str], show_legend: bool) -> go.Bar:
    seeds = [", ".join(f"{v:.1f}" for v in points) for points in bars.points] or None
    hover = "%{x}: %{y:.1f}" + (" (seeds: %{customdata})" if seeds else "")
    return go.Bar(
        x=list(categories),
        y=_finite(bars.values),
        name=bars.label,
        legendgroup=bars.label,
        showlegend=show_legend,
        marker_color=bars.color,
        opacity=0.85,
        error_y=_whiskers(bars.values, bars.error),
        customdata=seeds,
        hovertemplate=hover + "<extra>" + bars.label + "</extra>",
    )


def png_data_uri(rgb: np.ndarray, max_side: int | None = None) -> tuple[str, float]:
    """(H, W, 3) uint8 -> ("data:image/png;base64,...", scale), downscaled so its long side is at most
    ``max_side``; ``scale`` is original pixels per encoded pixel (1.0 when not downscaled)."""
    img = Image.fromarray(rgb)
    scale = 1.0
    if max_side is not None and max(img.size) > max_side:
        scale = max(img.size) / max_side
        img = img.resize(
            (max(1, round(img.width / scale)), max(1, round(img.height / scale))), Image.BILINEAR
        )
        scale = rgb.shape[1] / img.width
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), scale


def _picture_traces(fig: go.Figure, picture: Picture, max_side: int, row: int, col: int) -> None:
    uri, scale = png_data_uri(picture.rgb, max_side)
    offset = (scale - 1) / 2  # pixel centres stay in original pixel coordinates when downscaled
    fig.add_trace(
        go.Image(source=uri, x0=offset, y0=offset, dx=scale, dy=scale, hoverinfo="x+y"), row=row, col=col
    )
    for x, y, text in picture.labels:
        fig.add_annotation(
            x=x,
            y=y,
            text=text,
            showarrow=False,
            bgcolor="rgba(0,0,0,0.55)",
            font={"color": "white", "size": round(picture.label_size * _PX_PER_PT)},
            row=row,
            col=col,
        )


def _axis_range(limits: tuple[float | None, float | None], log: bool = False) -> dict:
    low, high = limits
    if low is not None and high is not None:
        return {"range": [math.log10(low), math.log10(high)] if log else [low, high]}
    return {"rangemode": "tozero"} if low == 0 else {}


def render_plotly(chart: Chart, *, max_side: int = 1024) -> go.Figure:
    """The interactive figure of ``chart``: the same series, labels and colours as
    :func:`render_matplotlib`; the legend holds each label once; pictures are embedded as PNG
    downscaled to ``max_side`` pixels on their long side (positions stay in image pixels)."""
    titles = [panel.title or "" for panel in chart.panels]
    fig = make_subplots(rows=1, cols=len(chart.panels), subplot_titles=titles if len(titles) > 1 else None)
    shown: set[str] = set()
    for col, panel in enumerate(chart.panels, start=1):
        for bars in panel.bars:
            fig.add_trace(_bar_trace(bars, panel.categories, bars.label not in shown), row=1, col=col)
            shown.add(bars.label)
        for line in panel.lines:
            show = bool(line.label and line.legend and line.label not in shown)
            for trace in _line_traces(line, show):
                fig.add_trace(trace, row=1, col=col)
            if show:
                shown.add(line.label)
        for rule in panel.hlines:
            fig.add_hline(
                y=rule.y,
                line={"color": rule.color, "dash": _PLOTLY_DASH.get(rule.dash, "solid"), "width": rule.width},
                row=1,
                col=col,
            )
        xaxis: dict = {"title": panel.xlabel or None, **_axis_range(panel.xlim, panel.xlog)}
        if panel.xlog:
            xaxis["type"] = "log"
        if panel.xticks is not None:
            xaxis |= {"tickvals": list(panel.xticks[0]), "ticktext": list(panel.xticks[1])}
        yaxis: dict = {"title": panel.ylabel or None, **_axis_range(panel.ylim)}
        if panel.picture is not None:
            height, width = panel.picture.rgb.shape[:2]
            xaxis |= {"visible": False, "range": [-0.5, width - 0.5]}
            yaxis |= {
                "visible": False,
                "range": [height - 0.5, -0.5],
                "scaleanchor": f"x{col if col > 1 else ''}",
            }
            _picture_traces(fig, panel.picture, max_side, 1, col)
        if panel.tick_rotation:
            xaxis["tickangle"] = -panel.tick_rotation
        fig.update_xaxes(xaxis, row=1, col=col)
        fig.update_yaxes(yaxis, row=1, col=col)
    title = chart.title or (chart.panels[0].title if len(chart.panels) == 1 else None)
    pictures = all(panel.picture is not None for panel in chart.panels)
    fig.update_layout(
        title=title.replace("\n", "<br>") if title else None,
        barmode="group",
        template="plotly_white",
        margin={"l": 5, "r": 5, "t": 40 if title else 5, "b": 5} if pictures else None,
    )
    return fig
