"""From per-segment masks to panoptic and instance predictions on full images, and their writers.

Both unified models end here:

* :func:`paste_by_score` is Panoptic FCN's merge: thing masks (thresholded) are pasted
  in descending score order, a thing whose already-covered part exceeds an overlap ratio
  is dropped, then stuff fills the remaining pixels by per-pixel argmax over stuff classes.
* :func:`argmax_merge` is Mask2Former's: every pixel goes to the query with the highest
  ``score x probability``; a query keeps its segment only if enough of its own mask won.

Full-resolution masks of many segments do not fit in CPU memory at 1024x2048 (100 masks are
800 MB in float32), so masks can be given as :class:`MaskLogits`: low-resolution logits that
are upsampled chunk by chunk while the merge keeps running maxima.

Writers produce what ``ibs-study score`` and pycocotools read: a COCO-panoptic folder
(:func:`write_panoptic_predictions`) and a COCO instance-results JSON
(:func:`write_instance_predictions`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import (
    ImageRecord,
    PanopticFormatError,
    Segment,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PanopticPrediction",
    "InstancePrediction",
    "MaskLogits",
    "Masks",
    "upsample_logits",
    "paste_by_score",
    "argmax_merge",
    "PanopticPredictionWriter",
    "InstancePredictionWriter",
    "write_panoptic_predictions",
    "write_instance_predictions",
    "PREDICTIONS_JSON",
    "PREDICTIONS_PNG_DIR",
]

PREDICTIONS_JSON = "predictions.json"
PREDICTIONS_PNG_DIR = "predictions"


@dataclass
class PanopticPrediction:
    """A panoptic prediction of one image at its input resolution.

    Attributes:
        id_map: (H, W) int32 segment ids, 0 = void (no prediction).
        segments: one per id in ``id_map``; ``category_id`` is the dataset category id,
            ``score`` is set, area and bbox come from the pixels.
        image_id: dataset image id.
    """

    id_map: np.ndarray
    segments: list[Segment]
    image_id: str | int = ""


@dataclass
class InstancePrediction:
    """Instance predictions of one image at its input resolution.

    Attributes:
        masks: (N, H, W) bool.
        scores: (N,) float32.
        category_ids: (N,) int64 dataset category ids.
        image_id: dataset image id.
    """

    masks: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    image_id: str | int = ""


# ------------------------------------------------------------------------------ upsampling


def upsample_logits(
    logits: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Bilinear upsampling of mask logits to the input resolution (detectron2's ``sem_seg_postprocess``).

    The logits cover a padded network input; they are upsampled to ``padded_size``,
    cropped to the valid ``image_size`` (top-left) and resized to ``output_size``.

    Args:
        logits: (N, h, w) mask logits over the padded input.
        padded_size: (H_pad, W_pad) size of the network input.
        image_size: (H, W) of the image inside the padded input.
        output_size: (H_out, W_out); default ``image_size``.
        chunk_size: upsample at most this many masks at once (bounds the padded-size
            intermediate); None: all at once.

    Returns:
        (N, H_out, W_out) logits.
    """
    out_h, out_w = output_size or image_size
    h, w = image_size
    if h > padded_size[0] or w > padded_size[1]:
        raise ValueError(f"upsample_logits: image_size {image_size} exceeds padded_size {padded_size}")
    one_chunk = chunk_size is None or chunk_size >= logits.shape[0]
    if one_chunk and tuple(padded_size) == (h, w) == (out_h, out_w):
        return F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    result = logits.new_empty((logits.shape[0], out_h, out_w))
    step = chunk_size or max(logits.shape[0], 1)
    for start in range(0, logits.shape[0], step):
        chunk = F.interpolate(
            logits[None, start : start + step], size=padded_size, mode="bilinear", align_corners=False
        )
        chunk = chunk[..., :h, :w]
        if (out_h, out_w) != (h, w):
            chunk = F.interpolate(chunk, size=(out_h, out_w), mode="bilinear", align_corners=False)
        result[start : start + step] = chunk[0]
    return result


