"""Visualisation: colour-coded panoptic images and the per-instance confusion explorer."""

from ibs_study.viz.explorer import ConfusionExplorer
from ibs_study.viz.explorer_data import ExplorerData, RunEval, Selection
from ibs_study.viz.panoptic import (
    PanopticView,
    blend,
    colorize,
    label_points,
    panoptic_plotly,
    plot_panoptic,
    render_panoptic,
    segment_boundaries,
    segment_colors,
    segment_labels,
    side_by_side,
)

__all__ = [
    "ConfusionExplorer",
    "ExplorerData",
    "RunEval",
    "Selection",
    "PanopticView",
    "blend",
    "colorize",
    "label_points",
    "panoptic_plotly",
    "plot_panoptic",
    "render_panoptic",
    "segment_boundaries",
    "segment_colors",
    "segment_labels",
    "side_by_side",
]
