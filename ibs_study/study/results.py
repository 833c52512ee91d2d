"""The reproduction study on the synthetic benchmark: which runs, and how results are summarised.

* :func:`study_specs` / :func:`sweep_specs` name the runs (rows of the paper's Tables 1-4 as
  synthetic presets, several seeds; a lambda sweep and a crop-size sweep);
  :func:`ibs_study.study.grid.run_grid` trains and evaluates them.
* :func:`collect_results` reads every run's ``metrics.json`` into the
  ``synthetic_results.json`` schema: per row, each metric's mean, 95 % confidence interval
  (Student t over seeds) and per-seed values, plus the confusion curve with its band.
* :func:`results_table` renders the Table 1-4 analogues (Markdown or CSV) from that JSON,
  with the paper's published numbers in separate, labelled reference columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import DataError, RunDirError
from ibs_study.input_files import expect, read_json
from ibs_study.metrics.panoptic import GT_THING_PIXEL_FATES, PRED_THING_PIXEL_FATES
from ibs_study.study.grid import RunSpec, read_metrics
from ibs_study.study.oracle import LOGIT_METRICS, ORACLE_FILE, ORACLE_LOGITS_FILE
from ibs_study.study.paper_reference import PAPER_INSTANCE, PAPER_PANOPTIC

__all__ = [
    "StudyRow",
    "row_variant",
    "row_key",
    "find_row",
    "study_rows",
    "study_specs",
    "sweep_specs",
    "metric_summary",
    "flat_metrics",
    "collect_results",
    "row_from_runs",
    "collect_sweep",
    "sweep_reference",
    "SWEEP_REFERENCE_SETTING",
    "save_results",
    "load_results",
    "load_operating_curves",
    "results_table",
    "TABLES",
    "PANOPTIC_METRICS",
    "INSTANCE_METRICS",
    "ORACLE_METRICS",
    "THING_PIXEL_METRICS",
    "ClaimCheck",
    "reproduction_checks",
    "paired_difference",
    "per_seed_values",
    "claims_table",
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
SETTINGS = ("full", "crop", "crop_ibs_random", "crop_ibs")
MODELS = ("pfcn", "m2f", "m2f_instance")
_PRESET_MODEL = {"pfcn": "pfcn", "m2f": "m2f", "m2f_instance": "m2f_instance"}


@dataclass(frozen=True)
class StudyRow:
    """One row of the study: a model, a training setting and the preset that trains it.

    A *variant* row trains the setting with ``overrides`` on top of the preset (e.g.
    ``signed_features``: ``model.panoptic_fcn.feature_activation=none``); the study's own rows
    have none (``variant`` empty). Rows are told apart by (model, setting, variant).
    """

    model: str
    setting: str
    preset: str
    variant: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``<model>_<setting>[_<variant>]``: the run directories are ``<key>_s<seed>``."""
        return f"{self.model}_{self.setting}" + (f"_{self.variant}" if self.variant else "")


def row_variant(row: dict[str, Any]) -> str:
    """The ``variant`` of a results row ("" for the study's own rows and results without variants)."""
    return row.get("variant", "")


def row_key(row: dict[str, Any]) -> str:
    """:attr:`StudyRow.key` of a results row."""
    return f"{row['model']}_{row['setting']}" + (f"_{row_variant(row)}" if row_variant(row) else "")


def study_rows(scale: str = "cpu", models: Iterable[str] = MODELS) -> list[StudyRow]:
    """The paper's rows as synthetic presets (``cpu``: ``synthetic_*``; ``paper``: ``synthetic_gpu_*``)."""
    prefix = {"cpu": "synthetic", "paper": "synthetic_gpu"}[scale]
    settings = {"pfcn": SETTINGS, "m2f": ("crop", "crop_ibs"), "m2f_instance": ("crop", "crop_ibs")}
    return [
        StudyRow(model, setting, f"{prefix}_{_PRESET_MODEL[model]}_{setting}")
        for model in models
        for setting in settings[model]
    ]


def study_specs(
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
) -> list[RunSpec]:
    """One run per (row, seed), named ``<row.key>_s<seed>``; a row's own overrides come last."""
    specs = []
    for row in rows:
        for seed in seeds:
            extra = [
                f"seed={seed}",
                *([f"train.max_steps={steps}"] if steps else []),
                *overrides,
                *row.overrides,
            ]
            specs.append(
                RunSpec(f"{row.key}_s{seed}", row.preset, tuple(extra), tags={"row": row.key, "seed": seed})
            )
    return specs


def sweep_specs(
    preset: str,
    key: str,
    values: Sequence[Any],
    *,
    seed: int = 0,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    label: str | None = None,
) -> list[RunSpec]:
    """One run per value of config ``key`` (e.g. ``ibs.weight`` or ``data.crop_size``)."""
    label = label or key.split(".")[-1]
    specs = []
    for value in values:
        text = json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)
        tag = "x".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        extra = [  # the swept value last: it wins over an override of the same key
            f"seed={seed}",
            *([f"train.max_steps={steps}"] if steps else []),
            *overrides,
            f"{key}={text}",
        ]
        specs.append(
            RunSpec(
                f"sweep_{label}_{preset}_{tag}_s{seed}",
                preset,
                tuple(extra),
                tags={"key": key, "value": value, "seed": seed},
            )
        )
    return specs


def sweep_anchors(
    rows: Sequence[StudyRow], seeds: Sequence[int], sweep: Sequence[RunSpec], overrides: Sequence[str] = ()
) -> list[RunSpec]:
    """The study runs that are also points of ``sweep``: a row trained with the sweep's preset at
    the sweep's seed is the sweep at the preset's own value of the swept key (e.g. the
    ``crop_ibs`` row at seed 0 is the lambda sweep's point at the preset's lambda), so the
    sweep needs no second run of it.

    Returns:
        RunSpecs naming those row runs, tagged with the key and the preset's value; empty when
        no row matches, or when a sweep run already trains that value.
    """
    from ibs_study.config import config_to_dict, config_value, resolve_config

    if not sweep:
        return []
    preset, key, seed = sweep[0].preset, sweep[0].tags["key"], sweep[0].tags.get("seed")
    anchors = []
    for row in rows:
        if row.variant or row.preset != preset or seed not in seeds:
            continue
        value = config_value(config_to_dict(resolve_config(preset=preset, overrides=overrides)), key)
        if any(_same_value(spec.tags["value"], value) for spec in sweep):
            continue
        anchors.append(RunSpec(f"{row.key}_s{seed}", preset, tags={"key": key, "value": value, "seed": seed}))
    return anchors


def _same_value(a: Any, b: Any) -> bool:
    return (list(a) if isinstance(a, list | tuple) else a) == (list(b) if isinstance(b, list | tuple) else b)


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
        at = min(
            range(len(oracle["thresholds"])), key=lambda i: abs(oracle["thresholds"][i] - ORACLE_THRESHOLD)
        )
        flat |= {
            "oracle_leak": oracle["leak"],
            "oracle_own_coverage": oracle["own_coverage"],
            "oracle_confused": oracle["ratio"][at],
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


# --------------------------------------------------------------------------------- tables

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


# ------------------------------------------------------------------------ the paper's claims

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
