"""Follow-up studies: named sets of study rows and variants, run and summarised in one call.

A follow-up is a list of :class:`~ibs_study.study.specs.StudyRow` s (the study's own rows, which
are reused where their runs exist, and *variant* rows that add overrides to a preset) and
the seed-paired comparisons it was made for. :func:`run_followup` trains and evaluates
every (row, seed) with :func:`~ibs_study.study.runs.run_study` (finished runs are only read),
measures the oracle confusion and the oracle logits (:mod:`ibs_study.study.oracle`) of
each run, and :func:`write_followup` writes into one folder, replaced as a whole:

* ``index.md``: the question, the provenance, links to the tables and the figures;
* ``synthetic_results.json``: the study's schema, each row with its ``variant``;
* ``rows.md`` and ``logits.md``: every row's means with 95 % intervals;
* ``comparisons.md``: what the follow-up asks, then its seed-paired differences (Student-t 95 %
  intervals);
* ``claims_pfcn.md`` and ``claims_pfcn_<variant>.md``: the paper's claims checked on the
  study's rows and on each variant that has the full, crop and crop + IBS rows;
* ``fig5_confusion_pfcn``, ``fig5_oracle_pfcn`` (confusion curves, a panel per variant) and
  ``fig_oracle_logits`` (:func:`~ibs_study.study.figures.oracle_logits_chart`).

:data:`FOLLOWUPS` holds the follow-ups by name; ``ibs-study followup NAME`` runs one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ibs_study.atomic import atomic_folder, write_text_atomic
from ibs_study.errors import ConfigError
from ibs_study.study.claims import claims_table, format_difference, paired_difference, seeds_above_zero
from ibs_study.study.oracle import LOGIT_METRICS
from ibs_study.study.results import StudyResults, save_results
from ibs_study.study.specs import StudyRow, study_rows, variants_of
from ibs_study.study.tables import METRIC_LABELS, format_measured

__all__ = [
    "Comparison",
    "FollowUp",
    "FOLLOWUPS",
    "SIGNED_FEATURES",
    "OFFICIAL_OPTIMIZER_OVERRIDES",
    "scaled_warmup",
    "rows_table",
    "comparisons_table",
    "run_followup",
    "write_followup",
    "index_page",
]

# the measures of rows.md and comparisons.md (fractions, shown in percent), then the logits
ROW_METRICS = (
    "pq",
    "pq_th",
    "acc_th",
    "prec_th",
    "pred_th_other_instance",
    "gt_th_unlabelled",
    "oracle_leak",
    "oracle_own_coverage",
)
COMPARISON_METRICS = (*ROW_METRICS, *LOGIT_METRICS)
# the confusion-curve figures, named <stem>_<model>
FIGURE_STEMS = ("fig5_confusion", "fig5_oracle")


def scaled_warmup(official_warmup: int, official_steps: int, steps: int) -> int:
    """The warm-up that takes the same share of a ``steps`` budget as ``official_warmup`` of
    ``official_steps`` (rounded to whole steps, at least 1)."""
    return max(1, round(official_warmup * steps / official_steps))


# The official Panoptic FCN Cityscapes optimiser (PanopticFCN-IBS configs: SGD momentum 0.9, lr 0.02,
# weight decay 1e-4, poly 0.9, clip by value 5, 1000 warm-up iterations of 65k from 0.001 x lr),
# on the synthetic study's budget of 2,000 steps: the warm-up keeps its share of the schedule,
# 1000 / 65000 x 2000 = 30.8 -> 31 steps; the learning rate is the official one (not rescaled to
# the batch of 8 crops instead of 32).
OFFICIAL_OPTIMIZER_OVERRIDES = (
    "optimizer.name=sgd",
    "optimizer.lr=0.02",
    "optimizer.momentum=0.9",
    "optimizer.weight_decay=0.0001",
    "optimizer.poly_power=0.9",
    f"optimizer.warmup_steps={scaled_warmup(1000, 65000, 2000)}",
    "optimizer.warmup_factor=0.001",
    "optimizer.clip=value",
    "optimizer.clip_value=5.0",
)


@dataclass(frozen=True)
class Comparison:
    """``other - baseline`` of two rows, each given as ``(setting, variant)`` of one model.

    Attributes:
        label: what the difference measures, in words.
        baseline, other: ``(setting, variant)``; variant "" is the study's own row.
        loss: optional ``(crop, full)`` rows whose difference ``full - crop`` is the crop loss the
            comparison is read against: the table then gives the share of it recovered,
            difference / loss (of the means), for the fraction metrics.
    """

    label: str
    baseline: tuple[str, str]
    other: tuple[str, str]
    loss: tuple[tuple[str, str], tuple[str, str]] | None = None


@dataclass(frozen=True)
class FollowUp:
    """A named follow-up: what it asks (``description``, heading its ``comparisons.md``), its rows
    (model ``model``) and the comparisons it was made for."""

    name: str
    description: str
    model: str
    rows: tuple[StudyRow, ...]
    comparisons: tuple[Comparison, ...]

    def variants(self) -> list[str]:
        """The variants of its rows, in order, without the study's own ("")."""
        return variants_of(self.rows)


