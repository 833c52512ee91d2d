"""Bad input to the panoptic evaluator: every case raises and names the file, image id and segment id."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ibs_study.data.panoptic import PanopticFormatError, Segment, segments_from_id_map, write_id_png
from ibs_study.metrics.panoptic import PanopticEvaluator, evaluate_panoptic_folders

ROAD, PERSON, CAR = 7, 24, 26


def scene(shift: int = 0) -> tuple[np.ndarray, list[Segment]]:
    id_map = np.full((8, 12), 300, dtype=np.int32)  # road
    id_map[2:6, 1 + shift : 5 + shift] = 70001  # car
    id_map[1:7, 7:10] = 70002  # person
    return id_map, segments_from_id_map(id_map, {300: ROAD, 70001: CAR, 70002: PERSON})


@pytest.fixture
def split(tmp_path, write_split, categories):
    """Two images "a" and "b": GT and a slightly shifted prediction, as folders."""
    gt = [(name, *scene()) for name in ("a", "b")]
    pred = [(name, *scene(shift=1)) for name in ("a", "b")]
    gt_json, gt_dir = write_split(tmp_path / "gt", gt, categories)
    pred_json, pred_dir = write_split(tmp_path / "pred", pred, categories)
    return gt_json, gt_dir, pred_json, pred_dir


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def raises(*fragments: str):
    """pytest.raises(PanopticFormatError) whose message contains every fragment."""
    return pytest.raises(
        PanopticFormatError, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    )


def test_valid_split_scores(split):
    results, _ = evaluate_panoptic_folders(*split)
    assert results["num_images"] == 2 and 0 < results["all"]["pq"] < 1


def test_missing_prediction_is_an_error_or_all_false_negatives(split, categories):
    _, _, pred_json, _ = split
    edit_json(pred_json, lambda d: d.update(annotations=d["annotations"][:1], images=d["images"][:1]))
    with raises(str(pred_json), "image id 'b'", "no prediction", "allow_missing"):
        evaluate_panoptic_folders(*split)
    results, _ = evaluate_panoptic_folders(*split, allow_missing=True)
    assert results["num_missing"] == 1 and results["num_images"] == 2
    image_a = PanopticEvaluator(categories)
    image_a.process(*scene(), *scene(shift=1))
    expected = image_a.summarize()
    for name in ("road", "car", "person"):  # image b: each of its GT segments is a false negative
        assert results["per_class"][name]["fn"] == expected["per_class"][name]["fn"] + 1
        assert results["per_class"][name]["tp"] == expected["per_class"][name]["tp"]
    assert results["pixels"]["gt_th"] == 2 * expected["pixels"]["gt_th"]
    assert results["pixels"]["pred_th"] == expected["pixels"]["pred_th"]


def test_prediction_for_unknown_image(split):
    _, _, pred_json, _ = split

    def add(data):
        data["annotations"].append(dict(data["annotations"][0], image_id="zz"))

    edit_json(pred_json, add)
    with raises(str(pred_json), "image id 'zz'", "absent from the ground truth"):
        evaluate_panoptic_folders(*split)


def test_prediction_png_missing(split):
    _, _, _, pred_dir = split
    (pred_dir / "1.png").unlink()
    with raises(str(pred_dir / "1.png"), "image id 'b'", "not found"):
        evaluate_panoptic_folders(*split)


def test_id_in_png_but_not_in_json(split):
    _, _, pred_json, pred_dir = split
    edit_json(pred_json, lambda d: d["annotations"][1]["segments_info"].pop(1))
    with raises(str(pred_dir / "1.png"), "image id 'b'", "segment id(s) [70001]", "not in the JSON"):
        evaluate_panoptic_folders(*split)


def test_id_in_json_but_not_in_png(split):
    _, _, pred_json, pred_dir = split
    edit_json(
        pred_json,
        lambda d: d["annotations"][0]["segments_info"].append({"id": 5, "category_id": CAR, "iscrowd": 0}),
    )
    with raises(str(pred_dir / "0.png"), "image id 'a'", "segment id 5", "absent from the PNG"):
        evaluate_panoptic_folders(*split)


def test_ground_truth_id_mismatch_and_area(split):
    gt_json, gt_dir, _, _ = split
    edit_json(gt_json, lambda d: d["annotations"][1]["segments_info"][2].update(area=3))
    with raises(str(gt_dir / "1.png"), "image id 'b'", "segment id 70002", "area 3"):
        evaluate_panoptic_folders(*split)


def test_unknown_category(split):
    _, _, pred_json, _ = split
    edit_json(pred_json, lambda d: d["annotations"][1]["segments_info"][1].update(category_id=99))
    with raises(str(pred_json), "image id 'b'", "segment id 70001", "unknown category id 99"):
        evaluate_panoptic_folders(*split)


def test_size_mismatch(split):
    _, gt_dir, _, pred_dir = split
    id_map, _ = scene(shift=1)
    write_id_png(pred_dir / "0.png", np.pad(id_map, ((0, 1), (0, 0)), constant_values=300))
    with raises(str(pred_dir / "0.png"), "image id 'a'", "(9, 12)", "(8, 12)", str(gt_dir / "0.png")):
        evaluate_panoptic_folders(*split)


def test_duplicate_ids(split):
    _, _, pred_json, _ = split

    def duplicate_segment(data):
        infos = data["annotations"][0]["segments_info"]
        infos.append(dict(infos[1]))

    edit_json(pred_json, duplicate_segment)
    with raises(str(pred_json), "image id 'a'", "segment id 70001 twice"):
        evaluate_panoptic_folders(*split)
    edit_json(pred_json, lambda d: d["annotations"][0]["segments_info"].pop())
    edit_json(pred_json, lambda d: d["annotations"].append(d["annotations"][1]))
    with raises(str(pred_json), "image id 'b'", "more than one annotation"):
        evaluate_panoptic_folders(*split)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([{"image_id": 1, "category_id": 26, "segmentation": {}, "score": 1.0}], "not a COCO-panoptic JSON"),
        ({"images": [], "categories": []}, "not a COCO-panoptic JSON"),
        ({"annotations": [{"image_id": "a", "segments": []}]}, "lacks key(s)"),
        ("{not json", "not valid JSON"),
    ],
)
def test_not_coco_panoptic(split, content, fragment):
    _, _, pred_json, _ = split
    pred_json.write_text(content if isinstance(content, str) else json.dumps(content))
    with raises(str(pred_json), fragment):
        evaluate_panoptic_folders(*split)


def test_prediction_json_without_images_and_categories(split):
    _, _, pred_json, _ = split
    expected, _ = evaluate_panoptic_folders(*split)
    edit_json(pred_json, lambda d: (d.pop("images"), d.pop("categories")))
    results, _ = evaluate_panoptic_folders(*split)
    assert results["all"] == expected["all"]


def test_in_memory_errors(categories):
    evaluator = PanopticEvaluator(categories)
    id_map, segs = scene()
    bad = [segs[0], Segment(segs[1].id, 99), segs[2]]
    with raises("image id 'x'", "segment id 70001", "unknown category id 99"):
        evaluator.process(id_map, segs, id_map, bad, image_id="x")
    with raises("image id 'x'", "segment id 300 is listed more than once"):
        evaluator.process(id_map, segs, id_map, [*segs, segs[0]], image_id="x")
    with raises("image id 'x'", "expected a non-empty (H, W) id map, got (1, 8, 12)"):
        evaluator.process(id_map, segs, id_map[None], segs, image_id="x")
    with raises("image id 'x'", "expected a non-empty (H, W) id map, got (0, 12)"):
        evaluator.process(id_map[:0], [], id_map[:0], [], image_id="x")
    with raises("image id 'x'", "must hold integers"):
        evaluator.process(id_map, segs, id_map.astype(np.float32), segs, image_id="x")
    assert evaluator.summarize()["num_images"] == 0


def test_settings_are_checked(categories):
    with pytest.raises(ValueError, match="thresholds"):
        PanopticEvaluator(categories, thresholds=[0.5, 1.0])
    with pytest.raises(ValueError, match="size_bounds"):
        PanopticEvaluator(categories, size_bounds=(0.5, 0.1))
    with pytest.raises(ValueError, match="workers"):
        evaluate_panoptic_folders("a", "b", "c", "d", workers=0)
