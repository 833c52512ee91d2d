"""The explorer's raster views (ibs_study.viz.explorer.images) on the hand-built runs of tests/viz/conftest.py."""

from __future__ import annotations

import numpy as np

from ibs_study.viz.explorer.images import (
    GT_SOURCE,
    OUTLINE_COLORS,
    gt_outlines,
    instance_views,
    panoptic_labels,
    panoptic_rgb,
    panoptic_source,
    render_instance_view,
    run_order,
)


def test_outlines_and_instance_view_by_hand(data):
    selection = data.select(0, "a", 1, 0.5)
    # person 13 (rows 25:35, cols 45:55) lies outside the region x < 20, y < 20: nothing to outline
    assert set(gt_outlines(data, "a", (0, 0, 20, 20), {11: (255, 0, 0), 13: (0, 0, 255)}).rings) == {11}
    outlines = gt_outlines(data, "a", (0, 0, 49, 29), {11: (255, 0, 0), 12: (0, 255, 0)})
    assert outlines.rings[11].sum() == 15 * 15 - 11 * 11  # 2-pixel inner ring of the 15 x 15 car
    view = render_instance_view(data, 0, "a", selection.record, outlines)
    assert view.rgb.shape == (29, 49, 3)
    assert [text for *_, text, _ in view.labels] == ["car 1: 100%", "car 2: 87%"]
    for x, y, _, _ in view.labels:
        assert data.gt("a").id_map[y, x] in (11, 12)
    assert (view.rgb[5:20, 5] == (255, 0, 0)).all()  # left edge of car 11 outlined in its colour
    image = data.gt("a").image
    # outside the mask and the outlines the image is darkened to half
    np.testing.assert_array_equal(view.rgb[25, 45], np.rint(image[25, 45] * 0.5).astype(np.uint8))


def test_instance_views_show_both_runs_over_one_region(data):
    selection = data.select(0, "a", 1, 0.5)
    crop, ibs = instance_views(data, selection)
    assert crop.region == ibs.region == data.region(selection) == (0, 0, 49, 29)
    assert (crop.title, ibs.title) == ("crop: a · car 1 (L)", "crop + IBS: a · car 1 (L)")
    # car 11 (covered most) gets the first outline colour in both views, car 12 the second
    assert [(text, color) for *_, text, color in crop.labels] == [
        ("car 1: 100%", OUTLINE_COLORS[0]),
        ("car 2: 87%", OUTLINE_COLORS[1]),
    ]
    assert [text for *_, text, _ in ibs.labels] == ["car 1: 87% (match)", "car 2: 0%"]
    assert (crop.rgb[5:20, 5] == OUTLINE_COLORS[0]).all() and (ibs.rgb[5:20, 5] == OUTLINE_COLORS[0]).all()
    # the crop mask (cols 5:38) is tinted at column 22, between the cars; the IBS counterpart (cols 5:18) is not
    assert not np.array_equal(crop.rgb[12, 22], ibs.rgb[12, 22])
    assert run_order(data, 1) == [1, 0]


def test_panoptic_source_keeps_each_objects_colour_across_runs(data):
    gt_view, gt_colors = panoptic_source(data, GT_SOURCE, "a")
    ibs_view, ibs_colors = panoptic_source(data, 1, "a")
    assert gt_view.title == "ground truth" and ibs_view.title == "crop + IBS"
    assert ibs_colors[3] == gt_colors[13]  # IBS person 3 is exactly GT person 13
    rgb = panoptic_rgb(data, ibs_view, ibs_colors, "a")
    assert rgb.shape == (40, 60, 3)
    # inside IBS person 3 (rows 25:35, cols 45:55) the image is blended with GT person 13's colour
    image = data.gt("a").image[30, 50].astype(float)
    np.testing.assert_allclose(rgb[30, 50], 0.4 * image + 0.6 * np.array(gt_colors[13]), atol=1)


def test_panoptic_labels_name_each_segment_inside_it(data):
    view, _ = panoptic_source(data, 0, "a")  # crop: road 9, car 1 (rows 5:20, cols 5:38), person 2
    labels = panoptic_labels(data, view)
    assert sorted(text for *_, text in labels) == ["car 1", "person 1", "road"]
    for x, y, text in labels:
        segment_id = int(view.id_map[y, x])
        assert {9: "road", 1: "car 1", 2: "person 1"}[segment_id] == text