@dataclass
class MaskLogits:
    """Low-resolution mask logits whose full-resolution probabilities are made on demand.

    Attributes:
        logits: (N, h, w) logits over the padded network input.
        padded_size: (H_pad, W_pad) network input size.
        image_size: (H, W) of the image inside the padded input (top-left).
        output_size: (H_out, W_out) of the probabilities; default ``image_size``.
    """

    logits: torch.Tensor
    padded_size: tuple[int, int]
    image_size: tuple[int, int]
    output_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H_out, W_out) of :meth:`probs`."""
        return tuple(self.output_size or self.image_size)  # type: ignore[return-value]

    def subset(self, index: torch.Tensor) -> MaskLogits:
        """The masks ``index`` (a 1-D index or bool tensor) selects, in that order."""
        return MaskLogits(self.logits[index], self.padded_size, self.image_size, self.output_size)

    def probs(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, H_out, W_out) probabilities of masks ``start:stop``."""
        logits = upsample_logits(self.logits[start:stop], self.padded_size, self.image_size, self.output_size)
        return logits.sigmoid_()


Masks = torch.Tensor | MaskLogits
"""Either (N, H, W) full-resolution probabilities or :class:`MaskLogits`."""


def _num_masks(masks: Masks) -> int:
    return len(masks) if isinstance(masks, MaskLogits) else int(masks.shape[0])


def _mask_size(masks: Masks) -> tuple[int, int]:
    return masks.size if isinstance(masks, MaskLogits) else (int(masks.shape[-2]), int(masks.shape[-1]))


def _subset(masks: Masks, index: torch.Tensor) -> Masks:
    return masks.subset(index) if isinstance(masks, MaskLogits) else masks[index]


def _device(masks: Masks) -> torch.device:
    return masks.logits.device if isinstance(masks, MaskLogits) else masks.device


def _prob_chunks(masks: Masks, chunk_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, (n, H, W) probabilities) over the masks in order."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, _num_masks(masks), chunk_size):
        stop = min(start + chunk_size, _num_masks(masks))
        if isinstance(masks, MaskLogits):
            yield start, masks.probs(start, stop)
        else:
            yield start, masks[start:stop].float()


def _check_lengths(masks: Masks, *others: tuple[str, torch.Tensor]) -> None:
    n = _num_masks(masks)
    for name, values in others:
        if values.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match the masks, got {tuple(values.shape)}")


