"""The Table 1-7 analogues of the study: which rows and metrics each shows, and how they print.

:data:`TABLES` holds the tables (Tables 1-4 of the paper, with its published numbers as
reference columns; 5-7 measured here only), :data:`METRIC_LABELS` the label of every study
metric, :func:`results_table` renders a table (Markdown or CSV) from a results JSON.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ibs_study.study.paper_reference import PAPER_INSTANCE, PAPER_PANOPTIC
from ibs_study.study.results import (
    GT_THING_PIXEL_METRICS,
    ORACLE_METRICS,
    ORACLE_THRESHOLD,
    PANOPTIC_METRICS,
    PRED_THING_PIXEL_METRICS,
    find_row,
)

__all__ = ["TABLES", "METRIC_LABELS", "format_measured", "results_table"]

# every setting of every model, for the tables that are not in the paper
ALL_SETTING_ROWS = [
    ("pfcn", "full", "Panoptic FCN, full image"),
    ("pfcn", "crop", "Panoptic FCN, crop"),
    ("pfcn", "crop_ibs_random", "Panoptic FCN, crop + IBS, random"),
    ("pfcn", "crop_ibs", "Panoptic FCN, crop + IBS, paired"),
    ("m2f", "crop", "Mask2Former, crop"),
    ("m2f", "crop_ibs", "Mask2Former, crop + IBS"),
    ("m2f_instance", "crop", "Mask2Former instance, crop"),
    ("m2f_instance", "crop_ibs", "Mask2Former instance, crop + IBS"),
]

# table -> (title, [(model, setting, label)], metrics, reference dataset, reference dict)
TABLES: dict[int, tuple[str, list[tuple[str, str, str]], tuple[str, ...], str, dict]] = {
    1: (
        "Full-image vs crop-based training (Panoptic FCN)",
        [("pfcn", "full", "Panoptic FCN, full image"), ("pfcn", "crop", "Panoptic FCN, crop")],
        PANOPTIC_METRICS,
        "cityscapes",
        PAPER_PANOPTIC,
    ),
    2: (
        "Main results: IBS on Panoptic FCN and Mask2Former",
        [
            ("pfcn", "crop", "Panoptic FCN"),
            ("pfcn", "crop_ibs", "Panoptic FCN + IBS"),
            ("m2f", "crop", "Mask2Former"),
            ("m2f", "crop_ibs", "Mask2Former + IBS"),
        ],
        PANOPTIC_METRICS,
        "cityscapes",
        PAPER_PANOPTIC,
    ),
    3: (
        "Ablations (Panoptic FCN): crop, IBS, sampling",
        [
            ("pfcn", "full", "no crop, no IBS, random"),
            ("pfcn", "crop", "crop, no IBS, random"),
            ("pfcn", "crop_ibs_random", "crop, IBS, random"),
            ("pfcn", "crop_ibs", "crop, IBS, paired (ours)"),
        ],
        PANOPTIC_METRICS,
        "vistas",
        PAPER_PANOPTIC,
    ),
    4: (
        "Instance segmentation (Mask2Former)",
        [("m2f_instance", "crop", "Mask2Former"), ("m2f_instance", "crop_ibs", "Mask2Former + IBS")],
        ("ap", "ap_s", "ap_m", "ap_l", "acc_th", "prec_th"),
        "vistas",
        PAPER_INSTANCE,
    ),
    5: (
        "Oracle-embedding confusion (not in the paper)",
        ALL_SETTING_ROWS,
        ORACLE_METRICS,
        None,
        {},
    ),
    6: (
        "Where the ground-truth thing pixels go (not in the paper)",
        ALL_SETTING_ROWS,
        GT_THING_PIXEL_METRICS,
        None,
        {},
    ),
    7: (
        "Where the predicted thing pixels lie (not in the paper)",
        ALL_SETTING_ROWS,
        PRED_THING_PIXEL_METRICS,
        None,
        {},
    ),
}

METRIC_LABELS = {
    "pq": "PQ", "pq_th": "PQ^th", "pq_st": "PQ^st", "acc_th": "Acc^th", "prec_th": "Prec^th",
    "ap": "AP", "ap50": "AP50", "ap75": "AP75", "ap_s": "AP^S", "ap_m": "AP^M", "ap_l": "AP^L",
    "oracle_leak": "leak", "oracle_own_coverage": "own cov.",
    "oracle_confused": f"confused@{ORACLE_THRESHOLD}", "confusion_auc": "confusion curve (mean over T)",
    "gt_th_matched": "matched (Acc^th)", "gt_th_other_instance": "other instance's mask",
    "gt_th_unmatched_own": "own mask, unmatched", "gt_th_stuff": "stuff", "gt_th_unlabelled": "unlabelled",
    "pred_th_matched": "matched (Prec^th)", "pred_th_other_instance": "on another instance",
    "pred_th_unmatched_own": "own, unmatched", "pred_th_stuff": "on stuff",
    "logit_own": "logit on own thing", "logit_lookalike": "logit on look-alike",
    "logit_background": "logit on background", "logit_gap": "own - look-alike logit",
    "logit_gap_per_norm": "(own - look-alike) / ‖E‖", "logit_bias_own": "bias part on own thing",
    "logit_bias_lookalike": "bias part on look-alike", "logit_bias_background": "bias part on background",
    "embedding_norm": "embedding norm ‖E‖",
}  # fmt: skip


def format_measured(summary: dict[str, Any]) -> str:
    """``mean ± half-width`` in percent, one decimal (``mean`` alone for one seed)."""
    mean = 100 * summary["mean"]
    half = 100 * (summary["ci95"][1] - summary["ci95"][0]) / 2
    return f"{mean:.1f} ± {half:.1f}" if len(summary["per_seed"]) > 1 else f"{mean:.1f}"


def results_table(results: dict[str, Any], table: int, fmt: str = "markdown") -> str:
    """Table ``table`` (1-4) analogue: measured mean ± 95 % CI half-width (percent) over seeds,
    then the paper's numbers on real data in separate columns headed ``paper (<dataset>)``.
    Tables 5-7 (oracle-embedding confusion, where the thing pixels go) have no paper counterpart
    and no paper columns. Rows absent from ``results``, or holding none of the table's metrics
    (results collected before a metric existed), are left out."""
    title, rows, metrics, dataset, reference = TABLES[table]
    header = ["Setting"] + [METRIC_LABELS[m] for m in metrics]
    if dataset is not None:
        header += [f"paper ({dataset}) {METRIC_LABELS[m]}" for m in metrics]
    body = []
    for model, setting, label in rows:
        row = find_row(results, model, setting)
        if row is None or not any(m in row["metrics"] for m in metrics):
            continue
        measured = [format_measured(row["metrics"][m]) if m in row["metrics"] else "–" for m in metrics]
        ref = reference.get((dataset, model, setting), {})
        paper = [f"{ref[m]:.1f}" if m in ref else "–" for m in metrics] if dataset is not None else []
        body.append([label, *measured, *paper])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()
    seeds = results["rows"][0]["seeds"] if results["rows"] else []
    scope = f"synthetic, {results['scale']} scale; measured: mean ± 95 % CI half-width over seeds {seeds}, percent"
    lines = [
        f"**Table {table} analogue: {title}** ({scope}; paper columns: published numbers on real {dataset}, "
        "for reference)"
        if dataset is not None
        else f"**{title}** ({scope})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"
