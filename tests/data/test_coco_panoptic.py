"""``data.dataset=coco_panoptic``: any COCO-panoptic folder, in COCO 2017's layout or the default
one, read with its own categories; missing parts are one-line errors; both models and the
paired sampler train on it and evaluation writes predictions with the dataset's category ids.

The fixtures are written here in the real on-disk format (a JSON written with ``json``, RGB id
PNGs and JPEG/PNG images written with Pillow), not with the package's writers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute
from PIL import Image

from ibs_study.cli import main
from ibs_study.config import resolve_config
from ibs_study.data.datasets import open_dataset
from ibs_study.data.panoptic import PanopticFormatError
from ibs_study.data.statistics import dataset_statistics
from ibs_study.engine.data import open_split
from ibs_study.errors import DataError
from ibs_study.study.runs import smoke_overrides

# listed out of id order, as a JSON may; ids with gaps, as COCO's (1..200)
CATEGORIES = [
    {"id": 184, "name": "sky-other-merged", "isthing": 0, "color": [106, 154, 176], "supercategory": "sky"},
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60], "supercategory": "person"},
    {"id": 125, "name": "grass-merged", "isthing": 0, "color": [152, 251, 152], "supercategory": "plant"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},  # no colour, as in COCO's JSONs
]
COLOUR = {c["id"]: c.get("color", [0, 0, 142]) for c in CATEGORIES}
HEIGHT, WIDTH = 64, 96

COCO_2017 = {  # data.coco_panoptic keys for COCO 2017's layout
    "train_json": "annotations/panoptic_train2017.json",
    "train_png_dir": "annotations/panoptic_train2017",
    "train_image_dir": "train2017",
    "val_json": "annotations/panoptic_val2017.json",
    "val_png_dir": "annotations/panoptic_val2017",
    "val_image_dir": "val2017",
}


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """(H, W) segment ids and {segment id: (category id, iscrowd)}: sky over grass, 3-4 things,
    a crowd of people in some images, a void stripe."""
    ids = rng.choice(np.arange(1, 2**24), size=8, replace=False)
    id_map = np.full((HEIGHT, WIDTH), ids[0], dtype=np.int64)  # grass
    id_map[: HEIGHT // 3] = ids[1]  # sky
    segments = {int(ids[0]): (125, 0), int(ids[1]): (184, 0)}
    for k in range(int(rng.integers(3, 5))):
        category = (1, 3)[k % 2]
        h, w = (20, 10) if category == 1 else (14, 24)
        top, left = int(rng.integers(HEIGHT // 3, HEIGHT - h)), int(rng.integers(0, WIDTH - w))
        id_map[top : top + h, left : left + w] = ids[2 + k]
        segments[int(ids[2 + k])] = (category, 0)
    if rng.random() < 0.5:
        id_map[HEIGHT - 8 :, WIDTH - 20 :] = ids[7]
        segments[int(ids[7])] = (1, 1)
    id_map[:, :2] = 0  # void
    present = set(np.unique(id_map).tolist())
    return id_map, {s: v for s, v in segments.items() if s in present}


def _write_split(root: Path, json_path: str, png_dir: str, image_dir: str, count: int, seed: int, ext: str):
    """``count`` images of one split: JSON, RGB id PNGs and images (``ext``: jpg or png)."""
    rng = np.random.default_rng(seed)
    (root / png_dir).mkdir(parents=True, exist_ok=True)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for n in range(count):
        image_id = 139 + 1000 * seed + n
        stem = f"{image_id:012d}"
        id_map, segments = _scene(rng)
        rgb = np.stack([id_map % 256, id_map // 256 % 256, id_map // 256**2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(root / png_dir / f"{stem}.png")
        picture = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        info = []
        for segment_id, (category, crowd) in segments.items():
            mask = id_map == segment_id
            picture[mask] = COLOUR[category]
            rows, cols = np.nonzero(mask)
            bbox = [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1]
            info.append(
                {
                    "id": segment_id,
                    "category_id": category,
                    "iscrowd": crowd,
                    "bbox": bbox,
                    "area": int(mask.sum()),
                }
            )
        Image.fromarray(picture).save(
            root / image_dir / f"{stem}.{ext}", **({"quality": 95} if ext == "jpg" else {})
        )
        images.append({"id": image_id, "file_name": f"{stem}.{ext}", "width": WIDTH, "height": HEIGHT})
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": info})
    (root / json_path).parent.mkdir(parents=True, exist_ok=True)
    content = {
        "info": {},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    (root / json_path).write_text(json.dumps(content))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """COCO 2017's layout: 4 training and 2 validation images (JPEG)."""
    root = tmp_path_factory.mktemp("coco")
    for split, count, seed in (("train", 4, 1), ("val", 2, 2)):
        keys = [COCO_2017[f"{split}_{part}"] for part in ("json", "png_dir", "image_dir")]
        _write_split(root, *keys, count=count, seed=seed, ext="jpg")
    return root


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    """The default layout (what ``ibs-study synth`` writes), PNG images."""
    root = tmp_path_factory.mktemp("default")
    for split, count, seed in (("train", 3, 3), ("val", 2, 4)):
        _write_split(
            root,
            f"annotations/panoptic_{split}.json",
            f"panoptic_{split}",
            f"images/{split}",
            count,
            seed,
            "png",
        )
    return root


