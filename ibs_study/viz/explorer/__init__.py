"""The per-instance confusion explorer, in modules of one job each.

- :mod:`~ibs_study.viz.explorer.data`: evaluated runs, their confusion records, rankings, selections.
- :mod:`~ibs_study.viz.explorer.images`: a selection's instance views and the panoptic images (arrays).
- :mod:`~ibs_study.viz.explorer.views`: the plotly figures and HTML texts of a selection.
- :mod:`~ibs_study.viz.explorer.widget`: :class:`ConfusionExplorer`, the ipywidgets layout and handlers.
- :mod:`~ibs_study.viz.explorer.export`: PNG + HTML of the most confused predictions, without ipywidgets.

Names are imported on first use, so the data, views and static export do not load the widget stack.
"""

from importlib import import_module

_SOURCES = {
    "ConfusionExplorer": "widget",
    "export_static": "export",
    "selection_png": "export",
    **{
        name: "data"
        for name in (
            "RECORDS_FILE",
            "STUDY_RUN_DIRS",
            "DEMO_RUN_DIRS",
            "ExplorerData",
            "RunEval",
            "Selection",
            "explorer_run_dirs",
            "sort_by_confusion",
        )
    },
    **{
        name: "images"
        for name in (
            "OUTLINE_COLORS",
            "GTOutlines",
            "InstanceView",
            "gt_outlines",
            "instance_views",
            "outline_colors",
            "render_instance_view",
        )
    },
    **{name: "views" for name in ("bars_title", "covered_text", "instance_view_parts", "overlap_bars")},
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'ibs_study.viz.explorer' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_SOURCES[name]}"), name)


def __dir__() -> list[str]:
    return __all__
