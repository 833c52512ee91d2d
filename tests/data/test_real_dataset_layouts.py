"""Cityscapes and Mapillary Vistas readers on tiny fixtures written in the real on-disk layouts."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ibs_study.data.datasets import (
    CITYSCAPES_META,
    MAPILLARY_VISTAS_META,
    cityscapes,
    mapillary_vistas,
    open_dataset,
)
from ibs_study.data.panoptic import (
    ImageRecord,
    PanopticFormatError,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)


def test_metadata_matches_the_papers_class_counts():
    assert CITYSCAPES_META.num_classes == 19
    assert len(CITYSCAPES_META.thing_labels) == 8 and len(CITYSCAPES_META.stuff_labels) == 11
    assert MAPILLARY_VISTAS_META.num_classes == 65
    assert len(MAPILLARY_VISTAS_META.thing_labels) == 37 and len(MAPILLARY_VISTAS_META.stuff_labels) == 28
    # contiguous labels follow ascending dataset ids; Vistas "Bird" (id 1) is contiguous 0 and a thing
    assert MAPILLARY_VISTAS_META.contiguous_of[1] == 0 and MAPILLARY_VISTAS_META.is_thing[0]
    assert CITYSCAPES_META.class_names[CITYSCAPES_META.contiguous_of[26]] == "car"


# ------------------------------------------------------------------------------ Cityscapes


def _cityscapes_instance_ids() -> np.ndarray:
    """A 16 x 32 Cityscapes-style instanceIds map."""
    ids = np.full((16, 32), 7, dtype=np.int32)  # road
    ids[:4] = 23  # sky
    ids[4:8, :10] = 11  # building
    ids[8:12, 2:8] = 26000  # car k=0
    ids[8:12, 10:16] = 26001  # car k=1
    ids[6:14, 20:22] = 24000  # person k=0
    ids[12:16, 24:30] = 26  # cargroup: crowd
    ids[0, 0:3] = 0  # unlabeled, ignored in evaluation
    ids[15, 0:2] = 4  # static, ignored in evaluation
    return ids


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory) -> Path:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = tmp_path_factory.mktemp("cityscapes")
    for city, frame in [("aachen", 19), ("bochum", 7)]:
        stem = f"{city}_000000_{frame:06d}"
        gt_dir = root / "gtFine" / "val" / city
        img_dir = root / "leftImg8bit" / "val" / city
        gt_dir.mkdir(parents=True)
        img_dir.mkdir(parents=True)
        ids = _cityscapes_instance_ids()
        Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        Image.fromarray(np.zeros((16, 32), np.uint8)).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
        Image.fromarray(np.full((16, 32, 3), frame, np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(
            cityscapesPath=str(root / "gtFine"), outputFolder=str(root / "gtFine"), setNames=["val"]
        )
    return root


def test_cityscapes_reader_on_converter_output(cityscapes_root):
    ds = cityscapes(cityscapes_root, "val")
    assert len(ds) == 2
    ds.validate()
    sample = ds[0]
    assert sample.image_id == "aachen_000000_000019"
    assert sample.image.shape == (16, 32, 3) and sample.image[0, 0, 0] == 19  # located from the id
    by_id = sample.segment_by_id()
    assert set(by_id) == {7, 11, 23, 24000, 26000, 26001, 26}
    assert by_id[26000].category_id == 26 and by_id[26000].iscrowd == 0 and by_id[26000].area == 24
    assert by_id[26].iscrowd == 1 and by_id[26].category_id == 26
    assert (sample.id_map[0, 0:3] == 0).all() and (
        sample.id_map[15, 0:2] == 0
    ).all()  # ignored labels are void
    assert open_dataset("cityscapes", cityscapes_root, "val").records[1].image_id == "bochum_000000_000007"


def test_cityscapes_missing_image_is_named(cityscapes_root, tmp_path):
    import shutil

    root = tmp_path / "cs"
    shutil.copytree(cityscapes_root, root)
    missing = root / "leftImg8bit" / "val" / "bochum" / "bochum_000000_000007_leftImg8bit.png"
    missing.unlink()
    with pytest.raises(
        PanopticFormatError,
        match=r"bochum_000000_000007_leftImg8bit\.png: image for image id 'bochum_000000_000007'",
    ):
        cityscapes(root, "val")


# ------------------------------------------------------------------------- Mapillary Vistas


def _write_vistas_split(split_dir: Path, keys: list[str], swap_json_size: bool = False) -> None:
    (split_dir / "images").mkdir(parents=True)
    (split_dir / "panoptic").mkdir(parents=True)
    records = []
    for n, key in enumerate(keys):
        ids = np.full((12, 20), 1, dtype=np.int32)
        ids[:3] = 2  # sky-like stuff
        ids[5:9, 2:7] = 3  # a car
        ids[6:11, 10:12] = 4  # a bird (contiguous id 0)
        ids[0, :2] = 0
        category = {1: 14, 2: 28, 3: 56, 4: 1}  # Road, Sky, Car, Bird
        segments = segments_from_id_map(ids, category)
        write_id_png(split_dir / "panoptic" / f"{key}.png", ids)
        Image.fromarray(np.full((12, 20, 3), 40 + n, np.uint8)).save(split_dir / "images" / f"{key}.jpg")
        w, h = (12, 20) if swap_json_size else (20, 12)
        records.append(ImageRecord(key, f"{key}.jpg", w, h, f"{key}.png", segments))
    write_panoptic_json(
        split_dir / "panoptic" / "panoptic_2018.json", records, MAPILLARY_VISTAS_META.categories
    )


def test_vistas_v12_layout(tmp_path):
    keys = ["S2vjth7lk4EIKius2I-1AA", "a_b-c"]
    _write_vistas_split(tmp_path / "validation", keys, swap_json_size=True)
    ds = mapillary_vistas(tmp_path, "val")
    ds.validate()  # JSON width/height swapped (a known v1.2 issue): sizes come from the decoded files
    sample = ds[1]
    assert sample.image_id == "a_b-c" and sample.image.shape == (12, 20, 3)
    cats = {s.category_id for s in sample.segments}
    assert cats == {14, 28, 56, 1}
    assert ds.meta.is_thing[ds.meta.contiguous_of[1]]


def test_vistas_v20_bundle_layout(tmp_path):
    split = tmp_path / "training"
    _write_vistas_split(split / "v1.2", ["k1"])
    # the v2.0 bundle keeps images beside the version folders
    (split / "v1.2" / "images").rename(split / "images")
    ds = mapillary_vistas(tmp_path, "training")
    assert len(ds) == 1 and ds[0].image.shape == (12, 20, 3)


def test_vistas_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown Mapillary Vistas split 'testing'"):
        mapillary_vistas(tmp_path, "testing")


def test_unknown_dataset_kind(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset kind 'coco'.*cityscapes"):
        open_dataset("coco", tmp_path, "val")
