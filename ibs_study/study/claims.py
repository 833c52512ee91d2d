"""The paper's claims checked on a study's results, on seed-paired differences.

:func:`paired_difference` is ``second - first`` of one metric per seed two results rows share,
summarised with a Student-t interval; :func:`reproduction_checks` checks the claims of the
paper's Table 1, Table 3 and Fig. 5 with it (each verdict from :func:`_verdict`), and
:func:`claims_table` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ibs_study.study.results import ResultRow, StudyResults, metric_summary
from ibs_study.study.tables import METRIC_LABELS

__all__ = [
    "ClaimCheck",
    "ClaimMeasure",
    "CLAIM_MEASURES",
    "per_seed_values",
    "paired_difference",
    "reproduction_checks",
    "format_difference",
    "seeds_above_zero",
    "claims_table",
]


@dataclass(frozen=True)
class ClaimMeasure:
    """A measure the claims are checked on: a study metric, which way is better, and its label in
    the claims table (default: :data:`~ibs_study.study.tables.METRIC_LABELS`)."""

    metric: str
    higher_is_better: bool
    label_text: str | None = None

    @property
    def label(self) -> str:
        return self.label_text or METRIC_LABELS[self.metric]


# the measures every claim is checked on
CLAIM_MEASURES = (
    ClaimMeasure("prec_th", higher_is_better=True),
    ClaimMeasure("acc_th", higher_is_better=True),
    ClaimMeasure("confusion_auc", higher_is_better=False),
    # end-to-end confusion in pixels: the share of predicted thing pixels on another GT instance
    ClaimMeasure(
        "pred_th_other_instance",
        higher_is_better=False,
        label_text="predicted thing pixels on other instances",
    ),
    ClaimMeasure("oracle_leak", higher_is_better=False, label_text="oracle leak"),
)


@dataclass(frozen=True)
class ClaimCheck:
    """One of the paper's claims checked on one measure of a ``synthetic_results.json``.

    Attributes:
        claim: the claim in words.
        measure: the measure's label.
        difference: the seed-paired difference the claim is about (fractions):
            ``{"mean", "ci95", "per_seed"}``, signed so that positive supports the claim.
        recovered: for the recovery claim, (IBS - crop) / (full - crop) of the means.
        verdict: ``yes`` (supported beyond the 95 % interval), ``direction only`` (the means
            agree, the interval includes 0 or, for recovery, the share is reached only by the
            means) or ``no``.
    """

    claim: str
    measure: str
    difference: dict[str, Any]
    recovered: float | None
    verdict: str


def per_seed_values(row: ResultRow, metric: str) -> dict[int, float] | None:
    """seed -> value of ``metric`` in a results row (``confusion_auc``: the mean of the seed's
    confusion curve over its thresholds); None when the row lacks it."""
    if metric == "confusion_auc":
        curve = row.confusion_curve
        values = None if curve is None else [float(np.mean(c)) for c in curve.per_seed]
    else:
        values = row.metrics[metric].per_seed if metric in row.metrics else None
    return None if values is None else dict(zip(row.seeds, values, strict=True))


def paired_difference(
    first: ResultRow, second: ResultRow, metric: str, sign: float = 1.0
) -> dict[str, Any] | None:
    """``sign * (second - first)`` of ``metric`` per seed both results rows have, summarised
    with :func:`~ibs_study.study.results.metric_summary` (``{"mean", "ci95", "per_seed"}``) plus
    ``seeds``; None when a row lacks the metric or they share no seed."""
    a, b = per_seed_values(first, metric), per_seed_values(second, metric)
    if a is None or b is None:
        return None
    seeds = [s for s in a if s in b]
    if not seeds:
        return None
    return {**metric_summary([sign * (b[s] - a[s]) for s in seeds]), "seeds": seeds}


def _paired(
    results: StudyResults, model: str, a: str, b: str, metric: str, sign: float, variant: str = ""
) -> dict | None:
    """:func:`paired_difference` of two settings of ``model``'s ``variant``; None when a row is absent."""
    first, second = results.find_row(model, a, variant), results.find_row(model, b, variant)
    if first is None or second is None:
        return None
    return paired_difference(first, second, metric, sign)


