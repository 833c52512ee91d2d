"""The explorer's plotly figures and HTML texts (ibs_study.viz.explorer.views), built without ipywidgets."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from ibs_study.viz.explorer.images import instance_views
from ibs_study.viz.explorer.views import (
    bar_figure,
    bars_title,
    blank_parts,
    image_figure,
    instance_view_parts,
    overlap_bars,
    show_bars,
    show_image,
    status_html,
    table_html,
)


def test_bars_give_each_runs_covered_fractions(data):
    selection = data.select(0, "a", 1, 0.5)
    bars = overlap_bars(data, selection)
    assert [(bar.name, list(bar.x)) for bar in bars] == [
        ("crop", ["car 1", "car 2"]),
        ("crop + IBS", ["car 1", "car 2"]),
    ]
    assert [list(bar.y) for bar in bars] == [pytest.approx([1.0, 13 / 15]), pytest.approx([13 / 15, 0.0])]
    assert bars_title(data, selection) == "GT things covered"
    assert bars_title(data, selection, max_bars=1) == "GT things covered (+1 more)"
    assert [list(bar.x) for bar in overlap_bars(data, selection, max_bars=1)] == [["car 1"], ["car 1"]]
    fig = bar_figure(go.Figure, 2)
    show_bars(fig, data, selection)
    assert [list(trace.y) for trace in fig.data] == [
        pytest.approx([1.0, 13 / 15]),
        pytest.approx([13 / 15, 0.0]),
    ]
    assert fig.layout.shapes[0].y0 == 0.5  # the threshold line
    show_bars(fig, data, None)
    assert [tuple(trace.x) for trace in fig.data] == [(), ()] and fig.layout.shapes == ()


def test_image_figure_holds_an_instance_view_in_image_pixels(data):
    view = instance_views(data, data.select(0, "a", 1, 0.5))[0]
    fig = image_figure(go.Figure, 380, 480)
    show_image(fig, instance_view_parts(view, max_side=640))
    assert fig.layout.title.text == "crop: a · car 1 (L)"
    assert (fig.layout.xaxis.range, fig.layout.yaxis.range) == ((-0.5, 48.5), (28.5, -0.5))
    assert [a.text for a in fig.layout.annotations] == ["car 1: 100%", "car 2: 87%"]
    # a view larger than max_side is sent downscaled, its pixels still placed in image coordinates
    small = instance_view_parts(view, max_side=10)
    assert small["image"]["dx"] == pytest.approx(49 / 10) and small["xrange"] == [-0.5, 48.5]
    show_image(fig, blank_parts())
    assert (
        fig.layout.title.text == "no predicted thing segment matches the filters"
        and not fig.layout.annotations
    )


def test_status_and_table_name_what_each_run_covers(data):
    selection = data.select(0, "a", 1, 0.5)
    status = status_html(data, selection)
    assert status == (
        "<b>crop</b> · image a · car 1 (L) · covers 2 GT things &gt; T=0.50: car 1 (100%), car 2 (87%)"
        "<br><b>crop + IBS</b>: car 1 (L) covers 1 GT things &gt; T=0.50: car 1 (87%)"
    )
    assert "covers 0 GT things &gt; T=0.90: none" in status_html(data, data.select(0, "a", 1, 0.9))
    table = table_html(data, selection)
    # car 1 (GT 11): all of it by crop pred 1 (225 of 495 px), 13/15 by the IBS pred 1, its PQ match
    assert "<tr><td>car 1</td><td>100.0</td><td>45.5</td><td>86.7 ✓</td><td>100.0</td></tr>" in table
    assert "<tr><td>car 2</td><td>86.7</td><td>39.4</td><td>–</td><td>–</td></tr>" in table
