"""The study's results: every run's metrics summarised over seeds, saved and read back checked.

* :class:`StudyResults` (rows of :class:`ResultRow`: each metric a :class:`Summary`, the
  confusion curves :class:`Curve` s; sweeps of :class:`SweepRun` s) is ``synthetic_results.json``
  as typed values: ``from_json`` checks a file's structure (one :class:`DataError` line naming
  the key path), ``to_json`` writes back the same bytes;
* :func:`collect_results` reads every (row, seed) run's ``metrics.json`` into it: per row, each
  metric's mean, 95 % confidence interval (Student t over seeds) and per-seed values, plus the
  confusion curve with its band; :func:`collect_sweep` the runs of a sweep;
* :func:`save_results` / :func:`load_results` write and read that JSON;
* :func:`flat_metrics` names the study's metrics of one run (the names below).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ibs_study.atomic import write_json_atomic
from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import DataError, RunDirError
from ibs_study.input_files import expect, read_json
from ibs_study.metrics.panoptic import GT_THING_PIXEL_FATES, PRED_THING_PIXEL_FATES, curve_ratio_at
from ibs_study.study.grid import RunSpec, read_metrics
from ibs_study.study.oracle import LOGIT_METRICS, ORACLE_FILE, ORACLE_LOGITS_FILE
from ibs_study.study.specs import StudyRow, key_of, study_rows

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
    "Summary",
    "Curve",
    "ResultRow",
    "SweepRun",
    "StudyResults",
    "save_results",
    "load_results",
    "save_operating_curves",
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


@dataclass(frozen=True)
class Summary:
    """One metric over seeds (:func:`metric_summary`): ``mean``, its Student-t 95 % interval
    ``ci95`` (low, high) and the ``per_seed`` values, in the order of the row's seeds."""

    mean: float | None
    ci95: tuple[float, float]
    per_seed: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The :func:`metric_summary` of ``values``."""
        return cls.from_json(metric_summary(values))

    @classmethod
    def from_json(
        cls, data: Any, num_seeds: int | None = None, where: str = "summary", path: Any = ""
    ) -> Summary:
        """From ``{"mean", "ci95", "per_seed"}``, checked (``num_seeds``: how many values
        ``per_seed`` must hold).

        Raises:
            DataError: naming ``path`` and ``where``: not that shape.
        """
        expect(data, dict, where, path)
        if not {"mean", "ci95", "per_seed"} <= set(data):
            raise DataError(f"{path}: {where} needs 'mean', 'ci95' and 'per_seed', has {sorted(data)}")
        expect(data["mean"], (int, float, type(None)), f"{where}.mean", path)
        if len(expect(data["ci95"], list, f"{where}.ci95", path)) != 2:
            raise DataError(f"{path}: {where}.ci95 must hold 2 numbers, got {data['ci95']}")
        per_seed = expect(data["per_seed"], list, f"{where}.per_seed", path)
        if num_seeds is not None and len(per_seed) != num_seeds:
            raise DataError(f"{path}: {where}.per_seed must hold one value per seed ({num_seeds})")
        return cls(data["mean"], tuple(data["ci95"]), tuple(per_seed))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": list(self.ci95), "per_seed": list(self.per_seed)}


@dataclass(frozen=True)
class Curve:
    """A confusion curve over seeds: per threshold T (``thresholds``) the ``mean`` ratio and its
    ``ci95`` (low, high); ``per_seed``: each seed's ratios (seeds x T)."""

    thresholds: tuple[float, ...]
    mean: tuple[float, ...]
    ci95: tuple[tuple[float, float], ...]
    per_seed: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, curves: Sequence[Mapping[str, Any]]) -> Curve:
        """The summary of one curve per seed (each with ``thresholds`` and ``ratio``, the same thresholds)."""
        ratios = np.array([c["ratio"] for c in curves], dtype=float)  # (seeds, T)
        per_threshold = [metric_summary(ratios[:, t]) for t in range(ratios.shape[1])]
        return cls(
            tuple(curves[0]["thresholds"]),
            tuple(s["mean"] for s in per_threshold),
            tuple(tuple(s["ci95"]) for s in per_threshold),
            tuple(tuple(r) for r in ratios.tolist()),
        )

    @classmethod
    def from_json(cls, data: Any, where: str = "curve", path: Any = "") -> Curve:
        """From ``{"thresholds", "mean", "ci95", "per_seed"}``, checked.

        Raises:
            DataError: naming ``path`` and ``where``: a list missing, or not one entry per threshold.
        """
        expect(data, dict, where, path)
        thresholds = expect(data.get("thresholds"), list, f"{where}.thresholds", path)
        lists = {name: expect(data.get(name), list, f"{where}.{name}", path) for name in ("mean", "ci95")}
        per_seed = expect(data.get("per_seed"), list, f"{where}.per_seed", path)
        lists |= {
            f"per_seed[{k}]": expect(r, list, f"{where}.per_seed[{k}]", path) for k, r in enumerate(per_seed)
        }
        for name, values in lists.items():
            if len(values) != len(thresholds):
                raise DataError(
                    f"{path}: {where}.{name} must hold one value per threshold ({len(thresholds)})"
                )
        return cls(
            tuple(thresholds),
            tuple(data["mean"]),
            tuple(tuple(interval) for interval in data["ci95"]),
            tuple(tuple(ratios) for ratios in per_seed),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "mean": list(self.mean),
            "ci95": [list(interval) for interval in self.ci95],
            "per_seed": [list(ratios) for ratios in self.per_seed],
        }


