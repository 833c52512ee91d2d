"""A hand-built dataset and two evaluated "runs" on it, small enough to check every number by hand.

Image "a" (40 x 60 pixels, everything road except):
  GT   car 11: rows 5:20, cols 5:20 (225 px); car 12: rows 5:20, cols 25:40 (225 px);
       person 13: rows 25:35, cols 45:55 (100 px).
  crop: pred 1 car, rows 5:20, cols 5:38 (495 px): all of car 11, 13/15 of car 12 (confused);
        pred 2 person, rows 25:35, cols 45:52 (70 px): 70% of person 13 (PQ match, IoU 0.7).
  ibs:  pred 1 car, rows 5:20, cols 5:18 (195 px): 13/15 of car 11 (PQ match, IoU 0.867);
        pred 2 car, rows 5:20, cols 18:40 (330 px): 2/15 of car 11, all of car 12 (match, IoU 0.68);
        pred 3 person, rows 25:35, cols 45:55: person 13 exactly.
Image "b": GT car 21 rows 10:30, cols 10:30; both runs predict it exactly (pred 1), no confusion.
Stuff road is GT segment 1 and predicted segment 9 in both images.

The dataset uses the synthetic layout (``annotations/panoptic_val.json``, ``panoptic_val/``,
``images/val/``) so run directories with a ``config.yaml`` can point at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ibs_study.config import load_preset, save_config
from ibs_study.data.datasets import DatasetMeta, PanopticDataset, synthetic
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)
from ibs_study.metrics.panoptic import PanopticEvaluator
from ibs_study.models.postprocess import PanopticPrediction, PanopticPredictionWriter

ROAD, CAR, PERSON = 1, 2, 3
CATEGORIES = {
    ROAD: CategoryInfo(ROAD, "road", False, (128, 64, 128)),
    CAR: CategoryInfo(CAR, "car", True, (0, 0, 142)),
    PERSON: CategoryInfo(PERSON, "person", True, (220, 20, 60)),
}
META = DatasetMeta.from_categories("hand", CATEGORIES)
HEIGHT, WIDTH = 40, 60


def _map(boxes: dict[int, tuple[int, int, int, int]], background: int) -> np.ndarray:
    """id map filled with ``background``, then each (row0, row1, col0, col1) box painted in order."""
    id_map = np.full((HEIGHT, WIDTH), background, dtype=np.int32)
    for seg_id, (r0, r1, c0, c1) in boxes.items():
        id_map[r0:r1, c0:c1] = seg_id
    return id_map


GT = {
    "a": (
        _map({11: (5, 20, 5, 20), 12: (5, 20, 25, 40), 13: (25, 35, 45, 55)}, 1),
        {11: CAR, 12: CAR, 13: PERSON},
    ),
    "b": (_map({21: (10, 30, 10, 30)}, 1), {21: CAR}),
}
PREDICTIONS = {
    "crop": {
        "a": (_map({1: (5, 20, 5, 38), 2: (25, 35, 45, 52)}, 9), {1: CAR, 2: PERSON}),
        "b": (_map({1: (10, 30, 10, 30)}, 9), {1: CAR}),
    },
    "ibs": {
        "a": (
            _map({1: (5, 20, 5, 18), 2: (5, 20, 18, 40), 3: (25, 35, 45, 55)}, 9),
            {1: CAR, 2: CAR, 3: PERSON},
        ),
        "b": (_map({1: (10, 30, 10, 30)}, 9), {1: CAR}),
    },
}


@dataclass
class HandRuns:
    root: Path
    dataset: PanopticDataset
    eval_dirs: list[Path]
    run_dirs: list[Path]
    labels: list[str]


def _write_dataset(root: Path) -> PanopticDataset:
    rng = np.random.default_rng(0)
    (root / "images" / "val").mkdir(parents=True)
    (root / "panoptic_val").mkdir()
    records = []
    for image_id, (id_map, category_of) in GT.items():
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
            root / "images" / "val" / f"{image_id}.png"
        )
        write_id_png(root / "panoptic_val" / f"{image_id}.png", id_map)
        segments = segments_from_id_map(id_map, {1: ROAD, **category_of})
        records.append(ImageRecord(image_id, f"{image_id}.png", WIDTH, HEIGHT, f"{image_id}.png", segments))
    write_panoptic_json(root / "annotations" / "panoptic_val.json", records, CATEGORIES.values())
    return synthetic(root, "val")


def _write_eval(dataset: PanopticDataset, run: str, out_dir: Path) -> None:
    evaluator = PanopticEvaluator(META)
    with_writer = PanopticPredictionWriter(out_dir, META)
    for index, (image_id, (id_map, category_of)) in enumerate(PREDICTIONS[run].items()):
        sample = dataset[index]
        assert sample.image_id == image_id
        segments = segments_from_id_map(
            id_map, {9: ROAD, **category_of}, score_of={i: 0.9 for i in [9, *category_of]}
        )
        evaluator.process(sample.id_map, sample.segments, id_map, segments, image_id)
        with_writer.add(PanopticPrediction(id_map, segments, image_id))
    with_writer.close()
    evaluator.summarize()
    with open(out_dir / "confusion_records.jsonl", "w") as f:
        for record in evaluator.records:
            f.write(json.dumps(record.to_json()) + "\n")


@pytest.fixture(scope="session")
def hand_runs(tmp_path_factory) -> HandRuns:
    root = tmp_path_factory.mktemp("viz_hand")
    dataset = _write_dataset(root / "data")
    run_dirs, eval_dirs = [], []
    for run in PREDICTIONS:
        run_dir = root / "runs" / run
        (run_dir / "eval_val").mkdir(parents=True)
        cfg = load_preset("synthetic_pfcn_crop", [f"data.root={root / 'data'}"])
        save_config(cfg, run_dir / "config.yaml")
        _write_eval(dataset, run, run_dir / "eval_val")
        run_dirs.append(run_dir)
        eval_dirs.append(run_dir / "eval_val")
    return HandRuns(root, dataset, eval_dirs, run_dirs, ["crop", "crop + IBS"])
