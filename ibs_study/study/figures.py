"""The figures built from the study's results: table bars, Fig. 5 curves, sweeps, operating
curves, oracle logits and the IBS pair statistics.

Each is a chart (:mod:`ibs_study.viz.chart`) built once from a ``synthetic_results.json``
(:mod:`ibs_study.study.results`) and drawn by the chart renderers: ``*_chart`` gives the
description, ``*_figure`` its static matplotlib rendering; :func:`~ibs_study.viz.figures.save_figure`
writes a chart as PNG / SVG and an HTML page. :mod:`ibs_study.study.paper_figures` and the
notebooks call the same functions, so a figure has one title and one look wherever it appears:

* :func:`measured_tables`, :func:`table_bar_rows`, :func:`metric_bars_chart`: the rows of
  Tables 1-7 as bars with 95 % confidence intervals and the per-seed values;
* :func:`series_from_results`, :func:`confusion_chart`: Fig. 5, the confusion curves of a
  model's rows (or their oracle-embedding curves), 95 % bands over seeds;
  :func:`variant_confusion_chart` the same for a follow-up, a panel per variant;
* :func:`sweep_points`, :func:`sweep_chart`, :func:`study_sweep_chart`: a metric against a swept
  value (λ_IBS, crop size), with the study row it is read against;
* :func:`oracle_logits_chart`: the oracle logit analysis (``logit_*`` metrics,
  :func:`ibs_study.study.oracle.oracle_logits`) of every row, variants included;
* :func:`operating_curve_chart`: Acc^th against Prec^th over an inference threshold;
* :func:`shared_class_figure`: how often an IBS pair shares a thing class, per sampler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ibs_study.study.results import (
    ResultRow,
    StudyResults,
    Summary,
    SweepRun,
    metric_summary,
    sweep_reference,
)
from ibs_study.study.specs import variants_of
from ibs_study.study.tables import METRIC_LABELS, TABLES
from ibs_study.viz.chart import PALETTE, Bars, Chart, HLine, Line, Panel, render_matplotlib
from ibs_study.viz.figures import SETTING_STYLE, CurveSeries, confusion_curve_chart

__all__ = [
    "MODEL_LABELS",
    "ORACLE_CURVE_YLABEL",
    "SWEEP_LABELS",
    "series_from_results",
    "confusion_chart",
    "variant_confusion_chart",
    "BarRow",
    "table_title",
    "table_bar_rows",
    "measured_tables",
    "metric_bars_chart",
    "metric_bars_figure",
    "SweepPoint",
    "sweep_points",
    "sweep_chart",
    "sweep_figure",
    "study_sweep_chart",
    "operating_curve_chart",
    "operating_curve_figure",
    "LOGIT_PANELS",
    "oracle_logits_chart",
    "oracle_logits_figure",
    "shared_class_figure",
]

MODEL_LABELS = {"pfcn": "Panoptic FCN", "m2f": "Mask2Former", "m2f_instance": "Mask2Former (instance)"}
# The y label of a confusion curve over oracle masks (``oracle_confusion_curve``): the masks of
# the embeddings a model gives the GT things, not its predicted segments.
ORACLE_CURVE_YLABEL = "GT things' masks covering 2+ GT things (%)"
# x label of the study's sweeps (``results.sweeps`` name -> what is swept, in which setting)
SWEEP_LABELS = {
    "lambda": "λ_IBS (crop + IBS, paired sampler)",
    "crop_size": "crop size H x W (crop training, no IBS)",
    "m2f_lambda": "λ_IBS, Mask2Former (crop + IBS, paired sampler)",
}


def _percent(summary: Mapping) -> tuple[float, float, float]:
    """(mean, low, high) of a :func:`~ibs_study.study.results.metric_summary`, in percent."""
    return 100 * summary["mean"], 100 * summary["ci95"][0], 100 * summary["ci95"][1]


# ------------------------------------------------------------------------- Fig. 5 confusion


def series_from_results(
    results: StudyResults,
    model: str,
    styles: Mapping[str, tuple[str, str, str]] = SETTING_STYLE,
    curve: str = "confusion_curve",
    variant: str | None = "",
) -> list[CurveSeries]:
    """One :class:`~ibs_study.viz.figures.CurveSeries` per row of ``model`` in a
    ``synthetic_results.json``, with its 95 % band; ``curve="oracle_confusion_curve"`` takes the
    oracle-embedding curves. Only the rows of ``variant`` ("": the study's own); None: every row,
    a variant's named in its label and drawn in a colour of its own."""
    out = []
    variants = variants_of(results.rows)
    for k, row in enumerate(results.rows):
        summary = getattr(row, curve)
        if row.model != model or summary is None or variant not in (None, row.variant):
            continue
        label, color, linestyle = styles.get(row.setting, (row.setting, None, "-"))
        if row.variant and variant is None:
            label, color = f"{label}, {row.variant}", variant_color(row, variants, k)
            linestyle = "--"
        band = None
        if len(row.seeds) > 1:
            band = ([lo for lo, _ in summary.ci95], [hi for _, hi in summary.ci95])
        out.append(CurveSeries(label, list(summary.thresholds), list(summary.mean), band, color, linestyle))
    return out


def confusion_chart(
    results: StudyResults,
    model: str,
    curve: str = "confusion_curve",
    *,
    variant: str | None = "",
    title: str | None = None,
) -> Chart | None:
    """Fig. 5 of ``model``: the :func:`series_from_results` curves (``curve``, ``variant``) under the
    paper figures' title (or ``title``); None when no row of the model has the curve."""
    series = series_from_results(results, model, curve=curve, variant=variant)
    if not series:
        return None
    oracle = curve == "oracle_confusion_curve"
    what = "Oracle-embedding confusion" if oracle else "Fig. 5 analogue: confusion"
    title = title or f"{what}, {MODEL_LABELS.get(model, model)}\n(mean over seeds, 95 % band)"
    if oracle:
        return confusion_curve_chart(series, title=title, ylabel=ORACLE_CURVE_YLABEL)
    return confusion_curve_chart(series, title=title)


def variant_confusion_chart(
    results: StudyResults,
    model: str,
    curve: str = "confusion_curve",
    *,
    title: str | None = None,
) -> Chart | None:
    """The confusion curves (``curve``) of a follow-up, one panel per variant on a shared y axis:
    the study's own rows first, then each variant's rows with their 95 % bands over the study's
    rows of the same settings and its crop row, dotted and thin, for reference. None when no row
    of ``model`` has the curve."""
    oracle = curve == "oracle_confusion_curve"
    ylabel = ORACLE_CURVE_YLABEL if oracle else "confused predicted things (%)"
    panels = []
    for variant in ["", *variants_of(results.rows)]:
        own = series_from_results(results, model, curve=curve, variant=variant)
        if not own:
            continue
        panel = confusion_curve_chart(own, title=variant or "the study's rows", ylabel=ylabel).panels[0]
        if variant:
            settings = {r.setting for r in results.rows if r.model == model and r.variant == variant} | {
                "crop"
            }
            study = dataclasses.replace(
                results, rows=tuple(r for r in results.rows if not r.variant and r.setting in settings)
            )
            reference = series_from_results(study, model, curve=curve, variant="")
            lines = confusion_curve_chart(reference).panels[0].lines if reference else ()
            dotted = tuple(
                dataclasses.replace(line, dash=":", width=1.0, band=None, legend=False) for line in lines
            )
            panel = dataclasses.replace(
                panel,
                title=f"{variant}\n(dotted: the study's rows)",
                ylabel="",
                lines=dotted + panel.lines,
                legend=None,
            )
        panels.append(panel)
    if not panels:
        return None
    top = max(max(line.band[1] if line.band else line.y) for panel in panels for line in panel.lines)
    xlabel = "overlap threshold T (% of GT area)"  # the panels are narrow
    panels = [dataclasses.replace(panel, xlabel=xlabel, ylim=(0, min(100.0, 1.05 * top))) for panel in panels]
    what = "Oracle-embedding confusion" if oracle else "Confusion"
    title = title or f"{what}, {MODEL_LABELS.get(model, model)}, per variant\n(mean over seeds, 95 % band)"
    return Chart(tuple(panels), title=title, size=(3.4 * len(panels), 3.9))


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


def table_bar_rows(results: StudyResults, table: int) -> tuple[list[BarRow], tuple[str, ...]]:
    """The measured rows of Table ``table`` in ``results`` and the table's metrics.

    Rows absent from ``results`` or holding none of the table's metrics are left out; a metric
    a row lacks is absent from its dicts.
    """
    metrics = TABLES[table].metrics
    out = []
    for table_row in TABLES[table].rows:
        row = results.find_row(table_row.model, table_row.setting)
        if row is None or not any(m in row.metrics for m in metrics):
            continue
        present = [m for m in metrics if m in row.metrics]
        out.append(
            BarRow(
                label=table_row.label,
                setting=table_row.setting,
                means={m: row.metrics[m].mean for m in present},
                ci95={m: tuple(row.metrics[m].ci95) for m in present},
                per_seed={m: list(row.metrics[m].per_seed) for m in present},
            )
        )
    return out, metrics


def measured_tables(results: StudyResults) -> list[int]:
    """The numbers of the tables with at least one measured row in ``results``."""
    return [number for number in TABLES if table_bar_rows(results, number)[0]]


def _row_color(row: BarRow, k: int, rows: Sequence[BarRow]) -> str:
    """The setting's colour, or the k-th palette colour when several rows share a setting."""
    if sum(r.setting == row.setting for r in rows) > 1:
        return PALETTE[k % len(PALETTE)]
    return SETTING_STYLE.get(row.setting, (None, PALETTE[k % len(PALETTE)]))[1]


def _summary_bars(label: str, color: str, summaries: Sequence[Summary | None], scale: float) -> Bars:
    """A bar per summary (mean, 95 % whisker, per-seed dots) times ``scale``; None: no bar."""
    empty = Summary(math.nan, (math.nan, math.nan), ())
    summaries = [s or empty for s in summaries]
    return Bars(
        label,
        [scale * s.mean for s in summaries],
        color,
        error=([scale * s.ci95[0] for s in summaries], [scale * s.ci95[1] for s in summaries]),
        points=[[scale * v for v in s.per_seed] for s in summaries],
    )


def metric_bars_chart(results: StudyResults, table: int, *, title: str | None = None) -> Chart:
    """Grouped bars of Table ``table``'s metrics (percent), one bar per measured row, 95 % CI
    whiskers and the per-seed values as dots."""
    rows, metrics = table_bar_rows(results, table)
    bars = []
    for k, row in enumerate(rows):
        summaries = [
            Summary(row.means[m], row.ci95[m], tuple(row.per_seed[m])) if m in row.means else None
            for m in metrics
        ]
        bars.append(_summary_bars(row.label, _row_color(row, k, rows), summaries, 100))
    panel = Panel(
        title=title or table_title(table),
        ylabel="percent",
        bars=tuple(bars),
        categories=tuple(METRIC_LABELS[m] for m in metrics),
        ylim=(0, None),
        legend="right",
        grid="y",
    )
    # at least 7 in wide: the legend sits right of the axes, and a few metrics still need room for labels
    return Chart((panel,), size=(max(7.0, 1.2 + max(1.25, 0.28 * len(rows)) * len(metrics)), 3.6))


def metric_bars_figure(results: StudyResults, table: int, *, title: str | None = None) -> Figure:
    """The static :func:`metric_bars_chart`."""
    return render_matplotlib(metric_bars_chart(results, table, title=title))


# ------------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepPoint:
    """One swept value: its label, numeric position (None for non-numeric values) and metrics
    summarised over the runs with that value (:func:`ibs_study.study.results.metric_summary`)."""

    value: Any
    label: str
    position: float | None
    metrics: dict[str, dict]


def sweep_points(entries: Sequence[SweepRun]) -> list[SweepPoint]:
    """Group the runs of a sweep (:func:`ibs_study.study.results.collect_sweep`) by value, in order of position
    (first-seen order where a value has none).

    Numeric values get their value as position; lists (crop sizes ``[H, W]``) get ``H * W``
    and the label ``HxW``.
    """
    grouped: dict[str, tuple[Any, list[Mapping]]] = {}
    for entry in entries:
        value = entry.value
        label = (
            "x".join(str(v) for v in value)
            if isinstance(value, list | tuple)
            else f"{value:g}"
            if isinstance(value, int | float)
            else str(value)
        )
        grouped.setdefault(label, (value, []))[1].append(entry.metrics)
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


def sweep_chart(
    entries: Sequence[SweepRun],
    *,
    metrics: Sequence[str] = ("pq", "pq_th", "acc_th", "prec_th"),
    xlabel: str = "value",
    title: str = "Sweep",
    reference: tuple[str, Mapping[str, float]] | None = None,
) -> Chart:
    """Metrics (percent) against the swept value, 95 % CI whiskers where a value has several runs;
    ``reference`` (:func:`ibs_study.study.results.sweep_reference`: label, metrics) adds each metric's
    reference value as a dashed line of its colour across the swept range, with one legend entry."""
    points = sweep_points(entries)
    xs, log_x = _sweep_axis(points)
    lines = []
    for k, metric in enumerate(metrics):
        have = [(x, p.metrics[metric]) for x, p in zip(xs, points) if metric in p.metrics]
        if not have:
            continue
        color = PALETTE[k % len(PALETTE)]
        mean, low, high = zip(*(_percent(summary) for _, summary in have))
        label = METRIC_LABELS.get(metric, metric)
        lines.append(Line(label, [x for x, _ in have], mean, color, marker="o", width=1.5, error=(low, high)))
        if reference and metric in reference[1]:
            level = 100 * reference[1][metric]
            lines.append(
                Line(
                    reference[0],
                    [min(xs), max(xs)],
                    [level] * 2,
                    color,
                    "--",
                    width=1,
                    legend=False,
                )
            )
    if reference:  # the legend entry of the dashed lines
        lines.append(Line(reference[0], [], [], "#666666", "--", width=1))
    panel = Panel(
        title=title,
        xlabel=xlabel,
        ylabel="percent",
        lines=tuple(lines),
        xticks=(xs, [p.label for p in points]),
        xlog=log_x,
        legend="right",
    )
    return Chart((panel,), size=(6.8, 3.6))


def sweep_figure(entries: Sequence[SweepRun], **options: Any) -> Figure:
    """The static :func:`sweep_chart` (same options)."""
    return render_matplotlib(sweep_chart(entries, **options))


def study_sweep_chart(results: StudyResults, name: str) -> Chart:
    """The sweep ``name`` of ``results.sweeps``: titled with the swept key and preset, x label
    from :data:`SWEEP_LABELS` (the key for other sweeps), the study row it is read against at the
    sweep's seed dashed (:func:`~ibs_study.study.results.sweep_reference`)."""
    entries = results.sweeps[name]
    key, preset = entries[0].key, entries[0].preset
    return sweep_chart(
        entries,
        xlabel=SWEEP_LABELS.get(name, key),
        title=f"Sweep of {key} ({preset})",
        reference=sweep_reference(results, entries),
    )


# ----------------------------------------------------------------------- operating curves


def operating_curve_chart(
    curves: Mapping,
    *,
    x: str = "acc_th",
    y: str = "prec_th",
    title: str | None = None,
) -> Chart:
    """Operating curves (:func:`ibs_study.study.operating.collect_operating_curves`): ``y`` against ``x``
    (percent) over the swept values, one line per row, 95 % intervals in both directions, the
    end points labelled with their value; the curves' ``default`` (the value the runs were
    trained and evaluated with) is circled and labelled."""
    default = curves.get("default")
    lines = []
    for k, row in enumerate(curves["rows"]):
        label, color, style = SETTING_STYLE.get(
            row["setting"], (row["setting"], PALETTE[k % len(PALETTE)], "-")
        )
        points = [p for p in row["points"] if x in p["metrics"] and y in p["metrics"]]
        if not points:
            continue
        mx, x_low, x_high = zip(*(_percent(p["metrics"][x]) for p in points))
        my, y_low, y_high = zip(*(_percent(p["metrics"][y]) for p in points))
        is_default = [default is not None and abs(p["value"] - default) < 1e-12 for p in points]
        ends = {0, len(points) - 1}  # the ends and the default are labelled: the rest lie between
        labels = [f"{p['value']:g}" if k in ends or is_default[k] else "" for k, p in enumerate(points)]
        lines.append(
            Line(label, mx, my, color, dash=style, marker="o", marker_size=3.5, width=1.3,
                 error=(y_low, y_high), xerror=(x_low, x_high), point_labels=labels)
        )  # fmt: skip
        circled = [k for k, flag in enumerate(is_default) if flag]
        if circled:
            at = circled[0]
            lines.append(
                Line(None, [mx[at]], [my[at]], color, dash="", marker="o", marker_size=8, hollow=True)
            )
    key = curves.get("key", "")
    seeds = curves.get("seeds", [])
    circled_note = "; circled: the runs' own value" if default is not None else ""
    panel = Panel(
        title=title
        or f"Operating curves over {key.split('.')[-1]}\n(mean of {len(seeds)} seeds, 95 % CI; labelled: the "
        f"end values{circled_note})",
        xlabel=f"{METRIC_LABELS.get(x, x)} (%)",
        ylabel=f"{METRIC_LABELS.get(y, y)} (%)",
        lines=tuple(lines),
        legend="right",
        title_size=9,
    )
    return Chart((panel,), size=(6.8, 4.6))


def operating_curve_figure(curves: Mapping, **options: Any) -> Figure:
    """:func:`operating_curve_chart` drawn by matplotlib."""
    return render_matplotlib(operating_curve_chart(curves, **options))


# --------------------------------------------------------------------------- oracle logits

# (panel title, metrics) of :func:`oracle_logits_chart`
LOGIT_PANELS = (
    ("mean logit E·F: own thing, look-alike", ("logit_own", "logit_lookalike")),
    ("mean logit E·F: background", ("logit_background",)),  # tens of logits below: a scale of its own
    ("separation: own - look-alike", ("logit_gap", "logit_gap_per_norm")),
    ("magnitude: bias part b·F and ‖E‖", ("logit_bias_own", "logit_bias_background", "embedding_norm")),
)


def variant_color(row: ResultRow, variants: Sequence[str], k: int = 0) -> str:
    """The colour of a results row: its setting's (:data:`SETTING_STYLE`); a variant's is that hue
    lighter, the more so the later it comes in ``variants``, so that every row reads as its
    setting's; a setting without a style takes the ``k``-th palette colour."""
    if row.setting not in SETTING_STYLE:
        return PALETTE[k % len(PALETTE)]
    color = SETTING_STYLE[row.setting][1]
    if not row.variant:
        return color
    towards_white = min(0.3 + 0.2 * variants.index(row.variant), 0.8)
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * towards_white):02x}" for c in rgb)