def _coco_overrides(root: Path) -> list[str]:
    return [
        "data.dataset=coco_panoptic",
        f"data.root={root}",
        "data.train_split=train2017",
        "data.val_split=val2017",
        *(f"data.coco_panoptic.{key}={value}" for key, value in COCO_2017.items()),
    ]


def test_coco_2017_layout_is_read_with_the_jsons_categories(coco_root):
    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=_coco_overrides(coco_root))
    train = open_split(cfg, "train2017")
    assert len(train) == 4 and train.name == "coco_panoptic_train2017"
    meta = train.meta
    assert [c.id for c in meta.categories] == [1, 3, 125, 184]  # contiguous labels in id order
    assert meta.class_names == ["person", "car", "grass-merged", "sky-other-merged"]
    assert meta.thing_labels == [0, 1] and meta.stuff_labels == [2, 3]
    assert meta.by_id()[184].color == (106, 154, 176) and meta.contiguous_of[125] == 2
    car = meta.by_id()[3].color  # none in the JSON: a fixed colour of its own, not black
    assert min(car) >= 40 and max(car) < 216 and car == open_split(cfg, "val2017").meta.by_id()[3].color
    train.validate()
    sample = train[1]
    assert sample.image_id == 1140 and sample.image.shape == (HEIGHT, WIDTH, 3)
    assert set(np.unique(sample.id_map).tolist()) == {0} | {s.id for s in sample.segments}
    sky = next(s for s in sample.segments if s.category_id == 184)
    assert sky.area == int((sample.id_map == sky.id).sum()) == (HEIGHT // 3) * (WIDTH - 2)
    val = open_split(cfg, "val2017")
    assert [r.image_id for r in val.records] == [2139, 2140]
    # the same files named by absolute paths
    absolute = [
        f"data.coco_panoptic.val_{p}={coco_root / COCO_2017['val_' + p]}" for p in ("json", "png_dir")
    ]
    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=[*_coco_overrides(coco_root), *absolute])
    assert open_split(cfg, "val2017").json_path == coco_root / "annotations" / "panoptic_val2017.json"


