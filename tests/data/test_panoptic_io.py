"""COCO-panoptic encoding, JSON parsing and the strict validation messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ibs_study.data.datasets import coco_panoptic_folder
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    PanopticFormatError,
    Segment,
    id_to_rgb,
    load_panoptic_json,
    read_id_png,
    rgb_to_id,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)

CATEGORIES = [
    CategoryInfo(1, "road", False, (128, 64, 128)),
    CategoryInfo(26, "car", True, (0, 0, 142)),
]


def test_rgb_id_known_values():
    # Cityscapes example from the dataset notes: car 26000 -> (144, 101, 0); road 7 -> (7, 0, 0)
    ids = np.array([[26000, 7], [0, 16_777_215]], dtype=np.int32)
    rgb = id_to_rgb(ids)
    assert rgb[0, 0].tolist() == [144, 101, 0]
    assert rgb[0, 1].tolist() == [7, 0, 0]
    assert rgb[1, 1].tolist() == [255, 255, 255]
    assert np.array_equal(rgb_to_id(rgb), ids)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 16_777_215), min_size=1, max_size=64))
def test_png_round_trip_is_lossless(tmp_path_factory, values):
    ids = np.array(values, dtype=np.int32).reshape(1, -1)
    path = tmp_path_factory.mktemp("png") / "ids.png"
    write_id_png(path, ids)
    assert np.array_equal(read_id_png(path), ids)


def test_id_outside_24_bits_is_rejected():
    with pytest.raises(PanopticFormatError, match="16777215"):
        id_to_rgb(np.array([[1 << 24]]))


def test_segments_from_id_map_area_and_bbox():
    ids = np.zeros((6, 8), dtype=np.int32)
    ids[1:4, 2:7] = 70_000  # 3 x 5 box
    ids[5, 0] = 5
    segs = {s.id: s for s in segments_from_id_map(ids, {70_000: 26, 5: 1}, iscrowd_of={5: 1})}
    assert segs[70_000].area == 15 and segs[70_000].bbox == (2, 1, 5, 3)
    assert segs[5].area == 1 and segs[5].bbox == (0, 5, 1, 1) and segs[5].iscrowd == 1
    with pytest.raises(PanopticFormatError, match="segment id 5"):
        segments_from_id_map(ids, {70_000: 26})


# ------------------------------------------------------------------- a tiny dataset on disk


def _write_dataset(root: Path, id_maps: dict[str, np.ndarray], crowd: set[int] = frozenset()) -> None:
    """Write images + PNGs + JSON in the generic COCO-panoptic layout."""
    (root / "png").mkdir(parents=True)
    (root / "img").mkdir()
    records = []
    for image_id, ids in id_maps.items():
        write_id_png(root / "png" / f"{image_id}.png", ids)
        Image.fromarray(np.full(ids.shape + (3,), 90, np.uint8)).save(root / "img" / f"{image_id}.png")
        cats = {i: (26 if i >= 1000 else 1) for i in np.unique(ids).tolist() if i}
        segments = segments_from_id_map(ids, cats, iscrowd_of={i: 1 for i in crowd})
        records.append(
            ImageRecord(image_id, f"{image_id}.png", ids.shape[1], ids.shape[0], f"{image_id}.png", segments)
        )
    write_panoptic_json(root / "panoptic.json", records, CATEGORIES)


def _ids(h=8, w=10) -> np.ndarray:
    ids = np.ones((h, w), dtype=np.int32)  # road
    ids[2:5, 2:6] = 70_001
    ids[5:7, 6:9] = 26_000
    ids[0, 0] = 0
    return ids


def _open(root: Path, **kwargs):
    return coco_panoptic_folder(root / "panoptic.json", root / "png", root / "img", **kwargs)


def _edit_json(root: Path, edit) -> None:
    path = root / "panoptic.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_dataset_round_trip(tmp_path):
    _write_dataset(tmp_path, {"a": _ids(), "b": _ids()[::-1].copy()})
    ds = _open(tmp_path)
    assert len(ds) == 2
    sample = ds[1]
    assert sample.image_id == "b"
    assert np.array_equal(sample.id_map, _ids()[::-1])
    assert {s.id for s in sample.segments} == {1, 26_000, 70_001}
    assert ds.meta.contiguous_of == {1: 0, 26: 1}
    assert ds.meta.is_thing.tolist() == [False, True]
    ds.validate()


def test_missing_png_names_file_and_image(tmp_path):
    _write_dataset(tmp_path, {"a": _ids(), "b": _ids()})
    (tmp_path / "png" / "b.png").unlink()
    with pytest.raises(PanopticFormatError, match=r"b\.png.*image id 'b'"):
        _open(tmp_path)


def test_missing_image_names_file_and_image(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(PanopticFormatError, match=r"img/a\.png: image for image id 'a' not found"):
        _open(tmp_path)


def test_png_size_differs_from_image(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    Image.fromarray(np.zeros((8, 11, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    with pytest.raises(
        PanopticFormatError, match=r"image id 'a'.*PNG size \(10, 8\) differs from image size \(11, 8\)"
    ):
        _open(tmp_path)[0]


def test_id_in_png_absent_from_json(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    _edit_json(tmp_path, lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(
        PanopticFormatError,
        match=r"image id 'a'.*segment id\(s\) \[70001\] appear in the PNG but not in the JSON",
    ):
        _open(tmp_path)[0]


def test_segment_in_json_absent_from_png(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    extra = {"id": 123_456, "category_id": 26, "area": 3, "bbox": [0, 0, 1, 3], "iscrowd": 0}
    _edit_json(tmp_path, lambda d: d["annotations"][0]["segments_info"].append(extra))
    with pytest.raises(
        PanopticFormatError, match=r"image id 'a'.*segment id 123456 is listed in the JSON but absent"
    ):
        _open(tmp_path)[0]


def test_duplicate_segment_ids(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    _edit_json(
        tmp_path,
        lambda d: d["annotations"][0]["segments_info"].append(d["annotations"][0]["segments_info"][0]),
    )
    with pytest.raises(PanopticFormatError, match=r"image id 'a' lists segment id 1 twice"):
        _open(tmp_path)


def test_unknown_category(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    _edit_json(tmp_path, lambda d: d["annotations"][0]["segments_info"][1].update(category_id=99))
    with pytest.raises(PanopticFormatError, match=r"image id 'a', segment id \d+: unknown category id 99"):
        _open(tmp_path)


def test_duplicate_image_ids(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    _edit_json(tmp_path, lambda d: d["images"].append(dict(d["images"][0])))
    with pytest.raises(PanopticFormatError, match=r"duplicate image id 'a'"):
        _open(tmp_path)


def test_non_rgb_png(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    Image.fromarray(_ids().astype(np.uint8), mode="L").save(tmp_path / "png" / "a.png")
    with pytest.raises(PanopticFormatError, match=r"a\.png: panoptic PNG must be 8-bit RGB.*mode 'L'"):
        _open(tmp_path)[0]


def test_area_mismatch_is_an_error_unless_disabled(tmp_path):
    _write_dataset(tmp_path, {"a": _ids()})
    _edit_json(tmp_path, lambda d: d["annotations"][0]["segments_info"][0].update(area=5))
    with pytest.raises(
        PanopticFormatError, match=r"image id 'a'\): segment id 1 has area 5 in the JSON but 61 pixels"
    ):
        _open(tmp_path)[0]
    assert len(_open(tmp_path, check_area=False)[0].segments) == 3


def test_empty_dataset(tmp_path):
    _write_dataset(tmp_path, {})
    with pytest.raises(PanopticFormatError, match="empty dataset"):
        _open(tmp_path)


def test_not_coco_panoptic(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(PanopticFormatError, match="not a COCO-panoptic JSON"):
        load_panoptic_json(path)
    path.write_text("{not json")
    with pytest.raises(PanopticFormatError, match="not valid JSON"):
        load_panoptic_json(path)


def test_image_without_annotation(tmp_path):
    _write_dataset(tmp_path, {"a": _ids(), "b": _ids()})
    _edit_json(tmp_path, lambda d: d["annotations"].pop())
    with pytest.raises(PanopticFormatError, match=r"1 image\(s\) have no annotation, e.g. image id 'b'"):
        _open(tmp_path)


def _segments_json(tmp_path: Path, segments_info: list) -> Path:
    path = tmp_path / "segments.json"
    categories = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in CATEGORIES]
    image = {"id": "a", "file_name": "a.jpg", "width": 4, "height": 3}
    annotation = {"image_id": "a", "file_name": "a.png", "segments_info": segments_info}
    path.write_text(json.dumps({"images": [image], "annotations": [annotation], "categories": categories}))
    return path


def test_segment_values_of_every_accepted_type_read_alike(tmp_path):
    """Plain integers, integral floats, an integer score and absent keys give the same segments."""
    plain = {"id": 7, "category_id": 26, "iscrowd": 1, "area": 12, "bbox": [1, 2, 3, 4], "score": 0.5}
    written_otherwise = {
        "id": 7.0,
        "category_id": 26.0,
        "iscrowd": 1.0,
        "area": 12.0,
        "bbox": [1.0, 2, 3, 4.0],
    }
    path = _segments_json(tmp_path, [plain, {"id": 8, "category_id": 1}])
    segments = load_panoptic_json(path).records[0].segments
    assert [tuple(vars(s).values()) for s in segments] == [
        (7, 26, 1, 12, (1, 2, 3, 4), 0.5),
        (8, 1, 0, -1, (0, 0, 0, 0), None),
    ]
    path = _segments_json(tmp_path, [{**written_otherwise, "score": 1}, {"id": 8, "category_id": 1}])
    assert load_panoptic_json(path).records[0].segments == [
        Segment(7, 26, 1, 12, (1, 2, 3, 4), 1.0),
        segments[1],
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"iscrowd": True}, r"image id 'a', segment id 7: iscrowd must be an integer, got True"),
        ({"bbox": None}, r"image id 'a', segment id 7: bbox must be a list, got None"),
        ({"bbox": [1, 2, 3]}, r"image id 'a', segment id 7: bbox must list 4 numbers"),
        ({"area": "12"}, r"image id 'a', segment id 7: area must be an integer or a number, got '12'"),
        ({"score": "high"}, r"image id 'a', segment id 7: score must be an integer or a number"),
        ({"id": 0}, r"image id 'a': segment id 0 outside \[1, 16777215\]"),
        ({"id": 2.5}, r"image id 'a': segments_info\[0\].id must be an integer, got 2.5"),
        ({"category_id": 99}, r"image id 'a', segment id 7: unknown category id 99"),
        ({"category_id": None}, r"image id 'a', segment id 7: category_id must be an integer, got None"),
    ],
)
def test_each_bad_segment_value_is_named(tmp_path, change, message):
    plain = {"id": 7, "category_id": 26, "iscrowd": 0, "area": 12, "bbox": [1, 2, 3, 4]}
    with pytest.raises(PanopticFormatError, match=message):
        load_panoptic_json(_segments_json(tmp_path, [{**plain, **change}]))
