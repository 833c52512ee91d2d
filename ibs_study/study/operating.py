"""Operating curves: a trained run evaluated at several values of one inference setting.

Acc^th and Prec^th depend on inference thresholds: Panoptic FCN pastes only the things whose
rescored score reaches ``model.panoptic_fcn.thing_score_threshold``, so a training change that
only lowers the scores trades Acc^th for Prec^th along the same curve, while one that separates
instances better moves the curve. :func:`operating_curve` evaluates one run once per value of a
setting (any key :func:`~ibs_study.engine.evaluate.inference_config` accepts);
:func:`collect_operating_curves` summarises the curves of a study's rows over seeds (mean and
95 % interval per value), which :func:`~ibs_study.study.figures.operating_curve_figure` draws and
:func:`~ibs_study.study.paper_figures.build_all` redraws from ``operating_curves_<model>.json`` beside
the study's results.

Each point is a full evaluation in ``OUT/<value>/`` (predictions, ``metrics.json`` with its
``inference_overrides``); a point whose folder already holds that evaluation is read, not
redone, so an interrupted curve continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ibs_study.atomic import write_json_atomic
from ibs_study.config import config_to_dict, config_value
from ibs_study.engine.evaluate import evaluate_run, inference_config
from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import ConfigError
from ibs_study.input_files import read_json
from ibs_study.study.results import StudyRow, flat_metrics, metric_summary

__all__ = [
    "OPERATING_FILE",
    "PFCN_SCORE_THRESHOLD",
    "setting_value",
    "operating_curve",
    "operating_curve_dir",
    "collect_operating_curves",
]

OPERATING_FILE = "operating_curve.json"
# Panoptic FCN pastes a thing only if its rescored score reaches this (COMBINE.INST_THRESH)
PFCN_SCORE_THRESHOLD = "model.panoptic_fcn.thing_score_threshold"


def setting_value(run_dir: str | os.PathLike, key: str) -> Any:
    """The value of the dotted config ``key`` the run was trained with (e.g. its default threshold)."""
    return config_value(config_to_dict(read_run_config(run_dir)), key)


def operating_curve_dir(run_dir: str | os.PathLike, key: str, split: str | None = None) -> Path:
    """Default folder of a run's curve over ``key``: ``RUN_DIR/eval_<split>_operating/<key>``."""
    split = split or read_run_config(run_dir).data.val_split
    return Path(run_dir) / f"eval_{split}_operating" / key


def _value_name(value: float) -> str:
    return repr(float(value))


def operating_curve(
    run_dir: str | os.PathLike,
    key: str,
    values: Sequence[float],
    *,
    out_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``run_dir`` with ``key`` set to each of ``values`` in turn.

    Args:
        run_dir: a trained run.
        key: an inference setting, e.g. ``model.panoptic_fcn.thing_score_threshold``.
        values: its values, one evaluation each (in the order given).
        out_dir: where the evaluations and ``operating_curve.json`` go (default
            :func:`operating_curve_dir`).
        data_root, split, device: as for :func:`~ibs_study.engine.evaluate.evaluate_run`.

    Returns:
        ``{"run_dir", "key", "points": [{"value", "metrics": {study metric: value}}]}`` (the
        study's flat metric names, :func:`~ibs_study.study.results.flat_metrics`), also written to
        ``OUT/operating_curve.json``.

    Raises:
        ConfigError: ``key`` is not an inference setting, or a value does not fit its type.
        ConfigError: also for no values, or a value given twice.
    """
    if not values:
        raise ConfigError(f"operating_curve of {run_dir}: give at least one value of {key}")
    names = [_value_name(v) for v in values]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"operating_curve of {run_dir}: values of {key} repeat: {list(values)}; give each once"
        )
    inference_config(run_dir, [f"{key}={v}" for v in values])  # every value checked before any work
    out = Path(out_dir) if out_dir is not None else operating_curve_dir(run_dir, key, split)
    points = []
    for value, name in zip(tqdm(values, desc=f"{Path(run_dir).name}: {key}", disable=not progress), names):
        override = f"{key}={value}"
        metrics_path = out / name / "metrics.json"
        metrics = read_json(metrics_path, "metrics JSON") if metrics_path.is_file() else None
        if metrics is None or metrics.get("inference_overrides") != [override]:
            metrics = evaluate_run(
                run_dir,
                data_root=data_root,
                split=split,
                out_dir=out / name,
                device=device,
                overrides=[override],
                progress=False,
            )
        flat = {metric: number for metric, number in flat_metrics(metrics).items() if number is not None}
        points.append({"value": float(value), "metrics": flat})
    result = {"run_dir": str(run_dir), "key": key, "points": points}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / OPERATING_FILE, result, indent=1)
    return result


def collect_operating_curves(
    root: str | os.PathLike,
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    key: str,
    values: Sequence[float],
    **curve_options: Any,
) -> dict[str, Any]:
    """The operating curves of a study's rows (runs ``ROOT/<row key>_s<seed>``) over ``key``,
    computed where missing (:func:`operating_curve`), summarised over seeds per value.

    Returns:
        ``{"key", "values", "seeds", "default", "rows": [{"model", "setting", "points": [{"value",
        "metrics": {name: {"mean", "ci95", "per_seed"}}}]}]}``, ``default`` being the value the
        first run was trained (and evaluated) with; a metric some seed lacks is left out.
    """
    out_rows = []
    for row in rows:
        curves = [
            operating_curve(Path(root) / f"{row.key}_s{seed}", key, values, **curve_options) for seed in seeds
        ]
        points = []
        for k, value in enumerate(values):
            per_seed = [curve["points"][k]["metrics"] for curve in curves]
            names = [name for name in per_seed[0] if all(name in m for m in per_seed)]
            points.append(
                {
                    "value": float(value),
                    "metrics": {n: metric_summary([m[n] for m in per_seed]) for n in names},
                }
            )
        out_rows.append({"model": row.model, "setting": row.setting, "points": points})
    default = setting_value(Path(root) / f"{rows[0].key}_s{seeds[0]}", key) if rows and seeds else None
    return {
        "key": key,
        "values": [float(v) for v in values],
        "seeds": list(seeds),
        "default": default,
        "rows": out_rows,
    }