def _variant_rows(settings: Sequence[str], variant: str, overrides: Sequence[str]) -> list[StudyRow]:
    """The cpu-scale Panoptic FCN rows of ``settings`` as ``variant`` with ``overrides``."""
    by_setting = {row.setting: row for row in study_rows("cpu", ["pfcn"])}
    return [
        StudyRow("pfcn", setting, by_setting[setting].preset, variant, tuple(overrides))
        for setting in settings
    ]


_OFFICIAL_CROP_LOSS = (("crop", ""), ("full", ""))
_SIGNED_CROP_LOSS = (("crop", "signed_features"), ("full", "signed_features"))

SIGNED_FEATURES = FollowUp(
    name="signed_features",
    description=(
        "Why IBS costs Panoptic FCN detection: ReLU features F >= 0 let the IBS term lower every thing logit "
        "(projection bias, embedding norm). Signed features (no ReLU after the feature encoder), the IBS "
        "term kept off the projection bias, and the official SGD optimiser, against the study's rows."
    ),
    model="pfcn",
    rows=(
        *[row for row in study_rows("cpu", ["pfcn"]) if row.setting in ("full", "crop", "crop_ibs")],
        *_variant_rows(
            ("full", "crop", "crop_ibs"), "signed_features", ["model.panoptic_fcn.feature_activation=none"]
        ),
        *_variant_rows(("crop_ibs",), "detach_bias", ["ibs.detach_bias=true"]),
        *_variant_rows(("crop", "crop_ibs"), "official_optimizer", OFFICIAL_OPTIMIZER_OVERRIDES),
    ),
    comparisons=(
        Comparison("IBS, ReLU features (the study)", ("crop", ""), ("crop_ibs", ""), _OFFICIAL_CROP_LOSS),
        Comparison(
            "IBS, signed features",
            ("crop", "signed_features"),
            ("crop_ibs", "signed_features"),
            _SIGNED_CROP_LOSS,
        ),
        Comparison(
            "IBS with the bias detached, ReLU features",
            ("crop", ""),
            ("crop_ibs", "detach_bias"),
            _OFFICIAL_CROP_LOSS,
        ),
        Comparison(
            "IBS, official optimiser (SGD, warm-up, clip 5)",
            ("crop", "official_optimizer"),
            ("crop_ibs", "official_optimizer"),
        ),
        Comparison("crop + IBS: bias detached vs not", ("crop_ibs", ""), ("crop_ibs", "detach_bias")),
        Comparison("crop + IBS: signed vs ReLU features", ("crop_ibs", ""), ("crop_ibs", "signed_features")),
        Comparison("crop: signed vs ReLU features", ("crop", ""), ("crop", "signed_features")),
        Comparison("full image: signed vs ReLU features", ("full", ""), ("full", "signed_features")),
        Comparison("crop: official optimiser vs AdamW", ("crop", ""), ("crop", "official_optimizer")),
    ),
)

FOLLOWUPS: dict[str, FollowUp] = {SIGNED_FEATURES.name: SIGNED_FEATURES}


# --------------------------------------------------------------------------------- tables


def _scale(metric: str) -> float:
    """Fractions in percent (points), logits as they are."""
    return 1.0 if metric in LOGIT_METRICS else 100.0


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric) + (" (logit)" if metric.startswith("logit_") else "")


