"""Shared fixtures of the metrics tests: a small category set and a COCO-panoptic folder writer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from ibs_study.data.panoptic import CategoryInfo, ImageRecord, Segment, write_id_png, write_panoptic_json

ROAD, SKY, PERSON, CAR = 7, 23, 24, 26


@pytest.fixture
def categories() -> dict[int, CategoryInfo]:
    """Two stuff and two thing categories (Cityscapes ids)."""
    return {
        ROAD: CategoryInfo(ROAD, "road", False, (128, 64, 128)),
        SKY: CategoryInfo(SKY, "sky", False, (70, 130, 180)),
        PERSON: CategoryInfo(PERSON, "person", True, (220, 20, 60)),
        CAR: CategoryInfo(CAR, "car", True, (0, 0, 142)),
    }


Image = tuple[str | int, np.ndarray, Sequence[Segment]]


@pytest.fixture
def write_split() -> Callable[..., tuple[Path, Path]]:
    """``write_split(folder, images, categories)`` -> (json path, png folder) in COCO-panoptic format.

    ``images``: (image id, id map, segments) triples; PNGs are named ``<index>.png``.
    """

    def write(
        folder: Path, images: Sequence[Image], categories: dict[int, CategoryInfo]
    ) -> tuple[Path, Path]:
        png_dir = folder / "png"
        png_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for index, (image_id, id_map, segments) in enumerate(images):
            write_id_png(png_dir / f"{index}.png", id_map)
            height, width = id_map.shape
            records.append(
                ImageRecord(image_id, f"{index}.jpg", width, height, f"{index}.png", list(segments))
            )
        json_path = folder / "panoptic.json"
        write_panoptic_json(json_path, records, categories.values())
        return json_path, png_dir

    return write
