"""ConfusionExplorer: an ipywidgets + plotly widget to inspect individual predicted thing segments.

For one or two evaluated runs (e.g. crop vs crop + IBS) it shows, for a chosen predicted
thing segment, its mask over the image and the ground-truth instances it covers with the
fractions of their area (outlined, labelled, and as bars and a table), its PQ match, and
the prediction of the other run that best covers the same object, side by side, as in
the paper's Figs. 7, 9 and 11. The full colour-coded panoptic image of the ground truth
or of either run is shown above (Figs. 8, 10, 12); clicking it selects the predicted
segment under the cursor.

Choose a prediction with the image and instance drop-downs (sorted by confusion), the
instance slider, the ranked lists of the most confused predictions and images, or a
click; filter by class, size (S/M/L) and the confusion threshold T.

The widget builds without a display (plain Python, papermill): :attr:`ConfusionExplorer.widget`
is the top-level widget, and the object displays itself in notebooks. :attr:`state`
describes the current selection (optionally mirrored to a JSON file for tests), and
:meth:`ConfusionExplorer.export_static` writes PNG and HTML views of the most confused
predictions for headless runs, where widget output is lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from functools import lru_cache
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from ibs_study.data.datasets import PanopticDataset
from ibs_study.metrics.panoptic import SIZE_NAMES, ConfusionRecord, GTOverlap
from ibs_study.viz.explorer_data import (
    ExplorerData,
    ImageId,
    InstanceView,
    Selection,
    gt_outlines,
    outline_colors,
    render_instance_view,
)
from ibs_study.viz.panoptic import (
    PanopticView,
    label_points,
    matched_colors,
    plot_panoptic,
    png_data_uri,
    render_panoptic,
    segment_colors,
    segment_labels,
)

logger = logging.getLogger(__name__)

__all__ = ["ConfusionExplorer", "instance_view_parts", "overlap_bars", "bars_title", "covered_text"]

GT_SOURCE = -1
ALL = "all"  # filter value that selects everything
RUN_BAR_COLORS = ("#d62728", "#1f77b4")
MAX_BARS = 12  # GT things in the bar chart
IMAGE_MARGIN = {"l": 5, "r": 40, "t": 35, "b": 5}  # the right margin holds plotly's vertical toolbar


def _rgb_css(color: tuple[int, int, int]) -> str:
    return f"rgb({color[0]},{color[1]},{color[2]})"


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


def covered_text(
    data: ExplorerData, image_id: ImageId, covered: Sequence[GTOverlap], threshold: float
) -> str:
    """ "covers N GT things > T=0.50: car 3 (81%), car 5 (62%)": the GT things a prediction covers by more
    than ``threshold`` of their area, by name."""
    names = ", ".join(f"{data.gt_label(image_id, o.gt_id)} ({100 * o.frac_of_gt:.0f}%)" for o in covered)
    return f"covers {len(covered)} GT things &gt; T={threshold:.2f}: {names or 'none'}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-") or "x"


class ConfusionExplorer:
    """Per-instance confusion explorer for one or two evaluated runs.

    Args:
        data: the runs and their ground truth.
        threshold: initial confusion threshold T.
        top_k: length of the ranked lists.
        state_path: JSON file rewritten with :attr:`state` after every change (for tests).
        max_side: long side, in pixels, of the zoomed instance images sent to the browser.
        panoptic_max_side: long side of the full panoptic image sent to the browser.
        max_bars: GT things in the bar chart (its title says how many more there are).

    Attributes:
        widget: the top-level widget (``display(explorer)`` or ``explorer.widget``).
        state: the current selection, JSON-serialisable: ``run``, ``run_index``, ``threshold``,
            ``filters``, ``image_id``, ``segment_id`` (None when nothing matches the filters),
            ``num_candidates``, ``instance_index``, ``title`` and ``view_titles`` (figure titles),
            ``renders``; with a selection also ``category``, ``size``, ``confusion_level``,
            ``covered_gt_ids`` / ``covered_gt_labels`` / ``covered_fractions`` (GT things covered by
            more than T; labels as the figures write them, "car 3"),
            ``matched_gt_id``, ``target_gt_id`` and ``other`` (the other run's counterpart:
            ``run``, ``segment_id``, ``covered_gt_ids``, ``covered_fractions``).
    """

    def __init__(
        self,
        data: ExplorerData,
        *,
        threshold: float = 0.5,
        top_k: int = 20,
        state_path: str | os.PathLike | None = None,
        max_side: int = 640,
        panoptic_max_side: int = 1024,
        max_bars: int = MAX_BARS,
    ) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
        self.data = data
        self.top_k = top_k
        self.max_side = max_side
        self.panoptic_max_side = panoptic_max_side
        self.max_bars = max_bars
        self.state_path = Path(state_path) if state_path is not None else None
        self.state: dict[str, Any] = {}
        self._selection: Selection | None = None
        self._busy = False
        self._panoptic_parts = lru_cache(maxsize=6)(self._render_panoptic_parts)
        self._build_widgets(threshold)
        self._refresh()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | os.PathLike],
        labels: Sequence[str] | None = None,
        *,
        split: str = "val",
        data_root: str | os.PathLike | None = None,
        **kwargs,
    ) -> ConfusionExplorer:
        """From run directories (``RUN_DIR/eval_<split>``; ground truth located from the run config)."""
        return cls(ExplorerData.from_runs(run_dirs, labels, split=split, data_root=data_root), **kwargs)

    @classmethod
    def from_paths(
        cls,
        eval_dirs: Sequence[str | os.PathLike],
        dataset: PanopticDataset,
        labels: Sequence[str] | None = None,
        **kwargs,
    ) -> ConfusionExplorer:
        """From explicit evaluation folders and the ground-truth dataset."""
        return cls(ExplorerData.from_paths(eval_dirs, dataset, labels), **kwargs)

    def _build_widgets(self, threshold: float) -> None:
        data = self.data
        run_options = [(run.label, k) for k, run in enumerate(data.runs)]
        self.run_buttons = widgets.ToggleButtons(options=run_options, value=0, description="run")
        self.threshold_slider = widgets.FloatSlider(
            value=threshold,
            min=0.05,
            max=0.95,
            step=0.05,
            description="T",
            readout_format=".2f",
            continuous_update=False,
        )
        self.class_dropdown = widgets.Dropdown(
            options=[("all thing classes", ALL), *data.thing_classes], value=ALL, description="class"
        )
        self.size_buttons = widgets.ToggleButtons(
            options=[("all", ALL), *[(s, s) for s in SIZE_NAMES]], value=ALL, description="size"
        )
        self.image_dropdown = widgets.Dropdown(options=[], description="image", layout={"width": "360px"})
        self.instance_dropdown = widgets.Dropdown(
            options=[], description="prediction", layout={"width": "420px"}
        )
        self.instance_slider = widgets.IntSlider(value=0, min=0, max=0, description="instance")
        self.instance_slider.add_class("ibs-instance-slider")
        self.top_list = widgets.Select(options=[], rows=10, layout={"width": "330px"})
        self.image_list = widgets.Select(options=[], rows=6, layout={"width": "330px"})
        self.panoptic_buttons = widgets.ToggleButtons(
            options=[("ground truth", GT_SOURCE), *run_options], value=0, description="panoptic"
        )
        self.status = widgets.HTML()
        self.status.add_class("ibs-explorer-status")
        self.table = widgets.HTML()

        self.panoptic_figure = go.FigureWidget(
            data=[go.Image(source=png_data_uri(np.zeros((1, 1, 3), np.uint8))[0], hoverinfo="x+y")],
            layout={"height": 360, "width": 720, "margin": IMAGE_MARGIN},
        )
        self.view_figures = [
            go.FigureWidget(
                data=[go.Image(source=png_data_uri(np.zeros((1, 1, 3), np.uint8))[0], hoverinfo="x+y")],
                layout={"height": 380, "width": 480, "margin": IMAGE_MARGIN},
            )
            for _ in data.runs
        ]
        for fig in [self.panoptic_figure, *self.view_figures]:
            fig.update_xaxes(visible=False)
            fig.update_yaxes(visible=False, scaleanchor="x")
        # one bar trace per run (the selected prediction, then its counterpart), restyled in place
        self.bar_figure = go.FigureWidget(
            data=[go.Bar(x=[], y=[]) for _ in data.runs],
            layout={
                "height": 300,
                "width": 480,
                "barmode": "group",
                "margin": {"l": 40, "r": IMAGE_MARGIN["r"], "t": 35, "b": 80},
                # inside the plot's top right, which the bars (largest first) leave free; the toolbar
                # keeps to the margin
                "legend": {"x": 0.99, "xanchor": "right", "y": 0.99, "yanchor": "top"},
                "yaxis": {"range": [0, 1.05], "title": "fraction of GT area"},
                "title": {"text": "GT things covered"},
            },
        )
        for fig in self.figures():
            fig.update_layout(modebar={"orientation": "v"}, title_font_size=13)
        self.panoptic_figure.data[0].on_click(self._on_panoptic_click)
        for k, fig in enumerate(self.view_figures):
            fig.data[0].on_click(lambda trace, points, state, k=k: self._on_view_click(k, points))

        self._observe(self.run_buttons, self._on_run)
        for control in (self.threshold_slider, self.class_dropdown, self.size_buttons):
            self._observe(control, lambda change: self._refresh(*self._current_key()))
        self._observe(self.image_dropdown, lambda change: self._refresh(change["new"]))
        self._observe(self.instance_dropdown, self._on_instance)
        self._observe(self.instance_slider, self._on_slider)
        self._observe(self.top_list, self._on_ranked)
        self._observe(self.image_list, self._on_ranked_image)
        self._observe(self.panoptic_buttons, lambda change: self._render())

        controls = widgets.VBox(
            [
                widgets.HBox([self.run_buttons, self.threshold_slider]),
                widgets.HBox([self.class_dropdown, self.size_buttons]),
                widgets.HBox([self.image_dropdown, self.instance_dropdown, self.instance_slider]),
                self.status,
            ]
        )
        ranked = widgets.VBox(
            [
                widgets.HTML("<b>Most confused predictions</b>"),
                self.top_list,
                widgets.HTML("<b>Most confused images</b>"),
                self.image_list,
            ]
        )
        self.widget = widgets.VBox(
            [
                widgets.HTML("<h3>Confusion explorer</h3>"),
                controls,
                widgets.HBox([widgets.VBox([self.panoptic_buttons, self.panoptic_figure]), ranked]),
                widgets.HBox(self.view_figures),
                widgets.HBox([self.bar_figure, self.table]),
            ]
        )
        self.widget.add_class("ibs-confusion-explorer")

    def _observe(self, control: widgets.Widget, handler) -> None:
        """Call ``handler(change)`` on a value change made by the user, not on one made here."""

        def guarded(change: dict) -> None:
            if not self._busy:
                handler(change)

        control.observe(guarded, names="value")

    # ------------------------------------------------------------------ notebook display

    def _repr_mimebundle_(self, **kwargs):
        self.sync_figures()
        return self.widget._repr_mimebundle_(**kwargs)

    def figures(self) -> list[go.FigureWidget]:
        return [self.panoptic_figure, *self.view_figures, self.bar_figure]

    def sync_figures(self) -> None:
        """Copy each figure's current data and layout into its synced widget state.

        A FigureWidget sends later changes as transient messages, which are lost when no
        browser is connected yet (Voila renders after the notebook ran; a saved notebook
        keeps the widget state): a view created afterwards would show the figure as first
        built. Plotly does this when a FigureWidget itself is displayed, not when it sits
        inside another widget, so the explorer does it when displayed.
        """
        for fig in self.figures():
            fig._widget_layout = deepcopy(fig._layout_obj._props)
            fig._widget_data = deepcopy(fig._data)

    # ------------------------------------------------------------------ selection logic

    @property
    def run_index(self) -> int:
        return int(self.run_buttons.value)

    @property
    def threshold(self) -> float:
        return round(float(self.threshold_slider.value), 4)

    @property
    def selection(self) -> Selection | None:
        """The current selection, or None when no predicted thing matches the filters."""
        return self._selection

    def _filters(self) -> dict[str, Any]:
        """Keyword filters of :meth:`ExplorerData.records` (None = no filter)."""
        category_id, size = self.class_dropdown.value, self.size_buttons.value
        return {
            "category_id": None if category_id == ALL else category_id,
            "size": None if size == ALL else size,
        }

    def _current_key(self) -> tuple[ImageId | None, int | None]:
        return self.image_dropdown.value, self.instance_dropdown.value

    def select(self, image_id: ImageId, segment_id: int, run: int | str | None = None) -> None:
        """Select predicted segment ``segment_id`` of ``image_id`` (of ``run``: index or label), clearing
        filters that would hide it."""
        if run is not None:
            labels = [r.label for r in self.data.runs]
            run_index = labels.index(run) if isinstance(run, str) else int(run)
            with self._quiet():
                self.run_buttons.value = run_index
                self._follow_run()
        record = self.data.runs[self.run_index].record(image_id, segment_id)
        with self._quiet():
            if self.class_dropdown.value not in (ALL, record.category_id):
                self.class_dropdown.value = ALL
            if self.size_buttons.value not in (ALL, record.size):
                self.size_buttons.value = ALL
        self._refresh(image_id, segment_id)

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Changes made inside do not trigger the widget handlers."""
        previous, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = previous

    def _record_label(self, record: ConfusionRecord, with_image: bool) -> str:
        where = f"{record.image_id} · " if with_image else ""
        return (
            f"{where}{self.data.pred_label(self.run_index, record)} · covers "
            f"{len(record.covered_things(self.threshold))} GT > T={self.threshold:.2f} · level {record.confusion_level:.2f}"
        )

    def _refresh(self, image_id: ImageId | None = None, segment_id: int | None = None) -> None:
        """Recompute lists under the current run / filters / T, keep (image_id, segment_id) if still listed."""
        run, threshold, filters = self.run_index, self.threshold, self._filters()
        ranking = self.data.ranked_images(run, threshold, **filters)
        image_options = [
            (f"{e['image_id']} · {e['num_confused']}/{e['num_predictions']} confused", e["image_id"])
            for e in ranking
        ]
        image_ids = [e["image_id"] for e in ranking]
        if image_id not in image_ids:
            image_id = image_ids[0] if image_ids else None
        records = self.data.records(run, image_id=image_id, **filters) if image_id is not None else []
        segment_ids = [r.segment_id for r in records]
        if segment_id not in segment_ids:
            segment_id = segment_ids[0] if segment_ids else None
        top = self.data.top_confused(run, threshold, self.top_k, **filters)
        with self._quiet():
            self.image_dropdown.options = image_options
            self.image_dropdown.value = image_id
            self.instance_dropdown.options = [(self._record_label(r, False), r.segment_id) for r in records]
            self.instance_dropdown.value = segment_id
            self.instance_slider.max = max(len(records) - 1, 0)
            self.instance_slider.value = segment_ids.index(segment_id) if segment_id is not None else 0
            self.instance_slider.disabled = len(records) < 2
            self.top_list.options = [(self._record_label(r, True), (r.image_id, r.segment_id)) for r in top]
            self.top_list.index = None
            self.image_list.options = [
                (f"{e['image_id']} · {e['num_confused']} confused, {e['confused_area']} px", e["image_id"])
                for e in ranking[: self.top_k]
            ]
            self.image_list.index = None
        self._render()

    def _follow_run(self) -> None:
        """A panoptic panel showing a run shows the primary run (the ground truth stays)."""
        if self.panoptic_buttons.value != GT_SOURCE:
            self.panoptic_buttons.value = self.run_index

    def _on_run(self, change: dict) -> None:
        """Switch the primary run, the panoptic panel with it unless it shows the ground truth; keep the
        same object selected through the counterpart when there is one."""
        with self._quiet():
            self._follow_run()
        previous = self._selection
        if previous is not None and previous.counterpart is not None:
            self._refresh(previous.counterpart.image_id, previous.counterpart.segment_id)
        else:
            self._refresh(self.image_dropdown.value)

    def _on_instance(self, change: dict) -> None:
        self._refresh(self.image_dropdown.value, change["new"])

    def _on_slider(self, change: dict) -> None:
        options = self.instance_dropdown.options
        if options:
            self._refresh(self.image_dropdown.value, options[change["new"]][1])

    def _on_ranked(self, change: dict) -> None:
        if change["new"] is not None:
            self._refresh(*change["new"])

    def _on_ranked_image(self, change: dict) -> None:
        if change["new"] is not None:
            self._refresh(change["new"])

    def _on_panoptic_click(self, trace, points, state) -> None:
        if points.xs:
            self.click(points.xs[0], points.ys[0])

    def _on_view_click(self, view_index: int, points) -> None:
        if points.xs:
            self.click(points.xs[0], points.ys[0], source=self._run_order(self.run_index)[view_index])

    def click(self, x: float, y: float, source: int | None = None) -> bool:
        """Select what lies under image pixel (x, y) of the current image, as a click on a figure does.

        Args:
            source: what was clicked: a run index (its predicted segment there is selected, that run
                becoming the primary one), ``-1`` for the ground truth (the primary run's prediction
                covering that GT segment most is selected); default: the panoptic panel's source.

        Returns:
            Whether the selection changed to a predicted thing segment.
        """
        image_id = self.image_dropdown.value
        if image_id is None:
            return False
        source = self.panoptic_buttons.value if source is None else source
        if source == GT_SOURCE:
            gt_id = self.data.gt_segment_at(image_id, x, y)
            record = None if gt_id is None else self.data.counterpart(self.run_index, image_id, gt_id)
            segment_id = None if record is None else record.segment_id
            run = self.run_index
        else:
            run = int(source)
            segment_id = self.data.segment_at(run, image_id, x, y)
        if segment_id is None:
            return False
        self.select(image_id, segment_id, run=run)
        return True

    # ------------------------------------------------------------------ rendering

    def _run_order(self, run_index: int) -> list[int]:
        """Run shown in each instance view when ``run_index`` is the primary run: it, then the other."""
        other = self.data.other_index(run_index)
        return [run_index] + ([other] if other is not None else [])

    def _outlined(self, selection: Selection) -> dict[int, tuple[int, int, int]]:
        ids = list(selection.covered_gt_ids)
        for extra in [selection.target_gt_id, *[o.gt_id for o in selection.counterpart_covered()]]:
            if extra is not None and extra not in ids:
                ids.append(extra)
        return outline_colors(ids)

    def instance_views(self, selection: Selection) -> list[InstanceView]:
        """The selected prediction's view and (with two runs) its counterpart's, over the same region."""
        image_id = selection.record.image_id
        outlines = gt_outlines(self.data, image_id, self.data.region(selection), self._outlined(selection))
        views = [render_instance_view(self.data, selection.run_index, image_id, selection.record, outlines)]
        if selection.other_index is not None:
            views.append(
                render_instance_view(
                    self.data, selection.other_index, image_id, selection.counterpart, outlines
                )
            )
        return views

    def _render_panoptic_parts(self, source: int, image_id: ImageId) -> dict[str, Any]:
        """Colour-coded panoptic image of the GT (source -1) or a run, colours matched to the GT's."""
        sample = self.data.gt(image_id)
        categories = self.data.categories
        gt_view = PanopticView("ground truth", sample.id_map, sample.segments)
        gt_colors = segment_colors(sample.segments, categories)
        if source == GT_SOURCE:
            view, colors = gt_view, gt_colors
        else:
            id_map, segments = self.data.prediction(source, image_id)
            view = PanopticView(self.data.runs[source].label, id_map, segments)
            colors = matched_colors(gt_view, gt_colors, view, categories)
        rgb = render_panoptic(
            view.id_map, view.segments, categories, image=sample.image, colors=colors, labels=False
        )
        uri, scale = png_data_uri(rgb, self.panoptic_max_side)
        texts = segment_labels(view.segments, categories)
        points = label_points(view.id_map, [s.id for s in view.segments])
        annotations = [
            {
                "x": x,
                "y": y,
                "text": texts[i],
                "showarrow": False,
                "font": {"color": "white", "size": 10},
                "bgcolor": "rgba(0,0,0,0.55)",
            }
            for i, (x, y) in points.items()
        ]
        height, width = view.id_map.shape
        return {
            "image": {"source": uri, "x0": (scale - 1) / 2, "y0": (scale - 1) / 2, "dx": scale, "dy": scale},
            "annotations": annotations,
            "xrange": [-0.5, width - 0.5],
            "yrange": [height - 0.5, -0.5],
            "title": f"{view.title}: {image_id} (each segment one colour and label)",
        }

    @staticmethod
    def _apply_parts(fig: go.FigureWidget, parts: dict[str, Any], shapes: Sequence[dict] = ()) -> None:
        with fig.batch_update():
            fig.data[0].update(**parts["image"])
            fig.layout.annotations = parts["annotations"]
            fig.layout.shapes = list(shapes)
            fig.layout.xaxis.range = parts["xrange"]
            fig.layout.yaxis.range = parts["yrange"]
            fig.layout.title.text = parts["title"]

    def _clear(self) -> None:
        blank = {
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
            "title": "no predicted thing segment matches the filters",
        }
        for fig in [self.panoptic_figure, *self.view_figures]:
            self._apply_parts(fig, blank)
        with self.bar_figure.batch_update():
            for trace in self.bar_figure.data:
                trace.update(x=[], y=[])
        self.table.value = ""
        self.status.value = "<i>no predicted thing segment matches the filters</i>"

    def _render(self) -> None:
        image_id, segment_id = self._current_key()
        if image_id is None or segment_id is None:
            self._selection = None
            self._clear()
            self._write_state()
            return
        selection = self.data.select(self.run_index, image_id, segment_id, self.threshold)
        self._selection = selection
        views = self.instance_views(selection)
        for fig, view in zip(self.view_figures, views):
            self._apply_parts(fig, instance_view_parts(view, self.max_side))
        x0, y0, x1, y1 = views[0].region
        region_box = {
            "type": "rect",
            "x0": x0 - 0.5,
            "y0": y0 - 0.5,
            "x1": x1 - 0.5,
            "y1": y1 - 0.5,
            "line": {"color": "white", "width": 2, "dash": "dash"},
        }
        self._apply_parts(
            self.panoptic_figure, self._panoptic_parts(self.panoptic_buttons.value, image_id), [region_box]
        )
        with self.bar_figure.batch_update():
            for trace, bar in zip(self.bar_figure.data, overlap_bars(self.data, selection, self.max_bars)):
                trace.update(x=bar.x, y=bar.y, name=bar.name, marker_color=bar.marker.color)
            self.bar_figure.layout.title.text = bars_title(self.data, selection, self.max_bars)
            self.bar_figure.layout.shapes = [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": self.threshold,
                    "y1": self.threshold,
                    "line": {"color": "black", "dash": "dot"},
                }
            ]
        self.table.value = self._table_html(selection)
        self.status.value = self._status_html(selection)
        self._write_state()

    def _table_html(self, selection: Selection) -> str:
        runs = self.data.runs
        records = [(selection.run_index, selection.record)]
        if selection.other_index is not None:
            records.append((selection.other_index, selection.counterpart))
        head = "".join(
            f"<th>{runs[k].label}: % of GT</th><th>{runs[k].label}: % of pred</th>" for k, _ in records
        )
        rows = []
        for gt_id, label in _gt_rows(self.data, selection):
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

    def _status_html(self, selection: Selection) -> str:
        record = selection.record
        image_id = record.image_id
        text = (
            f"<b>{self.data.runs[selection.run_index].label}</b> · image {image_id} · "
            f"{self.data.pred_label(selection.run_index, record)} · "
            f"{covered_text(self.data, image_id, selection.covered, self.threshold)}"
        )
        if selection.other_index is not None:
            other = self.data.runs[selection.other_index].label
            if selection.counterpart is None:
                text += f"<br><b>{other}</b>: no predicted thing covers the same object"
            else:
                text += (
                    f"<br><b>{other}</b>: {self.data.pred_label(selection.other_index, selection.counterpart)} "
                    f"{covered_text(self.data, image_id, selection.counterpart_covered(), self.threshold)}"
                )
        return text

    def _write_state(self) -> None:
        selection = self._selection
        state: dict[str, Any] = {
            "run": self.data.runs[self.run_index].label,
            "run_index": self.run_index,
            "threshold": self.threshold,
            "filters": self._filters(),
            "image_id": self.image_dropdown.value,
            "segment_id": None,
            "num_candidates": len(self.instance_dropdown.options),
            "instance_index": self.instance_slider.value,
            "title": self.view_figures[0].layout.title.text,
            "view_titles": [fig.layout.title.text for fig in self.view_figures],
            "renders": self.state.get("renders", 0) + 1,
        }
        if selection is not None:
            record = selection.record
            counterpart = selection.counterpart
            state.update(
                segment_id=record.segment_id,
                category=self.data.category_name(record.category_id),
                size=record.size,
                confusion_level=record.confusion_level,
                covered_gt_ids=selection.covered_gt_ids,
                covered_gt_labels=[self.data.gt_label(record.image_id, g) for g in selection.covered_gt_ids],
                covered_fractions=[o.frac_of_gt for o in selection.covered],
                matched_gt_id=record.matched_gt_id,
                target_gt_id=selection.target_gt_id,
                other=None
                if selection.other_index is None
                else {
                    "run": self.data.runs[selection.other_index].label,
                    "segment_id": None if counterpart is None else counterpart.segment_id,
                    "covered_gt_ids": [o.gt_id for o in selection.counterpart_covered()],
                    "covered_fractions": [o.frac_of_gt for o in selection.counterpart_covered()],
                },
            )
        self.state = state
        if self.state_path is not None:
            tmp = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
            tmp.write_text(json.dumps(state, indent=1, default=str))
            os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ static export

    def export_static(
        self,
        out_dir: str | os.PathLike,
        top_k: int = 6,
        *,
        run: int | None = None,
        include_plotlyjs: bool | str = True,
        dpi: int = 110,
    ) -> list[Path]:
        """PNG (matplotlib) and one HTML page (plotly) of the ``top_k`` most confused predictions.

        Each view shows the image region with the predicted mask and the GT instances it covers
        (outlined, with covered fractions), the other run's prediction covering the same object,
        the covered fractions as bars, and the full colour-coded panoptic images (GT | runs).
        Uses the current threshold and filters.

        Args:
            out_dir: created if missing; existing files of the same names are an error.
            run: which run's predictions to rank (default: the current one).
            include_plotlyjs: passed to plotly (True embeds plotly.js: the page works offline).

        Returns:
            The PNG paths, most confused first, then the HTML page.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        run_index = self.run_index if run is None else run
        records = self.data.records(run_index, **self._filters())[:top_k]
        html_path = out_dir / f"confusion_views_{_slug(self.data.runs[run_index].label)}.html"
        planned = [
            out_dir
            / f"{rank:02d}_{_slug(self.data.runs[run_index].label)}_{_slug(str(r.image_id))}_pred{r.segment_id}.png"
            for rank, r in enumerate(records, 1)
        ]
        existing = [p for p in [*planned, html_path] if p.exists()]
        if existing:
            raise FileExistsError(
                f"{existing[0]} exists; export_static does not overwrite (choose another out_dir)"
            )
        html_parts = []
        for rank, (record, path) in enumerate(
            tqdm(list(zip(records, planned)), desc="exporting confusion views", disable=len(records) < 3), 1
        ):
            selection = self.data.select(run_index, record.image_id, record.segment_id, self.threshold)
            views = self.instance_views(selection)
            self._static_figure(selection, views).savefig(path, dpi=dpi)
            fig = self._static_plotly(selection, views)
            html_parts.append(
                fig.to_html(
                    full_html=False,
                    include_plotlyjs=include_plotlyjs if rank == 1 else False,
                    div_id=path.stem,  # stable ids: a re-export differs only where the content does
                )
            )
        title = f"Most confused predictions of {self.data.runs[run_index].label} (T = {self.threshold:.2f})"
        html_path.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h2>{title}</h2>{''.join(html_parts) or '<p>no predicted thing segments</p>'}</body></html>"
        )
        logger.info("wrote %d confusion views to %s", len(planned), out_dir)
        return [*planned, html_path]

    def _static_figure(self, selection: Selection, views: list[InstanceView]) -> Figure:
        """Matplotlib page: instance views + bars on top, panoptic GT | runs below."""
        image_id = selection.record.image_id
        sample = self.data.gt(image_id)
        height, width = sample.id_map.shape
        columns = len(views) + 1
        panel = 4.5
        fig = Figure(
            figsize=(panel * columns, panel * 0.85 + panel * height / width + 0.8), layout="constrained"
        )
        grid = fig.add_gridspec(2, columns, height_ratios=[0.85, height / width])
        for k, view in enumerate(views):
            ax = fig.add_subplot(grid[0, k])
            x0, y0, x1, y1 = view.region
            ax.imshow(view.rgb, extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5), interpolation="nearest")
            for x, y, text, color in view.labels:
                ax.text(
                    x,
                    y,
                    text,
                    fontsize=7,
                    color=np.array(color) / 255,
                    ha="center",
                    va="center",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.65, "linewidth": 0},
                )
            ax.set_title(view.title, fontsize=8)
            ax.set_axis_off()
        ax = fig.add_subplot(grid[0, -1])
        bars = overlap_bars(self.data, selection, self.max_bars)
        positions = np.arange(len(bars[0].x)) if bars else np.arange(0)
        for k, bar in enumerate(bars):
            ax.bar(
                positions + (k - (len(bars) - 1) / 2) * 0.8 / len(bars),
                bar.y,
                width=0.8 / len(bars),
                label=bar.name,
                color=bar.marker.color,
            )
        ax.axhline(
            self.threshold, color="black", linestyle=":", linewidth=1, label=f"T = {self.threshold:.2f}"
        )
        ax.set_xticks(positions, list(bars[0].x) if bars else [], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("fraction of GT area covered", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title(bars_title(self.data, selection, self.max_bars), fontsize=8)

        categories = self.data.categories
        gt_view = PanopticView("ground truth", sample.id_map, sample.segments)
        gt_colors = segment_colors(sample.segments, categories)
        panels = [(gt_view, gt_colors)]
        for k in self._run_order(selection.run_index):
            id_map, segments = self.data.prediction(k, image_id)
            view = PanopticView(f"{self.data.runs[k].label} (panoptic)", id_map, segments)
            panels.append((view, matched_colors(gt_view, gt_colors, view, categories)))
        x0, y0, x1, y1 = views[0].region
        for k, (view, colors) in enumerate(panels):
            ax = fig.add_subplot(grid[1, k])
            plot_panoptic(
                ax,
                view.id_map,
                view.segments,
                categories,
                image=sample.image,
                colors=colors,
                font_size=6,
                title=view.title,
            )
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor="white",
                    linestyle="--",
                    linewidth=1,
                )
            )
        return fig

    def _static_plotly(self, selection: Selection, views: list[InstanceView]) -> go.Figure:
        """Plotly page section: the instance views and the bars in one row."""
        columns = len(views) + 1
        fig = make_subplots(
            rows=1,
            cols=columns,
            subplot_titles=[v.title for v in views] + [bars_title(self.data, selection, self.max_bars)],
        )
        for k, view in enumerate(views, 1):
            parts = instance_view_parts(view, self.max_side)
            fig.add_trace(go.Image(**parts["image"], hoverinfo="x+y"), row=1, col=k)
            for annotation in parts["annotations"]:
                fig.add_annotation(**annotation, row=1, col=k)
            fig.update_xaxes(range=parts["xrange"], visible=False, row=1, col=k)
            fig.update_yaxes(
                range=parts["yrange"], visible=False, row=1, col=k, scaleanchor="x" if k == 1 else f"x{k}"
            )
        for bar in overlap_bars(self.data, selection, self.max_bars):
            fig.add_trace(bar, row=1, col=columns)
        fig.update_yaxes(range=[0, 1.05], row=1, col=columns)
        fig.add_hline(y=self.threshold, line_dash="dot", row=1, col=columns)
        fig.update_layout(
            height=420, width=470 * columns, barmode="group", margin={"l": 20, "r": 20, "t": 60, "b": 80}
        )
        return fig
