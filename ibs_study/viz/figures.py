"""Figure builders for the study, one per paper figure / table analogue and per notebook plot.

Every matplotlib builder returns a :class:`matplotlib.figure.Figure` made without pyplot
(nothing global, works headless; in a notebook run ``%matplotlib inline`` once and the
figure displays as a cell result); the ``*_plotly`` builders return interactive plotly
figures for HTML. Percent axes: metrics are stored as fractions and drawn in percent.

Results (``synthetic_results.json``, :mod:`ibs_study.study`):

* :func:`confusion_curve_figure` / :func:`confusion_curve_plotly`: Fig. 5, the ratio of
  predicted thing segments that cover more than T of at least two GT thing segments, per
  training setting, with a 95 % band over seeds;
* :func:`metric_bars_figure` / :func:`metric_bars_plotly`: the rows of Table 1-4 as bars
  with 95 % confidence intervals and the per-seed values;
* :func:`sweep_figure` / :func:`sweep_plotly`: a metric against a swept value (λ_IBS, crop size);
* :func:`oracle_logits_figure`: the oracle logit analysis (``logit_*`` metrics,
  :func:`ibs_study.study.oracle.oracle_logits`) of every row, variants included.

Problem analysis (:mod:`ibs_study.study.analysis`): :func:`instance_count_figure` (Fig. 3),
:func:`segment_size_figure`, :func:`shared_class_figure`, :func:`merge_sweep_figure`.

IBS step by step (:mod:`ibs_study.study.walkthrough`, Fig. 4): :func:`crops_figure`,
:func:`cross_crop_figure`, :func:`ibs_trace_figure`.

Training: :func:`loss_curves_figure` (the IBS term in its own panel) and :class:`LiveFigure`
(redraws a figure in one notebook output while a run trains).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ibs_study.data.batch import Batch
from ibs_study.data.datasets import DatasetMeta
from ibs_study.study.results import metric_summary
from ibs_study.study.specs import row_variant
from ibs_study.study.tables import METRIC_LABELS, TABLES
from ibs_study.viz.panoptic import segment_boundaries

logger = logging.getLogger(__name__)

# The y label of a confusion curve over oracle masks (``oracle_confusion_curve``): the masks of
# the embeddings a model gives the GT things, not its predicted segments.
ORACLE_CURVE_YLABEL = "GT things' masks covering 2+ GT things (%)"

__all__ = [
    "ORACLE_CURVE_YLABEL",
    "CurveSeries",
    "SETTING_STYLE",
    "confusion_curve_figure",
    "confusion_curve_plotly",
    "series_from_metrics",
    "series_from_results",
    "BarRow",
    "table_bar_rows",
    "metric_bars_figure",
    "metric_bars_plotly",
    "SweepPoint",
    "sweep_points",
    "sweep_figure",
    "sweep_plotly",
    "operating_curve_figure",
    "LOGIT_PANELS",
    "oracle_logits_figure",
    "instance_count_figure",
    "segment_size_figure",
    "shared_class_figure",
    "merge_sweep_figure",
    "crops_figure",
    "cross_crop_figure",
    "ibs_trace_figure",
    "loss_curves_figure",
    "LiveFigure",
    "save_figure",
]

# setting -> (label, colour, line style); colours follow the paper's Fig. 5 order
SETTING_STYLE: dict[str, tuple[str, str, str]] = {
    "full": ("full image", "#2b8cbe", "-"),
    "crop": ("crop", "#e34a33", "-"),
    "crop_ibs_random": ("crop + IBS (random pairs)", "#fdae6b", "--"),
    "crop_ibs": ("crop + IBS (paired sampler)", "#31a354", "-"),
}
_PLOTLY_DASH = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, layout="constrained")


def _hex_rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# ------------------------------------------------------------------------- Fig. 5 confusion


@dataclass(frozen=True)
class CurveSeries:
    """One confusion curve: thresholds T (fractions), mean ratio, optional (low, high) band."""

    label: str
    thresholds: Sequence[float]
    ratio: Sequence[float]
    band: tuple[Sequence[float], Sequence[float]] | None = None
    color: str | None = None
    linestyle: str = "-"


def confusion_curve_figure(
    series: Sequence[CurveSeries],
    *,
    title: str = "Confusion (Fig. 5 analogue)",
    size: tuple[float, float] = (5.5, 3.6),
    ylabel: str = "confused predicted things (%)",
) -> Figure:
    """Ratio of confused predicted thing segments (or, with another ``ylabel``, of any masks)
    against the overlap threshold T (percent axes)."""
    fig = _figure(size)
    ax = fig.subplots()
    t = np.array([0.0, 100.0])
    for s in series:
        t = 100 * np.asarray(s.thresholds, dtype=float)
        (line,) = ax.plot(
            t, 100 * np.asarray(s.ratio, dtype=float), s.linestyle, color=s.color, label=s.label, lw=1.8
        )
        if s.band is not None:  # a ratio lies in [0, 100] %, whatever the t interval says
            low, high = (np.clip(100 * np.asarray(b, dtype=float), 0, 100) for b in s.band)
            ax.fill_between(t, low, high, color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel("overlap threshold T (% of the GT segment's area)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(t.min(), t.max())
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, frameon=False)
    return fig


def confusion_curve_plotly(
    series: Sequence[CurveSeries],
    *,
    title: str = "Confusion (Fig. 5 analogue)",
    ylabel: str = "confused predicted things (%)",
) -> go.Figure:
    """Interactive version of :func:`confusion_curve_figure` (hover shows each value)."""
    fig = go.Figure()
    for k, s in enumerate(series):
        color = s.color or _PALETTE[k % len(_PALETTE)]
        t = [100 * v for v in s.thresholds]
        if s.band is not None:
            fig.add_trace(
                go.Scatter(
                    x=t + t[::-1],
                    y=[min(100 * v, 100) for v in s.band[1]] + [max(100 * v, 0) for v in s.band[0]][::-1],
                    fill="toself",
                    fillcolor=_hex_rgba(color, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=s.label,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=t,
                y=[100 * v for v in s.ratio],
                name=s.label,
                legendgroup=s.label,
                line={"color": color, "dash": _PLOTLY_DASH.get(s.linestyle, "solid")},
            )
        )
    fig.update_layout(
        title=title.replace("\n", "<br>"),
        xaxis_title="overlap threshold T (% of the GT segment's area)",
        yaxis_title=ylabel,
        template="plotly_white",
    )
    return fig


def series_from_metrics(
    metrics: Mapping[str, Mapping], styles: Mapping[str, tuple[str, str, str]] = SETTING_STYLE
) -> list[CurveSeries]:
    """One :class:`CurveSeries` per ``{setting: metrics.json}`` entry (single runs, no band)."""
    out = []
    for setting, m in metrics.items():
        label, color, linestyle = styles.get(setting, (setting, None, "-"))
        curve = m["confusion_curve"]
        out.append(CurveSeries(label, curve["thresholds"], curve["ratio"], color=color, linestyle=linestyle))
    return out


def series_from_results(
    results: Mapping,
    model: str,
    styles: Mapping[str, tuple[str, str, str]] = SETTING_STYLE,
    curve: str = "confusion_curve",
    variant: str | None = "",
) -> list[CurveSeries]:
    """One :class:`CurveSeries` per row of ``model`` in a ``synthetic_results.json``, with its
    95 % band; ``curve="oracle_confusion_curve"`` takes the oracle-embedding curves. Only the
    rows of ``variant`` ("": the study's own); None: every row, a variant's named in its label
    and drawn in a colour of its own."""
    out = []
    for k, row in enumerate(results["rows"]):
        if row["model"] != model or curve not in row or variant not in (None, row_variant(row)):
            continue
        label, color, linestyle = styles.get(row["setting"], (row["setting"], None, "-"))
        if row_variant(row) and variant is None:
            label, color = f"{label}, {row_variant(row)}", _PALETTE[k % len(_PALETTE)]
        summary = row[curve]
        band = None
        if len(row["seeds"]) > 1:
            band = ([lo for lo, _ in summary["ci95"]], [hi for _, hi in summary["ci95"]])
        out.append(CurveSeries(label, summary["thresholds"], summary["mean"], band, color, linestyle))
    return out


# --------------------------------------------------------------------------- table bars


@dataclass(frozen=True)
class BarRow:
    """One table row's measured metrics (fractions): label, mean, 95 % CI and per-seed values."""

    label: str
    setting: str
    means: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    per_seed: dict[str, list[float]]


def table_title(table: int) -> str:
    """``Table n analogue: <title>`` for the paper's tables, the bare title for the others (5-7)."""
    spec = TABLES[table]
    return f"Table {table} analogue: {spec.title}" if spec.dataset is not None else spec.title


def table_bar_rows(results: Mapping, table: int) -> tuple[list[BarRow], tuple[str, ...]]:
    """The measured rows of Table ``table`` in ``results`` and the table's metrics.

    Rows absent from ``results`` or holding none of the table's metrics are left out; a metric
    a row lacks is absent from its dicts.
    """
    metrics = TABLES[table].metrics
    out = []
    for table_row in TABLES[table].rows:
        row = next(
            (
                r
                for r in results["rows"]
                if r["model"] == table_row.model and r["setting"] == table_row.setting and not row_variant(r)
            ),
            None,
        )
        if row is None or not any(m in row["metrics"] for m in metrics):
            continue
        present = [m for m in metrics if m in row["metrics"]]
        out.append(
            BarRow(
                label=table_row.label,
                setting=table_row.setting,
                means={m: row["metrics"][m]["mean"] for m in present},
                ci95={m: tuple(row["metrics"][m]["ci95"]) for m in present},
                per_seed={m: list(row["metrics"][m]["per_seed"]) for m in present},
            )
        )
    return out, metrics


def _row_color(row: BarRow, k: int, rows: Sequence[BarRow] = ()) -> str:
    """The setting's colour, or the k-th palette colour when several rows share a setting."""
    if sum(r.setting == row.setting for r in rows) > 1:
        return _PALETTE[k % len(_PALETTE)]
    return SETTING_STYLE.get(row.setting, (None, _PALETTE[k % len(_PALETTE)]))[1]


def metric_bars_figure(results: Mapping, table: int, *, title: str | None = None) -> Figure:
    """Grouped bars of Table ``table``'s metrics (percent), one bar per measured row, 95 % CI
    whiskers and the per-seed values as dots."""
    rows, metrics = table_bar_rows(results, table)
    # at least 7 in wide: the legend sits right of the axes, and a few metrics still need room for labels
    fig = _figure((max(7.0, 1.2 + max(1.25, 0.28 * len(rows)) * len(metrics)), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(metrics))
    for k, row in enumerate(rows):
        positions = x - 0.4 + width * (k + 0.5)
        means = np.array([100 * row.means.get(m, np.nan) for m in metrics])
        low = np.array([100 * row.ci95[m][0] if m in row.ci95 else np.nan for m in metrics])
        high = np.array([100 * row.ci95[m][1] if m in row.ci95 else np.nan for m in metrics])
        color = _row_color(row, k, rows)
        ax.bar(positions, means, width * 0.92, color=color, label=row.label, alpha=0.85)
        ax.errorbar(
            positions, means, yerr=[means - low, high - means], fmt="none", ecolor="black", capsize=2, lw=1
        )
        for pos, m in zip(positions, metrics):
            seeds = row.per_seed.get(m, [])
            ax.plot([pos] * len(seeds), [100 * v for v in seeds], ".", color="black", ms=3, alpha=0.6)
    ax.set_xticks(x, [METRIC_LABELS[m] for m in metrics])
    ax.set_ylabel("percent")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or table_title(table), fontsize=10)
    if rows:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def metric_bars_plotly(results: Mapping, table: int, *, title: str | None = None) -> go.Figure:
    """Interactive version of :func:`metric_bars_figure` (95 % CI error bars, seeds in the hover)."""
    rows, metrics = table_bar_rows(results, table)
    fig = go.Figure()
    labels = [METRIC_LABELS[m] for m in metrics]
    for k, row in enumerate(rows):
        means = [100 * row.means[m] if m in row.means else None for m in metrics]
        plus = [100 * (row.ci95[m][1] - row.means[m]) if m in row.ci95 else None for m in metrics]
        minus = [100 * (row.means[m] - row.ci95[m][0]) if m in row.ci95 else None for m in metrics]
        seeds = [", ".join(f"{100 * v:.1f}" for v in row.per_seed.get(m, [])) for m in metrics]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=means,
                name=row.label,
                marker_color=_row_color(row, k, rows),
                error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                customdata=seeds,
                hovertemplate="%{x}: %{y:.1f} (seeds: %{customdata})<extra>" + row.label + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title=title or table_title(table),
        yaxis_title="percent (mean, 95 % CI over seeds)",
        template="plotly_white",
    )
    return fig