def _running_argmax(
    masks: Masks, weights: torch.Tensor, chunk_size: int, mask_threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-pixel argmax of ``weights[k] * prob_k`` over the masks, computed chunk by chunk.

    Ties go to the lowest index (as ``torch.argmax`` over all masks at once).

    Returns:
        index: (H, W) int64 winning mask per pixel, -1 where there are no masks.
        prob: (H, W) float probability of the winner at each pixel (0 without masks).
        own_area: (N,) int64 pixels with ``prob_k >= mask_threshold`` (None without a threshold).
    """
    h, w = _mask_size(masks)
    device = _device(masks)
    best_value = torch.full((h, w), -torch.inf, device=device)
    best_index = torch.full((h, w), -1, dtype=torch.int64, device=device)
    best_prob = torch.zeros((h, w), device=device)
    own_area = [] if mask_threshold is not None else None
    for start, probs in _prob_chunks(masks, chunk_size):
        n = probs.shape[0]
        weighted = weights[start : start + n, None, None].to(probs.dtype) * probs  # (n, H, W)
        chunk_value, chunk_index = weighted.max(0)  # (H, W); ties: the first maximum
        better = chunk_value > best_value
        best_value = torch.where(better, chunk_value, best_value)
        best_index = torch.where(better, chunk_index + start, best_index)
        best_prob = torch.where(better, probs.gather(0, chunk_index[None])[0], best_prob)
        if own_area is not None:
            own_area.append((probs >= mask_threshold).sum((1, 2)))
    if own_area is None:
        return best_index, best_prob, None
    areas = torch.cat(own_area) if own_area else torch.zeros(0, dtype=torch.int64, device=device)
    return best_index, best_prob, areas


def _prediction(
    id_map: torch.Tensor,
    category_of: dict[int, int],
    score_of: dict[int, float],
    image_id: str | int,
) -> PanopticPrediction:
    ids = id_map.to(torch.int32).cpu().numpy()
    return PanopticPrediction(
        id_map=ids, segments=segments_from_id_map(ids, category_of, score_of=score_of), image_id=image_id
    )


# -------------------------------------------------------------------- Panoptic FCN's merge


def paste_by_score(
    thing_masks: Masks,
    thing_scores: torch.Tensor,
    thing_labels: torch.Tensor,
    stuff_masks: Masks,
    stuff_scores: torch.Tensor,
    stuff_labels: torch.Tensor,
    meta: DatasetMeta,
    *,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    score_threshold: float = 0.2,
    stuff_area_limit: int = 2048,
    chunk_size: int = 8,
    image_id: str | int = "",
) -> PanopticPrediction:
    """Panoptic FCN's combination of thing and stuff masks into one panoptic map.

    1. Things with ``score >= score_threshold`` are visited in descending score order;
       a thing's mask is ``prob > mask_threshold``. An empty mask, or one whose pixels are
       already taken by more than ``overlap_threshold`` of its area (or entirely), is
       dropped; otherwise its still free pixels get a new segment.
    2. Every pixel gets the stuff label of the stuff mask with the highest probability
       (labels may repeat; they merge). For each label in ascending order that is a stuff
       class of ``meta`` (thing classes, which the stuff branch may also predict, are
       skipped), its still free pixels become one segment if there are at least
       ``stuff_area_limit`` of them.

    Args:
        thing_masks: N_th masks (probabilities or :class:`MaskLogits`).
        thing_scores: (N_th,) float. thing_labels: (N_th,) int64 contiguous labels.
        stuff_masks: N_st masks of the same size. stuff_scores: (N_st,) float (a stuff
            segment's score is the highest score of its label's masks).
        stuff_labels: (N_st,) int64 contiguous labels.
        meta: maps contiguous labels to dataset category ids and thing/stuff.
        chunk_size: masks upsampled at once.

    Returns:
        The prediction; segment ids are 1, 2, ... in paste order (things, then stuff).
    """
    _check_lengths(thing_masks, ("thing_scores", thing_scores), ("thing_labels", thing_labels))
    _check_lengths(stuff_masks, ("stuff_scores", stuff_scores), ("stuff_labels", stuff_labels))
    if _num_masks(stuff_masks) and _mask_size(stuff_masks) != _mask_size(thing_masks):
        raise ValueError(
            f"paste_by_score: thing masks are {_mask_size(thing_masks)} but stuff masks {_mask_size(stuff_masks)}"
        )
    h, w = _mask_size(thing_masks)
    device = _device(thing_masks)
    id_map = torch.zeros((h, w), dtype=torch.int32, device=device)
    category_of: dict[int, int] = {}
    score_of: dict[int, float] = {}

    keep = thing_scores >= score_threshold
    order = torch.argsort(thing_scores[keep], descending=True, stable=True)
    things = _subset(thing_masks, torch.nonzero(keep).flatten()[order])
    labels = thing_labels[keep][order].tolist()
    scores = thing_scores[keep][order].tolist()
    for start, probs in _prob_chunks(things, chunk_size):
        for offset, prob in enumerate(probs):
            mask = prob > mask_threshold
            area = int(mask.sum())
            if area == 0:
                continue
            free = mask & (id_map == 0)
            free_area = int(free.sum())
            if free_area == 0 or (area - free_area) / area > overlap_threshold:
                continue
            segment_id = len(category_of) + 1
            id_map[free] = segment_id
            category_of[segment_id] = meta.categories[labels[start + offset]].id
            score_of[segment_id] = scores[start + offset]

    if _num_masks(stuff_masks):
        winner, _, _ = _running_argmax(stuff_masks, torch.ones_like(stuff_scores), chunk_size)
        label_map = stuff_labels.to(device)[winner]  # (H, W)
        for label in torch.unique(stuff_labels).tolist():
            if meta.is_thing[label]:
                continue
            region = (label_map == label) & (id_map == 0)
            if int(region.sum()) < stuff_area_limit:
                continue
            segment_id = len(category_of) + 1
            id_map[region] = segment_id
            category_of[segment_id] = meta.categories[label].id
            score_of[segment_id] = float(stuff_scores[stuff_labels == label].max())
    return _prediction(id_map, category_of, score_of, image_id)


# ---------------------------------------------------------------------- Mask2Former's merge


def argmax_merge(
    mask_probs: Masks,
    scores: torch.Tensor,
    labels: torch.Tensor,
    meta: DatasetMeta,
    *,
    overlap_threshold: float = 0.8,
    mask_threshold: float = 0.5,
    chunk_size: int = 8,
    image_id: str | int = "",
) -> PanopticPrediction:
    """Mask2Former's panoptic merge, computed chunk-wise over queries.

    Each pixel goes to the kept query with the highest ``score x prob`` (ties: the lower
    index). Query k keeps its segment if its won area ``A_k`` and its own area
    ``O_k = |prob_k >= mask_threshold|`` are positive, some won pixel has
    ``prob_k >= mask_threshold``, and ``A_k / O_k >= overlap_threshold``; its segment is
    the won pixels with ``prob_k >= mask_threshold``. Queries of one stuff class share one
    segment. Pixels of dropped queries, and won pixels below the mask threshold, are void.

    Args:
        mask_probs: Q masks (probabilities or :class:`MaskLogits`) of the kept queries.
        scores: (Q,) class scores. labels: (Q,) int64 contiguous labels.
        meta: maps labels to dataset category ids and thing/stuff.
        chunk_size: queries upsampled at once.

    Returns:
        The prediction; segment ids are 1, 2, ... in query order. A merged stuff segment's
        score is the highest score among its queries.
    """
    _check_lengths(mask_probs, ("scores", scores), ("labels", labels))
    device = _device(mask_probs)
    scores = scores.to(device)
    winner, winner_prob, own_area = _running_argmax(mask_probs, scores, chunk_size, mask_threshold)
    num_queries = _num_masks(mask_probs)
    confident = winner_prob >= mask_threshold
    won_area = torch.bincount(winner[winner >= 0], minlength=num_queries)
    kept_area = torch.bincount(winner[confident & (winner >= 0)], minlength=num_queries)
    assert own_area is not None

    segment_of_query = torch.zeros(num_queries + 1, dtype=torch.int32, device=device)  # last: no query
    category_of: dict[int, int] = {}
    score_of: dict[int, float] = {}
    stuff_segment: dict[int, int] = {}
    for k, (label, score) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True)):
        won, own, kept = int(won_area[k]), int(own_area[k]), int(kept_area[k])
        if won == 0 or own == 0 or kept == 0 or won / own < overlap_threshold:
            continue
        if not meta.is_thing[label] and label in stuff_segment:
            segment_id = stuff_segment[label]
            score_of[segment_id] = max(score_of[segment_id], score)
        else:
            segment_id = len(category_of) + 1
            category_of[segment_id] = meta.categories[label].id
            score_of[segment_id] = score
            if not meta.is_thing[label]:
                stuff_segment[label] = segment_id
        segment_of_query[k] = segment_id
    id_map = torch.where(confident, segment_of_query[winner], 0)
    return _prediction(id_map, category_of, score_of, image_id)


# -------------------------------------------------------------------------------- writers


def _png_name(image_id: str | int) -> str:
    name = str(image_id)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise PanopticFormatError(f"image id {image_id!r} cannot name a prediction PNG")
    return f"{name}.png"


class PanopticPredictionWriter:
    """Streams panoptic predictions to a COCO-panoptic folder: ``predictions/<image id>.png`` as each
    prediction is added, ``predictions.json`` on :meth:`close` (only segments are kept in memory).

    Usage: ``with PanopticPredictionWriter(out_dir, meta) as writer: writer.add(prediction)``.

    Raises (from :meth:`add`):
        PanopticFormatError: a repeated image id, a category id that ``meta`` lacks, or
            segments that do not describe the id map; the message names the image and segment.
    """

    def __init__(self, out_dir: str | os.PathLike, meta: DatasetMeta) -> None:
        self.out_dir = Path(out_dir)
        self.png_dir = self.out_dir / PREDICTIONS_PNG_DIR
        self.png_dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.json_path = self.out_dir / PREDICTIONS_JSON
        self._known = meta.by_id()
        self._records: list[ImageRecord] = []
        self._seen: set[str | int] = set()

    def _check(self, prediction: PanopticPrediction) -> None:
        image_id = prediction.image_id
        if image_id in self._seen:
            raise PanopticFormatError(f"{self.out_dir}: image id {image_id!r} is predicted twice")
        listed = [s.id for s in prediction.segments]
        if len(set(listed)) != len(listed):
            raise PanopticFormatError(
                f"{self.out_dir}: image id {image_id!r} lists a segment id twice: {sorted(listed)}"
            )
        missing = sorted(set(np.unique(prediction.id_map).tolist()) - set(listed) - {0})
        if missing:
            raise PanopticFormatError(
                f"{self.out_dir}: image id {image_id!r}: segment id(s) {missing[:10]} in the id map have no segment"
            )
        for segment in prediction.segments:
            if segment.category_id not in self._known:
                raise PanopticFormatError(
                    f"{self.out_dir}: image id {image_id!r}, segment id {segment.id}: category id "
                    f"{segment.category_id} is not a {self.meta.name} category"
                )

    def add(self, prediction: PanopticPrediction) -> None:
        """Check one prediction and write its PNG."""
        self._check(prediction)
        png_name = _png_name(prediction.image_id)
        write_id_png(self.png_dir / png_name, prediction.id_map)
        self._seen.add(prediction.image_id)
        height, width = prediction.id_map.shape
        self._records.append(
            ImageRecord(
                prediction.image_id, png_name, int(width), int(height), png_name, list(prediction.segments)
            )
        )

    def close(self) -> Path:
        """Write ``predictions.json``; returns its path."""
        write_panoptic_json(self.json_path, self._records, self.meta.categories)
        logger.info("wrote %d panoptic predictions to %s", len(self._records), self.out_dir)
        return self.json_path

    def __enter__(self) -> PanopticPredictionWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()


def write_panoptic_predictions(
    out_dir: str | os.PathLike, predictions: Sequence[PanopticPrediction], meta: DatasetMeta
) -> Path:
    """Write predictions as a COCO-panoptic folder (see :class:`PanopticPredictionWriter`); returns the JSON path."""
    with PanopticPredictionWriter(out_dir, meta) as writer:
        for prediction in predictions:
            writer.add(prediction)
    return writer.json_path


class InstancePredictionWriter:
    """Collects instance predictions as COCO results (RLE masks, XYWH boxes, scores); writes the JSON on
    :meth:`close`. Each mask is encoded on its own, so no (H, W, N) copy of all masks is made.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._results: list[dict] = []

    def add(self, prediction: InstancePrediction) -> None:
        n = prediction.masks.shape[0]
        if prediction.scores.shape != (n,) or prediction.category_ids.shape != (n,):
            raise ValueError(
                f"image id {prediction.image_id!r}: {n} masks but scores {prediction.scores.shape} and "
                f"category_ids {prediction.category_ids.shape}"
            )
        for mask, score, category_id in zip(
            prediction.masks, prediction.scores.tolist(), prediction.category_ids.tolist(), strict=True
        ):
            rle = mask_util.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
            self._results.append(
                {
                    "image_id": prediction.image_id,
                    "category_id": int(category_id),
                    "segmentation": {
                        "size": [int(v) for v in rle["size"]],
                        "counts": rle["counts"].decode("ascii"),
                    },
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "score": float(score),
                }
            )

    def close(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(self._results, f)
        return self.path

    def __enter__(self) -> InstancePredictionWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()


def write_instance_predictions(path: str | os.PathLike, predictions: Sequence[InstancePrediction]) -> Path:
    """Write instance predictions as a COCO results JSON (see :class:`InstancePredictionWriter`)."""
    with InstancePredictionWriter(path) as writer:
        for prediction in predictions:
            writer.add(prediction)
    return writer.path
