"""Colour-coded panoptic images: colours, boundaries, overlay maths, label placement, figures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from ibs_study.data.panoptic import CategoryInfo, PanopticFormatError, Segment, segments_from_id_map
from ibs_study.viz.panoptic import (
    MIN_COLOR_DISTANCE,
    THING_JITTER,
    PanopticView,
    blend,
    colorize,
    draw_labels,
    label_points,
    matched_colors,
    panoptic_plotly,
    png_data_uri,
    render_panoptic,
    segment_boundaries,
    segment_colors,
    segment_labels,
    side_by_side,
)

CATEGORIES = {
    1: CategoryInfo(1, "road", False, (128, 64, 128)),
    2: CategoryInfo(2, "sky", False, (70, 130, 180)),
    3: CategoryInfo(3, "car", True, (0, 0, 142)),
    4: CategoryInfo(4, "person", True, (220, 20, 60)),
}


def _random_scene(rng: np.random.Generator, height: int = 48, width: int = 64, things: int = 12):
    """Road and sky halves plus random overlapping thing rectangles; returns (id_map, segments)."""
    id_map = np.where(np.arange(height)[:, None] < height // 3, 2, 1).repeat(width, axis=1).astype(np.int32)
    category_of = {1: 1, 2: 2}
    for k in range(things):
        r0, c0 = rng.integers(0, height - 4), rng.integers(0, width - 4)
        r1, c1 = r0 + rng.integers(3, 16), c0 + rng.integers(3, 20)
        seg_id = 100 + 7 * k
        id_map[r0:r1, c0:c1] = seg_id
        category_of[seg_id] = int(rng.choice([3, 4]))
    present = set(np.unique(id_map).tolist())
    category_of = {i: c for i, c in category_of.items() if i in present}
    return id_map, segments_from_id_map(id_map, category_of)


# ----------------------------------------------------------------------------- colours


@pytest.mark.parametrize("seed", range(20))
def test_thing_colours_unique_near_class_colour_and_stuff_takes_class_colour(seed):
    rng = np.random.default_rng(seed)
    # 40 things of one class: the neighbourhood of the class colour gets crowded
    segments = [Segment(id=1, category_id=1), Segment(id=2, category_id=2)] + [
        Segment(id=int(i), category_id=int(rng.choice([3, 4])))
        for i in rng.choice(10_000, 40, replace=False) + 10
    ]
    colors = segment_colors(segments, CATEGORIES, seed=seed)
    assert colors[1] == (128, 64, 128) and colors[2] == (70, 130, 180)
    values = np.array(list(colors.values()))
    distances = np.abs(values[:, None] - values[None]).sum(-1)
    np.fill_diagonal(distances, 10_000)
    assert distances.min() >= MIN_COLOR_DISTANCE
    near = [
        np.abs(np.array(colors[s.id]) - CATEGORIES[s.category_id].color).max() <= THING_JITTER
        for s in segments
        if s.category_id in (3, 4)
    ]
    assert np.mean(near) > 0.9  # nearly all stay within the jitter range of their class colour


def test_colours_are_deterministic_and_fixed_colours_are_kept():
    segments = [Segment(id=i, category_id=3) for i in (5, 9, 12)]
    first = segment_colors(segments, CATEGORIES)
    assert segment_colors(list(reversed(segments)), CATEGORIES) == first
    assert segment_colors(segments, CATEGORIES, seed=1) != first
    fixed = segment_colors(segments, CATEGORIES, fixed={9: (1, 2, 3)})
    assert fixed[9] == (1, 2, 3)
    assert min(np.abs(np.array(fixed[i]) - (1, 2, 3)).sum() for i in (5, 12)) >= MIN_COLOR_DISTANCE


def test_unknown_category_is_named():
    with pytest.raises(PanopticFormatError, match=r"segment id 7: unknown category id 99"):
        segment_colors([Segment(id=7, category_id=99)], CATEGORIES)


def test_colorize_paints_each_segment_in_its_colour():
    rng = np.random.default_rng(3)
    id_map, segments = _random_scene(rng)
    id_map[0, 0] = 0
    colors = segment_colors(segments, CATEGORIES)
    rgb = colorize(id_map, colors, void_color=(1, 1, 1))
    assert rgb.shape == (*id_map.shape, 3) and rgb.dtype == np.uint8
    for seg_id, color in colors.items():
        assert (rgb[id_map == seg_id] == color).all()
    assert tuple(rgb[0, 0]) == (1, 1, 1)
    with pytest.raises(PanopticFormatError, match=r"segment id 1 is in the id map but has no colour"):
        colorize(id_map, {k: v for k, v in colors.items() if k != 1})


def test_matched_colours_follow_the_reference_and_a_confused_segment_takes_the_larger_overlap():
    gt = np.ones((10, 20), dtype=np.int32)
    gt[2:8, 2:8] = 11  # car, 36 px
    gt[2:8, 12:16] = 12  # car, 24 px
    gt_segments = segments_from_id_map(gt, {1: 1, 11: 3, 12: 3})
    pred = np.full((10, 20), 5, dtype=np.int32)
    pred[2:8, 2:16] = 1  # one car prediction over both cars
    pred[0, 0] = 2  # a small car prediction elsewhere
    pred_segments = segments_from_id_map(pred, {5: 1, 1: 3, 2: 3})
    gt_colors = segment_colors(gt_segments, CATEGORIES)
    colors = matched_colors(
        PanopticView("gt", gt, gt_segments), gt_colors, PanopticView("p", pred, pred_segments), CATEGORIES
    )
    assert colors[1] == gt_colors[11]  # larger overlap
    assert colors[5] == (128, 64, 128)  # stuff keeps the class colour
    assert colors[2] not in (gt_colors[11], gt_colors[12])
    rgb = colorize(pred, colors)
    # the confusion: both GT cars are painted in one colour
    assert (rgb[gt == 11] == gt_colors[11]).all() and (rgb[gt == 12] == gt_colors[11]).all()


# ----------------------------------------------------------------------------- geometry


def test_boundaries_by_hand():
    id_map = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    expected = np.array([[0, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(segment_boundaries(id_map), expected)
    framed = segment_boundaries(np.ones((4, 4), int), image_border=True)
    assert framed.sum() == 12 and not framed[1:3, 1:3].any()
    thick = segment_boundaries(np.array([[1] * 6 + [2] * 6] * 3), thickness=2)
    np.testing.assert_array_equal(np.flatnonzero(thick[1]), [4, 5, 6, 7])


def test_overlay_maths():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    colored = np.full((2, 3, 3), 201, dtype=np.uint8)
    np.testing.assert_array_equal(blend(image, colored, 0.25), np.full((2, 3, 3), 125, dtype=np.uint8))
    np.testing.assert_array_equal(blend(image, colored, 0.5), np.full((2, 3, 3), 150, dtype=np.uint8))
    mask = np.array([[True, False, True], [False, False, True]])
    out = blend(image, colored, 1.0, mask)
    assert (out[mask] == 201).all() and (out[~mask] == 100).all()
    assert (blend(image, colored, 0.0) == image).all()
    with pytest.raises(ValueError, match="alpha"):
        blend(image, colored, 1.5)
    with pytest.raises(ValueError, match="mask"):
        blend(image, colored, 0.5, mask[:1])


@pytest.mark.parametrize("seed", range(10))
def test_label_points_lie_inside_their_segment(seed):
    rng = np.random.default_rng(seed)
    id_map, segments = _random_scene(rng, things=20)
    # a ring and an L shape: their centroids lie outside them
    id_map[30:46, 40:60] = 500
    id_map[34:42, 44:56] = 1
    id_map[2:14, 2:5] = 501
    id_map[11:14, 2:16] = 501
    points = label_points(id_map)
    assert set(points) == set(np.unique(id_map).tolist())
    for seg_id, (x, y) in points.items():
        assert id_map[y, x] == seg_id


def test_label_point_of_a_square_is_its_centre_and_missing_ids_are_named():
    id_map = np.ones((9, 9), dtype=np.int32)
    id_map[2:7, 2:7] = 4
    assert label_points(id_map, [4]) == {4: (4, 4)}
    with pytest.raises(PanopticFormatError, match=r"\[8\] have no pixel"):
        label_points(id_map, [4, 8])


def test_segment_labels_number_things_per_class():
    segments = [Segment(9, 4), Segment(3, 3), Segment(1, 1), Segment(7, 3)]
    assert segment_labels(segments, CATEGORIES) == {1: "road", 3: "car 1", 7: "car 2", 9: "person 1"}


# ----------------------------------------------------------------------------- rendering


def test_render_is_colorize_plus_blend_plus_boundaries():
    rng = np.random.default_rng(5)
    id_map, segments = _random_scene(rng)
    image = rng.integers(0, 256, (*id_map.shape, 3), dtype=np.uint8)
    colors = segment_colors(segments, CATEGORIES)
    plain = render_panoptic(id_map, segments, CATEGORIES, boundaries=False, labels=False)
    np.testing.assert_array_equal(plain, colorize(id_map, colors))
    over = render_panoptic(id_map, segments, CATEGORIES, image=image, alpha=0.3, labels=False)
    edge = segment_boundaries(id_map)
    expected = blend(image, colorize(id_map, colors), 0.3)
    expected[edge] = 255
    np.testing.assert_array_equal(over, expected)
    labelled = render_panoptic(id_map, segments, CATEGORIES, font_size=10)
    assert labelled.shape == over.shape and labelled.dtype == np.uint8
    assert (labelled != render_panoptic(id_map, segments, CATEGORIES, labels=False)).any()


def test_void_shows_the_image_in_grey_unless_asked_not_to():
    rng = np.random.default_rng(6)
    id_map, segments = _random_scene(rng)
    id_map[20:30, 10:40] = 0  # an unpredicted region
    image = rng.integers(0, 256, (*id_map.shape, 3), dtype=np.uint8)
    void = id_map == 0
    shown = render_panoptic(id_map, segments, CATEGORIES, image=image, boundaries=False, labels=False)
    r, g, b = (image[..., c].astype(float) for c in range(3))
    luma = np.rint(0.299 * r + 0.587 * g + 0.114 * b)  # ITU-R BT.601
    for channel in range(3):
        np.testing.assert_allclose(shown[void][:, channel], luma[void], atol=0.5)
    colored = render_panoptic(
        id_map, segments, CATEGORIES, image=image, boundaries=False, labels=False, grey_void=False
    )
    np.testing.assert_array_equal(colored[void], image[void])
    np.testing.assert_array_equal(colored[~void], shown[~void])  # segments are untouched


def test_draw_labels_writes_near_the_point_and_stays_inside():
    rgb = np.zeros((60, 120, 3), dtype=np.uint8)
    out = draw_labels(rgb, {(60, 30): "car 1", (118, 58): "edge"}, font_size=12)
    changed = np.argwhere((out != 0).any(-1))
    assert len(changed)
    near_centre = changed[(abs(changed[:, 0] - 30) < 12) & (abs(changed[:, 1] - 60) < 30)]
    assert len(near_centre) > 20
    assert (out[:, :, :] == 0).all(-1)[:, :2].all()  # nothing drawn at the far left


def test_png_data_uri_downscales_and_reports_the_scale():
    rgb = np.zeros((100, 300, 3), dtype=np.uint8)
    uri, scale = png_data_uri(rgb, max_side=150)
    assert uri.startswith("data:image/png;base64,") and scale == pytest.approx(2.0)
    assert png_data_uri(rgb)[1] == 1.0


def test_panoptic_plotly_figure_in_image_coordinates():
    rng = np.random.default_rng(1)
    id_map, segments = _random_scene(rng)
    fig = panoptic_plotly(id_map, segments, CATEGORIES, max_side=32, title="pred")
    trace = fig.data[0]
    assert trace.type == "image" and trace.dx == pytest.approx(2.0)
    assert len(fig.layout.annotations) == len(segments)
    for annotation in fig.layout.annotations:
        assert 0 <= annotation.x < id_map.shape[1] and 0 <= annotation.y < id_map.shape[0]
    assert list(fig.layout.yaxis.range) == [id_map.shape[0] - 0.5, -0.5]


def test_side_by_side_figure(tmp_path):
    rng = np.random.default_rng(2)
    id_map, segments = _random_scene(rng)
    pred, pred_segments = _random_scene(rng)
    image = rng.integers(0, 256, (*id_map.shape, 3), dtype=np.uint8)
    fig = side_by_side(
        image,
        [
            PanopticView("GT", id_map, segments),
            PanopticView("A", pred, pred_segments),
            PanopticView("B", id_map, segments),
        ],
        CATEGORIES,
    )
    assert [ax.get_title() for ax in fig.axes] == ["GT", "A", "B"]
    # each axis carries one text label per segment
    assert [len(ax.texts) for ax in fig.axes] == [len(segments), len(pred_segments), len(segments)]
    fig.savefig(tmp_path / "sbs.png", dpi=50)
    with Image.open(tmp_path / "sbs.png") as png:
        assert png.size[0] > 2 * png.size[1]
    with pytest.raises(ValueError, match="differs from image"):
        side_by_side(image[:10], [PanopticView("GT", id_map, segments)], CATEGORIES)


def test_many_draws_never_share_a_thing_colour():
    # every pair of 200 thing segments of one class stays apart
    segments = [Segment(id=i, category_id=3) for i in range(1, 201)]
    colors = segment_colors(segments, CATEGORIES)
    for a, b in itertools.combinations(colors.values(), 2):
        assert sum(abs(x - y) for x, y in zip(a, b)) >= MIN_COLOR_DISTANCE