# ------------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepPoint:
    """One swept value: its label, numeric position (None for non-numeric values) and metrics
    summarised over the runs with that value (:func:`ibs_study.study.results.metric_summary`)."""

    value: Any
    label: str
    position: float | None
    metrics: dict[str, dict]


def sweep_points(entries: Sequence[Mapping]) -> list[SweepPoint]:
    """Group :func:`ibs_study.study.results.collect_sweep` entries by value, in order of position
    (first-seen order where a value has none).

    Numeric values get their value as position; lists (crop sizes ``[H, W]``) get ``H * W``
    and the label ``HxW``.
    """
    grouped: dict[str, tuple[Any, list[Mapping]]] = {}
    for entry in entries:
        value = entry["value"]
        label = (
            "x".join(str(v) for v in value)
            if isinstance(value, list | tuple)
            else f"{value:g}"
            if isinstance(value, int | float)
            else str(value)
        )
        grouped.setdefault(label, (value, []))[1].append(entry["metrics"])
    points = []
    for label, (value, metric_dicts) in grouped.items():
        names = sorted(set.intersection(*(set(m) for m in metric_dicts)))
        summary = {name: metric_summary([m[name] for m in metric_dicts]) for name in names}
        if isinstance(value, list | tuple):
            position = float(np.prod(value))
        elif isinstance(value, int | float):
            position = float(value)
        else:
            position = None
        points.append(SweepPoint(value, label, position, summary))
    if all(p.position is not None for p in points):
        points.sort(key=lambda p: p.position)
    return points


