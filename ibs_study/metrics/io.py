"""Reading ground truth and predictions in COCO-panoptic format for scoring.

A prediction folder is what every panoptic model writes (detectron2, MMDetection,
panopticapi, :func:`ibs_study.models.postprocess.write_panoptic_predictions`): a JSON whose
``annotations`` follow COCO-panoptic (``images`` and ``categories`` optional; category ids
in the ground truth's id space) and one RGB id PNG per image.

Decoding the PNGs is the slowest step of scoring, so :func:`decode_id_png` decodes the
8-bit RGB PNGs that panoptic tools write with :mod:`ibs_study.data.png` (libdeflate and
one compiled unfilter-and-pack pass, about 9x faster than libpng), any other PNG with Pillow,
and :func:`prefetch` decodes ahead in threads (the fast decoder releases the GIL) while the
caller computes. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

import numpy as np

from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    PanopticAnnotations,
    PanopticFormatError,
    load_panoptic_json,
    read_id_png,
)

logger = logging.getLogger(__name__)

__all__ = ["decode_id_png", "load_prediction_json", "match_predictions", "check_png_files", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


def decode_id_png(path: str | os.PathLike) -> np.ndarray:
    """Read a panoptic PNG into an (H, W) uint32 id map, ``id = R + 256 G + 256^2 B``.

    Same ids as :func:`ibs_study.data.panoptic.read_id_png` (which returns int32): 8-bit RGB
    PNGs without interlacing (what every panoptic tool writes) take the fast path of
    :func:`ibs_study.data.panoptic.read_fast_id_png`, which releases the GIL, so threads decode
    in parallel (:func:`prefetch`); any other PNG is decoded by Pillow and must still come out
    as 8-bit RGB.

    Raises:
        PanopticFormatError: the file is missing, corrupt or not an 8-bit RGB PNG.
    """
    return read_id_png(path).view(np.uint32)  # ids < 2^24: the same bits


def load_prediction_json(path: str | os.PathLike, categories: dict[int, CategoryInfo]) -> PanopticAnnotations:
    """Read a prediction JSON: COCO-panoptic ``annotations``, ``images``/``categories`` optional.

    Category ids are checked against ``categories`` (the ground truth's); structure errors
    (not COCO-panoptic, duplicate image or segment ids, unknown categories) raise
    :class:`PanopticFormatError` naming the file, image id and segment id.
    """
    return load_panoptic_json(path, categories, allow_empty=True, images_optional=True)


def match_predictions(
    gt: PanopticAnnotations, pred: PanopticAnnotations, *, allow_missing: bool = False
) -> tuple[list[tuple[ImageRecord, ImageRecord | None]], int]:
    """Pair every ground-truth image with its prediction record, by image id.

    Args:
        gt: the ground truth.
        pred: the predictions.
        allow_missing: let a ground-truth image without prediction pair with ``None``
            (scored as all false negatives); an error otherwise.

    Returns:
        (pairs in ground-truth order, number of ground-truth images without prediction).

    Raises:
        PanopticFormatError: a prediction for an image id absent from the ground truth, or
            (without ``allow_missing``) a ground-truth image without prediction.
    """
    by_id = {record.image_id: record for record in pred.records}
    gt_ids = {record.image_id for record in gt.records}
    extra = [image_id for image_id in by_id if image_id not in gt_ids]
    if extra:
        raise PanopticFormatError(
            f"{pred.path}: {len(extra)} prediction(s) for image ids absent from the ground truth "
            f"{gt.path}, e.g. image id {extra[0]!r} (ground-truth ids look like {gt.records[0].image_id!r})"
        )
    pairs = [(record, by_id.get(record.image_id)) for record in gt.records]
    missing = [gt_record.image_id for gt_record, pred_record in pairs if pred_record is None]
    if missing and not allow_missing:
        raise PanopticFormatError(
            f"{pred.path}: no prediction for {len(missing)} of {len(pairs)} ground-truth image(s) of "
            f"{gt.path}, e.g. image id {missing[0]!r} (use allow_missing / --allow-missing to score "
            f"them as all false negatives)"
        )
    return pairs, len(missing)


def check_png_files(
    pairs: Sequence[tuple[ImageRecord, ImageRecord | None]], gt_dir: Path, pred_dir: Path
) -> None:
    """Raise :class:`PanopticFormatError` naming the first missing PNG and its image id."""
    for gt_record, pred_record in pairs:
        for folder, record, what in (
            (gt_dir, gt_record, "ground-truth"),
            (pred_dir, pred_record, "prediction"),
        ):
            if record is not None and not (folder / record.png_name).is_file():
                raise PanopticFormatError(
                    f"{folder / record.png_name}: {what} PNG for image id {record.image_id!r} not found"
                )


def prefetch(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    threads: int = 2,
    depth: int = 4,
    pool: ThreadPoolExecutor | None = None,
) -> Iterator[R]:
    """``map(function, items)`` computed ahead in ``threads`` threads, at most ``depth`` pending.

    Meant for I/O and decoding that release the GIL; results come in order, and an
    exception raised by ``function`` is raised when its item is reached. ``pool``: run in
    this executor (the caller shuts it down) instead of a new one of ``threads``.
    """
    if threads < 1 or depth < 1:
        raise ValueError(f"prefetch needs threads >= 1 and depth >= 1, got {threads} and {depth}")
    with nullcontext(pool) if pool is not None else ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[Future[R]] = deque()
        iterator = iter(items)
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= depth:
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(function, item))
                break
            yield result