def rows_table(results: StudyResults, metrics: Sequence[str], model: str = "pfcn") -> str:
    """Markdown: every row of ``model`` (variants included) with each metric's mean ± 95 % CI
    half-width over seeds (fractions in percent, logits as they are; "–" where absent)."""
    lines = [
        "| setting | variant | seeds | " + " | ".join(_label(m) for m in metrics) + " |",
        "|---|---|---:|" + "---:|" * len(metrics),
    ]
    for row in results.rows:
        if row.model != model:
            continue
        cells = []
        for metric in metrics:
            summary = row.metrics.get(metric)
            if summary is None:
                cells.append("–")
            elif metric in LOGIT_METRICS:
                half = (summary.ci95[1] - summary.ci95[0]) / 2
                cells.append(f"{summary.mean:.2f} ± {half:.2f}")
            else:
                cells.append(format_measured(summary))
        lines.append(
            f"| {row.setting} | {row.variant or '(study)'} | {len(row.seeds)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def comparisons_table(
    results: StudyResults,
    comparisons: Sequence[Comparison],
    metrics: Sequence[str] = COMPARISON_METRICS,
    model: str = "pfcn",
) -> str:
    """Markdown: per comparison and metric, ``other - baseline`` paired by seed
    (:func:`~ibs_study.study.claims.paired_difference`): mean [95 % CI] in points (logits as they are),
    how many seeds are above 0 and, for a comparison with a ``loss``, the share of the crop loss
    recovered (of the means, fraction metrics). Comparisons whose rows are absent are left out."""
    lines = [
        "| comparison | measure | difference (mean [95 % CI]; points, logits and norms as they are) "
        "| seeds above 0 | share of the crop loss |",
        "|---|---|---|---:|---:|",
    ]
    for comparison in comparisons:
        baseline = results.find_row(model, *comparison.baseline)
        other = results.find_row(model, *comparison.other)
        if baseline is None or other is None:
            continue
        for metric in metrics:
            difference = paired_difference(baseline, other, metric)
            if difference is None:
                continue
            cell = format_difference(difference, _scale(metric), digits=2)
            above = seeds_above_zero(difference)
            share = ""
            if comparison.loss is not None and metric not in LOGIT_METRICS:
                crop, full = (results.find_row(model, *key) for key in comparison.loss)
                loss = paired_difference(crop, full, metric) if crop and full else None
                if loss is not None and loss["mean"] != 0:
                    share = f"{100 * difference['mean'] / loss['mean']:.0f} %"
            lines.append(f"| {comparison.label} | {_label(metric)} | {cell} | {above} | {share} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- running


def run_followup(
    name: str,
    *,
    root: str | os.PathLike = "runs/study",
    out_dir: str | os.PathLike | None = None,
    seeds: Sequence[int] = tuple(range(8)),
    rows: Sequence[str] | None = None,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    parallel: int = 2,
    threads: int = 1,
    train: bool = True,
    progress: bool = True,
) -> StudyResults:
    """Run (or read) follow-up ``name`` and write its results, tables and figures.

    Args:
        name: a key of :data:`FOLLOWUPS`.
        root: folder of the run directories ``<row key>_s<seed>``; the study's own folder
            (``runs/study``) reuses its runs of the study's rows.
        out_dir: where the results go (default ``runs/followups/<name>``).
        seeds: seeds of every row.
        rows: only these row keys (e.g. ``pfcn_crop_ibs_signed_features``); None: all.
        steps, overrides, parallel, threads, train: as :func:`~ibs_study.study.runs.run_study`.

    Returns:
        The results written to ``synthetic_results.json``.

    Raises:
        ConfigError: an unknown follow-up or row key (the message lists the valid ones).
    """
    from ibs_study.study.runs import run_study

    if name not in FOLLOWUPS:
        raise ConfigError(f"unknown follow-up {name!r}; valid: {sorted(FOLLOWUPS)}")
    followup = FOLLOWUPS[name]
    chosen = list(followup.rows)
    if rows is not None:
        keys = {row.key for row in followup.rows}
        unknown = [key for key in rows if key not in keys]
        if unknown:
            raise ConfigError(f"follow-up {name!r} has no rows {unknown} (--rows); its rows: {sorted(keys)}")
        chosen = [row for row in followup.rows if row.key in rows]
    out = Path(out_dir) if out_dir is not None else Path("runs/followups") / name
    results = run_study(
        root,
        chosen,
        list(seeds),
        steps=steps,
        overrides=overrides,
        parallel=parallel,
        threads=threads,
        progress=progress,
        train=train,
        logits=True,
    )
    write_followup(results, followup, out)
    return results


def _followup_files(followup: FollowUp) -> list[str]:
    """Every file name :func:`write_followup` may write for ``followup``."""
    model = followup.model
    claims = [f"claims_{model}{'_' + v if v else ''}.md" for v in ["", *followup.variants()]]
    stems = [*(f"{stem}_{model}" for stem in FIGURE_STEMS), "fig_oracle_logits"]
    figures = [f"{stem}.{fmt}" for stem in stems for fmt in ("png", "svg")]
    return ["synthetic_results.json", "index.md", "rows.md", "logits.md", "comparisons.md", *claims, *figures]


def index_page(results: StudyResults, followup: FollowUp, files: Sequence[str]) -> str:
    """Markdown: the follow-up's question, where its numbers come from, and its ``files`` (the
    tables linked, the figures shown)."""
    seeds = sorted({seed for row in results.rows for seed in row.seeds})
    lines = [
        f"# Follow-up `{followup.name}`",
        "",
        followup.description,
        "",
        f"`ibs-study followup {followup.name}` wrote this folder from {len(results.rows)} rows "
        f"({followup.model}, seeds {seeds[0]}–{seeds[-1]}; commit {(results.commit or 'unknown')[:7]}, "
        f"device {results.device or 'unknown'}); every table and figure here is generated from "
        "[synthetic_results.json](synthetic_results.json).",
        "",
        "- [comparisons.md](comparisons.md): the seed-paired differences it was made for",
        "- [rows.md](rows.md) and [logits.md](logits.md): every row, mean ± 95 % CI",
        *(f"- [{name}]({name}): the paper's claims" for name in files if name.startswith("claims_")),
        "",
        *(f"![{name}]({name})" for name in files if name.endswith(".png")),
    ]
    return "\n".join(lines) + "\n"


def write_followup(results: StudyResults, followup: FollowUp, out: str | os.PathLike) -> list[str]:
    """Write ``results`` of ``followup`` and everything made from them into folder ``out``, which
    is replaced as a whole once complete (:func:`~ibs_study.atomic.atomic_folder`; files of other
    origin in it are kept): the results JSON, ``index.md``, the tables and the figures listed in
    this module's docstring. Returns the names written, in order."""
    from ibs_study.study.figures import oracle_logits_chart, variant_confusion_chart
    from ibs_study.viz.figures import save_figure

    model = followup.model
    tables = {
        "rows.md": rows_table(results, ROW_METRICS, model),
        "logits.md": rows_table(results, LOGIT_METRICS, model),
        "comparisons.md": f"{followup.description}\n\n{comparisons_table(results, followup.comparisons, model=model)}",
    }
    for variant in ["", *followup.variants()]:
        table = claims_table(results, model, variant)
        if table.count("\n") > 2:  # a header and at least one claim
            tables[f"claims_{model}{'_' + variant if variant else ''}.md"] = table
    charts = {}
    for stem, curve, title in zip(
        FIGURE_STEMS,
        ("confusion_curve", "oracle_confusion_curve"),
        ("Confusion", "Oracle-embedding confusion"),
    ):
        title = f"{title}, {model}, follow-up {followup.name}, per variant\n(mean over seeds, 95 % band)"
        chart = variant_confusion_chart(results, model, curve, title=title)
        if chart is not None:
            charts[f"{stem}_{model}"] = chart
    charts["fig_oracle_logits"] = oracle_logits_chart(results, model)
    written = ["synthetic_results.json", "index.md", *tables]
    with atomic_folder(out, replaced=_followup_files(followup)) as folder:
        save_results(results, folder / "synthetic_results.json")
        for name, text in tables.items():
            write_text_atomic(folder / name, text)
        for stem, chart in charts.items():
            written += [path.name for path in save_figure(chart, folder / stem)]
        write_text_atomic(folder / "index.md", index_page(results, followup, written))
    return written
