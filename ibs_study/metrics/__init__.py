"""Metrics: panoptic quality, Acc^th / Prec^th, the confusion curve and instance AP.

``panoptic`` holds the panoptic evaluator (in memory and on prediction folders),
``instance`` COCO mask AP via pycocotools and ``io`` the readers. ``instance`` (and
pycocotools) is loaded when one of its names is first used, so scoring panoptic
predictions imports only what it needs.
"""

import importlib

from ibs_study.metrics.panoptic import (
    DEFAULT_SIZE_BOUNDS,
    DEFAULT_THRESHOLDS,
    ConfusionRecord,
    GTOverlap,
    PanopticEvaluator,
    PanopticStat,
    evaluate_panoptic_folders,
    rank_images_by_confusion,
)

__all__ = [
    "DEFAULT_SIZE_BOUNDS",
    "DEFAULT_THRESHOLDS",
    "ConfusionRecord",
    "GTOverlap",
    "InstanceResults",
    "PanopticEvaluator",
    "PanopticStat",
    "evaluate_instances",
    "evaluate_panoptic_folders",
    "rank_images_by_confusion",
    "read_instance_results",
]

_INSTANCE_NAMES = ("InstanceResults", "evaluate_instances", "read_instance_results")


def __getattr__(name: str) -> object:
    if name in _INSTANCE_NAMES:
        return getattr(importlib.import_module("ibs_study.metrics.instance"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
