"""save_figure writes reproducible files: the same figure saved twice gives the same bytes, so
regenerating paper_figures/ changes only the files whose content changed."""

from __future__ import annotations

import time

import plotly.graph_objects as go
from matplotlib.figure import Figure

from ibs_study.viz.figures import save_figure


def _matplotlib_figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.fill_between([0, 1, 2], [0, 1, 0], [1, 2, 1], alpha=0.3)  # a clip path / path id in the SVG
    ax.plot([0, 1, 2], [1, 0, 1], label="a")
    ax.legend()
    return fig


def test_the_same_figure_gives_the_same_bytes(tmp_path):
    first = save_figure(_matplotlib_figure(), tmp_path / "one" / "curve")
    plotly_first = save_figure(
        go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), tmp_path / "one" / "bars", plotlyjs="x.js"
    )
    time.sleep(1.1)  # a date in the file would now differ
    second = save_figure(_matplotlib_figure(), tmp_path / "two" / "curve")
    plotly_second = save_figure(
        go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), tmp_path / "two" / "bars", plotlyjs="x.js"
    )
    assert [p.suffix for p in first] == [".png", ".svg"] and [p.suffix for p in plotly_first] == [".html"]
    for a, b in zip([*first, *plotly_first], [*second, *plotly_second], strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    svg = first[1].read_text()
    assert "<dc:date>" not in svg
    assert 'id="bars"' in plotly_first[0].read_text()