def _sweep_axis(points: Sequence[SweepPoint]) -> tuple[list[float], bool]:
    """x positions (value, or rank for non-numeric values) and whether a log axis suits them."""
    if all(p.position is not None for p in points):
        xs = [float(p.position) for p in points]  # type: ignore[arg-type]
        positive = [v for v in xs if v > 0]
        return xs, len(positive) == len(xs) and len(xs) > 1 and max(xs) / min(xs) >= 10
    return [float(k) for k in range(len(points))], False


def sweep_figure(
    entries: Sequence[Mapping],
    *,
    metrics: Sequence[str] = ("pq", "pq_th", "acc_th", "prec_th"),
    xlabel: str = "value",
    title: str = "Sweep",
    reference: tuple[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Metrics (percent) against the swept value, 95 % CI bars where a value has several runs;
    ``reference`` (:func:`ibs_study.study.results.sweep_reference`: label, metrics) adds each metric's
    reference value as a dashed line of its colour."""
    points = sweep_points(entries)
    xs, log_x = _sweep_axis(points)
    fig = _figure((6.8, 3.6))
    ax = fig.subplots()
    for k, metric in enumerate(metrics):
        have = [(x, p) for x, p in zip(xs, points) if metric in p.metrics]
        if not have:
            continue
        px = [x for x, _ in have]
        mean = np.array([100 * p.metrics[metric]["mean"] for _, p in have])
        low = np.array([100 * p.metrics[metric]["ci95"][0] for _, p in have])
        high = np.array([100 * p.metrics[metric]["ci95"][1] for _, p in have])
        ax.errorbar(
            px, mean, yerr=[mean - low, high - mean], marker="o", ms=4, capsize=2,
            color=_PALETTE[k % len(_PALETTE)], label=METRIC_LABELS.get(metric, metric),
        )  # fmt: skip
        if reference and metric in reference[1]:
            ax.axhline(
                100 * reference[1][metric], ls="--", lw=1, alpha=0.8, color=_PALETTE[k % len(_PALETTE)]
            )
    if reference:
        ax.plot(
            [], [], ls="--", lw=1, color="0.4", label=reference[0]
        )  # the legend entry of the dashed lines
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(xs, [p.label for p in points])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("percent")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def sweep_plotly(
    entries: Sequence[Mapping],
    *,
    metrics: Sequence[str] = ("pq", "pq_th", "acc_th", "prec_th"),
    xlabel: str = "value",
    title: str = "Sweep",
    reference: tuple[str, Mapping[str, float]] | None = None,
) -> go.Figure:
    """Interactive version of :func:`sweep_figure`."""
    points = sweep_points(entries)
    xs, log_x = _sweep_axis(points)
    fig = go.Figure()
    for k, metric in enumerate(metrics):
        have = [(x, p) for x, p in zip(xs, points) if metric in p.metrics]
        if not have:
            continue
        mean = [100 * p.metrics[metric]["mean"] for _, p in have]
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in have],
                y=mean,
                mode="lines+markers",
                name=METRIC_LABELS.get(metric, metric),
                line={"color": _PALETTE[k % len(_PALETTE)]},
                error_y={
                    "type": "data",
                    "array": [100 * p.metrics[metric]["ci95"][1] - m for (_, p), m in zip(have, mean)],
                    "arrayminus": [m - 100 * p.metrics[metric]["ci95"][0] for (_, p), m in zip(have, mean)],
                },
            )
        )
        if reference and metric in reference[1]:
            fig.add_trace(
                go.Scatter(
                    x=[min(xs), max(xs)],
                    y=[100 * reference[1][metric]] * 2,
                    mode="lines",
                    name=f"{METRIC_LABELS.get(metric, metric)}, {reference[0]}",
                    line={"color": _PALETTE[k % len(_PALETTE)], "dash": "dash", "width": 1},
                )
            )
    fig.update_layout(
        title=title,
        xaxis={
            "title": xlabel,
            "type": "log" if log_x else "linear",
            "tickvals": xs,
            "ticktext": [p.label for p in points],
        },
        yaxis_title="percent",
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------- problem analysis


def operating_curve_figure(
    curves: Mapping,
    *,
    x: str = "acc_th",
    y: str = "prec_th",
    title: str | None = None,
) -> Figure:
    """Operating curves (:func:`ibs_study.study.operating.collect_operating_curves`): ``y`` against ``x``
    (percent) over the swept values, one line per row, 95 % intervals in both directions, each
    point labelled with its value; the curves' ``default`` (the value the runs were trained and
    evaluated with) is circled."""
    default = curves.get("default")
    fig = _figure((6.8, 4.6))
    ax = fig.subplots()
    for k, row in enumerate(curves["rows"]):
        label, color, style = SETTING_STYLE.get(
            row["setting"], (row["setting"], _PALETTE[k % len(_PALETTE)], "-")
        )
        points = [p for p in row["points"] if x in p["metrics"] and y in p["metrics"]]
        if not points:
            continue
        mx = np.array([100 * p["metrics"][x]["mean"] for p in points])
        my = np.array([100 * p["metrics"][y]["mean"] for p in points])
        ex = [
            mx - [100 * p["metrics"][x]["ci95"][0] for p in points],
            [100 * p["metrics"][x]["ci95"][1] for p in points] - mx,
        ]
        ey = [
            my - [100 * p["metrics"][y]["ci95"][0] for p in points],
            [100 * p["metrics"][y]["ci95"][1] for p in points] - my,
        ]
        ax.errorbar(mx, my, xerr=ex, yerr=ey, color=color, ls=style, marker="o", ms=3.5, capsize=1.5, lw=1.3,
                    elinewidth=0.7, alpha=0.9, label=label)  # fmt: skip
        for k, (px, py, p) in enumerate(zip(mx, my, points)):
            is_default = default is not None and abs(p["value"] - default) < 1e-12
            if is_default:
                ax.plot(px, py, "o", ms=8, mfc="none", mec=color, mew=1.5)
            if is_default or k in (0, len(points) - 1):  # the ends and the default: the rest lie between
                ax.annotate(
                    f"{p['value']:g}",
                    (px, py),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
    key = curves.get("key", "")
    ax.set_xlabel(f"{METRIC_LABELS.get(x, x)} (%)")
    ax.set_ylabel(f"{METRIC_LABELS.get(y, y)} (%)")
    seeds = curves.get("seeds", [])
    circled = "; circled: the runs' own value" if default is not None else ""
    ax.set_title(
        title
        or f"Operating curves over {key.split('.')[-1]}\n(mean of {len(seeds)} seeds, 95 % CI; labelled: the "
        f"end values{circled})",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# (panel title, metrics) of :func:`oracle_logits_figure`
LOGIT_PANELS = (
    ("mean logit E·F of the GT things' embeddings", ("logit_own", "logit_lookalike", "logit_background")),
    ("separation: own - look-alike", ("logit_gap", "logit_gap_per_norm")),
    ("magnitude: bias part b·F and ‖E‖", ("logit_bias_own", "logit_bias_background", "embedding_norm")),
)


def _variant_label(row: Mapping) -> str:
    """The setting's label, followed by the row's variant when it has one."""
    label = SETTING_STYLE.get(row["setting"], (row["setting"],))[0]
    return f"{label}, {row_variant(row)}" if row_variant(row) else label


def oracle_logits_figure(results: Mapping, model: str = "pfcn", *, title: str | None = None) -> Figure:
    """The oracle logit analysis of ``model``'s rows (every variant) in a ``synthetic_results.json``:
    one panel per :data:`LOGIT_PANELS` entry, one bar per row (mean over seeds, logits as they are),
    95 % CI whiskers and the per-seed values as dots."""
    rows = [r for r in results["rows"] if r["model"] == model and "logit_own" in r["metrics"]]
    fig = _figure((max(9.0, 3.2 * len(LOGIT_PANELS) + 0.25 * len(rows)), 3.8))
    axes = fig.subplots(1, len(LOGIT_PANELS))
    width = 0.8 / max(len(rows), 1)
    for ax, (panel, metrics) in zip(axes, LOGIT_PANELS):
        x = np.arange(len(metrics))
        for k, row in enumerate(rows):
            summaries = [row["metrics"].get(m) for m in metrics]
            positions = x - 0.4 + width * (k + 0.5)
            means = np.array([s["mean"] if s else np.nan for s in summaries])
            low = np.array([s["ci95"][0] if s else np.nan for s in summaries])
            high = np.array([s["ci95"][1] if s else np.nan for s in summaries])
            color = (
                SETTING_STYLE[row["setting"]][1]
                if not row_variant(row) and row["setting"] in SETTING_STYLE
                else None
            )
            color = color or _PALETTE[k % len(_PALETTE)]
            ax.bar(positions, means, width * 0.92, color=color, alpha=0.85, label=_variant_label(row))
            ax.errorbar(
                positions,
                means,
                yerr=[means - low, high - means],
                fmt="none",
                ecolor="black",
                capsize=2,
                lw=1,
            )
            for pos, summary in zip(positions, summaries):
                seeds = summary["per_seed"] if summary else []
                ax.plot([pos] * len(seeds), seeds, ".", color="black", ms=3, alpha=0.6)
        ax.set_xticks(x, [METRIC_LABELS[m] for m in metrics], rotation=20, ha="right", fontsize=8)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(panel, fontsize=9)
    axes[0].set_ylabel("logit")
    if rows:
        axes[-1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(
        title
        or f"Oracle logits, {model}: own thing, nearest same-class look-alike, background "
        f"(mean of seeds, 95 % CI)",
        fontsize=10,
    )
    return fig


def _integer_bins(*arrays: np.ndarray) -> np.ndarray:
    top = max((int(a.max()) for a in arrays if a.size), default=0)
    return np.arange(-0.5, top + 1.5, max(1, math.ceil((top + 1) / 40)))


def instance_count_figure(counts: Any) -> Figure:
    """Fig. 3 analogue: thing instances per full image vs per training crop (histograms, share of
    images / crops), for all thing classes and for the most frequent class of each image.

    Args:
        counts: an :class:`ibs_study.study.analysis.InstanceCounts`.
    """
    fig = _figure((9.0, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    crop = f"{counts.crop_size[0]}x{counts.crop_size[1]} crop"
    panels = (
        ("all thing instances", counts.per_image, counts.per_crop.ravel()),
        (
            "instances of the image's most frequent thing class",
            counts.per_image_one_class,
            counts.per_crop_one_class.ravel(),
        ),
    )
    for ax, (name, image, crops) in zip(axes, panels):
        bins = _integer_bins(image, crops)
        ax.hist(crops, bins=bins, weights=np.full(len(crops), 100 / max(len(crops), 1)), alpha=0.7,
                color="#e34a33", label=f"per {crop} (mean {crops.mean():.1f})")  # fmt: skip
        ax.hist(image, bins=bins, weights=np.full(len(image), 100 / max(len(image), 1)), alpha=0.7,
                color="#2b8cbe", label=f"per full image (mean {image.mean():.1f})")  # fmt: skip
        ax.set_xlabel(name)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of images / crops")
    fig.suptitle(
        f"Training crops hold {counts.ratio:.1f}x fewer thing instances than the full test images "
        f"({len(counts.per_image)} images, {counts.per_crop.shape[1]} crops each)",
        fontsize=10,
    )
    return fig


def segment_size_figure(sizes: Any, shares: Mapping[str, Mapping[str, float]]) -> Figure:
    """Segment areas (log scale) of things and stuff, and the thing segments vs thing pixels per size.

    Args:
        sizes: an :class:`ibs_study.study.analysis.SegmentSizes`.
        shares: :func:`ibs_study.study.analysis.size_shares` of it.
    """
    fig = _figure((9.0, 3.4))
    left, right = fig.subplots(1, 2)
    fractions = np.clip(sizes.fraction, 1e-7, 1.0)
    bins = np.logspace(np.log10(fractions.min()), 0, 30) if fractions.size else 10
    for isthing, name, color in ((True, "things", "#e34a33"), (False, "stuff", "#7f7f7f")):
        part = 100 * fractions[sizes.isthing == isthing]
        left.hist(
            part, bins=100 * np.asarray(bins), alpha=0.7, color=color, label=f"{name} ({len(part)} segments)"
        )
    left.set_xscale("log")
    left.set_xlabel("segment area (% of the image)")
    left.set_ylabel("segments")
    left.legend(fontsize=8, frameon=False)
    left.grid(alpha=0.3)
    names = list(shares)
    x = np.arange(len(names))
    right.bar(
        x - 0.2,
        [100 * shares[n]["segments"] for n in names],
        0.4,
        color="#4c72b0",
        label="share of thing segments (what PQ counts)",
    )
    right.bar(
        x + 0.2,
        [100 * shares[n]["pixels"] for n in names],
        0.4,
        color="#dd8452",
        label="share of thing pixels (what Acc^th counts)",
    )
    right.set_xticks(x, [f"{n} ({shares[n]['count']})" for n in names])
    right.set_xlabel("thing size (evaluator's S / M / L)")
    right.set_ylabel("percent")
    right.legend(fontsize=8, frameon=False)
    right.grid(axis="y", alpha=0.3)
    return fig


def shared_class_figure(fractions: Mapping[str, np.ndarray]) -> Figure:
    """Mean fraction of IBS pairs sharing a thing class per sampler, 95 % CI over batches, batches as dots."""
    fig = _figure((5.0, 3.2))
    ax = fig.subplots()
    for k, values in enumerate(fractions.values()):
        summary = metric_summary(values)
        mean = 100 * summary["mean"]
        low, high = (min(max(100 * v, 0.0), 100.0) for v in summary["ci95"])  # a fraction stays in [0, 100]
        ax.bar(k, mean, 0.6, color=_PALETTE[k % len(_PALETTE)], alpha=0.85)
        ax.errorbar(k, mean, yerr=[[mean - low], [high - mean]], fmt="none", ecolor="black", capsize=3)
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.plot(k + jitter, 100 * np.asarray(values), ".", color="black", ms=3, alpha=0.5)
        ax.text(k, mean / 2, f"{mean:.0f}%", ha="center", va="center", fontsize=11, color="white")
    ax.set_xticks(range(len(fractions)), list(fractions))
    ax.set_ylim(0, 110)
    ax.set_ylabel("pairs sharing a thing class (%)")
    ax.set_title("How often an IBS pair can be confused (per batch)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def merge_sweep_figure(outcomes: Sequence[Any]) -> Figure:
    """PQ, PQ^th, Acc^th and Prec^th (percent) against the number of instances one prediction merges.

    Args:
        outcomes: :func:`ibs_study.study.analysis.merge_sweep` output.
    """
    fig = _figure((5.5, 3.6))
    ax = fig.subplots()
    rows = [o.row() for o in outcomes]
    ks = [r["num_merged"] for r in rows]
    acc, prec = ([100 * r[m] for r in rows] for m in ("acc_th", "prec_th"))
    ax.plot(ks, [100 * r["pq"] for r in rows], "o-", color=_PALETTE[0], label="PQ")
    ax.plot(ks, [100 * r["pq_th"] for r in rows], "o-", color=_PALETTE[1], label="PQ^th")
    if np.allclose(acc, prec):  # the merged prediction covers exactly the GT thing pixels
        ax.plot(ks, acc, "s--", color=_PALETTE[3], label="Acc^th = Prec^th")
    else:
        ax.plot(ks, acc, "s--", color=_PALETTE[2], label="Acc^th")
        ax.plot(ks, prec, "s--", color=_PALETTE[3], label="Prec^th")
    ax.set_xticks(ks)
    ax.set_xlabel(f"largest {rows[0]['category'] if rows else ''} instances covered by one predicted segment")
    ax.set_ylabel("percent")
    ax.set_title("Ground truth as prediction, one segment merging k instances", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------ IBS walkthrough


def _thing_outline(image: np.ndarray, masks: torch.Tensor, is_thing: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8 image with the boundaries of the thing masks drawn in white."""
    ids = np.zeros(image.shape[:2], dtype=np.int32)
    for k in torch.nonzero(is_thing).flatten().tolist():
        ids[masks[k].numpy()] = k + 1
    out = image.copy()
    out[segment_boundaries(ids) & (ids > 0)] = (255, 255, 255)
    return out


def _crop_image(batch: Batch, index: int) -> np.ndarray:
    return batch.images[index].permute(1, 2, 0).cpu().numpy()


def crops_figure(batch: Batch, meta: DatasetMeta, *, max_crops: int = 8, columns: int = 4) -> Figure:
    """The crops of a batch, thing instances outlined; titles give the thing count, the class a
    pair was sampled for and the IBS partner."""
    count = min(len(batch), max_crops)
    rows = math.ceil(count / columns)
    height, width = batch.images.shape[-2:]
    fig = _figure((3.0 * columns, 3.0 * columns * height / width * rows / columns + 0.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= count:
            continue
        target = batch.targets[k]
        ax.imshow(
            _thing_outline(_crop_image(batch, k), target.masks, target.is_thing), interpolation="nearest"
        )
        title = f"crop {k}: {target.num_things} things"
        if batch.pair_class is not None and int(batch.pair_class[k]) >= 0:
            title += f", pair class {meta.class_names[int(batch.pair_class[k])]}"
        if batch.partner_index is not None:
            title += f"\nIBS partner: crop {int(batch.partner_index[k])}"
        ax.set_title(title, fontsize=8)
    return fig


def cross_crop_figure(
    batch: Batch,
    maps: Mapping[str, Sequence[torch.Tensor]],
    partners: Mapping[str, torch.Tensor],
    crops: Sequence[int] = (0, 1, 2, 3),
) -> Figure:
    """Per source crop: the crop (things outlined), then for each entry of ``maps`` the
    strongest cross-crop mask ``max_t M_{i -> tgt}[t]`` over the target crop, drawn in grey (Fig. 4).

    Args:
        batch: the crops.
        maps: column title -> B tensors (T_b, h, w) of probabilities
            (:func:`ibs_study.study.walkthrough.cross_crop_probabilities`).
        partners: column title -> (B,) target crop of each source crop under that column.
        crops: source crops to show (rows).
    """
    height, width = batch.images.shape[-2:]
    columns = 1 + len(maps)
    fig = _figure((2.9 * columns, (2.9 * height / width + 0.45) * len(crops)))
    axes = fig.subplots(len(crops), columns, squeeze=False)
    for row, source in enumerate(crops):
        target = batch.targets[source]
        ax = axes[row, 0]
        ax.imshow(
            _thing_outline(_crop_image(batch, source), target.masks, target.is_thing), interpolation="nearest"
        )
        ax.set_title(f"source crop {source}: E of {target.num_things} things", fontsize=8)
        for col, (title, probs) in enumerate(maps.items(), start=1):
            ax = axes[row, col]
            tgt = int(partners[title][source])
            p = probs[source]
            strongest = p.amax(0) if p.shape[0] else torch.zeros(p.shape[1:])  # (h, w)
            upsampled = F.interpolate(strongest[None, None].float(), size=(height, width), mode="bilinear")
            gray = _crop_image(batch, tgt).mean(-1)
            ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            shown = ax.imshow(upsampled[0, 0].numpy(), cmap="magma", vmin=0, vmax=1, alpha=0.8)
            ax.set_title(
                f"{title}: M {source}→{tgt} (max {float(strongest.max()) if p.numel() else 0:.2f})",
                fontsize=8,
            )
        for ax in axes[row]:
            ax.set_axis_off()
    if maps:
        fig.colorbar(shown, ax=axes[:, -1].tolist(), shrink=0.6, label="sigmoid(E·F)")
    return fig


def ibs_trace_figure(traces: Mapping[str, Any], rules: Sequence[str] = ("pair_mate", "random")) -> Figure:
    """Mean cross-crop mask probability on the probe batch against training steps, per trace
    (e.g. with and without IBS) and partner rule, and the fraction of pixels above 0.5.

    Args:
        traces: label -> :class:`ibs_study.study.walkthrough.IBSTrace`.
    """
    fig = _figure((9.0, 3.4))
    left, right = fig.subplots(1, 2)
    styles = {"pair_mate": ("-", "o"), "random": ("--", "x")}
    for k, (label, trace) in enumerate(traces.items()):
        steps = trace.steps
        for rule in rules:
            key = f"cross_mean_{rule}"
            if key not in trace.records[0]:
                continue
            color = _PALETTE[k % len(_PALETTE)]
            name = f"{label}, {rule.replace('_', ' ')} partner"
            linestyle, marker = styles.get(rule, (":", "."))
            for ax, values in (
                (left, [r[key] for r in trace.records]),
                (right, [100 * r[f"cross_fired_{rule}"] for r in trace.records]),
            ):
                ax.plot(steps, values, linestyle, color=color, marker=marker, ms=4, label=name)
    left.set_ylabel("mean of sigmoid(E_i · F_tgt)")
    right.set_ylabel("pixels with sigmoid > 0.5 (%)")
    for ax in (left, right):
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    left.legend(fontsize=7, frameon=False)
    fig.suptitle("Cross-crop masks M_{i→tgt} on a fixed probe batch", fontsize=10)
    return fig


# ------------------------------------------------------------------------------ training


def loss_curves_figure(log: Mapping[str, np.ndarray], *, title: str = "Training losses") -> Figure:
    """Loss terms of a run (``read_log`` columns) against the step; the IBS term in its own panel.

    Left: the total and the model's own terms (``loss_*`` except ``loss_ibs``); right: ``loss_ibs``
    (weighted, as added to the total) when the run has it, else the learning rate.
    """
    fig = _figure((9.5, 3.4))
    left, right = fig.subplots(1, 2)
    steps = log.get("step", np.zeros(0))
    own = sorted(k for k in log if k.startswith("loss_") and k not in ("loss_total", "loss_ibs"))
    if "loss_total" in log:
        left.plot(steps, log["loss_total"], color="black", lw=1.8, label="total")
    for k, name in enumerate(own):
        left.plot(
            steps, log[name], color=_PALETTE[k % len(_PALETTE)], lw=1.2, label=name.removeprefix("loss_")
        )
    left.set_title("total and the model's own terms", fontsize=9)
    left.legend(fontsize=7, frameon=False, ncol=2)
    if "loss_ibs" in log:
        right.plot(steps, log["loss_ibs"], color="#31a354", lw=1.5)
        right.set_title("IBS term (λ · L_IBS)", fontsize=9)
    elif "lr" in log:
        right.plot(steps, log["lr"], color="#7f7f7f")
        right.set_title("learning rate (no IBS term in this run)", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


class LiveFigure:
    """Redraws one notebook output with ``builder(data)`` each time it is called.

    Usage: ``live = LiveFigure(loss_curves_figure)``, then ``live(log)`` as data arrives
    (e.g. as ``on_log`` of :func:`ibs_study.study.runs.launch_training`). Outside IPython it only
    keeps the latest figure in :attr:`figure`.
    """

    def __init__(self, builder: Callable[[Any], Figure]) -> None:
        self.builder = builder
        self.figure: Figure | None = None
        self._handle = None

    def __call__(self, data: Any) -> None:
        self.figure = self.builder(data)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)


# ------------------------------------------------------------------------------- saving


def save_figure(
    fig: Figure | go.Figure,
    stem: str | os.PathLike,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
    plotlyjs: bool | str = True,
) -> list[Path]:
    """Write ``stem.<format>`` for each format: matplotlib figures as PNG / SVG, plotly figures as
    an HTML page. ``plotlyjs``: True embeds plotly.js (a standalone page that works offline); a
    path ending in ``.js`` loads it from there, relative to the page (a folder of many pages
    shares one copy). The files are reproducible: the same figure gives the same bytes (no date,
    element ids derived from the file name), so regenerated figures only differ where the
    content does. Returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, go.Figure):
        path = stem.with_suffix(".html")
        fig.write_html(path, include_plotlyjs=plotlyjs, full_html=True, div_id=stem.name)
        return [path]
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with matplotlib.rc_context({"svg.hashsalt": stem.name}):
            fig.savefig(path, dpi=dpi, metadata={"Date": None} if fmt in ("svg", "pdf") else None)
        paths.append(path)
    return paths