def test_default_layout_is_read_by_the_reader_the_config_and_stats(default_root, capsys):
    dataset = open_dataset("coco_panoptic", default_root, "val")
    assert len(dataset) == 2 and dataset.meta.num_classes == 4
    dataset.validate()
    cfg = resolve_config(
        preset="synthetic_m2f_crop", overrides=["data.dataset=coco_panoptic", f"data.root={default_root}"]
    )
    assert [r.image_id for r in open_split(cfg, "train").records] == [3139, 3140, 3141]
    stats = dataset_statistics(default_root, kind="coco_panoptic", crop_size=(32, 48))
    assert stats["splits"]["train"]["images"] == 3
    assert set(stats["splits"]["val"]["classes"]) == {"person", "car", "grass-merged", "sky-other-merged"}
    assert main(["stats", str(default_root), "--kind", "coco_panoptic", "--split", "val"]) == 0
    assert "coco_panoptic dataset at" in capsys.readouterr().out


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ibs-study {argv[0]}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_parts_are_one_line_errors_naming_the_file_and_the_key(coco_root, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    overrides = _coco_overrides(root)
    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=overrides)
    (root / "annotations" / "panoptic_val2017.json").unlink()
    with pytest.raises(DataError, match=r"panoptic_val2017\.json: COCO-panoptic JSON of split 'val2017' not found "
                       r"\(set by data\.coco_panoptic\.val_json"):  # fmt: skip
        open_split(cfg, "val2017")
    shutil.rmtree(root / "annotations" / "panoptic_train2017")
    with pytest.raises(
        DataError, match=r"panoptic_train2017: panoptic PNG folder .* data\.coco_panoptic\.train_png_dir"
    ):
        open_split(cfg, "train2017")
    # the default layout names the key that points elsewhere
    with pytest.raises(
        DataError,
        match=r"panoptic_train\.json: .*the default layout; data\.coco_panoptic\.train_json names another.*\(data\.root\)",
    ):
        open_split(resolve_config(preset="synthetic_pfcn_crop", overrides=overrides[:2]), "train")
    missing = root / "val2017" / "000000002140.jpg"
    shutil.copytree(coco_root / "annotations", root / "annotations", dirs_exist_ok=True)
    missing.unlink()
    with pytest.raises(PanopticFormatError, match=r"000000002140\.jpg: image for image id 2140 not found"):
        open_split(cfg, "val2017")
    # through the CLI: one line, exit status 2, nothing trained
    run = tmp_path / "run"
    err = _one_line_error(["train", "--preset", "synthetic_pfcn_crop", "--out", str(run), "--set",
                           "data.dataset=coco_panoptic", "--set", f"data.root={tmp_path / 'nowhere'}"], capsys)  # fmt: skip
    assert f"data.root={tmp_path / 'nowhere'}: no such folder for data.dataset=coco_panoptic" in err
    assert not run.exists()
    err = _one_line_error(["stats", str(root), "--kind", "coco_panoptic"], capsys)
    assert "annotations/panoptic_train.json: COCO-panoptic JSON of split 'train' not found" in err


@pytest.mark.parametrize("preset", ["synthetic_pfcn_crop_ibs", "synthetic_m2f_crop_ibs"])
def test_both_models_and_the_paired_sampler_train_and_evaluate_on_it(coco_root, tmp_path, preset):
    from ibs_study.engine.evaluate import evaluate_run
    from ibs_study.engine.train import train

    overrides = [*smoke_overrides(tmp_path / "unused", steps=2), *_coco_overrides(coco_root)]
    cfg = resolve_config(preset=preset, overrides=overrides)
    assert cfg.sampler.kind == "paired" and cfg.ibs.enabled
    train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "unused").exists()  # nothing synthetic is generated for a COCO dataset
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss_ibs"]) for r in log)
    metrics = evaluate_run(tmp_path / "run", device="cpu", progress=False)
    out = tmp_path / "run" / "eval_val2017"
    predictions = json.loads((out / "predictions.json").read_text())
    assert {c["id"] for c in predictions["categories"]} == {1, 3, 125, 184}
    assert [a["image_id"] for a in predictions["annotations"]] == [2139, 2140]
    assert {s["category_id"] for a in predictions["annotations"] for s in a["segments_info"]} <= {
        1,
        3,
        125,
        184,
    }
    reference = pq_compute(
        str(coco_root / COCO_2017["val_json"]),
        str(out / "predictions.json"),
        str(coco_root / COCO_2017["val_png_dir"]),
        str(out / "predictions"),
    )
    for ours, theirs in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert metrics[ours]["pq"] == pytest.approx(reference[theirs]["pq"], abs=1e-9)
