"""Confusion explorer: data layer on the hand-built runs of conftest.py, the headless widget, static export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ibs_study.data.panoptic import PanopticFormatError
from ibs_study.engine.run_dir import RunDirError
from ibs_study.viz.explorer import ConfusionExplorer
from ibs_study.viz.explorer_data import (
    DEMO_RUN_DIRS,
    STUDY_RUN_DIRS,
    ExplorerData,
    explorer_run_dirs,
    gt_outlines,
    render_instance_view,
)

CAR, PERSON = 2, 3  # category ids of the hand-built dataset (conftest.py)


@pytest.fixture(scope="module")
def data(hand_runs) -> ExplorerData:
    return ExplorerData.from_paths(hand_runs.eval_dirs, hand_runs.dataset, hand_runs.labels)


@pytest.fixture()
def explorer(hand_runs, tmp_path) -> ConfusionExplorer:
    return ConfusionExplorer.from_runs(
        hand_runs.run_dirs, hand_runs.labels, state_path=tmp_path / "state.json"
    )


# ----------------------------------------------------------------------------- data layer


def test_records_rank_most_confused_first(data):
    crop = data.records(0)
    assert [(r.image_id, r.segment_id) for r in crop[:1]] == [("a", 1)]
    assert crop[0].confusion_level == pytest.approx(13 / 15)  # car 12 is the second-most covered
    assert all(r.confusion_level == 0 for r in crop[1:])
    assert [(r.image_id, r.segment_id) for r in data.top_confused(0, 0.5, k=5)] == [("a", 1)]
    assert data.top_confused(0, 0.9, k=5) == []  # car 12 is covered 86.7%, not more than 90%
    ranking = data.ranked_images(0, 0.5)
    assert [e["image_id"] for e in ranking] == ["a", "b"]
    assert ranking[0] == {"image_id": "a", "confused_area": 15 * 33, "num_confused": 1, "num_predictions": 2}
    # IBS run: pred 2 covers all of car 12 and 2/15 of car 11: confused only below T = 0.133
    assert data.records(1)[0].segment_id == 2 and data.top_confused(1, 0.1, k=5)[0].segment_id == 2
    assert data.top_confused(1, 0.2, k=5) == []


def test_filters_by_class_size_and_image(data):
    assert [(r.image_id, r.segment_id) for r in data.records(0, category_id=PERSON)] == [("a", 2)]
    # image area 2400 px: S < 8 px <= M < 72 px <= L; the person prediction has 70 px
    assert [(r.segment_id, r.size) for r in data.records(0, size="M")] == [(2, "M")]
    assert {r.image_id for r in data.records(0, category_id=CAR, size="L")} == {"a", "b"}
    assert [r.segment_id for r in data.records(1, image_id="a")] == [2, 1, 3]
    with pytest.raises(ValueError, match="size must be one of"):
        data.records(0, size="XL")


def test_selection_covered_ids_and_fractions_by_hand(data):
    selection = data.select(0, "a", 1, threshold=0.5)
    assert selection.covered_gt_ids == [11, 12]
    assert [o.frac_of_gt for o in selection.covered] == pytest.approx([1.0, 13 / 15])
    assert [o.frac_of_pred for o in selection.covered] == pytest.approx([225 / 495, 195 / 495])
    # the same numbers as the records file
    record = data.runs[0].record("a", 1)
    by_id = {o.gt_id: o.frac_of_gt for o in record.overlaps}
    assert [by_id[g] for g in selection.covered_gt_ids] == [o.frac_of_gt for o in selection.covered]
    assert record.matched_gt_id is None  # IoU 225 / 495 < 0.5
    assert selection.target_gt_id == 11  # shares most pixels with the prediction
    assert data.select(0, "a", 1, threshold=0.9).covered_gt_ids == [11]
    person = data.select(0, "a", 2, threshold=0.5)
    assert person.record.matched_gt_id == 13 and person.record.matched_iou == pytest.approx(0.7)
    assert person.covered_gt_ids == [13] and person.covered[0].frac_of_gt == pytest.approx(0.7)


def test_second_run_counterpart_covers_the_same_object(data):
    # car 11: IBS pred 1 shares 195 px, pred 2 only 30 px
    assert data.select(0, "a", 1, 0.5).counterpart.segment_id == 1
    # IBS pred 2 is matched to car 12; in the crop run pred 1 shares 195 px with it
    selection = data.select(1, "a", 2, 0.5)
    assert selection.target_gt_id == 12 and selection.counterpart.segment_id == 1
    assert selection.other_index == 0
    assert data.select(0, "a", 2, 0.5).counterpart.segment_id == 3  # person 13 exactly
    assert data.counterpart(1, "a", 999) is None


def test_pixel_lookup_region_and_instance_view(data):
    assert data.segment_at(0, "a", x=30, y=10) == 1
    assert data.segment_at(0, "a", x=1, y=1) is None  # road: stuff has no record
    assert data.segment_at(0, "a", x=100, y=1) is None
    assert data.gt_segment_at("a", x=30, y=10) == 12
    selection = data.select(0, "a", 1, 0.5)
    # prediction, counterpart and GT 11, 12 span x 5..40, y 5..20; grown by 9 px (at least 32 px high)
    assert data.region(selection) == (0, 0, 49, 29)
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


def test_inconsistent_eval_folders_are_named(hand_runs, tmp_path):
    bad = tmp_path / "eval_val"
    shutil.copytree(hand_runs.eval_dirs[0], bad)
    lines = (bad / "confusion_records.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["segment_id"] = 77
    (bad / "confusion_records.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(PanopticFormatError, match=r"image id 'a', segment id 77 is not a segment of"):
        ExplorerData.from_paths([bad], hand_runs.dataset)
    (bad / "confusion_records.jsonl").write_text("not json\n")
    with pytest.raises(PanopticFormatError, match=r"line 1: not a confusion record"):
        ExplorerData.from_paths([bad], hand_runs.dataset)
    (bad / "confusion_records.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="confusion records not found"):
        ExplorerData.from_paths([bad], hand_runs.dataset)
    with pytest.raises(ValueError, match="got 1 labels for 2"):
        ExplorerData.from_paths(hand_runs.eval_dirs, hand_runs.dataset, ["one"])
    with pytest.raises(ValueError, match="labels must differ"):
        ExplorerData.from_paths(hand_runs.eval_dirs, hand_runs.dataset, ["same", "same"])


# ----------------------------------------------------------------------------- widget


def test_widget_builds_headless_on_the_most_confused_prediction(explorer, tmp_path):
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
    assert json.loads((tmp_path / "state.json").read_text())["segment_id"] == 1
    assert explorer.view_figures[0].layout.title.text == "crop: a · car 1 (L)"
    assert explorer.widget.children  # a widget tree, nothing displayed
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert [bar.y for bar in explorer.bar_figure.data] == [
        pytest.approx((1.0, 13 / 15)),
        pytest.approx((13 / 15, 0.0)),
    ]


def test_dropdown_and_slider_update_figure_and_state(explorer, tmp_path):
    before = (explorer.view_figures[0].data[0].source, explorer.view_figures[0].layout.title.text)
    assert [value for _, value in explorer.instance_dropdown.options] == [1, 2]
    explorer.instance_slider.value = 1  # as a person moving the slider
    assert explorer.instance_dropdown.value == 2
    assert explorer.state["segment_id"] == 2 and explorer.state["covered_gt_ids"] == [13]
    assert explorer.state["matched_gt_id"] == 13
    after = (explorer.view_figures[0].data[0].source, explorer.view_figures[0].layout.title.text)
    assert after[0] != before[0] and after[1] == "crop: a · person 1 (M)"
    assert json.loads((tmp_path / "state.json").read_text())["segment_id"] == 2
    explorer.instance_dropdown.value = 1
    assert explorer.instance_slider.value == 0 and explorer.state["segment_id"] == 1
    explorer.image_dropdown.value = "b"
    assert (explorer.state["image_id"], explorer.state["segment_id"], explorer.state["covered_gt_ids"]) == (
        "b",
        1,
        [21],
    )
    renders = explorer.state["renders"]
    explorer.top_list.value = ("a", 1)  # the ranked list jumps
    assert (explorer.state["image_id"], explorer.state["segment_id"]) == ("a", 1)
    assert explorer.state["renders"] == renders + 1  # one render per change


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


def test_export_static_writes_png_and_html(explorer, tmp_path):
    paths = explorer.export_static(tmp_path / "static", top_k=2, include_plotlyjs="cdn")
    # most confused first, then larger first: image b's car (400 px) before image a's person (70 px)
    assert [p.name for p in paths] == [
        "01_crop_a_pred1.png",
        "02_crop_b_pred1.png",
        "confusion_views_crop.html",
    ]
    for path in paths[:2]:
        with Image.open(path) as png:
            assert png.mode in ("RGB", "RGBA") and png.size[0] > 600 and png.size[1] > 300
            pixels = np.asarray(png.convert("RGB"))
        assert pixels.std() > 10  # not blank
    html = paths[2].read_text()
    assert html.count("plotly-graph-div") == 2 and "car 1 (L)" in html and "car 2: 87%" in html
    with pytest.raises(FileExistsError, match="does not overwrite"):
        explorer.export_static(tmp_path / "static", top_k=2)


def test_a_single_run_builds_and_exports(hand_runs, tmp_path):
    explorer = ConfusionExplorer.from_paths(hand_runs.eval_dirs[1:], hand_runs.dataset, ["crop + IBS"])
    assert len(explorer.view_figures) == 1 and len(explorer.bar_figure.data) == 1
    assert explorer.state["other"] is None and explorer.selection.counterpart is None
    # most confused: pred 2 covers car 12 fully and 2/15 of car 11 (confusion level 0.133)
    assert (explorer.state["segment_id"], explorer.state["covered_gt_ids"]) == (2, [12])
    explorer.threshold_slider.value = 0.1
    assert explorer.state["covered_gt_ids"] == [12, 11]
    paths = explorer.export_static(tmp_path, top_k=1, include_plotlyjs=False)
    with Image.open(paths[0]) as png:
        assert png.size[0] > 400


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


def test_explorer_opens_the_demo_runs_when_the_study_runs_are_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def evaluated(run_dir: str) -> None:
        (tmp_path / run_dir / "eval_val").mkdir(parents=True)
        (tmp_path / run_dir / "eval_val" / "confusion_records.jsonl").write_text("")

    with pytest.raises(RunDirError, match=r"runs/study/pfcn_crop_s0 nor runs/demo/crop: run `make demo`"):
        explorer_run_dirs(STUDY_RUN_DIRS)
    for run_dir in DEMO_RUN_DIRS:
        evaluated(run_dir)
    assert explorer_run_dirs(list(STUDY_RUN_DIRS)) == [Path(d) for d in DEMO_RUN_DIRS]
    with pytest.raises(RunDirError, match=r"in mine: run `make demo`"):
        explorer_run_dirs(["mine"])  # runs named by the user: no fallback
    for run_dir in STUDY_RUN_DIRS:
        evaluated(run_dir)
    assert explorer_run_dirs(STUDY_RUN_DIRS) == [Path(d) for d in STUDY_RUN_DIRS]
