"""The main job (``make demo``): synthetic data -> crop / crop+IBS training -> full-image metrics.

1. generate (or reuse) the synthetic dataset and print its statistics;
2. train the tiny Panoptic FCN on CPU at the study's seed 0, side by side, one thread each: random
   crops, and crops with IBS and the paired sampler (presets ``synthetic_pfcn_{crop,crop_ibs}``);
   with ``train_full`` (or a budget or scale other than the study's) also on full images
   (``synthetic_pfcn_full``);
3. evaluate each on the full validation images;
4. measure each run's oracle-embedding confusion (:mod:`ibs_study.study.oracle`: the masks
   of the GT things' own embeddings, apart from detection);
5. print the PQ / PQ^th / PQ^st / Acc^th / Prec^th / leak table, whether the runs reproduce the
   study's stored seed-0 runs, what the measurements say about confusion, save the confusion-curve
   plot, and end with the command that opens the crop and crop + IBS runs in the confusion explorer
   (``make explore``).

Every number printed is measured in this run, except the full-image row when it is not trained:
that row is the study's own seed-0 run (same code, config and seed), read from
``paper_figures/synthetic_results.json`` and labelled so.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from ibs_study.config import load_preset
from ibs_study.data.statistics import dataset_statistics, format_statistics
from ibs_study.data.synthetic import SYNTHETIC_SCALES, ensure_dataset
from ibs_study.engine.run_dir import read_run_config
from ibs_study.metrics.panoptic import curve_ratio_at
from ibs_study.study.claims import per_seed_values
from ibs_study.study.grid import RunSpec, run_grid
from ibs_study.study.results import StudyResults, flat_metrics, load_results, read_oracle
from ibs_study.study.runs import project_root
from ibs_study.study.tables import METRIC_LABELS
from ibs_study.viz.explorer.data import DEMO_RUN_DIRS
from ibs_study.viz.figures import SETTING_STYLE, confusion_curve_figure, series_from_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_RUNS",
    "DEMO_SEED",
    "STUDY_RESULTS",
    "run_demo",
    "demo_table",
    "demo_findings",
    "setting_labels",
    "stored_run",
    "reproduction_lines",
    "explore_command",
]

# in the order they start: the full-image run, the longest, first
DEMO_RUNS = (
    ("full", "synthetic_pfcn_full"),
    ("crop", "synthetic_pfcn_crop"),
    ("crop_ibs", "synthetic_pfcn_crop_ibs"),
)
DEMO_SEED = 0  # a seed of the study, so that the study's stored run of each setting is comparable
STUDY_RESULTS = "paper_figures/synthetic_results.json"
_LABELS = {"full": "full image", "crop": "crop", "crop_ibs": "crop + IBS (paired)"}
# the table's metrics (flat_metrics names) and their column widths; the oracle leak last
_TABLE_COLUMNS = {"pq": 6, "pq_th": 6, "pq_st": 6, "acc_th": 7, "prec_th": 8}


def setting_labels(stored: Collection[str] = ()) -> dict[str, str]:
    """setting -> its name in the report; the ``stored`` settings (read from the study, not
    trained in this run) say so."""
    return {s: f"{label} (study)" if s in stored else label for s, label in _LABELS.items()}


def demo_table(
    metrics: dict[str, dict], oracles: dict[str, dict] | None = None, labels: Mapping[str, str] | None = None
) -> str:
    """The Table 1/2-style summary in percent, with the oracle leak where measured; ``labels``:
    setting -> row name (default :func:`setting_labels`)."""
    oracles = oracles or {}
    labels = labels or setting_labels()
    header = " ".join(f"{METRIC_LABELS[name]:>{width}s}" for name, width in _TABLE_COLUMNS.items())
    lines = [f"{'setting':22s} {header} {METRIC_LABELS['oracle_leak']:>6s}"]
    for setting, m in metrics.items():
        flat = flat_metrics(m)
        values = " ".join(f"{100 * flat[name]:{width}.1f}" for name, width in _TABLE_COLUMNS.items())
        leak = f"{100 * oracles[setting]['leak']:6.1f}" if setting in oracles else f"{'–':>6s}"
        lines.append(f"{labels.get(setting, setting):22s} {values} {leak}")
    return "\n".join(lines)


def demo_findings(
    metrics: dict[str, dict], oracles: dict[str, dict] | None = None, labels: Mapping[str, str] | None = None
) -> list[str]:
    """Plain statements of what the measured numbers show (or do not show); ``labels`` as
    :func:`demo_table`'s."""
    labels = labels or setting_labels()
    full, crop, ibs = metrics["full"], metrics["crop"], metrics["crop_ibs"]
    out = []
    if oracles and {"full", "crop", "crop_ibs"} <= set(oracles):
        leak = {s: 100 * oracles[s]["leak"] for s in ("full", "crop", "crop_ibs")}
        out.append(
            "leak = share of the pixels of a GT thing's own mask (its embeddings x the features, "
            "detection left out) that lie on other GT things: "
            + ", ".join(f"{labels[s]} {v:.1f}%" for s, v in leak.items())
            + (
                "; crop training leaks more than full-image training"
                if leak["crop"] > leak["full"]
                else "; crop training does NOT leak more than full-image training here"
            )
            + (
                ", IBS leaks less than crop training."
                if leak["crop_ibs"] < leak["crop"]
                else ", IBS does NOT leak less than crop training."
            )
        )
    drop = 100 * (full["prec_th"] - crop["prec_th"])
    if drop > 0:
        out.append(
            f"crop training lowered Prec^th by {drop:.1f} points against full-image training (confusion)."
        )
    else:
        out.append(
            f"crop training did NOT lower Prec^th against full-image training here ({-drop:+.1f} points): "
            "at this training budget the full-image model is the weaker one, so this run does not show "
            "the Table 1 effect."
        )
    gain = 100 * (ibs["prec_th"] - crop["prec_th"])
    out.append(
        f"IBS with the paired sampler changed Prec^th by {gain:+.1f} and Acc^th by "
        f"{100 * (ibs['acc_th'] - crop['acc_th']):+.1f} points against crop training."
    )
    out.append(
        "predicted things covering >10% of two or more GT things: "
        + ", ".join(
            f"{labels[s]} {100 * curve_ratio_at(m['confusion_curve'], 0.1):.1f}%" for s, m in metrics.items()
        )
        + "."
    )
    return out


