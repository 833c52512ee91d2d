"""Full-image evaluation of a trained run.

:func:`evaluate_run` loads a run's config and checkpoint, predicts every image of a split
at full resolution (progress bar), writes the predictions in the standard formats and
scores them:

* ``OUT/predictions.json`` + ``OUT/predictions/*.png`` (COCO-panoptic), or for the
  instance task ``OUT/instances.json`` (COCO instances results, RLE);
* ``OUT/metrics.json`` in the ``ibs-study score`` format (fractions in [0, 1]);
* ``OUT/confusion_records.jsonl``: one record per predicted thing segment.

``metrics.json`` also records where the evaluation came from: ``checkpoint`` (``path``,
``step``, ``sha256``), ``data_root`` and ``split``. The outputs appear at once: they are written
to a temporary folder beside ``OUT`` that replaces it when complete
(:func:`~ibs_study.atomic.atomic_folder`), and the run directory is locked meanwhile. The run's
own ``RUN_DIR/eval_<split>`` (newest checkpoint, the config's data root and val split) is not
replaced by an evaluation of another checkpoint, data root or split unless forced.

:func:`rescore_run` scores an evaluation's stored predictions again with the current metrics
code, without inference (for metrics added after a run was evaluated).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ibs_study.atomic import atomic_folder, atomic_write, remove_temp_files, write_json_atomic
from ibs_study.config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict
from ibs_study.data.datasets import PanopticDataset
from ibs_study.data.panoptic import PanopticFormatError, segments_from_id_map
from ibs_study.engine.checkpoint import (
    checkpoint_record,
    latest_checkpoint,
    load_checkpoint,
    load_latest_checkpoint,
)
from ibs_study.engine.checks import count_thing_predictions, warn_if_no_thing_predictions
from ibs_study.engine.data import open_split
from ibs_study.engine.distributed import DistInfo, resolve_device
from ibs_study.engine.run_dir import RunDirError, read_run_config, run_lock
from ibs_study.engine.train import set_threads
from ibs_study.errors import CheckpointError, ConfigError, DataError
from ibs_study.metrics.instance import evaluate_instances, read_instance_results
from ibs_study.metrics.io import decode_id_png, load_prediction_json
from ibs_study.metrics.panoptic import PanopticEvaluator, format_results
from ibs_study.models.build import build_model
from ibs_study.models.postprocess import (
    PREDICTIONS_JSON,
    PREDICTIONS_PNG_DIR,
    InstancePrediction,
    InstancePredictionWriter,
    PanopticPrediction,
    PanopticPredictionWriter,
)

logger = logging.getLogger(__name__)

INSTANCES_JSON = "instances.json"  # the instance task's predictions (COCO results, RLE)
# what an evaluation writes into its folder (other files there, e.g. the oracle's, are kept)
EVALUATION_OUTPUTS = (
    PREDICTIONS_JSON,
    PREDICTIONS_PNG_DIR,
    INSTANCES_JSON,
    "metrics.json",
    "confusion_records.jsonl",
)
# the metrics.json keys that say where an evaluation came from
PROVENANCE_KEYS = ("checkpoint", "data_root", "split")

__all__ = [
    "evaluate_run",
    "evaluate_model",
    "rescore_run",
    "changed_metrics",
    "load_trained_model",
    "inference_config",
    "INFERENCE_SECTIONS",
    "open_trained_run",
    "TrainedRun",
    "predict_full_image",
    "format_metrics",
]


# config sections whose keys only change how a trained model predicts, not its parameters
INFERENCE_SECTIONS = ("model.panoptic_fcn.", "model.mask2former.", "model.hf.", "eval.")


def inference_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The run's config with ``key=value`` ``overrides`` of its inference settings (keys under
    :data:`INFERENCE_SECTIONS`, e.g. ``model.panoptic_fcn.thing_score_threshold=0.1``).

    Raises:
        ConfigError: a key outside those sections, unknown or ill-typed.
    """
    cfg = read_run_config(run_dir)
    if not overrides:
        return cfg
    for item in overrides:
        if not item.strip().startswith(INFERENCE_SECTIONS):
            raise ConfigError(
                f"evaluation override {item!r}: only inference settings can change after training, keys "
                f"under {', '.join(INFERENCE_SECTIONS)} (the data root and split have their own options)"
            )
    return config_from_dict(apply_overrides(config_to_dict(cfg), overrides))


