"""Metrics: panoptic quality, Acc^th / Prec^th, the confusion curve and instance AP.

``panoptic`` holds the panoptic evaluator (in memory and on prediction folders),
``instance`` COCO mask AP via pycocotools, ``io`` the readers, and ``simulate``
simulated ground truth and predictions for tests and illustrations.
"""

from ibs_study.metrics.instance import InstanceResults, evaluate_instances, read_instance_results
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