_CURVES = ("confusion_curve", "oracle_confusion_curve")


@dataclass(frozen=True)
class ResultRow:
    """One row of the results: a model's setting (and ``variant``; "" the study's own) over seeds.

    Attributes:
        seeds: the seeds of its runs; ``steps``: their ``train.max_steps``.
        metrics: study metric name (:func:`flat_metrics`) -> its summary over the seeds.
        confusion_curve, oracle_confusion_curve: where every run has one.
        preset: the preset its runs trained (None where the file does not name it).
        records_variant: whether the JSON names the variant (results collected before rows had
            variants do not; written back as read).
    """

    model: str
    setting: str
    seeds: tuple[int, ...]
    steps: int
    metrics: dict[str, Summary]
    variant: str = ""
    preset: str | None = None
    confusion_curve: Curve | None = None
    oracle_confusion_curve: Curve | None = None
    records_variant: bool = True

    @property
    def key(self) -> str:
        """``<model>_<setting>[_<variant>]``, as :attr:`~ibs_study.study.specs.StudyRow.key`."""
        return key_of(self.model, self.setting, self.variant)

    @classmethod
    def from_json(cls, data: Any, where: str = "row", path: Any = "") -> ResultRow:
        """From a row of the results JSON, checked.

        Raises:
            DataError: naming ``path`` and the key path: a key missing or of the wrong type.
        """
        expect(data, dict, where, path)
        missing = [key for key in ("model", "setting", "seeds", "steps", "metrics") if key not in data]
        if missing:
            raise DataError(f"{path}: {where} lacks the key(s) {missing}")
        seeds = expect(data["seeds"], list, f"{where}.seeds", path)
        for j, seed in enumerate(seeds):
            expect(seed, int, f"{where}.seeds[{j}]", path)
        metrics = expect(data["metrics"], dict, f"{where}.metrics", path)
        curves = {
            name: Curve.from_json(data[name], f"{where}.{name}", path) for name in _CURVES if name in data
        }
        return cls(
            model=expect(data["model"], str, f"{where}.model", path),
            setting=expect(data["setting"], str, f"{where}.setting", path),
            seeds=tuple(seeds),
            steps=expect(data["steps"], int, f"{where}.steps", path),
            metrics={
                name: Summary.from_json(summary, len(seeds), f"{where}.metrics.{name}", path)
                for name, summary in metrics.items()
            },
            variant=expect(data.get("variant", ""), str, f"{where}.variant", path),
            preset=expect(data.get("preset"), (str, type(None)), f"{where}.preset", path),
            records_variant="variant" in data,
            **curves,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "setting": self.setting}
        if self.records_variant:
            out["variant"] = self.variant
        if self.preset is not None:
            out["preset"] = self.preset
        out |= {
            "seeds": list(self.seeds),
            "steps": self.steps,
            "metrics": {name: summary.to_json() for name, summary in self.metrics.items()},
        }
        for name in _CURVES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).to_json()
        return out


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: the swept config ``key`` at ``value`` on ``preset`` (seed ``seed``) and
    its metrics (:func:`flat_metrics` names; one run, so no interval)."""

    preset: str
    key: str
    value: Any
    seed: int | None
    metrics: dict[str, float]

    @classmethod
    def from_json(cls, data: Any, where: str = "point", path: Any = "") -> SweepRun:
        """From an entry of the results' ``sweeps``, checked.

        Raises:
            DataError: naming ``path`` and the key path: a key missing or a metric not a number.
        """
        expect(data, dict, where, path)
        missing = [key for key in ("preset", "key", "value", "metrics") if key not in data]
        if missing:
            raise DataError(f"{path}: {where} lacks the key(s) {missing}")
        metrics = expect(data["metrics"], dict, f"{where}.metrics", path)
        for metric, value in metrics.items():
            expect(value, (int, float), f"{where}.metrics.{metric}", path)
        return cls(
            preset=expect(data["preset"], str, f"{where}.preset", path),
            key=expect(data["key"], str, f"{where}.key", path),
            value=data["value"],
            seed=expect(data.get("seed"), (int, type(None)), f"{where}.seed", path),
            metrics=dict(metrics),
        )

    def to_json(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {
            "preset": self.preset,
            "key": self.key,
            "value": value,
            "seed": self.seed,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class StudyResults:
    """The study's results (``synthetic_results.json``): where they were measured (``scale``,
    ``device``, ``commit``), the ``rows`` and, when the study ran sweeps, ``sweeps``: name -> points."""

    scale: str | None
    device: str | None
    commit: str | None
    rows: tuple[ResultRow, ...]
    sweeps: dict[str, tuple[SweepRun, ...]] | None = None

    def find_row(self, model: str, setting: str, variant: str = "") -> ResultRow | None:
        """The row of ``model``, ``setting`` and ``variant`` ("": the study's own), or None."""
        return next(
            (r for r in self.rows if r.model == model and r.setting == setting and r.variant == variant), None
        )

    def models(self) -> list[str]:
        """The models of the rows, in order of first appearance."""
        return list(dict.fromkeys(row.model for row in self.rows))

    @classmethod
    def from_json(cls, data: Any, path: Any = "") -> StudyResults:
        """From the results JSON's top level, checked.

        Raises:
            DataError: naming ``path`` and the key path: not shaped as :meth:`to_json` writes it
                (e.g. a run's ``metrics.json``).
        """
        expect(data, dict, "the top level", path)
        if "rows" not in data:
            raise DataError(
                f"{path}: not a study results JSON (no 'rows'; keys: {sorted(data)[:8]}); give the file "
                "ibs_study.study.results.save_results writes, e.g. paper_figures/synthetic_results.json"
            )
        rows = expect(data["rows"], list, "rows", path)
        sweeps = expect(data.get("sweeps"), (dict, type(None)), "sweeps", path)
        return cls(
            scale=data.get("scale"),
            device=data.get("device"),
            commit=data.get("commit"),
            rows=tuple(ResultRow.from_json(row, f"rows[{k}]", path) for k, row in enumerate(rows)),
            sweeps=None
            if sweeps is None
            else {
                name: tuple(
                    SweepRun.from_json(point, f"sweeps.{name}[{j}]", path)
                    for j, point in enumerate(expect(points, list, f"sweeps.{name}", path))
                )
                for name, points in sweeps.items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scale": self.scale,
            "device": self.device,
            "commit": self.commit,
            "rows": [row.to_json() for row in self.rows],
        }
        if self.sweeps is not None:
            out["sweeps"] = {
                name: [point.to_json() for point in points] for name, points in self.sweeps.items()
            }
        return out


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


def collect_results(
    root: str | os.PathLike,
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    *,
    scale: str,
    device: str,
    commit: str | None,
) -> StudyResults:
    """Read every (row, seed) run under ``root`` (``<row key>_s<seed>``) into the results.

    A row's ``steps`` is its runs' ``train.max_steps`` (read from their ``config.yaml``);
    seeds of one row that trained for different numbers of steps are an error. Each row
    records its ``variant`` ("" for the study's own rows) and preset.
    """
    root = Path(root)
    out_rows = tuple(
        row_from_runs(
            [root / f"{row.key}_s{seed}" for seed in seeds],
            seeds,
            model=row.model,
            setting=row.setting,
            variant=row.variant,
            preset=row.preset,
        )
        for row in rows
    )
    return StudyResults(scale=scale, device=device, commit=commit, rows=out_rows)


def row_from_runs(
    run_dirs: Sequence[str | os.PathLike],
    seeds: Sequence[int],
    *,
    model: str = "",
    setting: str = "",
    variant: str = "",
    preset: str | None = None,
) -> ResultRow:
    """One results row (of ``model``, ``setting``, ``variant`` and ``preset``) from evaluated run
    directories, ``run_dirs[k]`` trained with ``seeds[k]``: ``steps``, ``metrics`` (the summary of
    each :func:`flat_metrics` name all runs have) and the confusion curves where every run has
    them. Rows of any folders can be compared with :func:`~ibs_study.study.claims.paired_difference`.

    Raises:
        ValueError: ``run_dirs`` and ``seeds`` differ in length.
        RunDirError: the runs trained for different numbers of steps.
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
    has_curve = all("confusion_curve" in m for m in per_seed)
    return ResultRow(
        model=model,
        setting=setting,
        variant=variant,
        preset=preset,
        seeds=tuple(seeds),
        steps=steps.pop(),
        metrics={
            name: Summary.of([f[name] for f in flat])
            for name in flat[0]
            if all(f.get(name) is not None for f in flat)
        },
        confusion_curve=Curve.of([m["confusion_curve"] for m in per_seed]) if has_curve else None,
        oracle_confusion_curve=Curve.of(oracles) if all(o is not None for o in oracles) else None,
    )


def collect_sweep(root: str | os.PathLike, specs: Sequence[RunSpec]) -> tuple[SweepRun, ...]:
    """The points of a sweep: one per run of ``specs`` under ``root`` (specs tagged with ``key``,
    ``value`` and ``seed``, as :func:`~ibs_study.study.specs.sweep_specs` makes them)."""
    out = []
    for spec in specs:
        run_dir = Path(root) / spec.name
        flat = flat_metrics(
            read_metrics(run_dir), read_oracle(run_dir), read_oracle(run_dir, ORACLE_LOGITS_FILE)
        )
        out.append(
            SweepRun(
                preset=spec.preset,
                key=spec.tags["key"],
                value=spec.tags["value"],
                seed=spec.tags.get("seed"),
                metrics={k: v for k, v in flat.items() if v is not None},
            )
        )
    return tuple(out)


# the study row a sweep of a key is read against: crop training without IBS for λ, full-image
# training for the crop size (the setting the swept runs should move away from or towards)
SWEEP_REFERENCE_SETTING = {"ibs.weight": ("crop", "crop, no IBS"), "data.crop_size": ("full", "full image")}


def sweep_reference(results: StudyResults, points: Sequence[SweepRun]) -> tuple[str, dict[str, float]] | None:
    """The reference a sweep's plot draws: the metrics of the study row of
    :data:`SWEEP_REFERENCE_SETTING` (same model as the swept preset) at the sweep's seed.

    Returns:
        ``(label, {metric: value})``, e.g. ``("crop, no IBS (seed 0)", {"pq": 0.61, ...})``;
        None when the key has no reference setting, the points name no seed, or the results
        lack that row or seed.
    """
    if not points or points[0].key not in SWEEP_REFERENCE_SETTING or points[0].seed is None:
        return None
    setting, label = SWEEP_REFERENCE_SETTING[points[0].key]
    seed = points[0].seed
    model = next(
        (r.model for scale in ("cpu", "paper") for r in study_rows(scale) if r.preset == points[0].preset),
        None,
    )
    row = results.find_row(model, setting) if model else None
    if row is None or seed not in row.seeds:
        return None
    k = row.seeds.index(seed)
    return f"{label} (seed {seed})", {name: m.per_seed[k] for name, m in row.metrics.items()}


def save_results(results: StudyResults, path: str | os.PathLike) -> None:
    """Write ``results`` as JSON to ``path`` (atomically; its folder created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, results.to_json(), indent=1)


def load_results(path: str | os.PathLike) -> StudyResults:
    """The study's results JSON (:func:`save_results`), its structure checked.

    Raises:
        DataError: naming ``path`` and the key path: the file cannot be read, is not JSON, or is
            not shaped as :func:`save_results` writes it (e.g. a run's ``metrics.json``).
    """
    return StudyResults.from_json(read_json(path, "results JSON"), path)


def save_operating_curves(curves: dict[str, Any], path: str | os.PathLike) -> None:
    """Write operating curves (:func:`~ibs_study.study.operating.collect_operating_curves`) as JSON
    to ``path`` (atomically; its folder created), for :func:`load_operating_curves`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, curves, indent=1)


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