def _checkpoint_of(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None) -> tuple[Path, dict]:
    """(path, state) of ``checkpoint``, or of the run's newest checkpoint that loads."""
    if checkpoint:
        return Path(checkpoint), load_checkpoint(checkpoint, map_location="cpu")
    loaded = load_latest_checkpoint(Path(run_dir) / "checkpoints", map_location="cpu")
    if loaded is None:
        raise RunDirError(f"{run_dir}: no checkpoint in {Path(run_dir) / 'checkpoints'}; train first")
    return loaded


def _trained_model(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    device: str,
    meta,
    overrides: Sequence[str],
) -> tuple[torch.nn.Module, ExperimentConfig, Path, dict]:
    """:func:`load_trained_model`, plus the checkpoint's state."""
    cfg = inference_config(run_dir, overrides)
    path, state = _checkpoint_of(run_dir, checkpoint)
    dev = resolve_device(device, DistInfo())
    if meta is None:
        meta = _eval_split(cfg, cfg.data.val_split, None).meta
    model = build_model(cfg.model, meta)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        if not overrides:
            raise CheckpointError(
                f"{path}: its weights do not fit the model of {run_dir}/config.yaml (a checkpoint of another "
                f"run?); pass one of this run's checkpoints ({str(err).splitlines()[0]})"
            ) from None
        raise ConfigError(
            f"{path}: the weights do not fit the model built with {list(overrides)}; those keys change "
            f"its parameters, not only how it predicts ({str(err).splitlines()[0]})"
        ) from None
    return model.to(dev).eval(), cfg, path, state


def load_trained_model(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    meta=None,
    overrides: Sequence[str] = (),
) -> tuple[torch.nn.Module, ExperimentConfig, Path]:
    """The model of ``run_dir`` with weights from ``checkpoint`` (default: the newest that loads),
    in eval mode, built with the run's config and the inference ``overrides`` (:func:`inference_config`).

    Raises:
        CheckpointError: ``checkpoint`` (or every checkpoint of the run) is unreadable.
    """
    model, cfg, path, _ = _trained_model(run_dir, checkpoint, device, meta, overrides)
    return model, cfg, path


def _eval_split(cfg: ExperimentConfig, split: str, data_root: str | os.PathLike | None) -> PanopticDataset:
    """The ``split`` of ``data_root`` (default ``data.root``) as it is: evaluation never generates
    a dataset.

    Raises:
        DataError: the root does not exist.
    """
    root = Path(data_root if data_root is not None else cfg.data.root)
    if not root.is_dir():
        given = "--data" if data_root is not None else "the run's data.root"
        raise DataError(
            f"{root}: no such dataset folder ({given}); pass --data with the folder that holds the "
            f"{cfg.data.dataset} dataset (evaluation does not generate one)"
        )
    return open_split(cfg, split, prepare=False, root=root)


@dataclass
class TrainedRun:
    """A trained run ready to evaluate: its model (eval mode), config, checkpoint, the split's
    name and dataset, the default output folder ``RUN_DIR/eval_<split>`` and ``provenance``:
    the :data:`PROVENANCE_KEYS` an evaluation records (checkpoint path, step and sha256; data
    root; split)."""

    model: torch.nn.Module
    cfg: ExperimentConfig
    checkpoint: Path
    split: str
    dataset: PanopticDataset
    default_out: Path
    provenance: dict[str, Any] = field(default_factory=dict)


def open_trained_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
) -> TrainedRun:
    """The model of ``run_dir`` (``checkpoint``, default the newest that loads; inference
    ``overrides``, see :func:`inference_config`) and ``split`` (default ``data.val_split``) of
    ``data_root`` (default the config's ``data.root``), with the torch threads of the run's
    ``train.threads`` set before anything is computed.

    Raises:
        DataError: the data root does not exist (nothing is generated).
        CheckpointError: the checkpoint cannot be read.
    """
    cfg = read_run_config(run_dir)
    set_threads(cfg)
    split = split or cfg.data.val_split
    dataset = _eval_split(cfg, split, data_root)
    model, cfg, path, state = _trained_model(run_dir, checkpoint, device, dataset.meta, overrides)
    provenance = {
        "checkpoint": checkpoint_record(path, state),
        "data_root": str(Path(data_root if data_root is not None else cfg.data.root)),
        "split": split,
    }
    return TrainedRun(model, cfg, path, split, dataset, Path(run_dir) / f"eval_{split}", provenance)


