"""Targets built from (cropped) samples and the collated batch."""

from __future__ import annotations

import numpy as np
import pytest

from ibs_study.data.batch import collate, target_from_sample
from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import CategoryInfo, PanopticSample, segments_from_id_map

META = DatasetMeta.from_categories(
    "toy",
    [CategoryInfo(3, "road", False), CategoryInfo(7, "car", True), CategoryInfo(9, "person", True)],
)


def _sample() -> PanopticSample:
    ids = np.full((6, 8), 1, dtype=np.int32)
    ids[1:3, 1:4] = 70_000  # car
    ids[4, 5] = 80_000  # person: a single pixel
    ids[0:2, 6:8] = 5  # crowd of cars
    ids[5, 0] = 0  # void
    cats = {1: 3, 70_000: 7, 80_000: 9, 5: 7}
    segs = segments_from_id_map(ids, cats, iscrowd_of={5: 1})
    return PanopticSample("img", np.zeros((6, 8, 3), np.uint8), ids, segs)


def test_target_masks_labels_and_ignore():
    sample = _sample()
    pad = np.zeros((6, 8), bool)
    pad[:, 7] = True
    target = target_from_sample(sample, META, pad_mask=pad)
    assert target.segment_ids.tolist() == [1, 70_000, 80_000]  # crowd is not a target
    assert target.labels.tolist() == [0, 1, 2]  # contiguous in ascending category id
    assert target.is_thing.tolist() == [False, True, True]
    assert target.masks.shape == (3, 6, 8) and target.masks.dtype.is_floating_point is False
    assert int(target.masks[1].sum()) == 6 and int(target.masks[2].sum()) == 1
    # ignore = void (1) + crowd (4) + the padded column (6, of which 2 are crowd)
    assert int(target.ignore.sum()) == 1 + 4 + 6 - 2
    assert target.num_things == 2


def test_min_pixels_drops_tiny_segments():
    target = target_from_sample(_sample(), META, min_pixels=2)
    assert target.segment_ids.tolist() == [1, 70_000]


def test_collate_stacks_and_rejects_mixed_sizes():
    sample = _sample()
    target = target_from_sample(sample, META)
    batch = collate([sample.image, sample.image], [target, target], ["a", "b"])
    assert tuple(batch.images.shape) == (2, 3, 6, 8) and len(batch) == 2
    with pytest.raises(ValueError, match="one size"):
        collate([sample.image, np.zeros((5, 8, 3), np.uint8)], [target, target], ["a", "b"])
