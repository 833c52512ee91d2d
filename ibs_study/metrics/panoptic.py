"""Panoptic metrics: PQ / SQ / RQ, Acc^th / Prec^th (Sec. 3.3), the confusion curve (Fig. 5).

Everything about one image comes from one table: the pixel count of every
(ground-truth segment, predicted segment) pair, void included (:func:`overlap_table`).
The table is built from the horizontal runs of constant (GT id, prediction id) in the two
id maps, so the per-pixel work is a few vectorised comparisons (numpy, or torch on any
device) and everything after it works on run- or segment-sized arrays; no sorting of the
pixels. Scoring folders skips the maps: the PNG decoder lists each map's runs
(:func:`overlap_table_from_runs`). Per-image sums go into a :class:`PanopticStat` (``+=`` merges images, processes
or workers); :func:`summarize_stat` holds every formula.

Rules, exactly those of the COCO panoptic evaluation (panopticapi ``pq_compute``):

* id 0 is void. A GT segment and a predicted segment of the same category match when
  ``IoU > 0.5``, with ``IoU = |g ∩ p| / (|g| + |p| - |g ∩ p| - |p ∩ void|)``: predicted
  pixels on GT void count neither way. Areas are pixel counts.
* Crowd GT segments (``iscrowd=1``) never match and are no false negatives.
* An unmatched predicted segment is a false positive unless more than half of it lies on
  GT void or on crowd regions of its own category. Where an image has several crowd
  segments of one category, all of them count here; panopticapi keeps only the last one
  listed per category (an artefact of its dict), which is the single difference and only
  matters for such images (Cityscapes and COCO have at most one crowd segment per
  category and image).
* PQ / SQ / RQ are averaged over the categories with ``TP + FP + FN > 0``; a group (all,
  things, stuff) with no such category reports 0 with ``n = 0`` (panopticapi divides by
  zero there).

Acc^th and Prec^th (Sec. 3.3), summed over all images of the split before dividing:

* TP pixels: pixels of a predicted thing segment that is PQ-matched (rules above) to a
  GT segment and that lie inside that GT segment, i.e. ``|g ∩ p|`` of every thing match.
* ``Acc^th = TP / (GT thing pixels)``, the GT pixels of non-crowd thing segments.
* ``Prec^th = TP / (predicted thing pixels)``, the pixels of predicted thing segments
  outside GT void and outside every GT crowd region (any category). The paper does not
  say how void and crowd are treated; excluding them as PQ does means a prediction is not
  penalised on pixels that have no instance label.
* Both are 0 when their denominator is 0.

Where the thing pixels that Acc^th and Prec^th miss go (``thing_pixel_breakdown``): every
predicted thing segment has an *own* GT thing, its PQ match, or else the non-crowd GT thing
it overlaps most (none if it touches no GT thing). Then

* each GT thing pixel (non-crowd) is ``matched`` (covered by its PQ match: Acc^th),
  ``unmatched_own`` (by a thing prediction whose own GT it is but that is not its match:
  IoU <= 0.5, another class, a duplicate), ``other_instance`` (by a thing prediction whose
  own GT is another thing: confusion), ``stuff`` (by a stuff prediction) or ``unlabelled``
  (by no prediction);
* each predicted thing pixel (outside GT void and crowd) lies on the prediction's own GT as
  its match (``matched``: Prec^th) or unmatched (``unmatched_own``), on another GT thing
  (``other_instance``: confusion) or on GT ``stuff``.

The shares of each side sum to 1, so a fall in Acc^th or Prec^th splits exactly into
confusion (``other_instance``), imprecise own masks (``unmatched_own``), bleed into or
from stuff, and missed pixels.

Confusion curve (Fig. 5 / Sec. 6.2): a predicted thing segment is *confused at T* when it
covers more than a fraction ``T`` of the area of at least two GT thing segments (any
thing category, crowd excluded). The curve is the fraction of all predicted thing
segments of the split that are confused, per threshold, overall and per predicted-segment
size S / M / L. Size bounds are fractions of the image area; the default is COCO's
32² and 96² pixels on a 640×480 COCO image, i.e. about 84² and 251² pixels on a
1024×2048 image (S: area < lower, M: lower <= area < upper, L: area >= upper).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ibs_study.data.panoptic import (
    VOID_ID,
    CategoryInfo,
    ImageRecord,
    PanopticFormatError,
    Segment,
    check_segments_match_areas,
    load_panoptic_json,
    read_id_runs,
)
from ibs_study.data.png import IdRuns
from ibs_study.metrics.io import (
    check_png_files,
    load_prediction_json,
    match_predictions,
    prefetch,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_SIZE_BOUNDS",
    "SIZE_NAMES",
    "OverlapTable",
    "overlap_table",
    "overlap_table_from_runs",
    "PanopticStat",
    "GT_THING_PIXEL_FATES",
    "PRED_THING_PIXEL_FATES",
    "GTOverlap",
    "ConfusionRecord",
    "PanopticEvaluator",
    "summarize_stat",
    "evaluate_panoptic_folders",
    "default_workers",
    "rank_images_by_confusion",
    "curve_ratio_at",
    "format_results",
    "write_confusion_csv",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))
COCO_IMAGE_AREA = 640 * 480
DEFAULT_SIZE_BOUNDS: tuple[float, float] = (32**2 / COCO_IMAGE_AREA, 96**2 / COCO_IMAGE_AREA)
SIZE_NAMES = ("S", "M", "L")
# what covers a GT thing pixel / where a predicted thing pixel lies (module docstring)
GT_THING_PIXEL_FATES = ("matched", "unmatched_own", "other_instance", "stuff", "unlabelled")
PRED_THING_PIXEL_FATES = ("matched", "unmatched_own", "other_instance", "stuff")

if TYPE_CHECKING:  # torch is imported only by callers that pass tensors
    import torch

    from ibs_study.data.datasets import DatasetMeta

    IdMap = np.ndarray | torch.Tensor


def _is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch: none exists before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


# ----------------------------------------------------------------------------- overlap table


@dataclass
class OverlapTable:
    """Pixel counts of one image, rows = GT segments, columns = predicted segments.

    Attributes:
        counts: (G + 1, P + 1) int64; row / column 0 is void, row k + 1 is ``gt_segments[k]``
            and column k + 1 is ``pred_segments[k]`` in the order given.
        pred_bbox: (P, 4) int64 tight (x, y, w, h) box of each predicted segment.
        height, width: image size.
    """

    counts: np.ndarray
    pred_bbox: np.ndarray
    height: int
    width: int


def _runs_numpy(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start index (raster order), GT id and prediction id of every run; runs break at row ends."""
    width = gt.shape[1]
    g = gt.reshape(-1)
    p = pred.reshape(-1)
    change = np.empty(g.size, dtype=bool)
    change[0] = True
    np.not_equal(g[1:], g[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    change[::width] = True
    starts = np.flatnonzero(change)
    return starts, g[starts].astype(np.int64), p[starts].astype(np.int64)


def _runs_torch(gt: torch.Tensor, pred: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_runs_numpy` with torch ops on the tensors' device; returns numpy arrays."""
    import torch

    width = gt.shape[1]
    g = gt.reshape(-1)
    p = pred.reshape(-1)
    change = torch.ones(g.numel(), dtype=torch.bool, device=g.device)
    change[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
    change[::width] = True
    starts = torch.nonzero(change).squeeze(1)
    runs = torch.stack([starts, g[starts].long(), p[starts].long()]).cpu().numpy()
    return runs[0], runs[1], runs[2]


def _runs_of_pair(gt: IdRuns, pred: IdRuns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_runs_numpy` from the runs of each map: a run of the pair starts wherever a run
    of either map starts, and lies in the last run of each map that starts at or before it."""
    both = np.concatenate([gt.starts, pred.starts])
    order = np.argsort(both, kind="stable")  # two ascending halves: a merge; GT first among equals
    merged = both[order]
    from_gt = order < len(gt.starts)
    last = np.empty(len(merged), dtype=bool)  # the last of equal starts: both maps counted
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    run_gt = gt.ids[np.cumsum(from_gt)[last] - 1]
    run_pred = pred.ids[np.cumsum(~from_gt)[last] - 1]
    return merged[last], run_gt.astype(np.int64), run_pred.astype(np.int64)


def _check_same_size(
    gt_size: tuple[int, int],
    pred_size: tuple[int, int],
    gt_source: str | os.PathLike,
    pred_source: str | os.PathLike,
    image_id: str | int,
) -> None:
    if gt_size != pred_size:
        raise PanopticFormatError(
            f"{pred_source} (image id {image_id!r}): size {pred_size} (H, W) differs from "
            f"the ground truth's {gt_size} ({gt_source})"
        )


def _as_id_map(id_map: IdMap, what: str, image_id: str | int) -> IdMap:
    if id_map.ndim != 2 or 0 in id_map.shape:
        raise PanopticFormatError(
            f"{what} (image id {image_id!r}): expected a non-empty (H, W) id map, got {tuple(id_map.shape)}"
        )
    if _is_tensor(id_map):
        if id_map.dtype.is_floating_point or id_map.dtype == sys.modules["torch"].bool:
            raise PanopticFormatError(
                f"{what} (image id {image_id!r}): id map must hold integers, got {id_map.dtype}"
            )
        return id_map
    id_map = np.asarray(id_map)
    if not np.issubdtype(id_map.dtype, np.integer):
        raise PanopticFormatError(
            f"{what} (image id {image_id!r}): id map must hold integers, got {id_map.dtype}"
        )
    return id_map


def _segment_index(
    run_ids: np.ndarray, segments: Sequence[Segment], source: str | os.PathLike, image_id: str | int
) -> tuple[np.ndarray, np.ndarray]:
    """Row / column index (0 = void, k + 1 = segments[k]) of each run id, and unknown-id runs."""
    ids = np.array([s.id for s in segments], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise PanopticFormatError(
            f"{source} (image id {image_id!r}): segment id {int(values[counts > 1][0])} is listed more than once"
        )
    order = np.argsort(ids)
    sorted_ids = ids[order]
    if len(ids):
        position = np.minimum(np.searchsorted(sorted_ids, run_ids), len(ids) - 1)
        known = sorted_ids[position] == run_ids
        index = np.where(known, order[position] + 1, 0)
    else:
        known = np.zeros(run_ids.shape, dtype=bool)
        index = np.zeros(run_ids.shape, dtype=np.int64)
    return index, ~known & (run_ids != VOID_ID)


def _check_against_segments(
    axis_counts: np.ndarray,
    run_ids: np.ndarray,
    lengths: np.ndarray,
    unknown: np.ndarray,
    segments: Sequence[Segment],
    *,
    source: str | os.PathLike,
    image_id: str | int,
    check_area: bool,
) -> None:
    """Raise unless the id map holds exactly the listed segments (and their areas, if checked)."""
    png_area = {s.id: int(count) for s, count in zip(segments, axis_counts[1:].tolist())}
    if unknown.any():
        extra_ids, inverse = np.unique(run_ids[unknown], return_inverse=True)
        extra_area = np.bincount(inverse, weights=lengths[unknown])
        png_area.update(zip(extra_ids.tolist(), extra_area.astype(np.int64).tolist()))
    check_segments_match_areas(png_area, segments, png_path=source, image_id=image_id, check_area=check_area)


def overlap_table(
    gt_id_map: IdMap,
    gt_segments: Sequence[Segment],
    pred_id_map: IdMap,
    pred_segments: Sequence[Segment],
    *,
    image_id: str | int = "?",
    gt_source: str | os.PathLike = "ground-truth id map",
    pred_source: str | os.PathLike = "predicted id map",
    check_gt_area: bool = False,
) -> OverlapTable:
    """The GT × prediction pixel-count table of one image, validated against the segment lists.

    Args:
        gt_id_map: (H, W) integer GT segment ids (numpy or torch, any device), 0 = void.
        gt_segments: the GT segments; every non-void id of ``gt_id_map`` exactly once.
        pred_id_map: (H, W) integer predicted segment ids, same type and size.
        pred_segments: the predicted segments, likewise.
        image_id: used in error messages.
        gt_source, pred_source: where the maps came from (file names), for error messages.
        check_gt_area: also require each GT segment's ``area`` to equal its pixel count.

    Raises:
        PanopticFormatError: size mismatch, an id in a map without segment or a segment
            without pixels, a duplicate segment id, a GT area that differs (if checked).
    """
    gt_id_map = _as_id_map(gt_id_map, str(gt_source), image_id)
    pred_id_map = _as_id_map(pred_id_map, str(pred_source), image_id)
    gt_size = tuple(int(v) for v in gt_id_map.shape)
    _check_same_size(gt_size, tuple(int(v) for v in pred_id_map.shape), gt_source, pred_source, image_id)
    if _is_tensor(gt_id_map) or _is_tensor(pred_id_map):
        import torch

        device = gt_id_map.device if _is_tensor(gt_id_map) else pred_id_map.device
        starts, run_gt, run_pred = _runs_torch(
            torch.as_tensor(gt_id_map, device=device), torch.as_tensor(pred_id_map, device=device)
        )
    else:
        starts, run_gt, run_pred = _runs_numpy(gt_id_map, pred_id_map)
    return _table_from_runs(
        starts,
        run_gt,
        run_pred,
        gt_size,
        gt_segments,
        pred_segments,
        image_id,
        gt_source,
        pred_source,
        check_gt_area,
    )


def overlap_table_from_runs(
    gt_runs: IdRuns,
    gt_segments: Sequence[Segment],
    pred_runs: IdRuns,
    pred_segments: Sequence[Segment],
    *,
    image_id: str | int = "?",
    gt_source: str | os.PathLike = "ground-truth id map",
    pred_source: str | os.PathLike = "predicted id map",
    check_gt_area: bool = False,
) -> OverlapTable:
    """:func:`overlap_table` of two id maps given as their runs along each row
    (:func:`ibs_study.data.panoptic.read_id_runs`); same table, same errors."""
    gt_size = (gt_runs.height, gt_runs.width)
    _check_same_size(gt_size, (pred_runs.height, pred_runs.width), gt_source, pred_source, image_id)
    starts, run_gt, run_pred = _runs_of_pair(gt_runs, pred_runs)
    return _table_from_runs(
        starts,
        run_gt,
        run_pred,
        gt_size,
        gt_segments,
        pred_segments,
        image_id,
        gt_source,
        pred_source,
        check_gt_area,
    )


def _table_from_runs(
    starts: np.ndarray,
    run_gt: np.ndarray,
    run_pred: np.ndarray,
    size: tuple[int, int],
    gt_segments: Sequence[Segment],
    pred_segments: Sequence[Segment],
    image_id: str | int,
    gt_source: str | os.PathLike,
    pred_source: str | os.PathLike,
    check_gt_area: bool,
) -> OverlapTable:
    """The table of :func:`overlap_table` from the runs of the pair of maps (start, GT id,
    prediction id of each; runs break at row ends), validated against the segment lists."""
    height, width = size
    lengths = np.diff(starts, append=height * width)
    gt_index, gt_unknown = _segment_index(run_gt, gt_segments, gt_source, image_id)
    pred_index, pred_unknown = _segment_index(run_pred, pred_segments, pred_source, image_id)
    num_pred = len(pred_segments) + 1
    shape = (len(gt_segments) + 1, num_pred)
    counts = np.bincount(gt_index * num_pred + pred_index, weights=lengths, minlength=shape[0] * shape[1])
    counts = counts.astype(np.int64).reshape(shape)
    _check_against_segments(
        counts.sum(1),
        run_gt,
        lengths,
        gt_unknown,
        gt_segments,
        source=gt_source,
        image_id=image_id,
        check_area=check_gt_area,
    )
    _check_against_segments(
        counts.sum(0),
        run_pred,
        lengths,
        pred_unknown,
        pred_segments,
        source=pred_source,
        image_id=image_id,
        check_area=False,
    )

    # Tight boxes of the predicted segments from their runs (runs never cross a row end).
    row = starts // width
    x_first = starts % width
    x_last = x_first + lengths - 1
    extent = np.zeros((4, num_pred), dtype=np.int64)
    extent[0] = width
    extent[1] = height
    np.minimum.at(extent[0], pred_index, x_first)
    np.minimum.at(extent[1], pred_index, row)
    np.maximum.at(extent[2], pred_index, x_last)
    np.maximum.at(extent[3], pred_index, row)
    x0, y0, x1, y1 = extent[:, 1:]
    pred_bbox = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    return OverlapTable(counts=counts, pred_bbox=pred_bbox, height=height, width=width)


# ----------------------------------------------------------------------------- accumulation


@dataclass
class PanopticStat:
    """Sums over images of everything the panoptic metrics need; ``+=`` merges two.

    Attributes:
        iou: (K,) float64 sum of the IoUs of the matched pairs, per category (dataset order).
        tp, fp, fn: (K,) int64 matched pairs, unmatched predictions, unmatched GT, per category.
        tp_thing_pixels: pixels of matched thing predictions inside their matched GT.
        gt_thing_pixels: pixels of non-crowd GT thing segments.
        pred_thing_pixels: pixels of predicted thing segments outside GT void and crowd.
        gt_thing_fate: (5,) int64 GT thing pixels by :data:`GT_THING_PIXEL_FATES` (sums to
            ``gt_thing_pixels``).
        pred_thing_fate: (4,) int64 predicted thing pixels by :data:`PRED_THING_PIXEL_FATES`
            (sums to ``pred_thing_pixels``).
        confused: (3, T) int64 predicted thing segments confused at each threshold, per size S/M/L.
        predictions: (3,) int64 predicted thing segments per size S/M/L.
        num_images: images processed.
    """

    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    confused: np.ndarray
    predictions: np.ndarray
    gt_thing_fate: np.ndarray
    pred_thing_fate: np.ndarray
    tp_thing_pixels: int = 0
    gt_thing_pixels: int = 0
    pred_thing_pixels: int = 0
    num_images: int = 0

    @classmethod
    def zeros(cls, num_categories: int, num_thresholds: int) -> PanopticStat:
        return cls(
            iou=np.zeros(num_categories),
            tp=np.zeros(num_categories, dtype=np.int64),
            fp=np.zeros(num_categories, dtype=np.int64),
            fn=np.zeros(num_categories, dtype=np.int64),
            confused=np.zeros((len(SIZE_NAMES), num_thresholds), dtype=np.int64),
            predictions=np.zeros(len(SIZE_NAMES), dtype=np.int64),
            gt_thing_fate=np.zeros(len(GT_THING_PIXEL_FATES), dtype=np.int64),
            pred_thing_fate=np.zeros(len(PRED_THING_PIXEL_FATES), dtype=np.int64),
        )

    def __iadd__(self, other: PanopticStat) -> PanopticStat:
        for name in ("iou", "tp", "fp", "fn", "confused", "predictions", "gt_thing_fate", "pred_thing_fate"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.tp_thing_pixels += other.tp_thing_pixels
        self.gt_thing_pixels += other.gt_thing_pixels
        self.pred_thing_pixels += other.pred_thing_pixels
        self.num_images += other.num_images
        return self


# ----------------------------------------------------------------------------- confusion records


@dataclass
class GTOverlap:
    """One GT segment covered by a predicted segment.

    Attributes:
        gt_id: GT segment id; category_id, isthing, iscrowd: its category and flags.
        intersection: pixels shared with the prediction.
        frac_of_gt: ``intersection / GT area``; frac_of_pred: ``intersection / prediction area``.
    """

    gt_id: int
    category_id: int
    isthing: bool
    iscrowd: bool
    intersection: int
    frac_of_gt: float
    frac_of_pred: float


@dataclass
class ConfusionRecord:
    """One predicted thing segment and the GT segments it covers (JSON-serialisable via ``to_json``).

    Attributes:
        image_id, segment_id, category_id: which prediction.
        area: its pixel count; bbox: its tight (x, y, w, h); size: "S", "M" or "L".
        void_pixels: its pixels on GT void.
        matched_gt_id, matched_iou: its PQ match, or None.
        overlaps: every GT segment it intersects, largest intersection first.
        image_height, image_width: size of the image.
    """

    image_id: str | int
    segment_id: int
    category_id: int
    area: int
    bbox: tuple[int, int, int, int]
    size: str
    void_pixels: int
    matched_gt_id: int | None
    matched_iou: float | None
    overlaps: list[GTOverlap] = field(default_factory=list)
    image_height: int = 0
    image_width: int = 0

    def covered_things(self, threshold: float) -> list[GTOverlap]:
        """The non-crowd GT thing segments this prediction covers by more than ``threshold`` of their area."""
        return [o for o in self.overlaps if o.isthing and not o.iscrowd and o.frac_of_gt > threshold]

    @property
    def confusion_level(self) -> float:
        """Second-largest covered fraction of a GT thing: confused exactly for thresholds below it."""
        fractions = sorted((o.frac_of_gt for o in self.overlaps if o.isthing and not o.iscrowd), reverse=True)
        return fractions[1] if len(fractions) > 1 else 0.0

    def is_confused(self, threshold: float) -> bool:
        return len(self.covered_things(threshold)) >= 2

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> ConfusionRecord:
        values = dict(data)
        values["bbox"] = tuple(values["bbox"])
        values["overlaps"] = [GTOverlap(**o) for o in values["overlaps"]]
        return cls(**values)


def curve_ratio_at(curve: Mapping, threshold: float) -> float:
    """The ``ratio`` of a confusion curve (``thresholds``, ``ratio``: a ``confusion_curve`` of the
    metrics, or an oracle-confusion curve) at its threshold nearest ``threshold`` (the first of two
    equally near)."""
    thresholds = curve["thresholds"]
    return curve["ratio"][min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - threshold))]


def rank_images_by_confusion(records: Sequence[ConfusionRecord], threshold: float = 0.5) -> list[dict]:
    """Images ordered by how much of their predicted thing area is confused at ``threshold``.

    Returns:
        One dict per image with predicted thing segments: ``image_id``, ``confused_area``
        (pixels of confused predictions), ``num_confused``, ``num_predictions``, sorted by
        confused area, then count, descending (ties keep first-seen order).
    """
    summary: dict[str | int, dict] = {}
    for record in records:
        entry = summary.setdefault(
            record.image_id,
            {"image_id": record.image_id, "confused_area": 0, "num_confused": 0, "num_predictions": 0},
        )
        entry["num_predictions"] += 1
        if record.is_confused(threshold):
            entry["num_confused"] += 1
            entry["confused_area"] += record.area
    return sorted(summary.values(), key=lambda e: (-e["confused_area"], -e["num_confused"]))


# ----------------------------------------------------------------------------- evaluator


def _thing_pixel_fates(
    counts: np.ndarray,
    matched: np.ndarray,
    gt_thing: np.ndarray,
    gt_crowd: np.ndarray,
    pred_thing: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts by :data:`GT_THING_PIXEL_FATES` and :data:`PRED_THING_PIXEL_FATES` (module docstring).

    Args:
        counts: (G + 1, P + 1) overlap table, void row / column first.
        matched: (G, P) bool PQ matches. gt_thing: (G,) bool non-crowd GT things.
        gt_crowd: (G,) bool crowd GT segments. pred_thing: (P,) bool thing predictions.
    """
    inter = counts[1:, 1:]  # (G, P)
    thing_inter = np.where(gt_thing[:, None], inter, 0)  # (G, P): only non-crowd GT things
    # own GT of every prediction: its match, else the GT thing it overlaps most (-1: none)
    has_match = matched.any(0)  # (P,)
    own = np.full(inter.shape[1], -1, dtype=np.int64)
    if len(inter):
        own = np.where(thing_inter.any(0), thing_inter.argmax(0), own)
        own = np.where(has_match, matched.argmax(0), own)
    is_own = (own[None, :] == np.arange(len(inter))[:, None]) & pred_thing[None, :]  # (G, P)
    own_match = is_own & has_match[None, :]
    own_unmatched = is_own & ~has_match[None, :]

    gt_fate = np.array(
        [
            thing_inter[own_match].sum(),
            thing_inter[own_unmatched].sum(),
            thing_inter[~is_own & pred_thing[None, :]].sum(),
            thing_inter[:, ~pred_thing].sum(),
            counts[1:, 0][gt_thing].sum(),
        ],
        dtype=np.int64,
    )
    gt_stuff = ~gt_thing & ~gt_crowd
    pred_fate = np.array(
        [
            gt_fate[0],
            gt_fate[1],
            gt_fate[2],  # the same pixels seen from the other side: thing predictions on others' GT
            inter[gt_stuff][:, pred_thing].sum(),
        ],
        dtype=np.int64,
    )
    return gt_fate, pred_fate


def _categories_of(categories: Mapping[int, CategoryInfo] | DatasetMeta) -> list[CategoryInfo]:
    if not isinstance(categories, Mapping):  # a DatasetMeta (its module is not imported to score folders)
        return list(categories.categories)
    return list(categories.values())


class PanopticEvaluator:
    """Accumulates panoptic metrics image by image: ``reset`` / ``process`` / ``summarize``.

    Args:
        categories: the dataset's categories (dataset id -> info) or its :class:`DatasetMeta`;
            segments carry dataset category ids.
        thresholds: confusion-curve thresholds T, each in [0, 1).
        size_bounds: (lower, upper) S/M/L bounds as fractions of the image area.
        keep_records: keep a :class:`ConfusionRecord` per predicted thing segment.
        check_gt_area: require each GT ``Segment.area`` to equal its pixel count (the folder
            API sets it: panopticapi uses the JSON areas).
    """

    def __init__(
        self,
        categories: Mapping[int, CategoryInfo] | DatasetMeta,
        *,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        size_bounds: tuple[float, float] = DEFAULT_SIZE_BOUNDS,
        keep_records: bool = True,
        check_gt_area: bool = False,
    ) -> None:
        self.categories = _categories_of(categories)
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be unique (per-class results are keyed by name): {names}")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if (
            self.thresholds.ndim != 1
            or not len(self.thresholds)
            or (self.thresholds < 0).any()
            or (self.thresholds >= 1).any()
        ):
            raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1), got {thresholds}")
        lower, upper = size_bounds
        if not 0 <= lower <= upper:
            raise ValueError(f"size_bounds must satisfy 0 <= lower <= upper, got {size_bounds}")
        self.size_bounds = (float(lower), float(upper))
        self.keep_records = keep_records
        self.check_gt_area = check_gt_area
        self._index = {c.id: k for k, c in enumerate(self.categories)}
        self._is_thing = np.array([c.isthing for c in self.categories], dtype=bool)
        self.reset()

    def reset(self) -> None:
        self.stat = PanopticStat.zeros(len(self.categories), len(self.thresholds))
        self.records: list[ConfusionRecord] = []
        self._next_image = 0

    def accumulate(self, stat: PanopticStat, records: Sequence[ConfusionRecord] = ()) -> None:
        """Add statistics gathered elsewhere (another process) with the same settings."""
        self.stat += stat
        self.records.extend(records)
        self._next_image += stat.num_images

    def _category_index(
        self, segments: Sequence[Segment], source: str | os.PathLike, image_id: str | int
    ) -> np.ndarray:
        try:
            return np.array([self._index[s.category_id] for s in segments], dtype=np.int64)
        except KeyError:
            bad = next(s for s in segments if s.category_id not in self._index)
            raise PanopticFormatError(
                f"{source} (image id {image_id!r}): segment id {bad.id} has unknown category id {bad.category_id}"
            ) from None

    def process(
        self,
        gt_id_map: IdMap,
        gt_segments: Sequence[Segment],
        pred_id_map: IdMap,
        pred_segments: Sequence[Segment],
        image_id: str | int | None = None,
        *,
        gt_source: str | os.PathLike = "ground-truth id map",
        pred_source: str | os.PathLike = "predicted id map",
    ) -> None:
        """Add one image.

        Args:
            gt_id_map: (H, W) integer GT segment ids, 0 = void (numpy, or torch on any device).
            gt_segments: one :class:`Segment` per non-void GT id (category, iscrowd).
            pred_id_map: (H, W) integer predicted segment ids, 0 = void.
            pred_segments: one :class:`Segment` per non-void predicted id (``iscrowd`` ignored).
            image_id: names the image in records and errors (default: running index).
            gt_source, pred_source: file names for error messages.
        """
        if image_id is None:
            image_id = self._next_image
        self._add(
            *self._count(gt_id_map, gt_segments, pred_id_map, pred_segments, image_id, gt_source, pred_source)
        )
        self._next_image += 1

    def _count(
        self,
        gt_id_map: IdMap,
        gt_segments: Sequence[Segment],
        pred_id_map: IdMap,
        pred_segments: Sequence[Segment],
        image_id: str | int,
        gt_source: str | os.PathLike,
        pred_source: str | os.PathLike,
    ) -> tuple[OverlapTable, Sequence[Segment], np.ndarray, Sequence[Segment], np.ndarray, str | int]:
        """The per-pixel part of :meth:`process` (changes nothing, so threads may run it): the
        arguments of :meth:`_add`. The maps may also both be :class:`IdRuns`."""
        gt_category = self._category_index(gt_segments, gt_source, image_id)
        pred_category = self._category_index(pred_segments, pred_source, image_id)
        table_of = overlap_table_from_runs if isinstance(gt_id_map, IdRuns) else overlap_table
        table = table_of(
            gt_id_map,
            gt_segments,
            pred_id_map,
            pred_segments,
            image_id=image_id,
            gt_source=gt_source,
            pred_source=pred_source,
            check_gt_area=self.check_gt_area,
        )
        return table, gt_segments, gt_category, pred_segments, pred_category, image_id

    def _add(
        self,
        table: OverlapTable,
        gt_segments: Sequence[Segment],
        gt_category: np.ndarray,
        pred_segments: Sequence[Segment],
        pred_category: np.ndarray,
        image_id: str | int,
    ) -> None:
        num_categories = len(self.categories)
        stat = PanopticStat.zeros(num_categories, len(self.thresholds))
        stat.num_images = 1
        counts = table.counts
        inter = counts[1:, 1:]  # (G, P)
        gt_area = counts[1:].sum(1)  # (G,)
        pred_area = counts[:, 1:].sum(0)  # (P,)
        pred_void = counts[0, 1:]  # (P,)
        gt_crowd = np.array([bool(s.iscrowd) for s in gt_segments], dtype=bool)
        gt_thing = self._is_thing[gt_category] & ~gt_crowd
        pred_thing = self._is_thing[pred_category]

        # PQ matching: same category, non-crowd GT, IoU > 0.5; the union leaves out the
        # prediction's pixels on GT void.
        same_category = gt_category[:, None] == pred_category[None, :]  # (G, P)
        eligible = same_category & ~gt_crowd[:, None] & (inter > 0)
        union = gt_area[:, None] + pred_area[None, :] - inter - pred_void[None, :]
        iou = np.divide(inter, union, out=np.zeros(inter.shape), where=eligible)
        matched = iou > 0.5
        gt_hit, pred_hit = np.nonzero(matched)
        stat.tp = np.bincount(gt_category[gt_hit], minlength=num_categories)
        stat.iou = np.bincount(gt_category[gt_hit], weights=iou[gt_hit, pred_hit], minlength=num_categories)

        # False negatives: unmatched non-crowd GT segments.
        stat.fn = np.bincount(gt_category[~matched.any(1) & ~gt_crowd], minlength=num_categories)

        # False positives: unmatched predictions, unless more than half of them lies on GT
        # void or on crowd regions of their own category.
        crowd_same = (inter * (same_category & gt_crowd[:, None])).sum(0)  # (P,)
        ignored = (pred_void + crowd_same) > 0.5 * pred_area
        stat.fp = np.bincount(pred_category[~matched.any(0) & ~ignored], minlength=num_categories)

        # Acc^th / Prec^th pixel counts (void and crowd excluded, see the module docstring).
        thing_hit = pred_thing[pred_hit]
        stat.tp_thing_pixels = int(inter[gt_hit[thing_hit], pred_hit[thing_hit]].sum())
        stat.gt_thing_pixels = int(gt_area[gt_thing].sum())
        on_crowd = inter[gt_crowd].sum(0)  # (P,)
        stat.pred_thing_pixels = int((pred_area - pred_void - on_crowd)[pred_thing].sum())
        stat.gt_thing_fate, stat.pred_thing_fate = _thing_pixel_fates(
            counts, matched, gt_thing, gt_crowd, pred_thing
        )

        # Confusion: second-largest fraction of a GT thing's area that a prediction covers.
        coverage = inter[gt_thing] / gt_area[gt_thing][:, None]  # (G_thing, P)
        if len(coverage) >= 2:
            second = np.partition(coverage, -2, axis=0)[-2]
        else:
            second = np.zeros(len(pred_segments))
        image_area = table.height * table.width
        bounds = np.array(self.size_bounds) * image_area
        size = np.searchsorted(bounds, pred_area, side="right")  # 0 S, 1 M, 2 L
        confused = second[:, None] > self.thresholds[None, :]  # (P, T)
        for k in range(len(SIZE_NAMES)):
            in_size = pred_thing & (size == k)
            stat.predictions[k] = in_size.sum()
            stat.confused[k] = confused[in_size].sum(0)
        self.stat += stat

        if self.keep_records:
            self._add_records(
                table, gt_segments, gt_category, gt_crowd, pred_segments, pred_category, iou, size, image_id
            )

    def _add_records(
        self,
        table: OverlapTable,
        gt_segments: Sequence[Segment],
        gt_category: np.ndarray,
        gt_crowd: np.ndarray,
        pred_segments: Sequence[Segment],
        pred_category: np.ndarray,
        iou: np.ndarray,
        size: np.ndarray,
        image_id: str | int,
    ) -> None:
        """One :class:`ConfusionRecord` per predicted thing segment; the numbers are computed as
        arrays and only the record objects are built one by one."""
        counts = table.counts
        inter = counts[1:, 1:]  # (G, P)
        gt_area = counts[1:].sum(1)
        pred_area = counts[:, 1:].sum(0)
        things = np.flatnonzero(self._is_thing[pred_category])
        # every (GT, thing prediction) pair with pixels in common, by prediction, largest first
        g, k = np.nonzero(inter[:, things])
        shared = inter[g, things[k]]
        order = np.lexsort((g, -shared, k))
        g, k, shared = g[order], k[order], shared[order]
        category_ids = np.array([c.id for c in self.categories])
        overlaps: list[list[GTOverlap]] = [[] for _ in range(len(things))]
        for k_, gt_id, category_id, isthing, iscrowd, pixels, of_gt, of_pred in zip(
            k.tolist(),
            np.array([s.id for s in gt_segments], dtype=np.int64)[g].tolist(),
            category_ids[gt_category[g]].tolist(),
            self._is_thing[gt_category[g]].tolist(),
            gt_crowd[g].tolist(),
            shared.tolist(),
            (shared / gt_area[g]).tolist(),
            (shared / pred_area[things[k]]).tolist(),
        ):
            overlaps[k_].append(GTOverlap(gt_id, category_id, isthing, iscrowd, pixels, of_gt, of_pred))
        matched = iou[:, things] > 0.5  # (G, P_thing), at most one True per column
        has_match = matched.any(0).tolist()
        match_row = matched.argmax(0).tolist() if len(matched) else [0] * len(things)  # an all-void GT
        for k_, p in enumerate(things.tolist()):
            row = match_row[k_] if has_match[k_] else None
            self.records.append(
                ConfusionRecord(
                    image_id=image_id,
                    segment_id=int(pred_segments[p].id),
                    category_id=int(category_ids[pred_category[p]]),
                    area=int(pred_area[p]),
                    bbox=tuple(table.pred_bbox[p].tolist()),  # type: ignore[arg-type]
                    size=SIZE_NAMES[size[p]],
                    void_pixels=int(counts[0, p + 1]),
                    matched_gt_id=None if row is None else int(gt_segments[row].id),
                    matched_iou=None if row is None else float(iou[row, p]),
                    overlaps=overlaps[k_],
                    image_height=table.height,
                    image_width=table.width,
                )
            )

    def summarize(self) -> dict:
        """Metrics over everything processed since ``reset``; see :func:`summarize_stat`."""
        return summarize_stat(self.stat, self.categories, self.thresholds, self.size_bounds)


def _pq_group(stat: PanopticStat, selected: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """PQ / SQ / RQ averaged over the selected categories that occur; also per-category values."""
    tp, fp, fn, iou = stat.tp, stat.fp, stat.fn, stat.iou
    denominator = tp + 0.5 * fp + 0.5 * fn
    present = denominator > 0
    pq = np.divide(iou, denominator, out=np.zeros(len(tp)), where=present)
    sq = np.divide(iou, tp, out=np.zeros(len(tp)), where=tp > 0)
    rq = np.divide(tp, denominator, out=np.zeros(len(tp)), where=present)
    used = selected & present
    n = int(used.sum())
    group = {
        "pq": float(pq[used].sum() / n) if n else 0.0,
        "sq": float(sq[used].sum() / n) if n else 0.0,
        "rq": float(rq[used].sum() / n) if n else 0.0,
        "n": n,
    }
    return group, pq, sq, rq


def summarize_stat(
    stat: PanopticStat,
    categories: Sequence[CategoryInfo],
    thresholds: Sequence[float],
    size_bounds: tuple[float, float],
) -> dict:
    """Every formula of the panoptic metrics, applied to accumulated sums.

    Returns:
        Fractions in [0, 1], keys: ``all`` / ``things`` / ``stuff`` (``pq``, ``sq``, ``rq``, ``n``),
        ``per_class`` (by name: ``pq``, ``sq``, ``rq``, ``isthing``, ``category_id``, ``tp``, ``fp``,
        ``fn``), ``acc_th``, ``prec_th``, ``pixels`` (``tp_th``, ``gt_th``, ``pred_th``),
        ``thing_pixel_breakdown`` (``gt``: {fate: share of the GT thing pixels} over
        :data:`GT_THING_PIXEL_FATES`, ``pred``: likewise over :data:`PRED_THING_PIXEL_FATES`,
        ``gt_pixels`` / ``pred_pixels``: the pixel counts), ``confusion_curve`` (``thresholds``, ``ratio``, ``num_predictions``, ``size_bounds``,
        ``by_size`` = {S/M/L: ``ratio``, ``num_predictions``}), ``num_images``.
    """
    is_thing = np.array([c.isthing for c in categories], dtype=bool)
    results: dict = {}
    for name, selected in (("all", np.ones_like(is_thing)), ("things", is_thing), ("stuff", ~is_thing)):
        results[name], pq, sq, rq = _pq_group(stat, selected)
    results["per_class"] = {
        c.name: {
            "pq": float(pq[k]),
            "sq": float(sq[k]),
            "rq": float(rq[k]),
            "isthing": bool(c.isthing),
            "category_id": c.id,
            "tp": int(stat.tp[k]),
            "fp": int(stat.fp[k]),
            "fn": int(stat.fn[k]),
        }
        for k, c in enumerate(categories)
    }
    tp_px, gt_px, pred_px = stat.tp_thing_pixels, stat.gt_thing_pixels, stat.pred_thing_pixels
    results["acc_th"] = tp_px / gt_px if gt_px else 0.0
    results["prec_th"] = tp_px / pred_px if pred_px else 0.0
    results["pixels"] = {"tp_th": int(tp_px), "gt_th": int(gt_px), "pred_th": int(pred_px)}

    def shares(fate: np.ndarray, names: Sequence[str], total: int) -> dict[str, float]:
        return {name: int(n) / total if total else 0.0 for name, n in zip(names, fate, strict=True)}

    results["thing_pixel_breakdown"] = {
        "gt": shares(stat.gt_thing_fate, GT_THING_PIXEL_FATES, gt_px),
        "pred": shares(stat.pred_thing_fate, PRED_THING_PIXEL_FATES, pred_px),
        "gt_pixels": dict(zip(GT_THING_PIXEL_FATES, stat.gt_thing_fate.tolist(), strict=True)),
        "pred_pixels": dict(zip(PRED_THING_PIXEL_FATES, stat.pred_thing_fate.tolist(), strict=True)),
    }

    def ratio(confused: np.ndarray, total: int) -> list[float]:
        return (confused / total).tolist() if total else [0.0] * len(confused)

    total = int(stat.predictions.sum())
    results["confusion_curve"] = {
        "thresholds": [float(t) for t in thresholds],
        "ratio": ratio(stat.confused.sum(0), total),
        "num_predictions": total,
        "size_bounds": list(size_bounds),
        "by_size": {
            name: {
                "ratio": ratio(stat.confused[k], int(stat.predictions[k])),
                "num_predictions": int(stat.predictions[k]),
            }
            for k, name in enumerate(SIZE_NAMES)
        },
    }
    results["num_images"] = int(stat.num_images)
    return results


# ----------------------------------------------------------------------------- folders


# ground-truth PNGs decoded while the prediction JSON is read (about what one core decodes
# meanwhile for 500 Cityscapes-sized images)
_DECODED_AHEAD = 32


def default_workers() -> int:
    """The number of scoring threads when none is asked for: one per CPU core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _count_pair(
    evaluator: PanopticEvaluator,
    gt_dir: Path,
    pred_dir: Path,
    decoded: dict[str | int, Future[IdRuns]],
    pair: tuple[ImageRecord, ImageRecord | None],
) -> tuple:
    """Decode one image pair (as runs) and count its overlaps: the arguments of ``evaluator._add``.

    ``decoded``: ground-truth runs already being decoded, by image id (taken from it here).
    """
    gt_record, pred_record = pair
    gt_source = gt_dir / gt_record.png_name
    early = decoded.pop(gt_record.image_id, None)
    try:
        gt_runs = read_id_runs(gt_source) if early is None else early.result()
        if pred_record is None:  # missing prediction, allowed by the caller: all false negatives
            height, width = gt_runs.height, gt_runs.width
            no_runs = np.arange(0, height * width, width, dtype=np.int64)
            pred_runs = IdRuns(height, width, no_runs, np.zeros(height, dtype=np.uint32))
            pred_segments, pred_source = [], "(no prediction)"
        else:
            pred_source = pred_dir / pred_record.png_name
            pred_runs, pred_segments = read_id_runs(pred_source), pred_record.segments
    except PanopticFormatError as err:
        raise PanopticFormatError(f"image id {gt_record.image_id!r}: {err}") from err
    return evaluator._count(
        gt_runs, gt_record.segments, pred_runs, pred_segments, gt_record.image_id, gt_source, pred_source
    )


def evaluate_panoptic_folders(
    gt_json: str | os.PathLike,
    gt_dir: str | os.PathLike,
    pred_json: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    allow_missing: bool = False,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    size_bounds: tuple[float, float] = DEFAULT_SIZE_BOUNDS,
    progress: bool = False,
    keep_records: bool = True,
) -> tuple[dict, list[ConfusionRecord]]:
    """Score a folder of COCO-panoptic predictions against COCO-panoptic ground truth.

    Args:
        gt_json, gt_dir: the GT JSON and its folder of id PNGs.
        pred_json, pred_dir: the prediction JSON (``annotations`` in COCO-panoptic form;
            ``images``/``categories`` optional; category ids in the GT's id space) and PNGs.
        workers: threads that decode image pairs and count their overlaps (the decoder and
            the per-pixel numpy work release the GIL) while this thread adds up the images;
            default :func:`default_workers`.
        allow_missing: score GT images without prediction as all false negatives (their
            number is in the result as ``num_missing``); an error otherwise.
        thresholds, size_bounds: confusion-curve settings (see the module docstring).
        progress: show a tqdm bar.
        keep_records: build the confusion records (False: the metrics alone, records ``[]``).

    Returns:
        (results, confusion records): the :func:`summarize_stat` dict plus ``num_missing`` and
        ``timing`` (``total_s``, ``per_image_s``, ``workers``: wall time inside this call,
        reading JSONs and PNGs and computing), and one :class:`ConfusionRecord` per predicted
        thing segment, in GT image order.

    Raises:
        PanopticFormatError: naming the file, image id and segment id, for: a JSON that is not
            COCO-panoptic, duplicate ids, unknown categories, a missing prediction or PNG, ids in
            a PNG but not in the JSON or the reverse, a GT area that differs from its PNG, a
            prediction whose size differs from the GT.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise PanopticFormatError(f"{folder}: {what} PNG folder not found")
    gt = load_panoptic_json(gt_json)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        # the first ground-truth PNGs decode while this thread reads the prediction JSON
        decoded = {
            record.image_id: pool.submit(read_id_runs, gt_dir / record.png_name)
            for record in gt.records[:_DECODED_AHEAD]
        }
        pred = load_prediction_json(pred_json, gt.categories)
        pairs, num_missing = match_predictions(gt, pred, allow_missing=allow_missing)
        check_png_files(pairs, gt_dir, pred_dir)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    if num_missing:
        logger.warning(
            "%d ground-truth image(s) have no prediction and count as all false negatives", num_missing
        )
    evaluator = PanopticEvaluator(
        gt.categories,
        thresholds=thresholds,
        size_bounds=size_bounds,
        keep_records=keep_records,
        check_gt_area=True,
    )
    counted = prefetch(
        functools.partial(_count_pair, evaluator, gt_dir, pred_dir, decoded),
        pairs,
        threads=workers,
        depth=2 * workers,
        pool=pool,
    )
    if progress:  # tqdm is imported only for the bar (it costs more than scoring a few images)
        from tqdm.auto import tqdm

        counted = tqdm(counted, total=len(pairs), desc="scoring", unit="img")
    try:
        for image in counted:
            evaluator._add(*image)
            evaluator._next_image += 1
    finally:
        pool.shutdown(cancel_futures=True)
    results = evaluator.summarize()
    results["num_missing"] = num_missing
    total = time.perf_counter() - start
    results["timing"] = {"total_s": total, "per_image_s": total / max(len(pairs), 1), "workers": workers}
    return results, evaluator.records


# ----------------------------------------------------------------------------- reporting


def format_results(results: dict, *, curve_thresholds: Sequence[float] = (0.1, 0.25, 0.5, 0.75)) -> str:
    """Readable table of a :func:`summarize_stat` result, in percent as the paper reports.

    Args:
        results: the metrics dict (fractions).
        curve_thresholds: confusion-curve thresholds to list (each must be in the curve).
    """
    lines = [f"{'':10s}|{'PQ':>7s}{'SQ':>7s}{'RQ':>7s}{'N':>5s}", "-" * 36]
    for key, label in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        group = results[key]
        lines.append(
            f"{label:10s}|{100 * group['pq']:7.1f}{100 * group['sq']:7.1f}{100 * group['rq']:7.1f}{group['n']:5d}"
        )
    lines += ["", f"Acc^th  {100 * results['acc_th']:5.1f}", f"Prec^th {100 * results['prec_th']:5.1f}", ""]
    breakdown = results.get("thing_pixel_breakdown")
    if breakdown is not None:
        for side, label in (("gt", "GT thing pixels"), ("pred", "predicted thing pixels")):
            shares = ", ".join(f"{name} {100 * share:.1f}" for name, share in breakdown[side].items())
            lines.append(f"{label}: {shares}")
        lines.append("")
    curve = results["confusion_curve"]
    by_size = curve["by_size"]
    lines.append(
        f"Confused predicted things (of {curve['num_predictions']}; "
        + ", ".join(f"{name}: {by_size[name]['num_predictions']}" for name in SIZE_NAMES)
        + ")"
    )
    lines.append(f"{'T':>6s}{'all':>7s}" + "".join(f"{name:>7s}" for name in SIZE_NAMES))
    for threshold in curve_thresholds:
        k = int(np.argmin(np.abs(np.asarray(curve["thresholds"]) - threshold)))
        if abs(curve["thresholds"][k] - threshold) > 1e-9:
            continue
        row = [curve["ratio"][k]] + [by_size[name]["ratio"][k] for name in SIZE_NAMES]
        lines.append(f"{threshold:6.2f}" + "".join(f"{100 * value:7.1f}" for value in row))
    lines += ["", f"{'class':20s}|{'PQ':>7s}{'SQ':>7s}{'RQ':>7s}  thing", "-" * 48]
    for name, values in results["per_class"].items():
        lines.append(
            f"{name[:20]:20s}|{100 * values['pq']:7.1f}{100 * values['sq']:7.1f}{100 * values['rq']:7.1f}"
            f"  {'yes' if values['isthing'] else 'no'}"
        )
    return "\n".join(lines)


def write_confusion_csv(results: dict, path: str | os.PathLike) -> None:
    """The confusion curve as CSV: ``threshold,ratio,ratio_S,ratio_M,ratio_L`` (fractions)."""
    curve = results["confusion_curve"]
    rows = ["threshold,ratio," + ",".join(f"ratio_{name}" for name in SIZE_NAMES)]
    for k, threshold in enumerate(curve["thresholds"]):
        values = [curve["ratio"][k]] + [curve["by_size"][name]["ratio"][k] for name in SIZE_NAMES]
        rows.append(f"{threshold:g}," + ",".join(repr(float(v)) for v in values))
    Path(path).write_text("\n".join(rows) + "\n")
