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

from ibs_study.study.results import metric_summary
from ibs_study.study.specs import row_variant

__all__ = [
    "ClaimCheck",
    "CLAIM_MEASURES",
    "per_seed_values",
    "paired_difference",
    "reproduction_checks",
    "claims_table",
]

# (metric, label, higher is better): the measures every claim is checked on.
CLAIM_MEASURES = (
    ("prec_th", "Prec^th", True),
    ("acc_th", "Acc^th", True),
    ("confusion_auc", "confusion curve (mean over T)", False),
    # end-to-end confusion in pixels: the share of predicted thing pixels on another GT instance
    ("pred_th_other_instance", "predicted thing pixels on other instances", False),
    ("oracle_leak", "oracle leak", False),
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


def per_seed_values(row: dict[str, Any], metric: str) -> dict[int, float] | None:
    """seed -> value of ``metric`` in a results row (``confusion_auc``: the mean of the seed's
    confusion curve over its thresholds); None when the row lacks it."""
    if metric == "confusion_auc":
        curve = row.get("confusion_curve")
        values = None if curve is None else [float(np.mean(c)) for c in curve["per_seed"]]
    else:
        values = row["metrics"][metric]["per_seed"] if metric in row["metrics"] else None
    return None if values is None else dict(zip(row["seeds"], values, strict=True))


def paired_difference(
    first: dict[str, Any], second: dict[str, Any], metric: str, sign: float = 1.0
) -> dict[str, Any] | None:
    """``sign * (second - first)`` of ``metric`` per seed both results rows have, summarised
    with :func:`metric_summary` plus ``seeds``; None when a row lacks the metric or they share
    no seed."""
    a, b = per_seed_values(first, metric), per_seed_values(second, metric)
    if a is None or b is None:
        return None
    seeds = [s for s in a if s in b]
    if not seeds:
        return None
    return {**metric_summary([sign * (b[s] - a[s]) for s in seeds]), "seeds": seeds}


def _paired(
    results: dict[str, Any], model: str, a: str, b: str, metric: str, sign: float, variant: str = ""
) -> dict | None:
    """:func:`paired_difference` of two settings of ``model``'s ``variant``; None when a row is absent."""
    rows = {r["setting"]: r for r in results["rows"] if r["model"] == model and row_variant(r) == variant}
    if a not in rows or b not in rows:
        return None
    return paired_difference(rows[a], rows[b], metric, sign)


def _verdict(difference: dict[str, Any], direction: bool) -> str:
    if not direction:
        return "no"
    return "yes" if difference["ci95"][0] > 0 else "direction only"


def reproduction_checks(results: dict[str, Any], model: str = "pfcn", variant: str = "") -> list[ClaimCheck]:
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
    for metric, label, higher in CLAIM_MEASURES:
        better = 1.0 if higher else -1.0
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
            reached = recovered is not None and recovered >= 0.5
            verdict = "no" if not reached else ("yes" if gain["ci95"][0] > 0 else "direction only")
            out.append(
                ClaimCheck(
                    "crop + IBS (paired) recovers at least half of the crop loss",
                    label,
                    gain,
                    recovered,
                    verdict,
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
                    "yes"
                    if paired["mean"] >= 0 and paired["ci95"][0] > 0
                    else "direction only"
                    if paired["mean"] >= 0
                    else "no",
                )
            )
    return out


def claims_table(results: dict[str, Any], model: str = "pfcn", variant: str = "") -> str:
    """:func:`reproduction_checks` as a Markdown table (differences in points; "seeds for": how
    many seeds' own differences support the claim, i.e. are above 0)."""
    lines = [
        "| claim | measure | difference, points (mean [95 % CI]; + supports the claim) | seeds for "
        "| recovered | holds |",
        "|---|---|---|---:|---:|---|",
    ]
    for check in reproduction_checks(results, model, variant):
        d = check.difference
        cell = f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
        seeds_for = f"{sum(v > 0 for v in d['per_seed'])} / {len(d['per_seed'])}"
        recovered = f"{100 * check.recovered:.0f} %" if check.recovered is not None else ""
        lines.append(
            f"| {check.claim} | {check.measure} | {cell} | {seeds_for} | {recovered} | {check.verdict} |"
        )
    return "\n".join(lines) + "\n"