def _verdict(difference: dict[str, Any], direction: bool) -> str:
    """``yes``: ``direction`` holds and the difference's 95 % interval lies above 0; ``direction
    only``: it holds, the interval includes 0; ``no``: it does not hold."""
    if not direction:
        return "no"
    return "yes" if difference["ci95"][0] > 0 else "direction only"


def reproduction_checks(results: StudyResults, model: str = "pfcn", variant: str = "") -> list[ClaimCheck]:
    """The claims of the paper's Table 1, Table 3 and Fig. 5, checked on ``model``'s rows (those
    of ``variant``; "" the study's own).

    1. crop training is worse than full-image training (Table 1: lower Prec^th);
    2. crop + IBS (paired sampler) recovers at least half of that loss (Tables 1-3);
    3. the paired sampler is at least as good as random pairs (Table 3).

    Each is checked on every measure of :data:`CLAIM_MEASURES` the rows carry: on the
    confusion curve's mean over thresholds, claims 1 and 2 are the ordering of Fig. 5 (crop
    above full image, IBS below crop). Differences are paired by seed (same initialisation
    and data order) with Student-t intervals.
    """
    out = []
    for measure in CLAIM_MEASURES:
        metric, label = measure.metric, measure.label
        better = 1.0 if measure.higher_is_better else -1.0
        crop_loss = _paired(results, model, "crop", "full", metric, better, variant)  # + : crop is worse
        if crop_loss is not None:
            out.append(
                ClaimCheck(
                    "crop training is worse than full-image training",
                    label,
                    crop_loss,
                    None,
                    _verdict(crop_loss, crop_loss["mean"] > 0),
                )
            )
        gain = _paired(results, model, "crop", "crop_ibs", metric, better, variant)  # + : IBS is better
        if gain is not None and crop_loss is not None:
            recovered = gain["mean"] / crop_loss["mean"] if crop_loss["mean"] > 0 else None
            out.append(
                ClaimCheck(
                    "crop + IBS (paired) recovers at least half of the crop loss",
                    label,
                    gain,
                    recovered,
                    _verdict(gain, recovered is not None and recovered >= 0.5),
                )
            )
        paired = _paired(results, model, "crop_ibs_random", "crop_ibs", metric, better, variant)
        if paired is not None:
            out.append(
                ClaimCheck(
                    "paired sampler at least as good as random pairs",
                    label,
                    paired,
                    None,
                    _verdict(paired, paired["mean"] >= 0),
                )
            )
    return out


def format_difference(difference: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean [low, high]`` of a :func:`paired_difference` (its 95 % interval), signed, times
    ``scale`` (100: points; 1: logits as they are), ``digits`` decimals."""
    low, high = difference["ci95"]
    return f"{scale * difference['mean']:+.{digits}f} [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"


def seeds_above_zero(difference: dict[str, Any]) -> str:
    """``k / n``: how many of the ``n`` seeds' own differences are above 0."""
    return f"{sum(v > 0 for v in difference['per_seed'])} / {len(difference['per_seed'])}"


def claims_table(results: StudyResults, model: str = "pfcn", variant: str = "") -> str:
    """:func:`reproduction_checks` as a Markdown table (differences in points; "seeds for": how
    many seeds' own differences support the claim, i.e. are above 0)."""
    lines = [
        "| claim | measure | difference, points (mean [95 % CI]; + supports the claim) | seeds for "
        "| recovered | holds |",
        "|---|---|---|---:|---:|---|",
    ]
    for check in reproduction_checks(results, model, variant):
        cell = format_difference(check.difference)
        seeds_for = seeds_above_zero(check.difference)
        recovered = f"{100 * check.recovered:.0f} %" if check.recovered is not None else ""
        lines.append(
            f"| {check.claim} | {check.measure} | {cell} | {seeds_for} | {recovered} | {check.verdict} |"
        )
    return "\n".join(lines) + "\n"
