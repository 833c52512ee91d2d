"""The main job (``make demo``): synthetic data -> full / crop / crop+IBS training -> full-image metrics.

1. generate (or reuse) the synthetic dataset and print its statistics;
2. train the tiny Panoptic FCN three times on CPU, side by side: full images, random crops,
   and crops with IBS and the paired sampler (presets ``synthetic_pfcn_{full,crop,crop_ibs}``);
3. evaluate each on the full validation images;
4. measure each run's oracle-embedding confusion (:mod:`ibs_study.study.oracle`: the masks
   of the GT things' own embeddings, apart from detection);
5. print the PQ / PQ^th / PQ^st / Acc^th / Prec^th / leak table, what the measurements say
   about confusion, save the confusion-curve plot, and end with the command that opens the crop
   and crop + IBS runs in the confusion explorer (``make explore``).

Every number printed is measured in this run (or read from runs this command finished
earlier in the same output folder).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ibs_study.data.statistics import dataset_statistics, format_statistics
from ibs_study.data.synthetic import SYNTHETIC_SCALES, ensure_dataset
from ibs_study.engine.run_dir import read_run_config
from ibs_study.study.grid import RunSpec, run_grid
from ibs_study.study.results import read_oracle
from ibs_study.study.runs import oracle_runs, project_root
from ibs_study.viz.explorer.data import DEMO_RUN_DIRS
from ibs_study.viz.figures import confusion_curve_figure, series_from_metrics

logger = logging.getLogger(__name__)

__all__ = ["DEMO_RUNS", "run_demo", "demo_table", "demo_findings", "explore_command"]

# in the order they start: the full-image run, the longest, first
DEMO_RUNS = (
    ("full", "synthetic_pfcn_full"),
    ("crop", "synthetic_pfcn_crop"),
    ("crop_ibs", "synthetic_pfcn_crop_ibs"),
)
_LABELS = {"full": "full image", "crop": "crop", "crop_ibs": "crop + IBS (paired)"}


def demo_table(metrics: dict[str, dict], oracles: dict[str, dict] | None = None) -> str:
    """The Table 1/2-style summary in percent, with the oracle leak where measured."""
    oracles = oracles or {}
    lines = [
        f"{'setting':22s} {'PQ':>6s} {'PQ^th':>6s} {'PQ^st':>6s} {'Acc^th':>7s} {'Prec^th':>8s} {'leak':>6s}"
    ]
    for setting, m in metrics.items():
        leak = f"{100 * oracles[setting]['leak']:6.1f}" if setting in oracles else f"{'–':>6s}"
        lines.append(
            f"{_LABELS.get(setting, setting):22s} {100 * m['all']['pq']:6.1f} {100 * m['things']['pq']:6.1f} "
            f"{100 * m['stuff']['pq']:6.1f} {100 * m['acc_th']:7.1f} {100 * m['prec_th']:8.1f} {leak}"
        )
    return "\n".join(lines)


def _confused(m: dict, threshold: float = 0.1) -> float:
    curve = m["confusion_curve"]
    index = min(range(len(curve["thresholds"])), key=lambda i: abs(curve["thresholds"][i] - threshold))
    return curve["ratio"][index]


def demo_findings(metrics: dict[str, dict], oracles: dict[str, dict] | None = None) -> list[str]:
    """Plain statements of what the measured numbers show (or do not show)."""
    full, crop, ibs = metrics["full"], metrics["crop"], metrics["crop_ibs"]
    out = []
    if oracles and {"full", "crop", "crop_ibs"} <= set(oracles):
        leak = {s: 100 * oracles[s]["leak"] for s in ("full", "crop", "crop_ibs")}
        out.append(
            "leak = share of the pixels of a GT thing's own mask (its embeddings x the features, "
            "detection left out) that lie on other GT things: "
            + ", ".join(f"{_LABELS[s]} {v:.1f}%" for s, v in leak.items())
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
        + ", ".join(f"{_LABELS[s]} {100 * _confused(m):.1f}%" for s, m in metrics.items())
        + "."
    )
    return out


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
) -> str:
    """Run the demo; returns the report it prints (statistics, table, findings, plot path).

    The runs train with one thread each, as the study's (so they give its numbers bit for bit),
    ``parallel`` at a time in the order of :data:`DEMO_RUNS`: with the default 2 on two cores the
    full-image run, the longest, has a core to itself while crop and crop + IBS follow each other
    on the other (three at once would slow all three, the longest most; docs/benchmarks.md).
    ``steps`` (default: the presets' ``train.max_steps``, the study's budget) and ``scale`` (the
    synthetic size preset) are for quick checks.
    """
    out = Path(out)
    ensure_dataset(data_root, scale=scale)
    report = [format_statistics(dataset_statistics(data_root)), ""]
    overrides = (f"data.root={data_root}", f"data.synthetic_scale={scale}")
    overrides += (f"train.max_steps={steps}",) if steps is not None else ()
    if scale != "cpu":  # the presets' crops fit the cpu scale's images only
        overrides += (f"data.crop_size={list(SYNTHETIC_SCALES[scale].crop_size)}",)
    specs = [RunSpec(setting, preset, overrides) for setting, preset in DEMO_RUNS]
    metrics = run_grid(specs, out, parallel=parallel, threads=1, progress=progress)
    oracle_runs([out / spec.name for spec in specs], parallel=parallel, threads=1, progress=progress)
    oracles = {spec.name: read_oracle(out / spec.name) for spec in specs}
    figure = confusion_curve_figure(series_from_metrics(metrics), title="Confusion on the synthetic val set")
    plot = out / "confusion_curve.png"
    figure.savefig(plot, dpi=130)
    steps = read_run_config(out / specs[0].name).train.max_steps  # what the runs were trained for
    report += [
        f"Panoptic FCN (tiny) on the synthetic benchmark, {steps} training steps per run, full-image "
        f"evaluation on the val split ({metrics['full']['num_images']} images); runs in {out}",
        demo_table(metrics, oracles),
        "",
        *demo_findings(metrics, oracles),
        "",
        f"confusion curve: {plot}",
        f"explore the crop and crop + IBS predictions instance by instance: {explore_command(out)}",
    ]
    return "\n".join(report)
