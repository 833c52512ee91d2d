"""Visualisation: colour-coded panoptic images and the per-instance confusion explorer.

Names are imported on first use, so ``ibs_study.viz.figures`` or ``ibs_study.viz.panoptic``
do not load the widget stack (ipywidgets, anywidget) of the explorer.
"""

from importlib import import_module

_SOURCES = {
    "ConfusionExplorer": "ibs_study.viz.explorer.widget",
    "ExplorerData": "ibs_study.viz.explorer.data",
    "RunEval": "ibs_study.viz.explorer.data",
    "Selection": "ibs_study.viz.explorer.data",
    "PanopticView": "ibs_study.viz.panoptic",
    "blend": "ibs_study.viz.panoptic",
    "colorize": "ibs_study.viz.panoptic",
    "label_points": "ibs_study.viz.panoptic",
    "matched_colors": "ibs_study.viz.panoptic",
    "panoptic_panel": "ibs_study.viz.panoptic",
    "panoptic_plotly": "ibs_study.viz.panoptic",
    "plot_panoptic": "ibs_study.viz.panoptic",
    "render_panoptic": "ibs_study.viz.panoptic",
    "segment_boundaries": "ibs_study.viz.panoptic",
    "segment_colors": "ibs_study.viz.panoptic",
    "segment_labels": "ibs_study.viz.panoptic",
    "side_by_side": "ibs_study.viz.panoptic",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'ibs_study.viz' has no attribute {name!r}")
    return getattr(import_module(_SOURCES[name]), name)


def __dir__() -> list[str]:
    return __all__
