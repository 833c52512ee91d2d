"""The study's results: every run's metrics summarised over seeds, saved and read back checked.

* :func:`collect_results` reads every (row, seed) run's ``metrics.json`` into the
  ``synthetic_results.json`` schema: per row, each metric's mean, 95 % confidence interval
  (Student t over seeds) and per-seed values, plus the confusion curve with its band;
  :func:`collect_sweep` the runs of a sweep;
* :func:`save_results` / :func:`load_results` write and read that JSON (structure checked);
* :func:`flat_metrics` names the study's metrics of one run (the names below).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import DataError, RunDirError
from ibs_study.input_files import expect, read_json
from ibs_study.metrics.panoptic import GT_THING_PIXEL_FATES, PRED_THING_PIXEL_FATES, curve_ratio_at
from ibs_study.study.grid import RunSpec, read_metrics
from ibs_study.study.oracle import LOGIT_METRICS, ORACLE_FILE, ORACLE_LOGITS_FILE
from ibs_study.study.specs import StudyRow, row_variant, study_rows

__all__ = [
    "PANOPTIC_METRICS",
    "INSTANCE_METRICS",
    "ORACLE_METRICS",
    "ORACLE_THRESHOLD",
    "GT_THING_PIXEL_METRICS",
    "PRED_THING_PIXEL_METRICS",
    "THING_PIXEL_METRICS",
    "metric_summary",
    "read_oracle",
    "flat_metrics",
    "collect_results",
    "row_from_runs",
    "collect_sweep",
    "SWEEP_REFERENCE_SETTING",
    "sweep_reference",
    "find_row",
    "save_results",
    "load_results",
    "load_operating_curves",
]

PANOPTIC_METRICS = ("pq", "pq_th", "pq_st", "acc_th", "prec_th")
# Oracle-embedding confusion (ibs_study.study.oracle): leak and own coverage of the GT things'
# masks, and the share of those masks covering two GT things by more than ORACLE_THRESHOLD each.
ORACLE_METRICS = ("oracle_leak", "oracle_own_coverage", "oracle_confused")
ORACLE_THRESHOLD = 0.5
# Where the thing pixels go (``thing_pixel_breakdown`` of metrics.json, ibs_study.metrics.panoptic):
# shares of the GT thing pixels (gt_th_*) and of the predicted thing pixels (pred_th_*), each side
# summing to 1; the matched shares are Acc^th and Prec^th.
GT_THING_PIXEL_METRICS = tuple(f"gt_th_{fate}" for fate in GT_THING_PIXEL_FATES)
PRED_THING_PIXEL_METRICS = tuple(f"pred_th_{fate}" for fate in PRED_THING_PIXEL_FATES)
THING_PIXEL_METRICS = GT_THING_PIXEL_METRICS + PRED_THING_PIXEL_METRICS
INSTANCE_METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "acc_th", "prec_th")


def metric_summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, two-sided Student-t confidence interval over seeds, and the per-seed values.

    One value gives a degenerate interval ``[v, v]`` (no spread can be estimated).
    """
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "ci95": [mean, mean], "per_seed": array.tolist()}
    half = float(
        stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    )
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": array.tolist()}


def read_oracle(run_dir: str | os.PathLike, name: str = ORACLE_FILE) -> dict[str, Any] | None:
    """The run's ``eval_val/oracle_confusion.json`` (``ibs-study oracle``; ``name``
    ``oracle_logits.json``: ``ibs-study oracle --logits``), or None."""
    path = Path(run_dir) / "eval_val" / name
    return expect(read_json(path, "oracle JSON"), dict, "the top level", path) if path.is_file() else None


