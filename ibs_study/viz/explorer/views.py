"""The explorer's plotly figures and HTML texts of a selection, built from its data (no ipywidgets).

The widget and the static export's HTML page show the same figures: :func:`image_figure` and
:func:`bar_figure` build them (a ``go.FigureWidget`` for the widget, a ``go.Figure`` for the
page), :func:`show_image` and :func:`show_bars` fill them with a selection's views, in place.
:func:`status_html` and :func:`table_html` say in words and numbers what the selection covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import plotly.graph_objects as go

from ibs_study.metrics.panoptic import GTOverlap
from ibs_study.viz.chart import png_data_uri
from ibs_study.viz.explorer.data import ExplorerData, ImageId, Selection
from ibs_study.viz.explorer.images import InstanceView, panoptic_labels, panoptic_rgb, panoptic_source
from ibs_study.viz.panoptic import RGB

__all__ = [
    "MAX_BARS",
    "NO_SELECTION",
    "INSTANCE_FIGURE_SIZE",
    "instance_view_parts",
    "panoptic_parts",
    "blank_parts",
    "region_box",
    "image_figure",
    "show_image",
    "bar_figure",
    "show_bars",
    "overlap_bars",
    "bars_title",
    "covered_text",
    "status_html",
    "table_html",
]

RUN_BAR_COLORS = ("#d62728", "#1f77b4")
MAX_BARS = 12  # GT things in the bar chart
IMAGE_MARGIN = {"l": 5, "r": 40, "t": 35, "b": 5}  # the right margin holds plotly's vertical toolbar
INSTANCE_FIGURE_SIZE = (380, 480)  # (height, width) of an instance view's figure, in CSS pixels
BAR_FIGURE_SIZE = (300, 480)
NO_SELECTION = "no predicted thing segment matches the filters"

FigureT = TypeVar("FigureT", bound=go.Figure)


def _rgb_css(color: RGB) -> str:
    return f"rgb({color[0]},{color[1]},{color[2]})"


# ----------------------------------------------------------------------------- image figures


def instance_view_parts(view: InstanceView, max_side: int) -> dict[str, Any]:
    """Plotly pieces of an :class:`InstanceView`: image trace kwargs, annotations, axis ranges (image pixels)."""
    x0, y0, x1, y1 = view.region
    uri, scale = png_data_uri(view.rgb, max_side)
    return {
        "image": {
            "source": uri,
            "x0": x0 + (scale - 1) / 2,
            "y0": y0 + (scale - 1) / 2,
            "dx": scale,
            "dy": scale,
        },
        "annotations": [
            {
                "x": x,
                "y": y,
                "text": text,
                "showarrow": False,
                "font": {"color": _rgb_css(color), "size": 12},
                "bgcolor": "rgba(0,0,0,0.65)",
            }
            for x, y, text, color in view.labels
        ],
        "xrange": [x0 - 0.5, x1 - 0.5],
        "yrange": [y1 - 0.5, y0 - 0.5],
        "title": view.title,
    }


def panoptic_parts(data: ExplorerData, source: int, image_id: ImageId, max_side: int) -> dict[str, Any]:
    """Plotly pieces of the colour-coded panoptic image of the GT (``source`` -1) or a run, labels as
    annotations (:func:`~ibs_study.viz.explorer.images.panoptic_source`)."""
    view, colors = panoptic_source(data, source, image_id)
    uri, scale = png_data_uri(panoptic_rgb(data, view, colors, image_id), max_side)
    height, width = view.id_map.shape
    return {
        "image": {"source": uri, "x0": (scale - 1) / 2, "y0": (scale - 1) / 2, "dx": scale, "dy": scale},
        "annotations": [
            {
                "x": x,
                "y": y,
                "text": text,
                "showarrow": False,
                "font": {"color": "white", "size": 10},
                "bgcolor": "rgba(0,0,0,0.55)",
            }
            for x, y, text in panoptic_labels(data, view)
        ],
        "xrange": [-0.5, width - 0.5],
        "yrange": [height - 0.5, -0.5],
        "title": f"{view.title}: {image_id} (each segment one colour and label)",
    }


def blank_parts(title: str = NO_SELECTION) -> dict[str, Any]:
    """Pieces of an empty image figure titled ``title``."""
    return {
        "image": {
            "source": png_data_uri(np.zeros((1, 1, 3), np.uint8))[0],
            "x0": 0,
            "y0": 0,
            "dx": 1,
            "dy": 1,
        },
        "annotations": [],
        "xrange": [-0.5, 0.5],
        "yrange": [0.5, -0.5],
        "title": title,
    }


def region_box(region: tuple[int, int, int, int]) -> dict[str, Any]:
    """A dashed white rectangle (plotly shape) around ``region`` (x0, y0, x1, y1; image pixels, end-exclusive)."""
    x0, y0, x1, y1 = region
    return {
        "type": "rect",
        "x0": x0 - 0.5,
        "y0": y0 - 0.5,
        "x1": x1 - 0.5,
        "y1": y1 - 0.5,
        "line": {"color": "white", "width": 2, "dash": "dash"},
    }


def _style(fig: go.Figure) -> None:
    fig.update_layout(modebar={"orientation": "v"}, title_font_size=13)


def image_figure(figure_type: type[FigureT], height: int, width: int) -> FigureT:
    """An empty image figure (one ``go.Image`` trace, axes hidden, y down) of ``height`` x ``width`` CSS
    pixels; ``figure_type`` is ``go.Figure`` or ``go.FigureWidget``."""
    fig = figure_type(
        data=[go.Image(source=blank_parts()["image"]["source"], hoverinfo="x+y")],
        layout={"height": height, "width": width, "margin": IMAGE_MARGIN},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    _style(fig)
    return fig


def show_image(fig: go.Figure, parts: dict[str, Any], shapes: Sequence[dict] = ()) -> None:
    """Put ``parts`` (:func:`instance_view_parts`, :func:`panoptic_parts`, :func:`blank_parts`) and
    ``shapes`` into an :func:`image_figure`, in place."""
    with fig.batch_update():
        fig.data[0].update(**parts["image"])
        fig.layout.annotations = parts["annotations"]
        fig.layout.shapes = list(shapes)
        fig.layout.xaxis.range = parts["xrange"]
        fig.layout.yaxis.range = parts["yrange"]
        fig.layout.title.text = parts["title"]


# ----------------------------------------------------------------------------- bars


def _gt_rows(data: ExplorerData, selection: Selection) -> list[tuple[int, str]]:
    """(GT id, label) of the GT things either prediction touches, by the larger covered fraction."""
    best: dict[int, float] = {}
    overlaps = list(selection.thing_overlaps)
    if selection.counterpart is not None:
        overlaps += [o for o in selection.counterpart.overlaps if o.isthing and not o.iscrowd]
    for o in overlaps:
        best[o.gt_id] = max(best.get(o.gt_id, 0.0), o.frac_of_gt)
    ordered = sorted(best, key=lambda g: -best[g])
    return [(g, data.gt_label(selection.record.image_id, g)) for g in ordered]


def overlap_bars(data: ExplorerData, selection: Selection, max_bars: int = MAX_BARS) -> list[go.Bar]:
    """Bars of the fraction of each touched GT thing covered by the selected prediction (and its counterpart),
    for the ``max_bars`` GT things covered most (:func:`bars_title` says how many more there are)."""
    rows = _gt_rows(data, selection)[:max_bars]
    bars = []
    for k, record in enumerate([selection.record, selection.counterpart]):
        if k == 1 and selection.other_index is None:
            break
        run_index = selection.run_index if k == 0 else selection.other_index
        fractions = {o.gt_id: o.frac_of_gt for o in record.overlaps} if record is not None else {}
        bars.append(
            go.Bar(
                x=[label for _, label in rows],
                y=[fractions.get(g, 0.0) for g, _ in rows],
                name=data.runs[run_index].label,
                marker_color=RUN_BAR_COLORS[run_index % 2],
            )
        )
    return bars


def bars_title(data: ExplorerData, selection: Selection, max_bars: int = MAX_BARS) -> str:
    """Title of :func:`overlap_bars`: "GT things covered", with "+N more" when bars were left out."""
    hidden = len(_gt_rows(data, selection)) - max_bars
    return "GT things covered" + (f" (+{hidden} more)" if hidden > 0 else "")


def bar_figure(figure_type: type[FigureT], num_runs: int) -> FigureT:
    """An empty bar chart of covered fractions with one bar trace per run (the selected prediction, then its
    counterpart); ``figure_type`` is ``go.Figure`` or ``go.FigureWidget``."""
    height, width = BAR_FIGURE_SIZE
    fig = figure_type(
        data=[go.Bar(x=[], y=[]) for _ in range(num_runs)],
        layout={
            "height": height,
            "width": width,
            "barmode": "group",
            "margin": {"l": 40, "r": IMAGE_MARGIN["r"], "t": 35, "b": 80},
            # inside the plot's top right, which the bars (largest first) leave free; the toolbar
            # keeps to the margin
            "legend": {"x": 0.99, "xanchor": "right", "y": 0.99, "yanchor": "top"},
            "yaxis": {"range": [0, 1.05], "title": "fraction of GT area"},
            "title": {"text": "GT things covered"},
        },
    )
    _style(fig)
    return fig


def show_bars(
    fig: go.Figure, data: ExplorerData, selection: Selection | None, max_bars: int = MAX_BARS
) -> None:
    """Put the covered fractions of ``selection`` (none: empty bars) and its threshold T (a dotted line)
    into a :func:`bar_figure`, in place."""
    with fig.batch_update():
        if selection is None:
            for trace in fig.data:
                trace.update(x=[], y=[])
            fig.layout.shapes = []
            return
        for trace, bar in zip(fig.data, overlap_bars(data, selection, max_bars)):
            trace.update(x=bar.x, y=bar.y, name=bar.name, marker_color=bar.marker.color)
        fig.layout.title.text = bars_title(data, selection, max_bars)
        fig.layout.shapes = [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": selection.threshold,
                "y1": selection.threshold,
                "line": {"color": "black", "dash": "dot"},
            }
        ]


# ----------------------------------------------------------------------------- text


def covered_text(
    data: ExplorerData, image_id: ImageId, covered: Sequence[GTOverlap], threshold: float
) -> str:
    """ "covers N GT things &gt; T=0.50: car 3 (81%), car 5 (62%)" (HTML): the GT things a prediction covers
    by more than ``threshold`` of their area, by name."""
    names = ", ".join(f"{data.gt_label(image_id, o.gt_id)} ({100 * o.frac_of_gt:.0f}%)" for o in covered)
    return f"covers {len(covered)} GT things &gt; T={threshold:.2f}: {names or 'none'}"


def status_html(data: ExplorerData, selection: Selection) -> str:
    """One line per run (HTML): the run, image, prediction and the GT things it covers by more than T."""
    record = selection.record
    image_id = record.image_id
    threshold = selection.threshold
    text = (
        f"<b>{data.runs[selection.run_index].label}</b> · image {image_id} · "
        f"{data.pred_label(selection.run_index, record)} · "
        f"{covered_text(data, image_id, selection.covered, threshold)}"
    )
    if selection.other_index is not None:
        other = data.runs[selection.other_index].label
        if selection.counterpart is None:
            text += f"<br><b>{other}</b>: no predicted thing covers the same object"
        else:
            text += (
                f"<br><b>{other}</b>: {data.pred_label(selection.other_index, selection.counterpart)} "
                f"{covered_text(data, image_id, selection.counterpart_covered(), threshold)}"
            )
    return text


def table_html(data: ExplorerData, selection: Selection) -> str:
    """HTML table: per GT thing either prediction touches, the % of its area and of the prediction's that
    each run's prediction covers (✓ on its PQ match)."""
    runs = data.runs
    records = [(selection.run_index, selection.record)]
    if selection.other_index is not None:
        records.append((selection.other_index, selection.counterpart))
    head = "".join(
        f"<th>{runs[k].label}: % of GT</th><th>{runs[k].label}: % of pred</th>" for k, _ in records
    )
    rows = []
    for gt_id, label in _gt_rows(data, selection):
        cells = []
        for _, record in records:
            overlap = next((o for o in record.overlaps if o.gt_id == gt_id), None) if record else None
            matched = " ✓" if record is not None and record.matched_gt_id == gt_id else ""
            cells.append(
                f"<td>{100 * overlap.frac_of_gt:.1f}{matched}</td><td>{100 * overlap.frac_of_pred:.1f}</td>"
                if overlap
                else "<td>–</td><td>–</td>"
            )
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    return (
        "<table style='border-collapse:collapse' border='1' cellpadding='3'>"
        f"<tr><th>GT thing</th>{head}</tr>{''.join(rows)}</table>"
        "<small>✓ = PQ match (IoU &gt; 0.5)</small>"
    )
