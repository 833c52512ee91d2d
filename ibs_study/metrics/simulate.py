"""Simulated ground truth and predictions for checking and illustrating the metrics.

:func:`street_scene` draws a street-like panoptic ground truth (stuff bands, things whose
size grows towards the bottom, painter's-order occlusion, optional crowd and void);
:func:`perturb_prediction` turns a ground truth into a plausible prediction with the
errors that matter here: merged same-class instances (confusion), splits, shifted
boundaries, dropped segments, wrong classes and fresh segment ids. Both work per segment
on bounding-box windows, never per pixel in Python.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ibs_study.data.panoptic import MAX_SEGMENT_ID, VOID_ID, CategoryInfo, Segment, segments_from_id_map

logger = logging.getLogger(__name__)

__all__ = ["street_scene", "perturb_prediction"]


def _unique_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct random segment ids in [1, 2^24), most above 65535 as in real datasets."""
    ids = np.unique(rng.integers(1, MAX_SEGMENT_ID + 1, size=4 * count + 8))
    return rng.permutation(ids)[:count]


def street_scene(
    height: int,
    width: int,
    categories: Mapping[int, CategoryInfo],
    rng: np.random.Generator,
    *,
    num_things: int = 30,
    crowd_prob: float = 0.3,
    void_fraction: float = 0.05,
) -> tuple[np.ndarray, list[Segment]]:
    """A street-like panoptic ground truth.

    Up to five stuff categories, drawn at random, fill horizontal bands with wavy borders
    (one segment per category); thing categories are ellipses and boxes whose size grows
    with their y position and that occlude each other far-to-near. With probability
    ``crowd_prob`` one large box of a thing category is a crowd segment; a band of
    ``void_fraction`` of the height at the bottom and a thin void outline around some
    things are void.

    Args:
        height, width: image size.
        categories: dataset categories; at least one stuff and one thing category.
        rng: random generator.
        num_things: thing instances drawn (some may be fully occluded and vanish).
        crowd_prob: probability of one crowd segment.
        void_fraction: share of the height that is void at the bottom.

    Returns:
        (id_map (H, W) int32, segments with category, iscrowd, area and bbox).
    """
    stuff = [c.id for c in categories.values() if not c.isthing]
    things = [c.id for c in categories.values() if c.isthing]
    if not stuff or not things:
        raise ValueError("street_scene needs at least one stuff and one thing category")
    num_bands = min(len(stuff), 5)
    ids = _unique_ids(rng, num_bands + num_things + 1)
    category_of: dict[int, int] = {}
    iscrowd_of: dict[int, int] = {}

    # Stuff bands with wavy borders.
    cols = np.arange(width)
    borders = np.sort(rng.uniform(0.1, 0.9, size=num_bands - 1)) * height
    phase = rng.uniform(0, 2 * np.pi, size=num_bands - 1)
    wave = 0.03 * height * np.sin(cols[None, :] * (2 * np.pi / max(width / 3, 1)) + phase[:, None])
    band = (np.arange(height)[:, None, None] > (borders[:, None] + wave)[None, :, :]).sum(1)  # (H, W)
    id_map = ids[:num_bands][band].astype(np.int32)
    for k, cat_id in enumerate(rng.choice(stuff, size=num_bands, replace=False).tolist()):
        category_of[int(ids[k])] = cat_id

    # Things far to near: y sets the size (perspective).
    horizon = 0.35 * height
    centres_y = np.sort(rng.uniform(horizon, height, size=num_things))
    for k, cy in enumerate(centres_y.tolist()):
        seg_id = int(ids[num_bands + k])
        depth = (cy - horizon) / (height - horizon)
        half_h = max(2.0, (0.02 + 0.25 * depth**1.5) * height * rng.uniform(0.7, 1.3))
        half_w = half_h * rng.uniform(0.5, 1.6)
        cx = rng.uniform(0, width)
        y0, y1 = max(int(cy - half_h), 0), min(int(cy + half_h) + 1, height)
        x0, x1 = max(int(cx - half_w), 0), min(int(cx + half_w) + 1, width)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        if rng.random() < 0.5:
            mask = ((yy - cy) / half_h) ** 2 + ((xx - cx) / half_w) ** 2 <= 1
        else:
            mask = np.ones(yy.shape, dtype=bool)
        if rng.random() < 0.2:  # an unlabeled outline, as annotation tools leave
            ring = ((yy - cy) / (half_h + 2)) ** 2 + ((xx - cx) / (half_w + 2)) ** 2 <= 1
            id_map[y0:y1, x0:x1][ring & ~mask] = VOID_ID
        id_map[y0:y1, x0:x1][mask] = seg_id
        category_of[seg_id] = int(rng.choice(things))

    if rng.random() < crowd_prob:
        crowd_id = int(ids[-1])
        cy, cx = rng.uniform(horizon, height), rng.uniform(0, width)
        half_h, half_w = 0.08 * height, 0.15 * width
        id_map[max(int(cy - half_h), 0) : int(cy + half_h), max(int(cx - half_w), 0) : int(cx + half_w)] = (
            crowd_id
        )
        category_of[crowd_id] = int(rng.choice(things))
        iscrowd_of[crowd_id] = 1
    id_map[height - int(void_fraction * height) :, :] = VOID_ID
    present = {i: c for i, c in category_of.items() if (id_map == i).any()}
    return id_map, segments_from_id_map(id_map, present, iscrowd_of)