def flat_metrics(
    metrics: dict[str, Any], oracle: dict[str, Any] | None = None, logits: dict[str, Any] | None = None
) -> dict[str, float | None]:
    """The study's metric names from one ``metrics.json`` (panoptic or instance), plus the
    oracle metrics when the run has an ``oracle_confusion.json`` and the
    :data:`~ibs_study.study.oracle.LOGIT_METRICS` (logits, not fractions) it has in an
    ``oracle_logits.json``."""
    if "all" in metrics:
        flat = {
            "pq": metrics["all"]["pq"],
            "pq_th": metrics["things"]["pq"],
            "pq_st": metrics["stuff"]["pq"],
            "acc_th": metrics["acc_th"],
            "prec_th": metrics["prec_th"],
        }
    else:
        flat = {name: metrics.get(name) for name in INSTANCE_METRICS}
    breakdown = metrics.get("thing_pixel_breakdown")
    if breakdown is not None:
        flat |= {f"gt_th_{fate}": share for fate, share in breakdown["gt"].items()}
        flat |= {f"pred_th_{fate}": share for fate, share in breakdown["pred"].items()}
    if oracle is not None:
        flat |= {
            "oracle_leak": oracle["leak"],
            "oracle_own_coverage": oracle["own_coverage"],
            "oracle_confused": curve_ratio_at(oracle, ORACLE_THRESHOLD),
        }
    if logits is not None:
        flat |= {name: logits[name] for name in LOGIT_METRICS if name in logits}
    return flat


def _curve_summary(curves: list[dict]) -> dict[str, Any]:
    thresholds = curves[0]["thresholds"]
    ratios = np.array([c["ratio"] for c in curves], dtype=float)  # (seeds, T)
    per_threshold = [metric_summary(ratios[:, t]) for t in range(ratios.shape[1])]
    return {
        "thresholds": thresholds,
        "mean": [s["mean"] for s in per_threshold],
        "ci95": [s["ci95"] for s in per_threshold],
        "per_seed": ratios.tolist(),
    }


def collect_results(
    root: str | os.PathLike,
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    *,
    scale: str,
    device: str,
    commit: str | None,
) -> dict[str, Any]:
    """Read every (row, seed) run under ``root`` into the ``synthetic_results.json`` schema.

    A row's ``steps`` is its runs' ``train.max_steps`` (read from their ``config.yaml``);
    seeds of one row that trained for different numbers of steps are an error. Each row
    records its ``variant`` ("" for the study's own rows).
    """
    root = Path(root)
    out_rows = [
        {
            "model": row.model,
            "setting": row.setting,
            "variant": row.variant,
            "preset": row.preset,
            **row_from_runs([root / f"{row.key}_s{seed}" for seed in seeds], seeds),
        }
        for row in rows
    ]
    return {"scale": scale, "device": device, "commit": commit, "rows": out_rows}


def row_from_runs(run_dirs: Sequence[str | os.PathLike], seeds: Sequence[int]) -> dict[str, Any]:
    """One results row from evaluated run directories, ``run_dirs[k]`` trained with ``seeds[k]``:
    ``seeds``, ``steps``, ``metrics`` (:func:`metric_summary` of each :func:`flat_metrics` name all
    runs have) and the confusion curves (``confusion_curve``, ``oracle_confusion_curve``) where
    every run has them. Rows of any folders can be compared with :func:`paired_difference`.

    Raises:
        ValueError: ``run_dirs`` and ``seeds`` differ in length, or the runs trained for
            different numbers of steps.
    """
    if len(run_dirs) != len(seeds) or not seeds:
        raise ValueError(f"row_from_runs: {len(run_dirs)} run directories for seeds {list(seeds)}")
    per_seed = [read_metrics(run_dir) for run_dir in run_dirs]
    oracles = [read_oracle(run_dir) for run_dir in run_dirs]
    logits = [read_oracle(run_dir, ORACLE_LOGITS_FILE) for run_dir in run_dirs]
    steps = {read_run_config(run_dir).train.max_steps for run_dir in run_dirs}
    if len(steps) != 1:
        raise RunDirError(
            f"{Path(run_dirs[0]).name} ...: these runs trained for different numbers of steps {sorted(steps)}; "
            "compare runs of one budget"
        )
    flat = [flat_metrics(m, o, g) for m, o, g in zip(per_seed, oracles, logits, strict=True)]
    entry: dict[str, Any] = {
        "seeds": list(seeds),
        "steps": steps.pop(),
        "metrics": {
            name: metric_summary([f[name] for f in flat])
            for name in flat[0]
            if all(f.get(name) is not None for f in flat)
        },
    }
    if all("confusion_curve" in m for m in per_seed):
        entry["confusion_curve"] = _curve_summary([m["confusion_curve"] for m in per_seed])
    if all(o is not None for o in oracles):
        entry["oracle_confusion_curve"] = _curve_summary(oracles)
    return entry


