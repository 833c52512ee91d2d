"""The explorer's data (ibs_study.viz.explorer.data) on the hand-built runs of tests/viz/conftest.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ibs_study.data.panoptic import PanopticFormatError
from ibs_study.engine.run_dir import RunDirError
from ibs_study.viz.explorer.data import DEMO_RUN_DIRS, STUDY_RUN_DIRS, ExplorerData, explorer_run_dirs

CAR, PERSON = 2, 3  # category ids of the hand-built dataset (conftest.py)


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


def test_pixel_lookup_and_region(data):
    assert data.segment_at(0, "a", x=30, y=10) == 1
    assert data.segment_at(0, "a", x=1, y=1) is None  # road: stuff has no record
    assert data.segment_at(0, "a", x=100, y=1) is None
    assert data.gt_segment_at("a", x=30, y=10) == 12
    assert data.gt_segment_at("a", x=-3, y=10) is None
    selection = data.select(0, "a", 1, 0.5)
    # prediction, counterpart and GT 11, 12 span x 5..40, y 5..20; grown by 9 px (at least 32 px high)
    assert data.region(selection) == (0, 0, 49, 29)


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
