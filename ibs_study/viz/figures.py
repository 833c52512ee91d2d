"""Figures of the library's own data: confusion curves, problem analysis, the IBS walkthrough, training.

Figure kinds drawn both statically and interactively are charts (:mod:`ibs_study.viz.chart`):
``*_chart`` builds the description once, :func:`~ibs_study.viz.chart.render_matplotlib` and
:func:`~ibs_study.viz.chart.render_plotly` draw it, and ``*_figure`` is its static rendering.
The others are matplotlib figures made without pyplot (nothing global, works headless; in a
notebook run ``%matplotlib inline`` once and the figure displays as a cell result). Percent
axes: metrics are stored as fractions and drawn in percent. The figures built from the study's
results (tables, sweeps, oracle logits) are in :mod:`ibs_study.study.figures`.

* :func:`confusion_curve_chart` / :func:`confusion_curve_figure`: Fig. 5, the ratio of
  predicted thing segments that cover more than T of at least two GT thing segments, per
  training setting, with a 95 % band over seeds where there are several;
* problem analysis (:mod:`ibs_study.study.analysis`): :func:`instance_count_figure` (Fig. 3),
  :func:`segment_size_figure`, :func:`merge_sweep_chart` / :func:`merge_sweep_figure`;
* IBS step by step (:mod:`ibs_study.study.walkthrough`, Fig. 4): :func:`crops_figure`,
  :func:`cross_crop_figure`, :func:`ibs_trace_figure`;
* training: :func:`loss_curves_figure` (the IBS term in its own panel) and :class:`LiveFigure`
  (redraws a figure in one notebook output while a run trains);
* :func:`save_figure`: PNG / SVG and HTML files of a chart or figure, the same bytes each time.
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
from ibs_study.viz.chart import PALETTE, Chart, Line, Panel, render_matplotlib, render_plotly
from ibs_study.viz.panoptic import segment_boundaries

logger = logging.getLogger(__name__)

__all__ = [
    "CurveSeries",
    "SETTING_STYLE",
    "confusion_curve_chart",
    "confusion_curve_figure",
    "series_from_metrics",
    "instance_count_figure",
    "segment_size_figure",
    "merge_sweep_chart",
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


def _figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, layout="constrained")


# ------------------------------------------------------------------------- Fig. 5 confusion


@dataclass(frozen=True)
class CurveSeries:
    """One confusion curve: thresholds T (fractions), mean ratio, optional (low, high) band;
    no colour: the palette's colour of its place."""

    label: str
    thresholds: Sequence[float]
    ratio: Sequence[float]
    band: tuple[Sequence[float], Sequence[float]] | None = None
    color: str | None = None
    linestyle: str = "-"


def confusion_curve_chart(
    series: Sequence[CurveSeries],
    *,
    title: str = "Confusion (Fig. 5 analogue)",
    ylabel: str = "confused predicted things (%)",
    size: tuple[float, float] = (5.5, 3.6),
) -> Chart:
    """Ratio of confused predicted thing segments (or, with another ``ylabel``, of any masks)
    against the overlap threshold T (percent axes), bands clipped to [0, 100] %."""
    lines = []
    for k, s in enumerate(series):
        band = None
        if s.band is not None:  # a ratio lies in [0, 100] %, whatever the t interval says
            band = tuple(np.clip(100 * np.asarray(b, dtype=float), 0, 100).tolist() for b in s.band)
        t = [100 * v for v in s.thresholds]
        color = s.color or PALETTE[k % len(PALETTE)]
        lines.append(Line(s.label, t, [100 * v for v in s.ratio], color, s.linestyle, band=band))
    thresholds = [x for line in lines for x in line.x] or [0.0, 100.0]
    panel = Panel(
        title=title,
        xlabel="overlap threshold T (% of the GT segment's area)",
        ylabel=ylabel,
        lines=tuple(lines),
        xlim=(min(thresholds), max(thresholds)),
        ylim=(0, None),
    )
    return Chart((panel,), size=size)


def confusion_curve_figure(series: Sequence[CurveSeries], **options: Any) -> Figure:
    """The static :func:`confusion_curve_chart` (same options)."""
    return render_matplotlib(confusion_curve_chart(series, **options))


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


# ----------------------------------------------------------------------- problem analysis


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


def merge_sweep_chart(outcomes: Sequence[Any]) -> Chart:
    """PQ, PQ^th, Acc^th and Prec^th (percent) against the number of instances one prediction merges.

    Args:
        outcomes: :func:`ibs_study.study.analysis.merge_sweep` output.
    """
    rows = [o.row() for o in outcomes]
    ks = [r["num_merged"] for r in rows]
    acc, prec = ([100 * r[m] for r in rows] for m in ("acc_th", "prec_th"))
    lines = [
        Line("PQ", ks, [100 * r["pq"] for r in rows], PALETTE[0], marker="o", width=1.5),
        Line("PQ^th", ks, [100 * r["pq_th"] for r in rows], PALETTE[1], marker="o", width=1.5),
    ]
    if np.allclose(acc, prec):  # the merged prediction covers exactly the GT thing pixels
        lines.append(Line("Acc^th = Prec^th", ks, acc, PALETTE[3], "--", "s", 1.5))
    else:
        lines.append(Line("Acc^th", ks, acc, PALETTE[2], "--", "s", 1.5))
        lines.append(Line("Prec^th", ks, prec, PALETTE[3], "--", "s", 1.5))
    panel = Panel(
        title="Ground truth as prediction, one segment merging k instances",
        xlabel=f"largest {rows[0]['category'] if rows else ''} instances covered by one predicted segment",
        ylabel="percent",
        lines=tuple(lines),
        xticks=(ks, [str(k) for k in ks]),
    )
    return Chart((panel,))


def merge_sweep_figure(outcomes: Sequence[Any]) -> Figure:
    """The static :func:`merge_sweep_chart`."""
    return render_matplotlib(merge_sweep_chart(outcomes))


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
            color = PALETTE[k % len(PALETTE)]
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
        left.plot(steps, log[name], color=PALETTE[k % len(PALETTE)], lw=1.2, label=name.removeprefix("loss_"))
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
    fig: Chart | Figure | go.Figure,
    stem: str | os.PathLike,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
    plotlyjs: bool | str = True,
) -> list[Path]:
    """Write ``stem.<format>`` for each format: a chart in every format it is asked for (PNG / SVG
    / PDF drawn by matplotlib, ``html`` by plotly), a matplotlib figure as PNG / SVG / PDF, a
    plotly figure as one HTML page whatever ``formats`` says. ``plotlyjs``: True embeds
    plotly.js (a standalone page that works offline); a path ending in ``.js`` loads it from
    there, relative to the page (a folder of many pages shares one copy). The files are
    reproducible: the same figure gives the same bytes (no date, element ids derived from the
    file name), so regenerated figures only differ where the content does. Returns the paths
    written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, go.Figure):
        formats = ("html",)
    paths = []
    static = None
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            page = render_plotly(fig) if isinstance(fig, Chart) else fig
            if not isinstance(page, go.Figure):
                raise ValueError(f"{path}: a matplotlib figure has no HTML page; save a chart for one")
            page.write_html(path, include_plotlyjs=plotlyjs, full_html=True, div_id=stem.name)
        else:
            static = static or (render_matplotlib(fig) if isinstance(fig, Chart) else fig)
            with matplotlib.rc_context({"svg.hashsalt": stem.name}):
                static.savefig(path, dpi=dpi, metadata={"Date": None} if fmt in ("svg", "pdf") else None)
        paths.append(path)
    return paths