def collect_sweep(root: str | os.PathLike, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """``[{"preset", "key", "value", "metrics": {name: value}}]`` for the runs of a sweep."""
    out = []
    for spec in specs:
        run_dir = Path(root) / spec.name
        flat = flat_metrics(
            read_metrics(run_dir), read_oracle(run_dir), read_oracle(run_dir, ORACLE_LOGITS_FILE)
        )
        value = spec.tags["value"]
        out.append(
            {
                "preset": spec.preset,
                "key": spec.tags["key"],
                "value": list(value) if isinstance(value, tuple) else value,
                "seed": spec.tags.get("seed"),
                "metrics": {k: v for k, v in flat.items() if v is not None},
            }
        )
    return out


# the study row a sweep of a key is read against: crop training without IBS for λ, full-image
# training for the crop size (the setting the swept runs should move away from or towards)
SWEEP_REFERENCE_SETTING = {"ibs.weight": ("crop", "crop, no IBS"), "data.crop_size": ("full", "full image")}


def sweep_reference(
    results: dict[str, Any], entries: Sequence[dict[str, Any]]
) -> tuple[str, dict[str, float]] | None:
    """The reference a sweep's plot draws: the metrics of the study row of
    :data:`SWEEP_REFERENCE_SETTING` (same model as the swept preset) at the sweep's seed.

    Returns:
        ``(label, {metric: value})``, e.g. ``("crop, no IBS (seed 0)", {"pq": 0.61, ...})``;
        None when the key has no reference setting, the entries name no seed, or the results
        lack that row or seed.
    """
    if not entries or entries[0]["key"] not in SWEEP_REFERENCE_SETTING or entries[0].get("seed") is None:
        return None
    setting, label = SWEEP_REFERENCE_SETTING[entries[0]["key"]]
    seed = entries[0]["seed"]
    model = next(
        (
            r.model
            for scale in ("cpu", "paper")
            for r in study_rows(scale)
            if r.preset == entries[0]["preset"]
        ),
        None,
    )
    row = find_row(results, model, setting) if model else None
    if row is None or seed not in row["seeds"]:
        return None
    k = row["seeds"].index(seed)
    return f"{label} (seed {seed})", {name: m["per_seed"][k] for name, m in row["metrics"].items()}


def save_results(results: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=1) + "\n")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The study's results JSON (:func:`save_results`), its structure checked.

    Raises:
        DataError: naming ``path`` and the key path: the file cannot be read, is not JSON, or is
            not shaped as :func:`save_results` writes it (e.g. a run's ``metrics.json``).
    """
    results = read_json(path, "results JSON")
    expect(results, dict, "the top level", path)
    if "rows" not in results:
        raise DataError(
            f"{path}: not a study results JSON (no 'rows'; keys: {sorted(results)[:8]}); give the file "
            "ibs_study.study.results.save_results writes, e.g. paper_figures/synthetic_results.json"
        )
    for k, row in enumerate(expect(results["rows"], list, "rows", path)):
        where = f"rows[{k}]"
        expect(row, dict, where, path)
        missing = [key for key in ("model", "setting", "seeds", "steps", "metrics") if key not in row]
        if missing:
            raise DataError(f"{path}: {where} lacks the key(s) {missing}")
        expect(row["model"], str, f"{where}.model", path)
        expect(row["setting"], str, f"{where}.setting", path)
        for j, seed in enumerate(expect(row["seeds"], list, f"{where}.seeds", path)):
            expect(seed, int, f"{where}.seeds[{j}]", path)
        expect(row["steps"], int, f"{where}.steps", path)
        for name, summary in expect(row["metrics"], dict, f"{where}.metrics", path).items():
            _check_summary(summary, len(row["seeds"]), f"{where}.metrics.{name}", path)
        for curve in ("confusion_curve", "oracle_confusion_curve"):
            if curve in row:
                _check_curve(row[curve], f"{where}.{curve}", path)
    for name, points in expect(results.get("sweeps") or {}, dict, "sweeps", path).items():
        for j, point in enumerate(expect(points, list, f"sweeps.{name}", path)):
            expect(point, dict, f"sweeps.{name}[{j}]", path)
            if "metrics" not in point or "value" not in point:
                raise DataError(f"{path}: sweeps.{name}[{j}] lacks 'value' or 'metrics'")
            for metric, value in expect(point["metrics"], dict, f"sweeps.{name}[{j}].metrics", path).items():
                expect(value, (int, float), f"sweeps.{name}[{j}].metrics.{metric}", path)
    return results


def load_operating_curves(path: str | os.PathLike) -> dict[str, Any]:
    """An ``operating_curves_<model>.json`` (:func:`ibs_study.study.operating.collect_operating_curves`).

    Raises:
        DataError: naming the file and key path: unreadable, not JSON, or without ``rows`` of
            ``setting`` and ``points``.
    """
    curves = expect(read_json(path, "operating-curve JSON"), dict, "the top level", path)
    for k, row in enumerate(expect(curves.get("rows"), list, "rows", path)):
        expect(row, dict, f"rows[{k}]", path)
        expect(row.get("setting"), str, f"rows[{k}].setting", path)
        for j, point in enumerate(expect(row.get("points"), list, f"rows[{k}].points", path)):
            expect(
                expect(point, dict, f"rows[{k}].points[{j}]", path).get("metrics"),
                dict,
                f"rows[{k}].points[{j}].metrics",
                path,
            )
    return curves


def _check_summary(summary: Any, num_seeds: int, where: str, path: str | os.PathLike) -> None:
    """Raise :class:`DataError` unless ``summary`` is a :func:`metric_summary` of ``num_seeds`` values."""
    expect(summary, dict, where, path)
    if not {"mean", "ci95", "per_seed"} <= set(summary):
        raise DataError(f"{path}: {where} needs 'mean', 'ci95' and 'per_seed', has {sorted(summary)}")
    expect(summary["mean"], (int, float, type(None)), f"{where}.mean", path)
    if len(expect(summary["ci95"], list, f"{where}.ci95", path)) != 2:
        raise DataError(f"{path}: {where}.ci95 must hold 2 numbers, got {summary['ci95']}")
    if len(expect(summary["per_seed"], list, f"{where}.per_seed", path)) != num_seeds:
        raise DataError(f"{path}: {where}.per_seed must hold one value per seed ({num_seeds})")


def _check_curve(curve: Any, where: str, path: str | os.PathLike) -> None:
    """Raise :class:`DataError` unless ``curve`` holds equally long ``thresholds`` and ``mean`` lists."""
    expect(curve, dict, where, path)
    thresholds = expect(curve.get("thresholds"), list, f"{where}.thresholds", path)
    if len(expect(curve.get("mean"), list, f"{where}.mean", path)) != len(thresholds):
        raise DataError(f"{path}: {where}.mean must hold one value per threshold ({len(thresholds)})")


def find_row(results: dict[str, Any], model: str, setting: str, variant: str = "") -> dict[str, Any] | None:
    """The results row of ``model``, ``setting`` and ``variant`` ("": the study's own), or None."""
    return next(
        (
            r
            for r in results["rows"]
            if r["model"] == model and r["setting"] == setting and row_variant(r) == variant
        ),
        None,
    )