def perturb_prediction(
    id_map: np.ndarray,
    segments: list[Segment],
    categories: Mapping[int, CategoryInfo],
    rng: np.random.Generator,
    *,
    merge_prob: float = 0.2,
    split_prob: float = 0.1,
    max_shift: int = 3,
    drop_prob: float = 0.05,
    wrong_class_prob: float = 0.05,
    fill_void: bool = False,
) -> tuple[np.ndarray, list[Segment]]:
    """A prediction made from a ground truth by typical errors, with fresh random segment ids.

    Per thing segment (crowd ones included, as a model does not know about crowd):
    with ``merge_prob`` it takes the id of the nearest other thing of its class (the
    confusion error), with ``split_prob`` its right half becomes a new segment, with
    ``drop_prob`` it disappears, with ``wrong_class_prob`` it gets another thing category,
    and every thing is shifted by up to ``max_shift`` pixels. Pixels left uncovered (and
    the GT's void) are void, or with ``fill_void`` go to the nearest labelled pixel on their
    left in the same row (on their right at the left border; rows without any label take
    the nearest labelled row), as a model that labels every pixel would. Stuff keeps one
    segment per category.

    Args:
        id_map: (H, W) integer GT ids.
        segments: the GT segments.
        categories: dataset categories.
        rng: random generator.

    Returns:
        (pred id map (H, W) int32, predicted segments with area, bbox and a random score).
    """
    height, width = id_map.shape
    pred = id_map.astype(np.int32, copy=True)
    is_thing = {c.id: c.isthing for c in categories.values()}
    things = [s for s in segments if is_thing[s.category_id]]
    category_of = {s.id: s.category_id for s in segments}
    new_ids = iter(_unique_ids(rng, 2 * len(segments) + 2).tolist())

    order = rng.permutation(len(things))
    for k in order.tolist():
        seg = things[k]
        x, y, w, h = seg.bbox
        window = (slice(y, y + h), slice(x, x + w))
        mask = id_map[window] == seg.id
        pred[window][mask & (pred[window] == seg.id)] = VOID_ID
        if rng.random() < drop_prob:
            continue
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2).tolist()
        ty0, tx0 = max(y + dy, 0), max(x + dx, 0)
        ty1, tx1 = min(y + dy + h, height), min(x + dx + w, width)
        if ty1 <= ty0 or tx1 <= tx0:
            continue
        shifted = mask[ty0 - y - dy : ty1 - y - dy, tx0 - x - dx : tx1 - x - dx]
        target_id = seg.id
        if rng.random() < merge_prob:
            mates = [s for s in things if s.category_id == seg.category_id and s.id != seg.id]
            if mates:
                centre = np.array([x + w / 2, y + h / 2])
                distance = [
                    np.hypot(*(np.array([m.bbox[0] + m.bbox[2] / 2, m.bbox[1] + m.bbox[3] / 2]) - centre))
                    for m in mates
                ]
                target_id = mates[int(np.argmin(distance))].id
        target = pred[ty0:ty1, tx0:tx1]
        target[shifted] = target_id
        if rng.random() < split_prob and tx1 - tx0 > 1:
            half = (tx0 + tx1) // 2 - tx0
            split_id = next(new_ids)
            category_of[split_id] = category_of[target_id]
            target[:, half:][shifted[:, half:] & (target[:, half:] == target_id)] = split_id

    thing_categories = [c for c, thing in is_thing.items() if thing]
    for seg_id, category_id in category_of.items():
        if is_thing[category_id] and len(thing_categories) > 1 and rng.random() < wrong_class_prob:
            category_of[seg_id] = int(rng.choice([c for c in thing_categories if c != category_id]))
    if fill_void:  # along rows, then along columns for rows without any label
        pred = _fill_void_from_row_neighbours(_fill_void_from_row_neighbours(pred).T).T

    # Fresh ids: a prediction never shares the ground truth's numbering.
    present = np.unique(pred)
    present = present[present != VOID_ID]
    fresh = np.array([next(new_ids) for _ in present.tolist()], dtype=np.int64)
    relabel = np.zeros(len(present) + 1, dtype=np.int64)
    relabel[1:] = fresh
    pred = relabel[np.where(pred != VOID_ID, np.searchsorted(present, pred) + 1, 0)].astype(np.int32)
    pred_category = {int(f): category_of[int(p)] for p, f in zip(present.tolist(), fresh.tolist())}
    scores = {int(f): float(rng.uniform(0.5, 1.0)) for f in fresh.tolist()}
    return pred, segments_from_id_map(pred, pred_category, score_of=scores)


def _fill_void_from_row_neighbours(id_map: np.ndarray) -> np.ndarray:
    """Each void pixel takes the id of the nearest non-void pixel on its left in its row, or on
    its right where there is none; rows without any label stay void."""
    height, width = id_map.shape
    columns = np.arange(width)[None, :]
    labelled = id_map != VOID_ID
    left = np.maximum.accumulate(np.where(labelled, columns, -1), axis=1)
    right = np.minimum.accumulate(np.where(labelled, columns, width)[:, ::-1], axis=1)[:, ::-1]
    source = np.where(left >= 0, left, right)
    filled = id_map[np.arange(height)[:, None], np.minimum(source, width - 1)]
    return np.where(source < width, filled, VOID_ID).astype(id_map.dtype)
