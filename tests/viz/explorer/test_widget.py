"""The ConfusionExplorer widget (ibs_study.viz.explorer.widget) built headless on the hand-built runs: its
controls driven as a person would, its figures, texts and state read back."""

from __future__ import annotations

import pytest
from PIL import Image

from ibs_study.viz.explorer import ConfusionExplorer

CAR, PERSON = 2, 3  # category ids of the hand-built dataset (tests/viz/conftest.py)


@pytest.fixture()
def explorer(hand_runs) -> ConfusionExplorer:
    return ConfusionExplorer.from_runs(hand_runs.run_dirs, hand_runs.labels)


def test_widget_builds_headless_on_the_most_confused_prediction(explorer):
    state = explorer.state
    assert (state["run"], state["image_id"], state["segment_id"]) == ("crop", "a", 1)
    assert state["covered_gt_ids"] == [11, 12]
    assert state["covered_fractions"] == pytest.approx([1.0, 13 / 15])
    assert state["other"] == {
        "run": "crop + IBS",
        "segment_id": 1,
        "covered_gt_ids": [11],
        "covered_fractions": [pytest.approx(13 / 15)],
    }
    assert explorer.view_figures[0].layout.title.text == "crop: a · car 1 (L)"
    assert explorer.widget.children  # a widget tree, nothing displayed
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert [bar.y for bar in explorer.bar_figure.data] == [
        pytest.approx((1.0, 13 / 15)),
        pytest.approx((13 / 15, 0.0)),
    ]


def test_dropdown_and_slider_update_figure_and_state(explorer, monkeypatch):
    renders = []
    render = explorer._render
    monkeypatch.setattr(explorer, "_render", lambda: (renders.append(1), render()))
    before = (explorer.view_figures[0].data[0].source, explorer.view_figures[0].layout.title.text)
    assert [value for _, value in explorer.instance_dropdown.options] == [1, 2]
    explorer.instance_slider.value = 1  # as a person moving the slider
    assert explorer.instance_dropdown.value == 2
    assert explorer.state["segment_id"] == 2 and explorer.state["covered_gt_ids"] == [13]
    assert explorer.state["matched_gt_id"] == 13
    after = (explorer.view_figures[0].data[0].source, explorer.view_figures[0].layout.title.text)
    assert after[0] != before[0] and after[1] == "crop: a · person 1 (M)"
    assert explorer.state["instance_index"] == 1 and explorer.state["title"] == after[1]
    explorer.instance_dropdown.value = 1
    assert explorer.instance_slider.value == 0 and explorer.state["segment_id"] == 1
    explorer.image_dropdown.value = "b"
    assert (explorer.state["image_id"], explorer.state["segment_id"], explorer.state["covered_gt_ids"]) == (
        "b",
        1,
        [21],
    )
    before_jump = len(renders)
    explorer.top_list.value = ("a", 1)  # the ranked list jumps
    assert (explorer.state["image_id"], explorer.state["segment_id"]) == ("a", 1)
    assert len(renders) == before_jump + 1  # one render per change


def test_threshold_class_size_and_run_controls(explorer):
    explorer.threshold_slider.value = 0.9
    assert explorer.state["covered_gt_ids"] == [11] and explorer.state["threshold"] == 0.9
    assert explorer.top_list.options == ()
    explorer.threshold_slider.value = 0.5
    explorer.class_dropdown.value = PERSON
    assert (explorer.state["image_id"], explorer.state["segment_id"]) == ("a", 2)
    explorer.size_buttons.value = "S"
    assert explorer.state["segment_id"] is None and explorer.selection is None
    assert "no predicted thing" in explorer.view_figures[0].layout.title.text
    explorer.size_buttons.value = "all"
    explorer.class_dropdown.value = "all"
    explorer.select("a", 1)
    explorer.run_buttons.value = 1  # switch to crop + IBS: keeps the object through the counterpart
    assert (explorer.state["run"], explorer.state["segment_id"], explorer.state["other"]["segment_id"]) == (
        "crop + IBS",
        1,
        1,
    )
    assert explorer.view_figures[0].layout.title.text.startswith("crop + IBS: a · car 1 (")


def test_click_selects_the_segment_under_the_cursor(explorer):
    assert explorer.click(x=50, y=30, source=0)  # crop pred 2, the person
    assert explorer.state["segment_id"] == 2
    assert not explorer.click(x=1, y=1, source=0)  # road
    assert explorer.state["segment_id"] == 2
    assert explorer.click(x=30, y=10, source=-1)  # GT car 12 -> crop prediction covering it most
    assert explorer.state["segment_id"] == 1
    assert explorer.click(x=30, y=10, source=1)  # IBS pred 2 under that pixel
    assert (explorer.state["run"], explorer.state["segment_id"]) == ("crop + IBS", 2)
    explorer.panoptic_buttons.value = -1
    assert explorer.panoptic_figure.layout.title.text.startswith("ground truth: a")


