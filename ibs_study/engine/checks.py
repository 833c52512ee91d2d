"""Warnings about settings that run but give little: training crops larger than the images, and
an evaluation in which no thing prediction passes the model's thresholds."""

from __future__ import annotations

import logging

from torch import nn

from ibs_study.config import ExperimentConfig
from ibs_study.data.datasets import PanopticDataset
from ibs_study.models.postprocess import InstancePrediction, PanopticPrediction

logger = logging.getLogger(__name__)

__all__ = ["warn_if_crop_exceeds_images", "count_thing_predictions", "warn_if_no_thing_predictions"]


def warn_if_crop_exceeds_images(cfg: ExperimentConfig, dataset: PanopticDataset) -> bool:
    """Log one warning when ``data.crop_size`` is taller or wider than every image of ``dataset``
    (such crops are mostly void padding); returns whether it warned."""
    sizes = [(r.height, r.width) for r in dataset.records if r.height > 0 and r.width > 0]
    if cfg.data.crop_size is None or not sizes:
        return False
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
    if cfg.data.crop_size[0] <= largest[0] and cfg.data.crop_size[1] <= largest[1]:
        return False
    logger.warning(
        "data.crop_size=%s (H, W) is larger than the images of %s (at most %d x %d, H x W): crops are "
        "padded with void; set data.crop_size to at most [%d, %d], or null to train on full images",
        list(cfg.data.crop_size),
        dataset.name,
        *largest,
        *largest,
    )
    return True


def count_thing_predictions(
    prediction: PanopticPrediction | InstancePrediction, thing_ids: set[int] | frozenset[int]
) -> int:
    """Predicted things of one image: its segments of a category in ``thing_ids`` (panoptic), or
    its instances (instance task)."""
    if isinstance(prediction, InstancePrediction):
        return len(prediction.scores)
    return sum(segment.category_id in thing_ids for segment in prediction.segments)


def warn_if_no_thing_predictions(model: nn.Module, predicted_things: int, num_images: int) -> bool:
    """Log one warning when an evaluation of ``num_images`` images of a dataset with thing classes
    (``model.meta``) predicted no thing: every thing candidate fell below the thresholds (the
    config keys the model lists in ``THING_THRESHOLD_KEYS``, with their values); returns whether
    it warned."""
    meta = getattr(model, "meta", None)
    if predicted_things or not num_images or (meta is not None and not meta.thing_labels):
        return False
    keys = getattr(model, "THING_THRESHOLD_KEYS", ())
    values = {key: getattr(model.cfg, key.rsplit(".", 1)[1]) for key in keys}
    thresholds = ", ".join(f"{k}={v}" for k, v in values.items()) or "the model's score thresholds"
    lower = (
        ""
        if values and not any(values.values())
        else " or evaluate with lower thresholds (`ibs-study evaluate RUN --out DIR --set KEY=VALUE`)"
    )
    logger.warning(
        "no thing prediction on the %d evaluated image(s) passed the thresholds (%s): thing metrics are 0; "
        "train more steps (train.max_steps)%s",
        num_images,
        thresholds,
        lower,
    )
    return True