def stored_run(results: StudyResults, setting: str, seed: int, steps: int) -> tuple[dict, dict] | None:
    """The study's Panoptic FCN run of ``setting`` at ``seed`` from its results (``load_results``),
    shaped as a run's ``metrics.json`` (the table's metrics and the confusion curve) and its
    oracle confusion (``leak``); None when the results lack that row or seed, or its runs trained
    other than ``steps`` steps."""
    row = results.find_row("pfcn", setting)
    if row is None or seed not in row.seeds or row.steps != steps:
        return None
    value = {name: per_seed_values(row, name)[seed] for name in (*_TABLE_COLUMNS, "oracle_leak")}
    curve = row.confusion_curve
    metrics = {
        "all": {"pq": value["pq"]},
        "things": {"pq": value["pq_th"]},
        "stuff": {"pq": value["pq_st"]},
        "acc_th": value["acc_th"],
        "prec_th": value["prec_th"],
        "confusion_curve": {
            "thresholds": list(curve.thresholds),
            "ratio": list(curve.per_seed[row.seeds.index(seed)]),
        },
    }
    return metrics, {"leak": value["oracle_leak"]}


def reproduction_lines(
    metrics: dict[str, dict], results: StudyResults, seed: int, steps: int, source: str
) -> list[str]:
    """For each run trained here (``steps`` steps at ``seed``), whether its metrics equal the
    study's stored run of the same setting, seed and budget (``source`` names the results file)."""
    lines = []
    for setting, m in metrics.items():
        stored = stored_run(results, setting, seed, steps)
        if stored is None:
            continue
        here, study = flat_metrics(m), flat_metrics(stored[0])
        differing = [
            f"{name} {100 * here[name]:.2f} (study {100 * study[name]:.2f})"
            for name in _TABLE_COLUMNS
            if not math.isclose(here[name], study[name], rel_tol=0, abs_tol=1e-9)
        ]
        lines.append(
            f"{_LABELS[setting]}: the same PQ, PQ^th, PQ^st, Acc^th and Prec^th as the study's seed-{seed} run ({source})"
            if not differing
            else f"{_LABELS[setting]}: differs from the study's seed-{seed} run ({source}): "
            + ", ".join(differing)
        )
    return lines


