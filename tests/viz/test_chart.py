"""One chart, two renderers: the matplotlib and the plotly figure of a chart carry the same
series, values, labels and colours."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from ibs_study.study.figures import metric_bars_chart, operating_curve_chart, sweep_chart
from ibs_study.study.results import ResultRow, StudyResults, Summary, SweepRun
from ibs_study.viz.chart import Bars, Chart, HLine, Line, Panel, Picture, render_matplotlib, render_plotly
from ibs_study.viz.figures import CurveSeries, confusion_curve_chart


def _summary(values: list[float]) -> Summary:
    """Mean and an interval from 0.05 below the smallest value to the largest (not symmetric)."""
    return Summary(float(np.mean(values)), (min(values) - 0.05, max(values)), tuple(values))


def test_a_confusion_chart_draws_the_same_curves_and_bands_in_both_renderers():
    series = [
        CurveSeries("crop", [0.1, 0.5, 0.9], [0.6, 0.3, 0.05], band=([0.5, 0.2, -0.1], [0.7, 0.4, 0.2])),
        CurveSeries("crop + IBS", [0.1, 0.5, 0.9], [0.4, 0.2, 0.0], color="#31a354", linestyle="--"),
    ]
    chart = confusion_curve_chart(series, title="Fig. 5\n(two rows)", ylabel="confused (%)")
    ax = render_matplotlib(chart).axes[0]
    page = render_plotly(chart)
    lines = [t for t in page.data if t.fill is None]
    assert (
        [t.name for t in lines]
        == [t.get_text() for t in ax.get_legend().get_texts()]
        == ["crop", "crop + IBS"]
    )
    for line, trace, expected in zip(ax.lines, lines, ([60, 30, 5], [40, 20, 0])):
        assert list(line.get_ydata()) == pytest.approx(expected) and list(trace.y) == pytest.approx(expected)
        assert list(line.get_xdata()) == list(trace.x) == pytest.approx([10, 50, 90])
        assert to_hex(line.get_color()) == trace.line.color
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]
    assert [t.line.dash for t in lines] == ["solid", "dash"]
    (band,) = [t for t in page.data if t.fill == "toself"]
    assert list(band.y) == pytest.approx([70, 40, 20, 0, 20, 50])  # high there, low back; clipped at 0
    (fill,) = ax.collections
    assert set(fill.get_paths()[0].vertices[:, 1].round(6)) == set(band.y)  # the path closes on itself
    assert ax.get_ylabel() == page.layout.yaxis.title.text == "confused (%)"
    assert ax.get_xlabel() == page.layout.xaxis.title.text
    assert ax.get_title() == "Fig. 5\n(two rows)" and page.layout.title.text == "Fig. 5<br>(two rows)"


def test_grouped_bars_carry_the_same_means_whiskers_and_seeds():
    rows = (
        ResultRow("pfcn", "full", (0, 1), 3, {"pq": _summary([0.5, 0.7]), "acc_th": _summary([0.2, 0.4])}),
        ResultRow("pfcn", "crop", (0, 1), 3, {"pq": _summary([0.4, 0.6])}),
    )
    chart = metric_bars_chart(StudyResults("cpu", "cpu", None, rows), 1)
    ax = render_matplotlib(chart).axes[0]
    traces = render_plotly(chart).data
    assert [t.name for t in traces] == [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.name for t in traces] == ["Panoptic FCN, full image", "Panoptic FCN, crop"]
    assert [label.get_text() for label in ax.get_xticklabels()] == list(traces[0].x)
    heights = [patch.get_height() for patch in ax.patches]  # row by row, one bar per metric (NaN: none)
    plotly_heights = [np.nan if v is None else v for t in traces for v in t.y]
    assert heights == pytest.approx(plotly_heights, nan_ok=True)
    assert list(traces[0].y) == [pytest.approx(60.0), None, None, pytest.approx(30.0), None]  # PQ, Acc^th
    assert traces[0].error_y.array[0] == pytest.approx(10.0)  # PQ of the full image: 45 .. 70 around 60
    assert traces[0].error_y.arrayminus[0] == pytest.approx(15.0)
    whiskers = ax.collections[0].get_segments()  # the first row's, one per metric it has
    assert [tuple(w[:, 1]) for w in whiskers if w.ndim == 2] == [
        pytest.approx((45.0, 70.0)),
        pytest.approx((15.0, 40.0)),
    ]
    dots = sorted(float(y) for line in ax.lines if line.get_marker() == "." for y in line.get_ydata())
    seeds = sorted(float(v) for t in traces for text in t.customdata if text for v in text.split(", "))
    assert dots == seeds == pytest.approx(sorted([50, 70, 20, 40, 40, 60]))
    assert [to_hex(p.get_facecolor()) for p in ax.patches[:1]] == [traces[0].marker.color]


def test_a_sweep_reference_is_dashed_in_both_and_named_once_in_the_legend():
    entries = [
        SweepRun("synthetic_pfcn_crop_ibs", "ibs.weight", v, 0, {"pq": 0.2 + v / 10}) for v in (0.5, 1.0, 4.0)
    ]
    chart = sweep_chart(entries, metrics=("pq",), reference=("crop (seed 0)", {"pq": 0.25}))
    ax = render_matplotlib(chart).axes[0]
    traces = render_plotly(chart).data
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(t.name for t in traces if t.showlegend) == ["PQ", "crop (seed 0)"]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_ydata())]
    dashed_traces = [t for t in traces if t.line.dash == "dash" and t.y]
    assert [list(line.get_ydata()) for line in dashed] == [list(t.y) for t in dashed_traces] == [[25.0, 25.0]]
    assert [list(t.x) for t in dashed_traces] == [[0.5, 4.0]]
    assert {t.legendgroup for t in traces if t.line.dash == "dash"} == {
        "crop (seed 0)"
    }  # one click hides all
    assert ax.get_xscale() == "linear" and traces[0].x == (0.5, 1.0, 4.0)


def test_panels_pictures_and_rules_render_alike():
    rgb = np.zeros((20, 40, 3), np.uint8)
    chart = Chart(
        (
            Panel(
                title="image", picture=Picture(rgb, ((5.0, 6.0, "car 1"), (30.0, 10.0, "road"))), legend=None
            ),
            Panel(
                title="bars",
                bars=(Bars("a", [1.0, -2.0], "#4c72b0"),),
                categories=("x", "y"),
                hlines=(HLine(0.0),),
                lines=(Line("l", [0, 1], [0.5, 0.5], "#c44e52", marker="o"),),
            ),
        ),
        title="two panels",
        size=(6, 3),
    )
    fig = render_matplotlib(chart)
    page = render_plotly(chart)
    picture_ax, bars_ax = fig.axes
    assert [(t.get_position(), t.get_text()) for t in picture_ax.texts] == [
        ((5.0, 6.0), "car 1"),
        ((30.0, 10.0), "road"),
    ]
    labels = [a for a in page.layout.annotations if a.text in ("car 1", "road")]
    assert [((a.x, a.y), a.text) for a in labels] == [((5.0, 6.0), "car 1"), ((30.0, 10.0), "road")]
    titles = {a.text for a in page.layout.annotations} - {"car 1", "road"}
    assert titles == {picture_ax.get_title(), bars_ax.get_title()} == {"image", "bars"}
    assert fig._suptitle.get_text() == page.layout.title.text == "two panels"
    assert [p.get_height() for p in bars_ax.patches] == list(page.data[1].y) == [1.0, -2.0]
    assert [shape.y0 for shape in page.layout.shapes] == [bars_ax.lines[-1].get_ydata()[0]] == [0.0]
    assert list(page.layout.yaxis.range) == [19.5, -0.5]  # the image keeps y down


def test_operating_curves_carry_both_whiskers_the_value_labels_and_the_circled_default():
    def point(value: float, acc: list[float], prec: list[float]) -> dict:
        return {
            "value": value,
            "metrics": {"acc_th": _summary(acc).to_json(), "prec_th": _summary(prec).to_json()},
        }

    curves = {
        "key": "model.panoptic_fcn.thing_score_threshold",
        "values": [0.1, 0.2, 0.3],
        "default": 0.2,
        "seeds": [0, 1],
        "rows": [
            {
                "model": "pfcn",
                "setting": "crop",
                "points": [point(0.1, [0.5, 0.7], [0.3, 0.5]), point(0.2, [0.4, 0.6], [0.4, 0.6]),
                           point(0.3, [0.3, 0.5], [0.5, 0.7])],
            },
        ],
    }  # fmt: skip
    chart = operating_curve_chart(curves)
    ax = render_matplotlib(chart).axes[0]
    page = render_plotly(chart)
    curve, ring = page.data
    assert list(curve.x) == pytest.approx([60, 50, 40]) and list(curve.y) == pytest.approx([40, 50, 60])
    # the interval of each mean runs from 5 points below the smallest seed to the largest
    assert list(curve.error_x.arrayminus) == pytest.approx([15, 15, 15])
    assert list(curve.error_x.array) == pytest.approx([10, 10, 10])
    assert list(curve.error_y.arrayminus) == pytest.approx([15, 15, 15])
    assert list(curve.text) == ["0.1", "0.2", "0.3"]  # both ends and the default
    assert sorted(t.get_text() for t in ax.texts) == ["0.1", "0.2", "0.3"]
    assert (list(ring.x), list(ring.y)) == (pytest.approx([50]), pytest.approx([50]))
    assert ring.marker.color == "rgba(0,0,0,0)" and ring.showlegend is False
    (mpl_curve, mpl_ring) = [line for line in ax.lines if len(line.get_xdata()) and line.get_marker() == "o"]
    assert mpl_ring.get_markerfacecolor() == "none" and list(mpl_curve.get_ydata()) == pytest.approx(
        [40, 50, 60]
    )
    horizontal = [
        seg for seg in ax.collections[0].get_segments()
    ]  # the x whiskers: (x_low, y) to (x_high, y)
    assert [tuple(seg[:, 0]) for seg in horizontal] == [
        pytest.approx((45, 70)), pytest.approx((35, 60)), pytest.approx((25, 50))
    ]  # fmt: skip
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [curve.name] == ["crop"]
