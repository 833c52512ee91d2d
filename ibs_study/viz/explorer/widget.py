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

This module holds the layout and the handlers: the data come from
:mod:`ibs_study.viz.explorer.data`, the figures and texts from
:mod:`ibs_study.viz.explorer.views`, and :meth:`ConfusionExplorer.export_static` hands the
current threshold and filters to :func:`ibs_study.viz.explorer.export.export_static`. The
widget builds without a display (plain Python, papermill): :attr:`ConfusionExplorer.widget`
is the top-level widget, and the object displays itself in notebooks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from functools import lru_cache
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from ibs_study.data.datasets import PanopticDataset
from ibs_study.metrics.panoptic import SIZE_NAMES, ConfusionRecord
from ibs_study.viz.explorer.data import ExplorerData, ImageId, Selection
from ibs_study.viz.explorer.export import export_static
from ibs_study.viz.explorer.images import GT_SOURCE, instance_views, run_order
from ibs_study.viz.explorer.views import (
    INSTANCE_FIGURE_SIZE,
    MAX_BARS,
    NO_SELECTION,
    bar_figure,
    blank_parts,
    image_figure,
    instance_view_parts,
    panoptic_parts,
    region_box,
    show_bars,
    show_image,
    status_html,
    table_html,
)

__all__ = ["ConfusionExplorer"]

ALL = "all"  # filter value that selects everything
PANOPTIC_FIGURE_SIZE = (360, 720)  # (height, width) in CSS pixels


class ConfusionExplorer:
    """Per-instance confusion explorer for one or two evaluated runs.

    Args:
        data: the runs and their ground truth.
        threshold: initial confusion threshold T.
        top_k: length of the ranked lists.
        max_side: long side, in pixels, of the zoomed instance images sent to the browser.
        panoptic_max_side: long side of the full panoptic image sent to the browser.
        max_bars: GT things in the bar chart (its title says how many more there are).

    Attributes:
        widget: the top-level widget (``display(explorer)`` or ``explorer.widget``).
        state: what the widget shows now (read from its controls, figures and selection).
    """

    def __init__(
        self,
        data: ExplorerData,
        *,
        threshold: float = 0.5,
        top_k: int = 20,
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
        self._selection: Selection | None = None
        self._busy = False
        self._panoptic_parts = lru_cache(maxsize=6)(
            lambda source, image_id: panoptic_parts(self.data, source, image_id, self.panoptic_max_side)
        )
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

        self.panoptic_figure = image_figure(go.FigureWidget, *PANOPTIC_FIGURE_SIZE)
        self.view_figures = [image_figure(go.FigureWidget, *INSTANCE_FIGURE_SIZE) for _ in data.runs]
        self.bar_figure = bar_figure(go.FigureWidget, len(data.runs))
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
            self.click(points.xs[0], points.ys[0], source=run_order(self.data, self.run_index)[view_index])

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

    def _render(self) -> None:
        image_id, segment_id = self._current_key()
        if image_id is None or segment_id is None:
            self._selection = None
            for fig in [self.panoptic_figure, *self.view_figures]:
                show_image(fig, blank_parts())
            show_bars(self.bar_figure, self.data, None)
            self.table.value = ""
            self.status.value = f"<i>{NO_SELECTION}</i>"
            return
        selection = self.data.select(self.run_index, image_id, segment_id, self.threshold)
        self._selection = selection
        views = instance_views(self.data, selection)
        for fig, view in zip(self.view_figures, views):
            show_image(fig, instance_view_parts(view, self.max_side))
        show_image(
            self.panoptic_figure,
            self._panoptic_parts(self.panoptic_buttons.value, image_id),
            [region_box(views[0].region)],
        )
        show_bars(self.bar_figure, self.data, selection, self.max_bars)
        self.table.value = table_html(self.data, selection)
        self.status.value = status_html(self.data, selection)

    @property
    def state(self) -> dict[str, Any]:
        """What the widget shows now, JSON-serialisable: ``run``, ``run_index``, ``threshold``, ``filters``,
        ``image_id``, ``segment_id`` (None when nothing matches the filters), ``num_candidates``,
        ``instance_index``, ``title`` and ``view_titles`` (figure titles); with a selection also
        ``category``, ``size``, ``confusion_level``, ``covered_gt_ids`` / ``covered_gt_labels`` /
        ``covered_fractions`` (GT things covered by more than T; labels as the figures write them,
        "car 3"), ``matched_gt_id``, ``target_gt_id`` and ``other`` (the other run's counterpart:
        ``run``, ``segment_id``, ``covered_gt_ids``, ``covered_fractions``)."""
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
        }
        if selection is None:
            return state
        record = selection.record
        counterpart_covered = selection.counterpart_covered()
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
                "segment_id": None if selection.counterpart is None else selection.counterpart.segment_id,
                "covered_gt_ids": [o.gt_id for o in counterpart_covered],
                "covered_fractions": [o.frac_of_gt for o in counterpart_covered],
            },
        )
        return state

    # ------------------------------------------------------------------ static export

    def export_static(
        self,
        out_dir: str | os.PathLike,
        top_k: int = 6,
        *,
        run: int | None = None,
        include_plotlyjs: bool | str = True,
    ) -> list[Path]:
        """:func:`~ibs_study.viz.explorer.export.export_static` of the ``top_k`` most confused predictions of
        ``run`` (default: the current one) under the current threshold and filters."""
        return export_static(
            self.data,
            out_dir,
            top_k,
            run=self.run_index if run is None else run,
            threshold=self.threshold,
            **self._filters(),
            include_plotlyjs=include_plotlyjs,
            max_side=self.max_side,
            max_bars=self.max_bars,
        )