def _test_size(height: int, width: int, short_side: int | None, max_size: int | None) -> tuple[int, int]:
    """Inference size: short side ``short_side``, long side at most ``max_size`` (detectron2's rule)."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return round(height * scale), round(width * scale)


def predict_full_image(
    model: torch.nn.Module,
    image: np.ndarray,
    task: str = "panoptic",
    *,
    test_short_side: int | None = None,
    test_max_size: int | None = None,
) -> PanopticPrediction | InstancePrediction:
    """Predict one (H, W, 3) uint8 image at full resolution (or at the test size, then resized back).

    Returns:
        The prediction at the image's original size.
    """
    device = next(model.parameters()).device
    height, width = image.shape[:2]
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(device)
    size = _test_size(height, width, test_short_side, test_max_size)
    if size != (height, width):
        tensor = F.interpolate(tensor[None].float(), size=size, mode="bilinear", antialias=True)[0]
        tensor = tensor.round().clamp(0, 255).to(torch.uint8)
    prediction = model.predict_panoptic(tensor) if task == "panoptic" else model.predict_instances(tensor)
    if size == (height, width):
        return prediction
    if task == "panoptic":
        id_map = _resize_nearest(prediction.id_map[None], (height, width))[0]
        segments = segments_from_id_map(
            id_map,
            {s.id: s.category_id for s in prediction.segments},
            score_of={s.id: s.score for s in prediction.segments},
        )
        return PanopticPrediction(id_map=id_map, segments=segments, image_id=prediction.image_id)
    masks = _resize_nearest(prediction.masks, (height, width))
    return InstancePrediction(masks, prediction.scores, prediction.category_ids, prediction.image_id)


def _resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) integer or bool maps -> (N, H, W), nearest neighbour."""
    tensor = torch.from_numpy(maps.astype(np.int32))[:, None].float()
    return F.interpolate(tensor, size=size, mode="nearest")[:, 0].numpy().astype(maps.dtype)


