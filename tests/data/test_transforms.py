"""Invariants of ibs_study.data.transforms: geometry, segment bookkeeping, padding, randomness."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ibs_study.data.panoptic import PanopticFormatError, PanopticSample, segments_from_id_map
from ibs_study.data.transforms import (
    TrainAugmentation,
    crop,
    hflip,
    random_crop_box,
    rescale,
    resize,
    resize_shortest_edge,
)

# Segment ids above 65535 on purpose (they need the third PNG byte in real files).
STUFF, CAR, PERSON = 7, 26, 24
CATEGORY_OF = {STUFF: STUFF, 70001: CAR, 70002: CAR, 131072: PERSON, 99: PERSON}
CROWD_ID = 99


def make_sample(height: int = 40, width: int = 60, seed: int = 0) -> PanopticSample:
    """Stuff background, two cars, one person, one crowd blob, a 1-pixel car and some void."""
    rng = np.random.default_rng(seed)
    id_map = np.full((height, width), STUFF, dtype=np.int32)
    id_map[5:20, 4:30] = 70001
    id_map[15:35, 25:50] = 70002  # overlaps the first car: painter's order
    id_map[2:12, 40:46] = 131072
    id_map[30:38, 2:14] = CROWD_ID
    id_map[0, 0] = 0  # void pixel
    id_map[height - 1, width - 1] = 70001  # a far-away pixel of the first car (extends its bbox)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    segments = segments_from_id_map(id_map, CATEGORY_OF, {CROWD_ID: 1})
    return PanopticSample(image_id="img_0", image=image, id_map=id_map, segments=segments)


def assert_consistent(sample: PanopticSample, source: PanopticSample) -> None:
    """Segments describe the pixels exactly; categories and iscrowd are those of the source."""
    assert sample.image.dtype == np.uint8 and sample.image.shape == sample.id_map.shape + (3,)
    assert sample.id_map.dtype == np.int32
    src = source.segment_by_id()
    expected = segments_from_id_map(
        sample.id_map,
        {i: s.category_id for i, s in src.items()},
        {i: s.iscrowd for i, s in src.items()},
    )
    assert sample.segments == expected
    present = set(np.unique(sample.id_map).tolist()) - {0}
    assert {s.id for s in sample.segments} == present  # dropped = exactly those with no pixel left
    assert present <= set(src)


# ---------------------------------------------------------------------------------- resize


def test_resize_halving_picks_pixel_centres_and_recomputes_segments():
    sample = make_sample()
    out = resize(sample, 20, 30)
    # Pixel-centre nearest neighbour: output pixel i covers input [2i, 2i+2); its centre maps to 2i+1.
    np.testing.assert_array_equal(out.id_map, sample.id_map[1::2, 1::2])
    assert_consistent(out, sample)
    # The far single pixel of car 70001 at (39, 59) is kept by the (1::2, 1::2) lattice.
    car = out.segment_by_id()[70001]
    assert car.bbox[0] + car.bbox[2] == 30 and car.bbox[1] + car.bbox[3] == 20


def test_resize_drops_segments_without_pixels():
    sample = make_sample()
    sample.id_map[0, 0] = 131072  # a lone pixel of the person at an even position...
    sample.id_map[2:12, 40:46] = STUFF  # ...and nothing else of it
    sample.segments = segments_from_id_map(sample.id_map, CATEGORY_OF, {CROWD_ID: 1})
    out = resize(sample, 20, 30)
    assert 131072 not in out.segment_by_id()
    assert_consistent(out, sample)


def test_resize_shrinking_is_antialiased():
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    image[:, ::2] = 255  # one-pixel stripes: nearest/point sampling would give pure 0 or 255
    sample = PanopticSample("s", image, np.full((8, 16), STUFF, np.int32), [])
    sample.segments = segments_from_id_map(sample.id_map, {STUFF: STUFF})
    out = resize(sample, 4, 8)
    assert out.image.min() >= 100 and out.image.max() <= 155


def test_resize_enlarging_is_bilinear_between_neighbours():
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[0, 1] = 200
    sample = PanopticSample("s", image, np.full((1, 2), STUFF, np.int32), [])
    sample.segments = segments_from_id_map(sample.id_map, {STUFF: STUFF})
    row = resize(sample, 1, 8).image[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 200
    assert np.all(np.diff(row) >= 0) and 0 < row[3] < 200  # monotone ramp, not a step


def test_rescale_and_shortest_edge_sizes():
    sample = make_sample(40, 60)
    assert rescale(sample, 0.55).id_map.shape == (22, 33)  # round(22.0), round(33.0)
    assert rescale(sample, 1.5).id_map.shape == (60, 90)
    # short side 40 -> 30: scale 0.75 -> 30 x 45
    assert resize_shortest_edge(sample, 30, 100).id_map.shape == (30, 45)
    # short 80 would give 80 x 120, but the long side is capped at 100: scale 5/3 -> 67 x 100
    assert resize_shortest_edge(sample, 80, 100).id_map.shape == (67, 100)
    assert resize_shortest_edge(sample, 80).id_map.shape == (80, 120)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="factor must be > 0"):
            rescale(sample, bad)
    with pytest.raises(ValueError, match="at least 1x1"):
        resize(sample, 0, 5)


# ------------------------------------------------------------------------------------ crop


def test_crop_inside_equals_slicing():
    sample = make_sample()
    out, pad = crop(sample, 3, 10, 20, 25)
    np.testing.assert_array_equal(out.id_map, sample.id_map[3:23, 10:35])
    np.testing.assert_array_equal(out.image, sample.image[3:23, 10:35])
    assert not pad.any() and pad.shape == (20, 25)
    assert_consistent(out, sample)
    assert CROWD_ID not in out.segment_by_id()  # the crowd blob lies at rows 30-37: outside


def test_crop_beyond_the_image_pads_with_zeros_and_void():
    sample = make_sample(40, 60)
    out, pad = crop(sample, -5, 50, 20, 30)  # rows -5..14, cols 50..79
    expected_pad = np.ones((20, 30), dtype=bool)
    expected_pad[5:, :10] = False
    np.testing.assert_array_equal(pad, expected_pad)
    np.testing.assert_array_equal(out.id_map[~pad], sample.id_map[0:15, 50:60].ravel())
    assert (out.id_map[pad] == 0).all() and (out.image[pad] == 0).all()
    assert_consistent(out, sample)


def test_crop_larger_than_the_image_keeps_everything():
    sample = make_sample(40, 60)
    out, pad = crop(sample, 0, 0, 64, 128)
    assert out.id_map.shape == (64, 128) and pad.sum() == 64 * 128 - 40 * 60
    assert not pad[:40, :60].any()
    assert [(s.id, s.area, s.bbox) for s in out.segments] == [(s.id, s.area, s.bbox) for s in sample.segments]


def test_crop_fully_outside_is_all_padding():
    out, pad = crop(make_sample(40, 60), 100, 100, 8, 8)
    assert pad.all() and out.segments == [] and (out.id_map == 0).all()


# ------------------------------------------------------------------------------------ flip


def test_hflip_mirrors_bbox_and_twice_is_identity():
    sample = make_sample()
    once = hflip(sample)
    assert_consistent(once, sample)
    for seg in sample.segments:
        flipped = once.segment_by_id()[seg.id]
        x, y, w, h = seg.bbox
        assert flipped.bbox == (sample.width - x - w, y, w, h) and flipped.area == seg.area
    twice = hflip(once)
    np.testing.assert_array_equal(twice.image, sample.image)
    np.testing.assert_array_equal(twice.id_map, sample.id_map)
    assert twice.segments == sample.segments


def test_unknown_segment_id_names_the_image():
    sample = make_sample()
    sample.id_map[1, 1] = 5555  # not in segments
    with pytest.raises(PanopticFormatError, match=r"img_0.*5555"):
        hflip(sample)


# ------------------------------------------------------------------------- random crop box


def test_random_crop_box_is_uniform_over_valid_offsets():
    rng = np.random.default_rng(0)
    draws = [random_crop_box((10, 12), (4, 5), rng) for _ in range(14000)]
    tops, lefts = np.array(draws).T
    assert tops.min() == 0 and tops.max() == 6 and lefts.min() == 0 and lefts.max() == 7
    counts = np.bincount(tops * 8 + lefts, minlength=56)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_random_crop_box_contains_the_point_uniformly():
    rng = np.random.default_rng(1)
    point = (5.7, 6.2)  # pixel (5, 6)
    draws = np.array([random_crop_box((10, 12), (4, 5), rng, contain_point=point) for _ in range(10000)])
    tops, lefts = draws.T
    assert ((tops <= 5) & (tops + 4 > 5) & (lefts <= 6) & (lefts + 5 > 6)).all()
    # Valid tops {2..5}, lefts {2..6}: 20 equally likely windows.
    assert set(tops.tolist()) == {2, 3, 4, 5} and set(lefts.tolist()) == {2, 3, 4, 5, 6}
    counts = np.unique(tops * 10 + lefts, return_counts=True)[1]
    assert len(counts) == 20 and stats.chisquare(counts).pvalue > 1e-3


def test_random_crop_box_point_near_the_border_and_small_images():
    rng = np.random.default_rng(2)
    for _ in range(200):
        top, left = random_crop_box((100, 200), (30, 50), rng, contain_point=(99, 0))
        assert top == 70 and left == 0  # clipped to the image: the only valid window
        # Smaller than the crop in height: offset 0 there, still random in width.
        top, left = random_crop_box((20, 200), (30, 50), rng, contain_point=(10, 120))
        assert top == 0 and 71 <= left <= 120
    with pytest.raises(ValueError, match="outside the image"):
        random_crop_box((20, 20), (5, 5), rng, contain_point=(20, 3))


def test_random_crop_box_contains_random_points_many_draws():
    rng = np.random.default_rng(3)
    for _ in range(2000):
        h, w = rng.integers(1, 60, size=2)
        ch, cw = rng.integers(1, 40, size=2)
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        top, left = random_crop_box((h, w), (ch, cw), rng, contain_point=(y, x))
        assert 0 <= top and 0 <= left
        assert top <= max(h - ch, 0) and left <= max(w - cw, 0)
        if h >= ch:
            assert top <= int(y) < top + ch
        if w >= cw:
            assert left <= int(x) < left + cw


# ---------------------------------------------------------------------- TrainAugmentation


def test_train_augmentation_is_reproducible_and_consistent():
    sample = make_sample(40, 60)
    aug = TrainAugmentation(scale_range=(0.5, 2.0), crop_size=(32, 48), flip_prob=0.5)
    outputs = []
    for seed in range(12):
        a, pad_a = aug(sample, np.random.default_rng(seed))
        b, pad_b = aug(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.id_map, b.id_map)
        np.testing.assert_array_equal(pad_a, pad_b)
        assert a.segments == b.segments
        assert a.id_map.shape == (32, 48) and pad_a.shape == (32, 48)
        assert (a.id_map[pad_a] == 0).all() and (a.image[pad_a] == 0).all()
        assert_consistent(a, sample)
        outputs.append(a.id_map)
    assert len({o.tobytes() for o in outputs}) > 6  # different seeds, different crops


def test_train_augmentation_pads_when_the_resized_image_is_small():
    sample = make_sample(40, 60)
    aug = TrainAugmentation(scale_range=(0.5, 0.5), crop_size=(32, 48), flip_prob=0.0)
    out, pad = aug(sample, np.random.default_rng(0))
    # Resized to 20 x 30, placed at offset 0: the rest is padding.
    assert not pad[:20, :30].any() and pad[20:].all() and pad[:, 30:].all()
    np.testing.assert_array_equal(out.id_map[:20, :30], resize(sample, 20, 30).id_map)


def test_train_augmentation_full_image_mode_and_shortest_edge():
    sample = make_sample(40, 60)
    full = TrainAugmentation(resize_mode="shortest_edge", short_edges=(20, 80), max_size=90, flip_prob=1.0)
    sizes = set()
    for seed in range(20):
        out, pad = full(sample, np.random.default_rng(seed))
        sizes.add(out.id_map.shape)
        assert pad.shape == out.id_map.shape and not pad.any()
        assert_consistent(out, sample)
    assert sizes == {(20, 30), (60, 90)}  # 80 x 120 is capped to a long side of 90
    flipped, _ = TrainAugmentation(scale_range=(1.0, 1.0), flip_prob=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped.id_map, sample.id_map[:, ::-1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_range": (2.0, 1.0)}, "scale_range"),
        ({"resize_mode": "shortest_edge"}, "short_edges"),
        ({"resize_mode": "bogus"}, "resize_mode"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"crop_size": (0, 10)}, "crop_size"),
    ],
)
def test_train_augmentation_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainAugmentation(**kwargs)
