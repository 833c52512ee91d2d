"""Dataset statistics on a hand-built COCO-panoptic folder with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ibs_study.data import synthetic as S
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)
from ibs_study.data.statistics import dataset_statistics, format_statistics, things_in_crop

ROAD, SKY, CAR, PERSON = 7, 23, 26, 24
CATEGORIES = [
    CategoryInfo(ROAD, "road", False, (128, 64, 128)),
    CategoryInfo(SKY, "sky", False, (70, 130, 180)),
    CategoryInfo(PERSON, "person", True, (220, 20, 60)),
    CategoryInfo(CAR, "car", True, (0, 0, 142)),
]


def image_a() -> tuple[np.ndarray, dict[int, int], dict[int, int]]:
    """8 x 16: sky on top, road below, two cars, an L-shaped person, a crowd, 4 void pixels."""
    ids = np.full((8, 16), ROAD, dtype=np.int32)
    ids[:3] = SKY
    ids[4:6, 1:4] = 100001  # car, 6 px
    ids[3:8, 10:16] = 100002  # car, 30 px
    ids[0:4, 5] = 200001  # person: an L, 4 + 2 px, bbox rows 0-4, cols 5-7
    ids[4, 6:8] = 200001
    ids[6:8, 0:2] = 300000  # crowd of persons, 4 px
    ids[7, 4:8] = 0  # void
    return ids, {100001: CAR, 100002: CAR, 200001: PERSON, 300000: PERSON, ROAD: ROAD, SKY: SKY}, {300000: 1}


def image_b() -> tuple[np.ndarray, dict[int, int], dict[int, int]]:
    """8 x 16: road only and one car."""
    ids = np.full((8, 16), ROAD, dtype=np.int32)
    ids[2:6, 2:10] = 70000  # 32 px
    return ids, {70000: CAR, ROAD: ROAD}, {}


def write_dataset(root: Path, split: str = "train") -> None:
    records = []
    for k, (ids, category_of, iscrowd_of) in enumerate([image_a(), image_b()]):
        name = f"img{k}"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros(ids.shape + (3,), np.uint8)).save(root / "images" / split / f"{name}.png")
        write_id_png(root / f"panoptic_{split}" / f"{name}.png", ids)
        segments = segments_from_id_map(ids, category_of, iscrowd_of)
        records.append(ImageRecord(name, f"{name}.png", 16, 8, f"{name}.png", segments))
    write_panoptic_json(root / "annotations" / f"panoptic_{split}.json", records, CATEGORIES)


@pytest.fixture
def root(tmp_path) -> Path:
    write_dataset(tmp_path / "hand")
    return tmp_path / "hand"


def test_things_in_crop_needs_a_pixel_not_just_the_bbox():
    ids, category_of, iscrowd_of = image_a()
    segments = segments_from_id_map(ids, category_of, iscrowd_of)
    things = [s for s in segments if category_of[s.id] in (CAR, PERSON) and not s.iscrowd]
    person = next(s for s in things if s.id == 200001)
    assert person.bbox == (5, 0, 3, 5)
    # Window rows 0-2, cols 6-7 lies inside the person's bbox but holds none of its pixels.
    assert things_in_crop(ids, [person], 0, 6, 3, 2) == 0
    assert things_in_crop(ids, [person], 4, 7, 1, 1) == 1
    assert things_in_crop(ids, things, 0, 0, 8, 16) == 3
    assert things_in_crop(ids, things, 4, 2, 2, 2) == 1  # only the small car
    assert things_in_crop(ids, things, -5, -5, 3, 3) == 0  # outside the image


def test_statistics_by_hand(root):
    stats = dataset_statistics(root, splits=["train"], crop_size=(8, 16), crops_per_image=3)
    assert stats["crop_size"] == [8, 16] and stats["crop_rule"] == "given"
    s = stats["splits"]["train"]
    assert s["images"] == 2 and s["image_sizes"] == {"8x16": 2}
    # Things (crowd excluded): 3 in image a, 1 in image b; a full-image crop sees them all.
    assert s["things_per_image"] == {"mean": 2.0, "median": 2.0, "max": 3, "min": 1}
    assert s["things_per_crop"] == {"mean": 2.0, "median": 2.0, "max": 3, "min": 1}
    assert s["full_to_crop_ratio"] == pytest.approx(1.0)
    car, person, sky = (s["classes"][n] for n in ("car", "person", "sky"))
    assert (car["instances"], car["crowd_segments"], car["images"]) == (3, 0, 2)
    assert car["mean_area"] == pytest.approx((6 + 30 + 32) / 3)
    assert (person["instances"], person["crowd_segments"], person["images"]) == (1, 1, 1)
    assert person["mean_area"] == pytest.approx(6)  # the crowd's 4 px are not an instance
    assert person["pixel_fraction"] == pytest.approx(10 / 256)
    assert (sky["instances"], sky["images"]) == (1, 1)
    # Sky: rows 0-2 less the person's 3 pixels there. Road: rows 3-7 of image a less the
    # things (30 + 6 + 3 + 4) and void (4), plus image b less its car.
    assert s["stuff_coverage"] == {"road": pytest.approx((33 + 96) / 256), "sky": pytest.approx(45 / 256)}
    assert s["thing_coverage"] == pytest.approx((6 + 30 + 32 + 10) / 256)
    assert s["void_fraction"] == pytest.approx(4 / 256)


def test_one_pixel_crops_estimate_the_thing_pixel_share(root):
    """With 1x1 crops the mean count is the share of non-crowd thing pixels (uniform crop positions)."""
    stats = dataset_statistics(root, splits=["train"], crop_size=(1, 1), crops_per_image=3000, seed=4)
    share = ((6 + 30 + 6) / 128 + 32 / 128) / 2
    assert stats["splits"]["train"]["things_per_crop"]["mean"] == pytest.approx(share, abs=0.02)
    assert stats["splits"]["train"]["things_per_crop"]["max"] == 1


def test_default_crop_is_half_of_each_side_without_generation_info(root, caplog):
    stats = dataset_statistics(root, splits=["train"], crops_per_image=50)
    assert stats["crop_size"] is None and stats["crop_rule"] == "half of each image side"
    assert "no synthetic.json" in caplog.text
    assert "crops: half of each image side, 50 random crops per image, seed 0" in format_statistics(stats)
    per_crop = stats["splits"]["train"]["things_per_crop"]
    assert per_crop["max"] <= 3 and per_crop["mean"] < 2.0
    same = dataset_statistics(root, splits=["train"], crops_per_image=50)
    assert same == stats  # seeded crops
    assert dataset_statistics(root, splits=["train"], crops_per_image=50, seed=1) != stats


def test_synthetic_dataset_uses_the_scale_crop_and_its_splits(tmp_path):
    root = S.generate_dataset(tmp_path / "s", scale="tiny", num_train=3, num_val=0, workers=1)
    stats = dataset_statistics(root, crops_per_image=4)
    assert stats["crop_size"] == [32, 64] and stats["crop_rule"] == "scale 'tiny'"
    assert list(stats["splits"]) == ["train"]
    s = stats["splits"]["train"]
    assert s["images"] == 3 and s["image_sizes"] == {"64x128": 3}
    assert s["things_per_image"]["mean"] > s["things_per_crop"]["mean"] > 0
    text = format_statistics(stats)
    assert "[train] 3 images" in text and "32x64 (scale 'tiny')" in text


def test_format_statistics_aligns_the_tables(root):
    text = format_statistics(dataset_statistics(root, splits=["train"], crop_size=(8, 16), crops_per_image=2))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    table = lines[header : header + 2 + len(CATEGORIES)]
    assert len({len(line) for line in table}) == 1  # every row as wide as the rule line
    car = next(line for line in table if line.startswith("car"))
    assert car.split() == ["car", "thing", "3", "0", "23", "2", "26.6"]
    assert "full image / crop ratio (means): 1.00" in text
    assert "void 1.6%" in text


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="crops_per_image"):
        dataset_statistics(root, crops_per_image=0)
    with pytest.raises(ValueError, match="crop_size"):
        dataset_statistics(root, crop_size=(0, 4))
    with pytest.raises(ValueError, match="unknown dataset kind"):
        dataset_statistics(root, kind="kitti")


def test_a_corrupt_png_is_reported_with_its_image(root):
    data = json.loads((root / "annotations" / "panoptic_train.json").read_text())
    data["annotations"][1]["segments_info"][0]["area"] += 1
    (root / "annotations" / "panoptic_train.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="img1"):
        dataset_statistics(root, splits=["train"])
