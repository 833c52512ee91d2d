"""Figure builders for the study's results (matplotlib; every builder returns a Figure).

* :func:`confusion_curve_figure`: the paper's Fig. 5 analogue — the ratio of predicted thing
  segments that cover more than T of at least two GT thing segments, per training setting,
  with a 95 % confidence band over seeds when there are several.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "CurveSeries",
    "confusion_curve_figure",
    "series_from_metrics",
    "series_from_results",
    "SETTING_STYLE",
]

# setting -> (label, colour, line style); colours follow the paper's Fig. 5 order
SETTING_STYLE: dict[str, tuple[str, str, str]] = {
    "full": ("full image", "#2b8cbe", "-"),
    "crop": ("crop", "#e34a33", "-"),
    "crop_ibs_random": ("crop + IBS (random pairs)", "#fdae6b", "--"),
    "crop_ibs": ("crop + IBS (paired sampler)", "#31a354", "-"),
}


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
) -> Figure:
    """Ratio of confused predicted thing segments against the overlap threshold T (percent axes)."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    for s in series:
        t = 100 * np.asarray(s.thresholds, dtype=float)
        (line,) = ax.plot(
            t, 100 * np.asarray(s.ratio, dtype=float), s.linestyle, color=s.color, label=s.label, lw=1.8
        )
        if s.band is not None:
            low, high = (100 * np.asarray(b, dtype=float) for b in s.band)
            ax.fill_between(t, low, high, color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel("overlap threshold T (% of the GT segment's area)")
    ax.set_ylabel("confused predicted things (%)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(t.min() if series else 0, t.max() if series else 100)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def series_from_metrics(
    metrics: Mapping[str, Mapping], styles: Mapping[str, tuple[str, str, str]] = SETTING_STYLE
):
    """One :class:`CurveSeries` per ``{setting: metrics.json}`` entry (single runs, no band)."""
    out = []
    for setting, m in metrics.items():
        label, color, linestyle = styles.get(setting, (setting, None, "-"))
        curve = m["confusion_curve"]
        out.append(CurveSeries(label, curve["thresholds"], curve["ratio"], color=color, linestyle=linestyle))
    return out


def series_from_results(
    results: Mapping, model: str, styles: Mapping[str, tuple[str, str, str]] = SETTING_STYLE
):
    """One :class:`CurveSeries` per row of ``model`` in a ``synthetic_results.json``, with its 95 % band."""
    out = []
    for row in results["rows"]:
        if row["model"] != model or "confusion_curve" not in row:
            continue
        label, color, linestyle = styles.get(row["setting"], (row["setting"], None, "-"))
        curve = row["confusion_curve"]
        band = None
        if len(row["seeds"]) > 1:
            band = ([lo for lo, _ in curve["ci95"]], [hi for _, hi in curve["ci95"]])
        out.append(CurveSeries(label, curve["thresholds"], curve["mean"], band, color, linestyle))
    return out
