"""Dataset statistics: how many thing instances a full image holds versus a training crop.

The paper's Fig. 3 argument in numbers: a crop-trained network only learns to tell apart
the instances that share a crop, while inference runs on full images with many more. Per
split this module reports images and sizes, thing instances per image and per random crop
(a thing counts for a crop when at least one of its pixels lies in it), their ratio, per
class counts and areas, and stuff coverage.

Crowd segments are not instances: they are counted apart and excluded from the per-image and
per-crop counts.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ibs_study.data.datasets import PanopticDataset, open_dataset
from ibs_study.data.panoptic import VOID_ID, Segment
from ibs_study.data.synthetic import read_generation_info
from ibs_study.data.transforms import random_crop_box

logger = logging.getLogger(__name__)

__all__ = ["dataset_statistics", "format_statistics", "things_in_crop"]

_SPLIT_CODE = {"train": 0, "val": 1}


def things_in_crop(
    id_map: np.ndarray, things: list[Segment], top: int, left: int, height: int, width: int
) -> int:
    """Number of ``things`` with at least one pixel in the window (top, left, height, width).

    Args:
        id_map: (H, W) segment ids.
        things: segments to look for (their bbox limits the search).
    """
    count = 0
    for seg in things:
        x, y, w, h = seg.bbox
        y0, y1 = max(y, top), min(y + h, top + height)
        x0, x1 = max(x, left), min(x + w, left + width)
        if y0 < y1 and x0 < x1 and bool((id_map[y0:y1, x0:x1] == seg.id).any()):
            count += 1
    return count


def _summary(values: list[int] | np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": 0.0, "median": 0.0, "max": 0, "min": 0}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": int(values.max()),
        "min": int(values.min()),
    }


def _image_statistics(
    dataset: PanopticDataset, index: int, crop_size: tuple[int, int] | None, crops: int, seed: int, split: str
) -> tuple[tuple[int, int], int, list[int], int]:
    """Size, thing instances, things per random crop and void pixels of one image."""
    id_map = dataset.read_id_map(index)  # also checks the JSON against the PNG
    categories = dataset.meta.by_id()
    things = [
        s for s in dataset.records[index].segments if categories[s.category_id].isthing and not s.iscrowd
    ]
    h, w = id_map.shape
    crop_h, crop_w = crop_size if crop_size is not None else (max(1, h // 2), max(1, w // 2))
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE.get(split, 2), index]))
    per_crop = []
    for _ in range(crops):
        top, left = random_crop_box((h, w), (crop_h, crop_w), rng)
        per_crop.append(things_in_crop(id_map, things, top, left, crop_h, crop_w))
    return (h, w), len(things), per_crop, int(np.count_nonzero(id_map == VOID_ID))


def _split_statistics(
    dataset: PanopticDataset, split: str, crop_size: tuple[int, int] | None, crops: int, seed: int
) -> dict:
    from tqdm.auto import tqdm

    def one(index: int) -> tuple[tuple[int, int], int, list[int], int]:
        return _image_statistics(dataset, index, crop_size, crops, seed, split)

    # PNG decoding releases the GIL: a few threads overlap it; results stay in image order.
    threads = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        per_image = list(
            tqdm(pool.map(one, range(len(dataset))), total=len(dataset), desc=f"statistics {split}")
        )

    sizes = Counter(f"{h}x{w}" for (h, w), _, _, _ in per_image)
    things_per_image = [n for _, n, _, _ in per_image]
    things_per_crop = [c for _, _, crops_, _ in per_image for c in crops_]
    total_pixels = sum(h * w for (h, w), _, _, _ in per_image)

    instances: Counter[int] = Counter()
    instance_area: Counter[int] = Counter()
    crowds: Counter[int] = Counter()
    pixels: Counter[int] = Counter()
    images: Counter[int] = Counter()
    for record in dataset.records:
        for seg in record.segments:
            pixels[seg.category_id] += seg.area
            if seg.iscrowd:
                crowds[seg.category_id] += 1
            else:
                instances[seg.category_id] += 1
                instance_area[seg.category_id] += seg.area
        images.update({seg.category_id for seg in record.segments})
    classes = {
        cat.name: {
            "category_id": cat.id,
            "isthing": cat.isthing,
            "instances": instances[cat.id],
            "crowd_segments": crowds[cat.id],
            "mean_area": instance_area[cat.id] / instances[cat.id] if instances[cat.id] else 0.0,
            "images": images[cat.id],
            "pixel_fraction": pixels[cat.id] / max(total_pixels, 1),
        }
        for cat in dataset.meta.categories
    }
    mean_crop = float(np.mean(things_per_crop)) if things_per_crop else 0.0
    return {
        "images": len(dataset),
        "image_sizes": dict(sorted(sizes.items())),
        "things_per_image": _summary(things_per_image),
        "things_per_crop": _summary(things_per_crop),
        "full_to_crop_ratio": float(np.mean(things_per_image)) / mean_crop if mean_crop > 0 else float("inf"),
        "classes": classes,
        "stuff_coverage": {name: c["pixel_fraction"] for name, c in classes.items() if not c["isthing"]},
        "thing_coverage": sum(c["pixel_fraction"] for c in classes.values() if c["isthing"]),
        "void_fraction": sum(v for _, _, _, v in per_image) / max(total_pixels, 1),
    }


def dataset_statistics(
    root: str | os.PathLike,
    kind: str = "synthetic",
    splits: list[str] | tuple[str, ...] | None = None,
    crop_size: tuple[int, int] | list[int] | None = None,
    crops_per_image: int = 8,
    seed: int = 0,
) -> dict:
    """Statistics of a panoptic dataset (see the module docstring).

    Args:
        root: dataset root.
        kind: ``synthetic``, ``cityscapes``, ``mapillary_vistas`` or ``coco_panoptic``.
        splits: splits to describe (default: train and val; for a synthetic set, those it has).
        crop_size: (H, W) of the random crops. Default: the synthetic scale's crop, else half
            of each image side (the share a 512x1024 crop takes of a 1024x2048 image).
        crops_per_image: random crops drawn per image.
        seed: seed of the crop positions (each image draws from (seed, split, index)).

    Returns:
        ``{"root", "kind", "crop_size", "crop_rule", "crops_per_image", "seed", "splits":
        {split: {...}}}``; fractions in [0, 1].
    """
    root = Path(root)
    if crops_per_image < 1:
        raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
    info = read_generation_info(root) if kind == "synthetic" else None
    if crop_size is not None:
        crop = (int(crop_size[0]), int(crop_size[1]))
        if min(crop) < 1:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        rule = "given"
    elif info is not None:
        crop, rule = tuple(int(v) for v in info["crop_size"]), f"scale {info['scale']!r}"
    else:
        if kind == "synthetic" and root.is_dir():  # a missing root is the reader's one-line error
            logger.warning(
                "%s: no synthetic.json (incomplete generation?); crops default to half of each side", root
            )
        crop, rule = None, "half of each image side"
    if splits is None:
        splits = [s for s in ("train", "val") if info is None or info.get(f"num_{s}", 1) > 0]
    return {
        "root": str(root),
        "kind": kind,
        "crop_size": None if crop is None else list(crop),
        "crop_rule": rule,
        "crops_per_image": crops_per_image,
        "seed": seed,
        "splits": {
            split: _split_statistics(open_dataset(kind, root, split), split, crop, crops_per_image, seed)
            for split in splits
        },
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns aligned: the first left, the others right."""
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [str(c).ljust(widths[0]) if k == 0 else str(c).rjust(widths[k]) for k, c in enumerate(row)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_statistics(stats: dict) -> str:
    """Readable text of :func:`dataset_statistics` output: one block of aligned tables per split."""
    crop = stats["crop_rule"]
    if stats["crop_size"] is not None:
        crop = f"{stats['crop_size'][0]}x{stats['crop_size'][1]} ({crop})"
    lines = [
        f"{stats['kind']} dataset at {stats['root']}",
        f"crops: {crop}, {stats['crops_per_image']} random crops per image, seed {stats['seed']}",
    ]
    for split, s in stats["splits"].items():
        sizes = ", ".join(f"{size} ({n})" for size, n in s["image_sizes"].items())
        lines += ["", f"[{split}] {s['images']} images, H x W: {sizes}"]
        counts = [
            [name, f"{d['mean']:.1f}", f"{d['median']:.1f}", str(d["min"]), str(d["max"])]
            for name, d in (
                ("things per image", s["things_per_image"]),
                ("things per crop", s["things_per_crop"]),
            )
        ]
        lines += [_table(["thing instances", "mean", "median", "min", "max"], counts)]
        lines += [f"full image / crop ratio (means): {s['full_to_crop_ratio']:.2f}", ""]
        rows = [
            [
                name,
                "thing" if c["isthing"] else "stuff",
                str(c["instances"]),
                str(c["crowd_segments"]),
                f"{c['mean_area']:.0f}",
                str(c["images"]),
                f"{100 * c['pixel_fraction']:.1f}",
            ]
            for name, c in s["classes"].items()
        ]
        lines += [_table(["class", "kind", "instances", "crowd", "mean area", "images", "pixels %"], rows)]
        lines += [
            f"things cover {100 * s['thing_coverage']:.1f}% of the pixels, void {100 * s['void_fraction']:.1f}%"
        ]
    return "\n".join(lines)
