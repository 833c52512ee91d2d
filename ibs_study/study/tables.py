"""The Table 1-7 analogues of the study: which rows and metrics each shows, and how they print.

:data:`TABLES` holds the tables (Tables 1-4 of the paper, with its published numbers as
reference columns; 5-7 measured here only), :data:`METRIC_LABELS` the label of every study
metric, :func:`results_table` renders a table (Markdown or CSV) from a results JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field

from ibs_study.study.paper_reference import PAPER_INSTANCE, PAPER_PANOPTIC
from ibs_study.study.results import (
    GT_THING_PIXEL_METRICS,
    ORACLE_METRICS,
    ORACLE_THRESHOLD,
    PANOPTIC_METRICS,
    PRED_THING_PIXEL_METRICS,
    StudyResults,
    Summary,
)

__all__ = [
    "Table",
    "TableRow",
    "TABLES",
    "ALL_SETTING_ROWS",
    "METRIC_LABELS",
    "format_measured",
    "results_table",
]


@dataclass(frozen=True)
class TableRow:
    """A row of a table: the study's own row (no variant) of ``model`` and ``setting``, as ``label``."""

    model: str
    setting: str
    label: str


@dataclass(frozen=True)
class Table:
    """One table of the study.

    Attributes:
        title: what it compares (the paper's tables are headed ``Table n analogue: <title>``).
        rows: its rows, in order.
        metrics: its columns, study metric names.
        dataset: for the paper's Tables 1-4, the dataset whose published numbers ``reference``
            holds; None for the tables not in the paper (no reference columns).
        reference: (dataset, model, setting) -> metric -> the paper's number, in percent.
    """

    title: str
    rows: tuple[TableRow, ...]
    metrics: tuple[str, ...]
    dataset: str | None = None
    reference: Mapping[tuple[str, str, str], Mapping[str, float]] = field(default_factory=dict)


# every setting of every model, for the tables that are not in the paper
ALL_SETTING_ROWS = (
    TableRow("pfcn", "full", "Panoptic FCN, full image"),
    TableRow("pfcn", "crop", "Panoptic FCN, crop"),
    TableRow("pfcn", "crop_ibs_random", "Panoptic FCN, crop + IBS, random"),
    TableRow("pfcn", "crop_ibs", "Panoptic FCN, crop + IBS, paired"),
    TableRow("m2f", "crop", "Mask2Former, crop"),
    TableRow("m2f", "crop_ibs", "Mask2Former, crop + IBS"),
    TableRow("m2f_instance", "crop", "Mask2Former instance, crop"),
    TableRow("m2f_instance", "crop_ibs", "Mask2Former instance, crop + IBS"),
)


def _panoptic(title: str, dataset: str, *rows: TableRow) -> Table:
    """A table of the paper's panoptic results: :data:`PANOPTIC_METRICS`, its numbers on ``dataset``."""
    return Table(title, rows, PANOPTIC_METRICS, dataset, PAPER_PANOPTIC)


def _not_in_paper(title: str, metrics: tuple[str, ...]) -> Table:
    """A table measured here only: every setting of every model, no reference columns."""
    return Table(f"{title} (not in the paper)", ALL_SETTING_ROWS, metrics)


TABLES: dict[int, Table] = {
    1: _panoptic(
        "Full-image vs crop-based training (Panoptic FCN)",
        "cityscapes",
        TableRow("pfcn", "full", "Panoptic FCN, full image"),
        TableRow("pfcn", "crop", "Panoptic FCN, crop"),
    ),
    2: _panoptic(
        "Main results: IBS on Panoptic FCN and Mask2Former",
        "cityscapes",
        TableRow("pfcn", "crop", "Panoptic FCN"),
        TableRow("pfcn", "crop_ibs", "Panoptic FCN + IBS"),
        TableRow("m2f", "crop", "Mask2Former"),
        TableRow("m2f", "crop_ibs", "Mask2Former + IBS"),
    ),
    3: _panoptic(
        "Ablations (Panoptic FCN): crop, IBS, sampling",
        "vistas",
        TableRow("pfcn", "full", "no crop, no IBS, random"),
        TableRow("pfcn", "crop", "crop, no IBS, random"),
        TableRow("pfcn", "crop_ibs_random", "crop, IBS, random"),
        TableRow("pfcn", "crop_ibs", "crop, IBS, paired (ours)"),
    ),
    4: Table(
        title="Instance segmentation (Mask2Former)",
        rows=(
            TableRow("m2f_instance", "crop", "Mask2Former"),
            TableRow("m2f_instance", "crop_ibs", "Mask2Former + IBS"),
        ),
        metrics=("ap", "ap_s", "ap_m", "ap_l", "acc_th", "prec_th"),
        dataset="vistas",
        reference=PAPER_INSTANCE,
    ),
    5: _not_in_paper("Oracle-embedding confusion", ORACLE_METRICS),
    6: _not_in_paper("Where the ground-truth thing pixels go", GT_THING_PIXEL_METRICS),
    7: _not_in_paper("Where the predicted thing pixels lie", PRED_THING_PIXEL_METRICS),
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


def format_measured(summary: Summary) -> str:
    """``mean ± half-width`` in percent, one decimal (``mean`` alone for one seed)."""
    mean = 100 * summary.mean
    half = 100 * (summary.ci95[1] - summary.ci95[0]) / 2
    return f"{mean:.1f} ± {half:.1f}" if len(summary.per_seed) > 1 else f"{mean:.1f}"


def results_table(results: StudyResults, table: int, fmt: str = "markdown") -> str:
    """Table ``table`` (1-4) analogue: measured mean ± 95 % CI half-width (percent) over seeds,
    then the paper's numbers on real data in separate columns headed ``paper (<dataset>)``.
    Tables 5-7 (oracle-embedding confusion, where the thing pixels go) have no paper counterpart
    and no paper columns. Rows absent from ``results``, or holding none of the table's metrics
    (results collected before a metric existed), are left out."""
    spec = TABLES[table]
    header = ["Setting"] + [METRIC_LABELS[m] for m in spec.metrics]
    if spec.dataset is not None:
        header += [f"paper ({spec.dataset}) {METRIC_LABELS[m]}" for m in spec.metrics]
    body = []
    for table_row in spec.rows:
        row = results.find_row(table_row.model, table_row.setting)
        if row is None or not any(m in row.metrics for m in spec.metrics):
            continue
        measured = [format_measured(row.metrics[m]) if m in row.metrics else "–" for m in spec.metrics]
        paper = []
        if spec.dataset is not None:
            ref = spec.reference.get((spec.dataset, table_row.model, table_row.setting), {})
            paper = [f"{ref[m]:.1f}" if m in ref else "–" for m in spec.metrics]
        body.append([table_row.label, *measured, *paper])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()
    seeds = list(results.rows[0].seeds) if results.rows else []
    scope = (
        f"synthetic, {results.scale} scale; measured: mean ± 95 % CI half-width over seeds {seeds}, percent"
    )
    lines = [
        f"**Table {table} analogue: {spec.title}** ({scope}; paper columns: published numbers on real "
        f"{spec.dataset}, for reference)"
        if spec.dataset is not None
        else f"**{spec.title}** ({scope})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"