def evaluate_model(
    model: torch.nn.Module,
    dataset: PanopticDataset,
    out_dir: str | os.PathLike,
    *,
    task: str = "panoptic",
    max_images: int | None = None,
    thresholds: tuple[float, ...] | None = None,
    test_short_side: int | None = None,
    test_max_size: int | None = None,
    inference_overrides: Sequence[str] = (),
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict and score ``dataset`` at full resolution; write predictions and metrics to ``out_dir``.

    Returns:
        The metrics dict (also written to ``out_dir/metrics.json``): the ``ibs-study score``
        format for the panoptic task; AP family plus Acc^th / Prec^th for the instance task; plus
        ``inference_overrides`` when the model was built with some (recorded, not applied here)
        and the ``provenance`` keys (:attr:`TrainedRun.provenance`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    if task == "panoptic":
        evaluator = _panoptic_evaluator(dataset, thresholds)
        writer = PanopticPredictionWriter(out_dir, dataset.meta)
    else:
        writer = InstancePredictionWriter(out_dir / INSTANCES_JSON)
    thing_ids, predicted_things = {c.id for c in dataset.meta.categories if c.isthing}, 0
    started = time.perf_counter()
    for index in tqdm(range(count), desc=f"evaluating {dataset.name}", disable=not progress):
        sample = dataset[index]
        prediction = predict_full_image(
            model, sample.image, task, test_short_side=test_short_side, test_max_size=test_max_size
        )
        prediction.image_id = sample.image_id
        if task == "panoptic":
            evaluator.process(
                sample.id_map, sample.segments, prediction.id_map, prediction.segments, sample.image_id
            )
        writer.add(prediction)
        predicted_things += count_thing_predictions(prediction, thing_ids)
    warn_if_no_thing_predictions(model, predicted_things, count)
    results_path = writer.close()
    if task == "panoptic":
        metrics = evaluator.summarize()
        _write_records(evaluator, out_dir)
    else:
        metrics = evaluate_instances(
            (dataset[i] for i in range(count)),
            read_instance_results(results_path),
            categories=dataset.meta.by_id(),
            allow_missing=True,
        )
    elapsed = time.perf_counter() - started
    metrics["num_images"] = count
    metrics["timing"] = {"total_s": elapsed, "per_image_s": elapsed / max(count, 1), "workers": 1}
    if inference_overrides:
        metrics["inference_overrides"] = list(inference_overrides)
    metrics.update(provenance or {})
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def _panoptic_evaluator(dataset: PanopticDataset, thresholds: Sequence[float] | None) -> PanopticEvaluator:
    """The evaluator of ``dataset`` with ``eval.confusion_thresholds`` (None: the default curve)."""
    return PanopticEvaluator(dataset.meta, **({} if thresholds is None else {"thresholds": thresholds}))


def _write_records(evaluator: PanopticEvaluator, out_dir: Path) -> None:
    with atomic_write(out_dir / "confusion_records.jsonl") as f:
        for record in evaluator.records:
            f.write(json.dumps(record.to_json()) + "\n")


def rescore_run(
    run_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    out_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the predictions an earlier ``ibs-study evaluate`` stored in ``out_dir`` (default
    ``RUN_DIR/eval_<split>``) again with the current metrics code; no model, no inference.

    Rewrites ``metrics.json`` (keeping its ``num_images`` and the ``timing`` of the evaluation
    that made the predictions) and, for the panoptic task, ``confusion_records.jsonl``: the way
    to add a metric introduced after the run was evaluated. Scores the same first
    ``num_images`` images of the split as that evaluation. If an earlier value would change (the
    ground truth or the metrics code is no longer what the evaluation met), nothing is written
    unless ``force``.

    Returns:
        (the new metrics, the metrics.json it replaced); :func:`changed_metrics` lists the values
        that differ between them (empty unless ``force``).

    Raises:
        RunDirError: no ``metrics.json`` in the output folder (nothing to rescore), or earlier
            values would change without ``force`` (names the first of them).
        PanopticFormatError: a prediction missing for an image the evaluation covered.
    """
    with run_lock(run_dir):
        return _rescore(
            run_dir, data_root=data_root, split=split, out_dir=out_dir, force=force, progress=progress
        )


def _rescore(
    run_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None,
    split: str | None,
    out_dir: str | os.PathLike | None,
    force: bool,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`rescore_run`, the run directory locked."""
    cfg = read_run_config(run_dir)
    split = split or cfg.data.val_split
    dataset = _eval_split(cfg, split, data_root)
    out = Path(out_dir) if out_dir else Path(run_dir) / f"eval_{split}"
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise RunDirError(
            f"{metrics_path} not found: nothing to rescore; run `ibs-study evaluate {run_dir}` first"
        )
    try:
        previous = json.loads(metrics_path.read_bytes().decode("utf-8"))
        count = int(previous["num_images"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise RunDirError(
            f"{metrics_path}: not an evaluation's metrics ({type(err).__name__}: {err}); evaluate again "
            "instead of rescoring"
        ) from None
    indices = tqdm(range(count), desc=f"rescoring {out}", disable=not progress)
    if cfg.eval.task == "panoptic":
        evaluator = _panoptic_evaluator(dataset, cfg.eval.confusion_thresholds)
        predictions = load_prediction_json(out / PREDICTIONS_JSON, dataset.meta.by_id())
        by_id = {record.image_id: record for record in predictions.records}
        for index in indices:
            gt = dataset.records[index]
            pred = by_id.get(gt.image_id)
            if pred is None:
                raise PanopticFormatError(
                    f"{predictions.path}: no prediction for image id {gt.image_id!r}, one of the first {count} "
                    f"images of {dataset.name} that this evaluation covered"
                )
            png = out / PREDICTIONS_PNG_DIR / pred.png_name
            evaluator.process(
                dataset.read_id_map(index),
                gt.segments,
                decode_id_png(png),
                pred.segments,
                gt.image_id,
                gt_source=dataset.png_path(gt),
                pred_source=png,
            )
        metrics = evaluator.summarize()
    else:
        metrics = evaluate_instances(
            (dataset[i] for i in indices),
            read_instance_results(out / INSTANCES_JSON),
            categories=dataset.meta.by_id(),
            allow_missing=True,
        )
    metrics["num_images"] = count
    metrics["timing"] = previous["timing"]
    metrics.update({key: previous[key] for key in PROVENANCE_KEYS if key in previous})
    changed = changed_metrics(metrics, previous)
    if changed and not force:
        raise RunDirError(
            f"{metrics_path}: rescoring would change {len(changed)} earlier value(s), e.g. "
            f"{', '.join(changed[:4])}: the stored predictions no longer meet this ground truth or this "
            "metrics code the way they did; nothing written (force / --force replaces them)"
        )
    if cfg.eval.task == "panoptic":
        _write_records(evaluator, out)
    write_json_atomic(metrics_path, metrics)  # a killed rescore leaves the old file whole
    return metrics, previous


def changed_metrics(new: dict[str, Any], old: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``old`` whose value differs in ``new`` or is gone from it (``timing`` aside)."""
    changed = []
    for key, value in old.items():
        name = f"{prefix}{key}"
        if key == "timing" and not prefix:
            continue
        if key not in new:
            changed.append(name)
        elif isinstance(value, dict) and isinstance(new[key], dict):
            changed += changed_metrics(new[key], value, f"{name}.")
        elif new[key] != value:
            changed.append(name)
    return changed


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    out_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run directory on full images (default: newest checkpoint that loads, the config's
    val split, output in ``RUN_DIR/eval_<split>``), the run directory locked meanwhile. The outputs
    are written to a temporary folder beside the output folder and replace it when complete; files
    there that are not evaluation outputs (e.g. ``oracle_confusion.json``) are kept.

    ``overrides`` change inference settings (:func:`inference_config`); they need an ``out_dir``
    of their own (the run's own evaluation stays what the run as trained gives) and are recorded
    in the metrics as ``inference_overrides``. Likewise an existing ``RUN_DIR/eval_<split>`` is
    replaced by an evaluation of another checkpoint, data root or split than the run's own only
    with ``force``.

    Raises:
        RunDirError: another process uses the run directory; the default output folder holds an
            evaluation that this one, of another checkpoint / data root / split, would replace.
        DataError: the data root does not exist.
        CheckpointError: the checkpoint cannot be read.
    """
    if overrides and out_dir is None:
        raise ConfigError(
            f"evaluating {run_dir} with {list(overrides)} needs an output folder of its own (--out): "
            "RUN_DIR/eval_<split> holds the evaluation of the run as trained"
        )
    cfg = read_run_config(run_dir)
    if out_dir is None and not force:
        target = Path(run_dir) / f"eval_{split or cfg.data.val_split}"
        other = _other_source(run_dir, cfg, checkpoint, data_root, split)
        if other and (target / "metrics.json").is_file():
            raise RunDirError(
                f"{target} holds an earlier evaluation of this run; evaluating {other} (not the run's "
                "own) would replace it: pass --out FOLDER to write it elsewhere, or --force to replace it"
            )
    with run_lock(run_dir):
        remove_temp_files(run_dir)
        run = open_trained_run(
            run_dir,
            checkpoint=checkpoint,
            data_root=data_root,
            split=split,
            device=device,
            overrides=overrides,
        )
        cfg = run.cfg
        out = Path(out_dir) if out_dir else run.default_out
        logger.info("evaluating %s (%s) on %s -> %s", run_dir, run.checkpoint.name, run.dataset, out)
        # written beside ``out``, which it replaces when complete (other files there are kept)
        with atomic_folder(out, replaced=EVALUATION_OUTPUTS) as tmp:
            return evaluate_model(
                run.model,
                run.dataset,
                tmp,
                task=cfg.eval.task,
                max_images=max_images if max_images is not None else cfg.eval.max_images,
                thresholds=cfg.eval.confusion_thresholds,
                test_short_side=cfg.eval.test_short_side,
                test_max_size=cfg.eval.test_max_size,
                inference_overrides=overrides,
                provenance=run.provenance,
                progress=progress,
            )


def _other_source(
    run_dir: str | os.PathLike,
    cfg: ExperimentConfig,
    checkpoint: str | os.PathLike | None,
    data_root: str | os.PathLike | None,
    split: str | None,
) -> str:
    """What differs from the run's own evaluation (its newest checkpoint, ``data.root`` and
    ``data.val_split``), e.g. ``"checkpoint C and split train"``; empty when nothing does."""
    other = []
    newest = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint and (newest is None or Path(checkpoint).resolve() != newest.resolve()):
        other.append(f"checkpoint {checkpoint}")
    if data_root is not None and Path(data_root).resolve() != Path(cfg.data.root).resolve():
        other.append(f"data root {data_root}")
    if split is not None and split != cfg.data.val_split:
        other.append(f"split {split}")
    return " and ".join(other)


def format_metrics(metrics: dict[str, Any]) -> str:
    """Readable table (percent) of a panoptic or instance ``metrics.json``."""
    if "all" in metrics:
        return format_results(metrics)
    rows = [
        ("AP", "ap"),
        ("AP50", "ap50"),
        ("AP75", "ap75"),
        ("AP^S", "ap_s"),
        ("AP^M", "ap_m"),
        ("AP^L", "ap_l"),
        ("Acc^th", "acc_th"),
        ("Prec^th", "prec_th"),
    ]
    cells = [f"{label:>7s}" for label, _ in rows]
    values = [f"{'-' if metrics.get(key) is None else f'{100 * metrics[key]:.1f}':>7s}" for _, key in rows]
    return " ".join(cells) + "\n" + " ".join(values) + f"\n({metrics.get('num_images', '?')} images)"