def _variant_label(row: ResultRow) -> str:
    """The setting's label, followed by the row's variant when it has one."""
    label = SETTING_STYLE.get(row.setting, (row.setting,))[0]
    return f"{label}, {row.variant}" if row.variant else label


def oracle_logits_chart(results: StudyResults, model: str = "pfcn", *, title: str | None = None) -> Chart:
    """The oracle logit analysis of ``model``'s rows (every variant) in a ``synthetic_results.json``:
    one panel per :data:`LOGIT_PANELS` entry, one bar per row (mean over seeds, logits as they are),
    95 % CI whiskers and the per-seed values as dots."""
    rows = [r for r in results.rows if r.model == model and "logit_own" in r.metrics]
    variants = variants_of(rows)
    colors = [variant_color(row, variants, k) for k, row in enumerate(rows)]
    panels = []
    for number, (panel_title, metrics) in enumerate(LOGIT_PANELS, 1):
        bars = tuple(
            _summary_bars(_variant_label(row), color, [row.metrics.get(m) for m in metrics], 1.0)
            for row, color in zip(rows, colors)
        )
        panels.append(
            Panel(
                title=panel_title,
                ylabel="logit" if number == 1 else "",
                bars=bars,
                categories=tuple(METRIC_LABELS[m] for m in metrics),
                hlines=(HLine(0.0),),
                legend="right" if number == len(LOGIT_PANELS) else None,
                grid="y",
                tick_rotation=20,
                title_size=9,
            )
        )
    title = title or (
        f"Oracle logits, {model}: own thing, nearest same-class look-alike, background (mean of seeds, 95 % CI)"
    )
    return Chart(tuple(panels), title=title, size=(max(9.0, 3.2 * len(LOGIT_PANELS) + 0.25 * len(rows)), 3.8))


def oracle_logits_figure(results: StudyResults, model: str = "pfcn", *, title: str | None = None) -> Figure:
    """The static :func:`oracle_logits_chart`."""
    return render_matplotlib(oracle_logits_chart(results, model, title=title))


# ------------------------------------------------------------------------------ IBS pairs


def shared_class_figure(fractions: Mapping[str, np.ndarray]) -> Figure:
    """Mean fraction of IBS pairs sharing a thing class per sampler, 95 % CI over batches, batches as dots."""
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    for k, values in enumerate(fractions.values()):
        summary = metric_summary(values)
        mean = 100 * summary["mean"]
        low, high = (min(max(100 * v, 0.0), 100.0) for v in summary["ci95"])  # a fraction stays in [0, 100]
        ax.bar(k, mean, 0.6, color=PALETTE[k % len(PALETTE)], alpha=0.85)
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
