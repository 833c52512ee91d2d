"""Instance segmentation metrics: COCO mask AP (pycocotools) and Acc^th / Prec^th.

Ground truth comes from a panoptic dataset: every non-crowd thing segment is an
instance, every crowd thing segment an ``iscrowd`` region (ignored by COCOeval, as in
COCO); stuff is left out. AP, AP50, AP75 and AP^S/M/L are pycocotools' ``COCOeval``
(``iouType="segm"``, RLE masks, its standard area ranges 32² / 96² pixels and 100
detections per image); an AP whose area range holds no GT instance is ``None``
(pycocotools reports -1).

Acc^th / Prec^th need one label per pixel, so the instance masks with score
``>= score_threshold`` are resolved into a non-overlapping map: the highest-scoring mask
takes each pixel (ties keep the earlier mask). That map is scored with the panoptic
rules of :mod:`ibs_study.metrics.panoptic` (PQ matching at IoU > 0.5, void and crowd
excluded).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ibs_study.data.datasets import PanopticDataset
from ibs_study.data.panoptic import CategoryInfo, PanopticFormatError, PanopticSample, Segment
from ibs_study.metrics.panoptic import PanopticEvaluator

logger = logging.getLogger(__name__)

__all__ = ["InstanceResults", "evaluate_instances", "read_instance_results", "resolve_overlaps"]

_AP_KEYS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


@dataclass
class InstanceResults:
    """Instance predictions of one image.

    Attributes:
        masks: (N, H, W) bool, or N COCO RLE dicts (``size``, ``counts``).
        scores: (N,) float confidences.
        category_ids: (N,) int dataset category ids (thing categories).
    """

    masks: np.ndarray | list[dict]
    scores: np.ndarray
    category_ids: np.ndarray


def _field(prediction: Any, name: str) -> Any:
    return prediction[name] if isinstance(prediction, Mapping) else getattr(prediction, name)


def _as_rles(masks: np.ndarray | Sequence[dict], image_id: str | int, size: tuple[int, int]) -> list[dict]:
    """COCO RLEs of (N, H, W) bool masks (or RLEs as given), checked against the image size (H, W)."""
    if isinstance(masks, np.ndarray) or hasattr(masks, "numpy"):
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or (len(masks) and masks.shape[1:] != size):
            raise PanopticFormatError(
                f"image id {image_id!r}: instance masks must be (N, {size[0]}, {size[1]}) like the ground truth, "
                f"got {masks.shape}"
            )
        return (
            mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            if len(masks)
            else []
        )
    rles = list(masks)
    for k, rle in enumerate(rles):
        if tuple(rle["size"]) != size:
            raise PanopticFormatError(
                f"image id {image_id!r}: instance mask {k} has size {tuple(rle['size'])}, "
                f"the ground truth is {size} (H, W)"
            )
    return rles


def resolve_overlaps(
    rles: Sequence[dict], scores: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Paint masks into one map, highest score first; a pixel keeps the first mask that takes it.

    Args:
        rles: N COCO RLE masks of size ``size``.
        scores: (N,) confidences.
        size: (H, W).

    Returns:
        (id map (H, W) int32 with value k + 1 where mask k won and 0 elsewhere,
        (N,) int64 visible pixels of each mask).
    """
    id_map = np.zeros(size, dtype=np.int32)
    for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist():
        mask = mask_utils.decode(rles[k]).astype(bool)
        id_map[mask & (id_map == 0)] = k + 1
    visible = np.bincount(id_map.ravel(), minlength=len(rles) + 1)[1:]
    return id_map, visible


def _gt_samples(
    gt: PanopticDataset | Iterable[PanopticSample],
) -> Iterable[tuple[str | int, np.ndarray, list[Segment]]]:
    if isinstance(gt, PanopticDataset):
        for index, record in enumerate(gt.records):
            yield record.image_id, gt.read_id_map(index), record.segments
    else:
        for sample in gt:
            yield sample.image_id, sample.id_map, sample.segments


