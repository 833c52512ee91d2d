"""Instance-segmentation predictions as a panoptic evaluation folder, for per-instance views.

An instance run's evaluation (``RUN_DIR/eval_<split>/instances.json``, COCO results with
RLE masks) has no id maps and no confusion records, which the confusion explorer
(:mod:`ibs_study.viz.explorer`: the widget and the static export) reads. :func:`instance_eval_to_panoptic`
resolves each image's masks with score ``>= score_threshold`` into one map (the highest
score takes a pixel: :func:`~ibs_study.metrics.instance.resolve_overlaps`, the map the
instance Acc^th / Prec^th are computed on) and writes the explorer's folder layout:
``predictions.json`` + ``predictions/*.png`` and ``confusion_records.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ibs_study.data.panoptic import segments_from_id_map
from ibs_study.engine.data import open_split
from ibs_study.engine.run_dir import read_run_config
from ibs_study.metrics.instance import InstanceResults, read_instance_results, resolve_overlaps
from ibs_study.metrics.panoptic import PanopticEvaluator
from ibs_study.models.postprocess import PanopticPrediction, PanopticPredictionWriter
from ibs_study.study.grid import read_metrics
from ibs_study.viz.explorer.data import RECORDS_FILE

logger = logging.getLogger(__name__)

__all__ = ["instance_eval_to_panoptic"]

_EMPTY = InstanceResults([], np.zeros(0), np.zeros(0, dtype=np.int64))


def instance_eval_to_panoptic(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str | None = None,
    score_threshold: float = 0.5,
    data_root: str | os.PathLike | None = None,
) -> Path:
    """Write the instance predictions of ``run_dir`` as a panoptic evaluation folder in ``out_dir``.

    Every image the run evaluated (the first ``num_images`` of the split, as its
    ``metrics.json`` records) gets a prediction, empty when it has no mask above the threshold.

    Args:
        run_dir: an evaluated instance run (``eval.task = instance``).
        out_dir: new folder (an existing ``predictions.json`` in it is an error).
        split: evaluated split (default: the run config's ``data.val_split``).
        score_threshold: masks below this score are left out.
        data_root: where the dataset lies now, if not at the config's ``data.root``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: the run was evaluated on the panoptic task.
        FileExistsError: ``out_dir`` already holds predictions.
    """
    cfg = read_run_config(run_dir)
    split = split or cfg.data.val_split
    eval_dir = Path(run_dir) / f"eval_{split}"
    if cfg.eval.task != "instance":
        raise ValueError(f"{run_dir}: eval.task is {cfg.eval.task!r}; its {eval_dir} is already panoptic")
    out_dir = Path(out_dir)
    if (out_dir / "predictions.json").exists():
        raise FileExistsError(f"{out_dir / 'predictions.json'} exists; choose a new out_dir")
    dataset = open_split(cfg, split, prepare=False, root=data_root)
    results = read_instance_results(eval_dir / "instances.json")
    count = int(read_metrics(run_dir, split)["num_images"])
    evaluator = PanopticEvaluator(dataset.meta, thresholds=cfg.eval.confusion_thresholds)
    with PanopticPredictionWriter(out_dir, dataset.meta) as writer:
        for index in range(count):
            record = dataset.records[index]
            prediction = results.get(record.image_id, _EMPTY)
            keep = np.flatnonzero(prediction.scores >= score_threshold)
            id_map, _ = resolve_overlaps(
                [prediction.masks[k] for k in keep], prediction.scores[keep], (record.height, record.width)
            )
            segments = segments_from_id_map(
                id_map,
                {j + 1: int(prediction.category_ids[k]) for j, k in enumerate(keep)},
                score_of={j + 1: float(prediction.scores[k]) for j, k in enumerate(keep)},
            )
            evaluator.process(dataset.read_id_map(index), record.segments, id_map, segments, record.image_id)
            writer.add(PanopticPrediction(id_map, segments, record.image_id))
    with open(out_dir / RECORDS_FILE, "w") as f:
        for item in evaluator.records:
            f.write(json.dumps(item.to_json()) + "\n")
    logger.info("%s: %d instance predictions written as a panoptic folder in %s", run_dir, count, out_dir)
    return out_dir
