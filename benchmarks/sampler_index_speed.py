"""Speed of building and loading the paired sampler's segment index at Cityscapes scale.

Writes a synthetic COCO-panoptic JSON (only the JSON: the index reads no PNG) of N images
of 1024 x 2048 with about S segments each (Cityscapes' 19 categories: a stuff segment per
present stuff class, thing instances with ids ``label * 1000 + k``, some crowd regions),
then times, with an empty cache, ``SegmentIndex.from_json`` (hash, parse, index, write
the cache) and, with the cache in place, the same call again (hash and load).

    .venv/bin/python benchmarks/sampler_index_speed.py --images 3000 --segments 60

Target: the cold build of 3,000 images takes <= 20 s on 2 cores. Results go to
docs/benchmarks.md ("Sampler index build").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ibs_study.data.datasets import CITYSCAPES_META
from ibs_study.data.panoptic import load_panoptic_json
from ibs_study.sampling import SegmentIndex

HEIGHT, WIDTH = 1024, 2048


def write_json(path: Path, num_images: int, segments_per_image: int, seed: int = 0) -> int:
    """Write the synthetic JSON; returns the number of segments written."""
    rng = np.random.default_rng(seed)
    stuff = [c for c in CITYSCAPES_META.categories if not c.isthing]
    things = [c for c in CITYSCAPES_META.categories if c.isthing]
    images, annotations, total = [], [], 0
    for i in range(num_images):
        image_id = f"city_{i:06d}_000019"
        present = rng.choice(len(stuff), size=int(rng.integers(6, len(stuff) + 1)), replace=False)
        segments = []
        for k in present:
            segments.append({"id": stuff[k].id, "category_id": stuff[k].id, "iscrowd": 0})
        instance_count: dict[int, int] = {}
        wanted = segments_per_image + int(rng.integers(-10, 11))
        while len(segments) < wanted:
            category = things[int(rng.integers(len(things)))]
            crowd = rng.random() < 0.05
            if crowd:
                seg_id = category.id  # a group region without instance id, as in Cityscapes
                if any(s["id"] == seg_id for s in segments):
                    continue
            else:
                seg_id = category.id * 1000 + instance_count.get(category.id, 0)
                instance_count[category.id] = instance_count.get(category.id, 0) + 1
            segments.append({"id": seg_id, "category_id": category.id, "iscrowd": int(crowd)})
        for seg in segments:
            w, h = int(rng.integers(4, 600)), int(rng.integers(4, 400))
            x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
            seg["bbox"] = [x, y, w, h]
            seg["area"] = int(w * h * rng.uniform(0.3, 0.9))
        total += len(segments)
        images.append(
            {"id": image_id, "file_name": f"{image_id}_leftImg8bit.png", "width": WIDTH, "height": HEIGHT}
        )
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}_gtFine_panoptic.png", "segments_info": segments}
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [c.to_json() for c in CITYSCAPES_META.categories],
    }
    path.write_text(json.dumps(data))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--segments", type=int, default=60, help="about this many segments per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "panoptic_train.json"
        num_segments = write_json(json_path, args.images, args.segments)
        size_mb = json_path.stat().st_size / 2**20
        cold, parse, build, warm = [], [], [], []
        for repeat in range(args.repeats):
            cache = Path(tmp) / f"cache{repeat}"
            start = time.perf_counter()
            built = SegmentIndex.from_json(json_path, CITYSCAPES_META, cache_dir=cache)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = SegmentIndex.from_json(json_path, CITYSCAPES_META, cache_dir=cache)
            warm.append(time.perf_counter() - start)
            start = time.perf_counter()
            records = load_panoptic_json(json_path, CITYSCAPES_META.by_id()).records
            parse.append(time.perf_counter() - start)
            start = time.perf_counter()
            SegmentIndex.build(records, CITYSCAPES_META)
            build.append(time.perf_counter() - start)
            assert np.array_equal(built.segment_id, loaded.segment_id)
        cache_mb = next((Path(tmp) / "cache0").glob("*.npz")).stat().st_size / 2**20

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(
        f"JSON: {args.images} images, {num_segments} segments ({num_segments / args.images:.1f} per image), "
        f"{size_mb:.1f} MiB; cache file {cache_mb:.1f} MiB; {built.num_classes} classes, "
        f"{len(built.segment_id)} non-crowd segments indexed"
    )
    print(f"median of {args.repeats}:")
    print(f"  cold build (hash + parse + index + write cache): {statistics.median(cold):6.2f} s")
    print(f"  JSON parse alone (load_panoptic_json):           {statistics.median(parse):6.2f} s")
    print(f"  index from parsed records (SegmentIndex.build):  {statistics.median(build):6.2f} s")
    print(f"  cached load (hash + read cache):                 {statistics.median(warm):6.2f} s")


if __name__ == "__main__":
    main()