def evaluate_instances(
    gt: PanopticDataset | Iterable[PanopticSample],
    predictions: Mapping[str | int, Any],
    *,
    categories: Mapping[int, CategoryInfo] | None = None,
    score_threshold: float = 0.5,
    allow_missing: bool = False,
) -> dict:
    """COCO mask AP and Acc^th / Prec^th of instance predictions against panoptic ground truth.

    Args:
        gt: a :class:`PanopticDataset`, or samples (``image_id``, ``id_map`` (H, W), ``segments``).
        predictions: image id -> that image's predictions, anything with ``masks`` ((N, H, W) bool
            or N RLE dicts), ``scores`` (N,) and ``category_ids`` (N,) as attributes or keys
            (:class:`InstanceResults`, ``InstancePrediction``, a dict).
        categories: dataset categories; default: the dataset's (required for plain samples).
        score_threshold: minimum score of a mask in the Acc^th / Prec^th map (AP uses all).
        allow_missing: an image without predictions counts as predicting nothing; an error otherwise.

    Returns:
        Fractions: ``ap``, ``ap50``, ``ap75``, ``ap_s``, ``ap_m``, ``ap_l`` (None where an area
        range has no GT instance), ``acc_th``, ``prec_th``, ``thing_pixel_breakdown`` (of the
        Acc^th / Prec^th map, see :func:`ibs_study.metrics.panoptic.summarize_stat`),
        ``num_images``, ``num_detections``.

    Raises:
        PanopticFormatError: a prediction for an unknown image, an image without predictions
            (unless allowed), an unknown or stuff category, a mask size that differs from the GT.
    """
    if categories is None:
        if not isinstance(gt, PanopticDataset):
            raise ValueError("evaluate_instances needs categories= when gt is not a PanopticDataset")
        categories = gt.meta.by_id()
    thing_ids = {c.id for c in categories.values() if c.isthing}
    evaluator = PanopticEvaluator(categories, keep_records=False)
    images, gt_annotations, detections = [], [], []
    seen: set[str | int] = set()
    for coco_image_id, (image_id, id_map, segments) in enumerate(_gt_samples(gt), start=1):
        seen.add(image_id)
        size = (int(id_map.shape[0]), int(id_map.shape[1]))
        images.append({"id": coco_image_id, "height": size[0], "width": size[1]})
        for seg in segments:
            if seg.category_id not in thing_ids:
                continue
            rle = mask_utils.encode(np.asfortranarray((id_map == seg.id).astype(np.uint8)))
            gt_annotations.append(
                {
                    "id": len(gt_annotations) + 1,
                    "image_id": coco_image_id,
                    "category_id": seg.category_id,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": int(seg.iscrowd),
                }
            )
        if image_id not in predictions:
            if not allow_missing:
                raise PanopticFormatError(
                    f"no instance predictions for image id {image_id!r} (use allow_missing)"
                )
            rles, scores, category_ids = [], np.zeros(0), np.zeros(0, dtype=np.int64)
        else:
            prediction = predictions[image_id]
            rles = _as_rles(_field(prediction, "masks"), image_id, size)
            scores = np.asarray(_field(prediction, "scores"), dtype=np.float64).reshape(-1)
            category_ids = np.asarray(_field(prediction, "category_ids"), dtype=np.int64).reshape(-1)
            if not len(rles) == len(scores) == len(category_ids):
                raise PanopticFormatError(
                    f"image id {image_id!r}: {len(rles)} masks, {len(scores)} scores and "
                    f"{len(category_ids)} category ids differ in number"
                )
            for k, category_id in enumerate(category_ids.tolist()):
                if category_id not in thing_ids:
                    raise PanopticFormatError(
                        f"image id {image_id!r}: instance {k} has category id {category_id}, "
                        f"which is not a thing category of the dataset"
                    )
        detections.extend(
            {"image_id": coco_image_id, "category_id": int(c), "segmentation": rle, "score": float(s)}
            for rle, s, c in zip(rles, scores.tolist(), category_ids.tolist())
        )
        keep = np.flatnonzero(scores >= score_threshold)
        instance_map, visible = resolve_overlaps([rles[k] for k in keep], scores[keep], size)
        instance_segments = [
            Segment(id=j + 1, category_id=int(category_ids[k]), area=int(visible[j]))
            for j, k in enumerate(keep.tolist())
            if visible[j] > 0
        ]
        evaluator.process(id_map, segments, instance_map, instance_segments, image_id)
    unknown = [image_id for image_id in predictions if image_id not in seen]
    if unknown:
        raise PanopticFormatError(
            f"instance predictions for {len(unknown)} image id(s) absent from the ground truth, "
            f"e.g. image id {unknown[0]!r}"
        )

    results: dict[str, Any] = dict.fromkeys(_AP_KEYS, 0.0)
    if detections and gt_annotations:
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": gt_annotations,
            "categories": [{"id": c.id, "name": c.name} for c in categories.values() if c.isthing],
        }
        with contextlib.redirect_stdout(io.StringIO()) as log:
            coco_gt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="segm")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.debug("COCOeval:\n%s", log.getvalue())
        for key, value in zip(_AP_KEYS, coco_eval.stats[:6].tolist()):
            results[key] = None if value < 0 else float(value)
    panoptic = evaluator.summarize()
    results.update(
        acc_th=panoptic["acc_th"],
        prec_th=panoptic["prec_th"],
        thing_pixel_breakdown=panoptic["thing_pixel_breakdown"],
        num_images=len(images),
        num_detections=len(detections),
    )
    return results


def read_instance_results(path: str | os.PathLike) -> dict[str | int, InstanceResults]:
    """Read a COCO instance-segmentation results JSON (a list of ``image_id``, ``category_id``,
    ``segmentation`` as RLE, ``score``), grouped by image id.

    Raises:
        PanopticFormatError: not a JSON list of such entries, or a segmentation that is not RLE;
            the message names the file and the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise PanopticFormatError(f"{path}: instance results JSON not found")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PanopticFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(entries, list):
        raise PanopticFormatError(f"{path}: not a COCO instance results JSON (expected a list of detections)")
    grouped: dict[str | int, tuple[list[dict], list[float], list[int]]] = {}
    for k, entry in enumerate(entries):
        missing = [key for key in ("image_id", "category_id", "segmentation", "score") if key not in entry]
        if missing:
            raise PanopticFormatError(f"{path}: detection {k} lacks key(s) {missing}")
        rle = entry["segmentation"]
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise PanopticFormatError(
                f"{path}: detection {k} (image id {entry['image_id']!r}) has a segmentation that is not RLE"
            )
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        rles, scores, category_ids = grouped.setdefault(entry["image_id"], ([], [], []))
        rles.append(rle)
        scores.append(float(entry["score"]))
        category_ids.append(int(entry["category_id"]))
    return {
        image_id: InstanceResults(rles, np.array(scores), np.array(category_ids, dtype=np.int64))
        for image_id, (rles, scores, category_ids) in grouped.items()
    }