def test_export_static_uses_the_current_threshold_and_filters(explorer, tmp_path):
    explorer.threshold_slider.value = 0.9
    explorer.class_dropdown.value = PERSON
    paths = explorer.export_static(tmp_path / "static", top_k=3, include_plotlyjs=False)
    assert [p.name for p in paths] == ["01_crop_a_pred2.png", "confusion_views_crop.html"]
    page = paths[1].read_text()
    assert "(T = 0.90)" in page and "person 1 (M) · covers 0 GT things &gt; T=0.90: none" in page
    paths = explorer.export_static(tmp_path / "ibs", top_k=1, run=1, include_plotlyjs=False)
    assert [p.name for p in paths] == ["01_crop-IBS_a_pred3.png", "confusion_views_crop-IBS.html"]


def test_a_single_run_builds_and_exports(hand_runs, tmp_path):
    explorer = ConfusionExplorer.from_paths(hand_runs.eval_dirs[1:], hand_runs.dataset, ["crop + IBS"])
    assert len(explorer.view_figures) == 1 and len(explorer.bar_figure.data) == 1
    assert explorer.state["other"] is None and explorer.selection.counterpart is None
    # most confused: pred 2 covers car 12 fully and 2/15 of car 11 (confusion level 0.133)
    assert (explorer.state["segment_id"], explorer.state["covered_gt_ids"]) == (2, [12])
    explorer.threshold_slider.value = 0.1
    assert explorer.state["covered_gt_ids"] == [12, 11]
    paths = explorer.export_static(tmp_path, top_k=1, include_plotlyjs=False)
    with Image.open(paths[0]) as png:  # margins, one instance view; panoptic GT | run of 480 px each
        assert png.size[0] == 10 + 480 + 10 + 480 + 10


def test_status_lines_state_t_and_name_what_is_covered(explorer):
    """Both runs' "covers N GT things > T" lines give T and list the GT things by their short labels."""
    assert explorer.state["covered_gt_labels"] == ["car 1", "car 2"]
    status = explorer.status.value
    assert "car 1 (L) · covers 2 GT things &gt; T=0.50: car 1 (100%), car 2 (87%)" in status
    assert "<b>crop + IBS</b>: car 1 (L) covers 1 GT things &gt; T=0.50: car 1 (87%)" in status
    explorer.threshold_slider.value = 0.9
    assert "covers 1 GT things &gt; T=0.90: car 1 (100%)" in explorer.status.value
    assert "covers 0 GT things &gt; T=0.90: none" in explorer.status.value
    assert explorer.instance_dropdown.options[0][0] == "car 1 (L) · covers 1 GT > T=0.90 · level 0.87"


def test_instances_are_named_by_class_and_index_not_segment_id(explorer, hand_runs):
    """GT and predicted things appear as "car 2", never as their (COCO: 8-digit) segment ids."""
    gt_ids = [s.id for r in hand_runs.dataset.records for s in r.segments]
    shown = [
        explorer.table.value,
        explorer.status.value,
        *[label for label, _ in explorer.instance_dropdown.options],
        *[fig.layout.title.text for fig in explorer.view_figures],
    ]
    assert "<td>car 2</td>" in explorer.table.value
    for text in shown:
        assert "pred id" not in text
        assert not any(f">{g}<" in text or f" {g} " in text for g in gt_ids if g > 9), text


def test_bar_chart_says_how_many_gt_things_it_leaves_out(hand_runs):
    explorer = ConfusionExplorer.from_runs(hand_runs.run_dirs, hand_runs.labels, max_bars=1)
    assert explorer.bar_figure.layout.title.text == "GT things covered (+1 more)"
    assert [list(bar.x) for bar in explorer.bar_figure.data] == [["car 1"], ["car 1"]]
    explorer.instance_slider.value = 1  # the person: one GT thing, nothing left out
    assert explorer.bar_figure.layout.title.text == "GT things covered"
    full = ConfusionExplorer.from_runs(hand_runs.run_dirs, hand_runs.labels)
    assert full.bar_figure.layout.title.text == "GT things covered"
    assert [list(bar.x) for bar in full.bar_figure.data] == [["car 1", "car 2"], ["car 1", "car 2"]]


def test_toolbar_sits_beside_the_images(explorer):
    """plotly's vertical toolbar (about 30 px wide, top right) has its own margin, off the images."""
    for fig in explorer.figures():
        assert fig.layout.modebar.orientation == "v" and fig.layout.margin.r >= 35
    assert explorer.bar_figure.layout.legend.xanchor == "right"  # the legend too stays off the toolbar


def test_panoptic_view_follows_the_run_toggle(explorer):
    assert explorer.panoptic_buttons.value == 0
    assert explorer.panoptic_figure.layout.title.text.startswith("crop: a")
    explorer.run_buttons.value = 1
    assert explorer.panoptic_buttons.value == 1
    assert explorer.panoptic_figure.layout.title.text.startswith("crop + IBS: a")
    assert explorer.click(x=50, y=30, source=0)  # a click on the crop run's view makes it primary
    assert explorer.state["run"] == "crop" and explorer.panoptic_buttons.value == 0
    explorer.panoptic_buttons.value = -1  # the ground truth stays when the run changes
    explorer.run_buttons.value = 1
    assert explorer.panoptic_figure.layout.title.text.startswith("ground truth: a")