def explore_command(out: str | os.PathLike) -> str:
    """The command that opens the demo's crop and crop + IBS runs in ``out`` in the confusion explorer:
    ``make explore`` for the default folder (notebook 05's fallback), else notebook 05 with ``run_dirs``."""
    run_dirs = [Path(out) / "crop", Path(out) / "crop_ibs"]
    if [d.resolve() for d in run_dirs] == [(project_root() / d).resolve() for d in DEMO_RUN_DIRS]:
        return "make explore"
    return f"notebooks/05_confusion_explorer.ipynb with run_dirs = {[str(d) for d in run_dirs]}"


def run_demo(
    out: str | os.PathLike = "runs/demo",
    data_root: str | os.PathLike = "data/synthetic",
    *,
    steps: int | None = None,
    parallel: int = 2,
    progress: bool = True,
    scale: str = "cpu",
    train_full: bool = False,
    study_results: str | os.PathLike | None = None,
) -> str:
    """Run the demo; returns the report it prints (statistics, table, reproduction check,
    findings, plot path).

    The runs train at the study's seed 0 (:data:`DEMO_SEED`) with one thread each, as the study's,
    so they give its numbers bit for bit, ``parallel`` at a time. The full-image run (the longest:
    about as long as the other two together) is trained only with ``train_full``, or when
    ``steps`` / ``scale`` differ from the study's (the stored run would not be comparable) or the
    study's results (``study_results``, default :data:`STUDY_RESULTS` in the checkout) lack it;
    otherwise its row, curve and leak are the study's stored seed-0 run.
    ``steps`` (default: the presets' ``train.max_steps``, the study's budget) and ``scale`` (the
    synthetic size preset) are for quick checks.
    """
    out = Path(out)
    results_path = Path(study_results) if study_results is not None else project_root() / STUDY_RESULTS
    results = load_results(results_path) if results_path.is_file() else None
    study_steps = load_preset("synthetic_pfcn_full").train.max_steps
    stored_full = (
        stored_run(results, "full", DEMO_SEED, study_steps)
        if results is not None and not train_full and steps is None and scale == "cpu"
        else None
    )
    ensure_dataset(data_root, scale=scale)
    report = [format_statistics(dataset_statistics(data_root)), ""]
    overrides = (f"data.root={data_root}", f"data.synthetic_scale={scale}", f"seed={DEMO_SEED}")
    overrides += (f"train.max_steps={steps}",) if steps is not None else ()
    if scale != "cpu":  # the presets' crops fit the cpu scale's images only
        overrides += (f"data.crop_size={list(SYNTHETIC_SCALES[scale].crop_size)}",)
    trained = [(s, p) for s, p in DEMO_RUNS if not (s == "full" and stored_full is not None)]
    specs = [RunSpec(setting, preset, overrides) for setting, preset in trained]
    measured = run_grid(specs, out, parallel=parallel, threads=1, progress=progress, oracle=True)
    oracles = {spec.name: read_oracle(out / spec.name) for spec in specs}
    metrics = dict(measured)
    if stored_full is not None:
        metrics = {"full": stored_full[0], **measured}
        oracles = {"full": stored_full[1], **oracles}
    labels = setting_labels(["full"] if stored_full is not None else [])
    series = series_from_metrics(metrics, {s: (labels[s], *SETTING_STYLE[s][1:]) for s in metrics})
    figure = confusion_curve_figure(series, title="Confusion on the synthetic val set")
    plot = out / "confusion_curve.png"
    figure.savefig(plot, dpi=130)
    steps = read_run_config(out / specs[0].name).train.max_steps  # what the runs were trained for
    source = (
        results_path.relative_to(project_root())
        if results_path.is_relative_to(project_root())
        else results_path
    )
    provenance = []
    if stored_full is not None:
        provenance.append(
            f"full image (study): not trained here, the study's seed-{DEMO_SEED} run read from {source} "
            "(`ibs-study demo --train-full` trains it here too)"
        )
    if results is not None and scale == "cpu":
        provenance += reproduction_lines(measured, results, DEMO_SEED, steps, str(source))
    report += [
        f"Panoptic FCN (tiny) on the synthetic benchmark, seed {DEMO_SEED}, {steps} training steps per run, "
        f"full-image evaluation on the val split ({measured['crop']['num_images']} images); runs in {out}",
        demo_table(metrics, oracles, labels),
        *provenance,
        "",
        *demo_findings(metrics, oracles, labels),
        "",
        f"confusion curve: {plot}",
        f"explore the crop and crop + IBS predictions instance by instance: {explore_command(out)}",
    ]
    return "\n".join(report)
