"""Speed of panoptic scoring on 1024 x 2048 PNG pairs: ibs_study vs panopticapi-lite, hotcoco, torchmetrics.

Writes a COCO-panoptic ground truth and predictions, either (``--generator project``) rendered
by ``ibs_study.data.synthetic.render_image`` (street scenes, ~40-55 segments per image, crowd in
about a third of the images) and perturbed by ``tests/fixtures/simulate.py``
(merged instances, splits, shifted boundaries, drops, wrong classes; every pixel labelled), or
(``--generator pillow``) drawn by an independent generator written here with Pillow and saved
with Pillow's default settings (33-40 segments, crowd and void present). Then it times, in
one run on the same files, in process on the first ``--images`` images:

* ``ibs_study`` ``evaluate_panoptic_folders`` with 1 and 2 worker threads (time measured
  inside the call: JSONs, PNG decoding, computing);
* panopticapi-lite on one core (its per-core function over all images, in a fresh process),
  with numpy's default CPU dispatch and with its AVX-512 paths off (numpy's AVX-512 sort is
  several times slower on panopticapi's runs of equal ids on some CPUs; the faster of the
  two is the reference for the ratios), and as ``pq_compute`` (a process per CPU core, AVX-512
  off);
* hotcoco ``pq_compute`` with its default threads, and with one thread (a subprocess with
  ``RAYON_NUM_THREADS=1``, timed inside it);
* torchmetrics ``PanopticQuality`` on the first few images only (seconds per image). It has no
  crowd, so crowd regions are void for it and, on those images, for the ibs_study
  comparison;
* the PNG-decoding floor: ``decode_id_png`` of every GT and prediction PNG, in one thread
  and in two, and libpng (torchvision's op) in one thread for comparison; ``read_id_runs``
  (what scoring reads: the runs of constant id, no id map) in one thread and in two; and the
  computing alone: ``PanopticEvaluator.process`` on decoded maps.

With ``--command-line 5,40,500`` it also times fresh processes as users run them (wall
clock, imports and start-up included) on the first 5, 40 and 500 images: ``ibs-study score``
(default, ``--workers 1``, ``--workers 2``), hotcoco's ``PanopticEval`` (default threads and
``RAYON_NUM_THREADS=1``) and panopticapi-lite's ``pq_compute``, then prints the targets (wall
time against hotcoco's at each size, ``--workers 2`` against 1, the first decode of a fresh
process) as met or not.

Each method runs ``--repeats`` times and its fastest run counts (the machine is shared).
Prints per-image times, speed-ups over single-core panopticapi and the PQ each tool got.

    .venv/bin/python benchmarks/metrics_speed.py --images 50 --torchmetrics-images 2
    .venv/bin/python benchmarks/metrics_speed.py --generator pillow --dir /tmp/metrics500 \
        --images 40 --torchmetrics-images 0 --repeats 2 --command-line 5,40,500
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torchvision.io  # noqa: F401  (registers torch.ops.image: libpng, for comparison)
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

import ibs_study
from ibs_study.data.panoptic import (
    ImageRecord,
    Segment,
    id_to_rgb,
    load_panoptic_json,
    read_id_runs,
    write_panoptic_json,
)
from ibs_study.data.synthetic import SYNTHETIC_CATEGORIES, render_image
from ibs_study.metrics.io import decode_id_png
from ibs_study.metrics.panoptic import PanopticEvaluator, evaluate_panoptic_folders

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # the fixtures live in tests/, not in the package
from tests.fixtures.simulate import perturb_prediction  # noqa: E402

CATEGORIES = {c.id: c for c in SYNTHETIC_CATEGORIES}
GROUPS = (("all", "All"), ("things", "Things"), ("stuff", "Stuff"))


def _write_png(path: Path, id_map: np.ndarray, compress_level: int) -> None:
    Image.fromarray(id_to_rgb(id_map), mode="RGB").save(path, compress_level=compress_level)


def _generate_one(args: tuple[int, Path, int, int, int, int]) -> tuple[ImageRecord, ImageRecord]:
    index, root, height, width, seed, compress_level = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    sample = render_image(height, width, rng)
    pred, pred_segments = perturb_prediction(
        sample.id_map, sample.segments, CATEGORIES, rng, merge_prob=0.25, fill_void=True
    )
    name = f"{index:05d}.png"
    _write_png(root / "gt" / name, sample.id_map, compress_level)
    _write_png(root / "pred" / name, pred, compress_level)
    return (
        ImageRecord(index, name, width, height, name, sample.segments),
        ImageRecord(index, name, width, height, name, pred_segments),
    )


def generate(root: Path, num_images: int, height: int, width: int, seed: int, compress_level: int) -> tuple:
    """Write gt/ and pred/ PNG folders and their JSONs (integer image ids, as hotcoco needs)."""
    for side in ("gt", "pred"):
        (root / side).mkdir(parents=True, exist_ok=True)
    jobs = [(k, root, height, width, seed, compress_level) for k in range(num_images)]
    with Pool(min(2, os.cpu_count() or 1)) as pool:
        pairs = list(tqdm(pool.imap(_generate_one, jobs), total=num_images, desc="generating"))
    write_panoptic_json(root / "gt.json", [g for g, _ in pairs], SYNTHETIC_CATEGORIES)
    write_panoptic_json(root / "pred.json", [p for _, p in pairs], SYNTHETIC_CATEGORIES)
    return root / "gt.json", root / "gt", root / "pred.json", root / "pred"


# ----------------------------------------------------------------------------- an independent generator
# Scenes drawn with Pillow's ImageDraw and written by Pillow with its default settings, using
# nothing of ibs_study: stuff bands with jagged borders, 28-39 thing instances (ellipses and
# polygons, occluding each other), a void ego-vehicle region and void blobs, a crowd region in
# every other image. The prediction redraws the scene with errors: jittered borders, shifted
# and rescaled instances, dropped ones, wrong classes, merged pairs, false positives.

INDEPENDENT_STUFF = ((23, "sky"), (11, "building"), (21, "vegetation"), (8, "sidewalk"), (7, "road"))
INDEPENDENT_THINGS = ((24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (33, "bicycle"))


def _independent_categories() -> list[dict]:
    return [
        {"id": cid, "name": name, "isthing": isthing, "color": [cid, cid, cid], "supercategory": name}
        for group, isthing in ((INDEPENDENT_STUFF, 0), (INDEPENDENT_THINGS, 1))
        for cid, name in group
    ]


def _scene(height: int, width: int, rng: np.random.Generator) -> dict:
    """The shapes of one scene: band borders (knots), things (category, kind, centre, radii)."""
    knots = np.linspace(0, width, 17)
    levels = np.sort(rng.uniform(0.15, 0.85, size=len(INDEPENDENT_STUFF) - 1)) * height
    borders = [level + rng.normal(0, 0.03 * height, size=len(knots)) for level in levels]
    things = []
    for _ in range(int(rng.integers(28, 40))):
        radius = float(np.exp(rng.uniform(np.log(8), np.log(0.12 * height))))
        things.append(
            {
                "category": int(rng.choice([c for c, _ in INDEPENDENT_THINGS])),
                "polygon": bool(rng.random() < 0.5),
                "centre": (float(rng.uniform(0, width)), float(rng.uniform(0.35 * height, height))),
                "radii": (radius * float(rng.uniform(0.6, 1.6)), radius),
                "angles": np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(5, 9)))).tolist(),
            }
        )
    return {"knots": knots, "borders": borders, "things": things}


def _draw(scene: dict, height: int, width: int, ids: dict, crowd: tuple | None, void: bool) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a scene; ``ids[k]`` is the segment id of shape k (bands first)."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)

    def colour(segment_id: int) -> tuple[int, int, int]:
        return segment_id & 255, (segment_id >> 8) & 255, segment_id >> 16

    tops = [np.zeros_like(scene["knots"])] + list(scene["borders"])
    bottoms = list(scene["borders"]) + [np.full_like(scene["knots"], height)]
    for k, (top, bottom) in enumerate(zip(tops, bottoms)):
        outline = list(zip(scene["knots"], top)) + list(zip(scene["knots"][::-1], bottom[::-1]))
        draw.polygon(outline, fill=colour(ids[k]))
    for k, thing in enumerate(scene["things"], start=len(tops)):
        if k not in ids:
            continue
        (x, y), (rx, ry) = thing["centre"], thing["radii"]
        if thing["polygon"]:
            draw.polygon(
                [(x + rx * np.cos(a), y + ry * np.sin(a)) for a in thing["angles"]], fill=colour(ids[k])
            )
        else:
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour(ids[k]))
    if crowd is not None:
        box, segment_id = crowd
        draw.rectangle(box, fill=colour(segment_id))
    if void:
        draw.polygon(
            [
                (0.2 * width, height),
                (0.3 * width, 0.9 * height),
                (0.7 * width, 0.9 * height),
                (0.8 * width, height),
            ],
            fill=(0, 0, 0),
        )
        for k in range(5):
            x, y = (k + 0.5) * width / 5, 0.3 * height
            draw.ellipse([x - 12, y - 9, x + 12, y + 9], fill=(0, 0, 0))
    return np.asarray(image)


def _segments_info(rgb: np.ndarray, category_of: dict[int, int], crowd_id: int | None) -> list[dict]:
    """COCO-panoptic segments_info of a drawn map: area and tight box of every id present.

    ``category_of`` lists every id that may be present (void, 0, is never one).
    """
    height, width = rgb.shape[:2]
    ids = (
        rgb[..., 0].astype(np.int64)
        | (rgb[..., 1].astype(np.int64) << 8)
        | (rgb[..., 2].astype(np.int64) << 16)
    )
    known = np.array(sorted(category_of), dtype=np.int64)
    index = np.searchsorted(known, ids) + 1  # 1 + position among the known ids
    index[ids == 0] = 0
    slots = len(known) + 1
    area = np.bincount(index.ravel(), minlength=slots)
    rows = np.bincount((index + slots * np.arange(height)[:, None]).ravel(), minlength=slots * height)
    cols = np.bincount((index + slots * np.arange(width)[None, :]).ravel(), minlength=slots * width)
    rows, cols = rows.reshape(height, slots) > 0, cols.reshape(width, slots) > 0
    info = []
    for k, value in enumerate(known.tolist(), start=1):
        if area[k] == 0:
            continue
        ys, xs = np.flatnonzero(rows[:, k]), np.flatnonzero(cols[:, k])
        info.append(
            {
                "id": value,
                "category_id": category_of[value],
                "iscrowd": int(value == crowd_id),
                "area": int(area[k]),
                "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)],
            }
        )
    return info


def _fresh_ids(rng: np.random.Generator, count: int) -> list[int]:
    return (rng.choice(2**24 - 1, size=count, replace=False) + 1).tolist()


def _independent_pair(args: tuple[int, Path, int, int, int]) -> tuple[dict, dict]:
    """Write GT and prediction PNGs of image ``index``; return their annotations."""
    index, root, height, width, seed = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 24]))
    scene = _scene(height, width, rng)
    num_bands, things = len(INDEPENDENT_STUFF), scene["things"]
    shape_ids = _fresh_ids(rng, num_bands + len(things) + 1)
    gt_ids = dict(enumerate(shape_ids[:-1]))
    category_of = {gt_ids[k]: INDEPENDENT_STUFF[k][0] for k in range(num_bands)}
    category_of |= {gt_ids[num_bands + k]: thing["category"] for k, thing in enumerate(things)}
    crowd = None
    if index % 2 == 0:
        x, y = float(rng.uniform(0, 0.8 * width)), float(rng.uniform(0.5 * height, 0.8 * height))
        crowd = ((x, y, x + 0.15 * width, y + 0.1 * height), shape_ids[-1])
        category_of[shape_ids[-1]] = INDEPENDENT_THINGS[0][0]
    gt_rgb = _draw(scene, height, width, gt_ids, crowd, void=True)

    # the prediction: the same scene with errors, every shape under a new id
    pred_scene = {
        "knots": scene["knots"],
        "borders": [b + rng.normal(0, 6, size=len(b)) for b in scene["borders"]],
        "things": [],
    }
    pred_ids_list = _fresh_ids(rng, num_bands + len(things) + 3)
    pred_ids, pred_category = {}, {}
    for k in range(num_bands):
        pred_ids[k] = pred_ids_list[k]
        pred_category[pred_ids[k]] = INDEPENDENT_STUFF[k][0]
    thing_classes = [c for c, _ in INDEPENDENT_THINGS]
    fakes = [_scene(height, width, rng)["things"][0] for _ in range(3)]
    for k, thing in enumerate(things + fakes):
        shape = dict(thing)
        shape["centre"] = (thing["centre"][0] + rng.normal(0, 4), thing["centre"][1] + rng.normal(0, 4))
        shape["radii"] = tuple(r * rng.normal(1, 0.06) for r in thing["radii"])
        if rng.random() < 0.15:
            shape["category"] = int(rng.choice(thing_classes))
        pred_scene["things"].append(shape)
        slot = num_bands + k
        if rng.random() < 0.1:  # dropped
            continue
        previous = [s for s in range(num_bands, slot) if s in pred_ids]
        if previous and rng.random() < 0.1:  # merged with the previous instance
            pred_ids[slot] = pred_ids[previous[-1]]
            continue
        pred_ids[slot] = pred_ids_list[slot]
        pred_category[pred_ids[slot]] = shape["category"]
    pred_rgb = _draw(pred_scene, height, width, pred_ids, None, void=False)

    name = f"{index:05d}.png"
    Image.fromarray(gt_rgb).save(root / "gt" / name)  # Pillow's defaults: zlib level 6, adaptive filters
    Image.fromarray(pred_rgb).save(root / "pred" / name)
    gt_annotation = {
        "image_id": index,
        "file_name": name,
        "segments_info": _segments_info(gt_rgb, category_of, crowd and crowd[1]),
    }
    pred_annotation = {
        "image_id": index,
        "file_name": name,
        "segments_info": _segments_info(pred_rgb, pred_category, None),
    }
    return gt_annotation, pred_annotation


def generate_independent(root: Path, num_images: int, height: int, width: int, seed: int) -> tuple:
    """Write gt/ and pred/ PNG folders and their JSONs with the independent generator."""
    for side in ("gt", "pred"):
        (root / side).mkdir(parents=True, exist_ok=True)
    jobs = [(k, root, height, width, seed) for k in range(num_images)]
    with Pool(min(2, os.cpu_count() or 1)) as pool:
        pairs = list(tqdm(pool.imap(_independent_pair, jobs), total=num_images, desc="generating (Pillow)"))
    images = [
        {"id": k, "file_name": f"{k:05d}.png", "height": height, "width": width} for k in range(num_images)
    ]
    categories = _independent_categories()
    for side, entries in (("gt", [g for g, _ in pairs]), ("pred", [p for _, p in pairs])):
        data = {"images": images, "annotations": entries, "categories": categories}
        (root / f"{side}.json").write_text(json.dumps(data))
    return root / "gt.json", root / "gt", root / "pred.json", root / "pred"


def fixture(
    root: Path, generator: str, num_images: int, height: int, width: int, seed: int, level: int
) -> tuple:
    """The benchmark's files in ``root``: generated, or reused where ``root/fixture.json`` says
    they were generated with the same settings and at least ``num_images`` images (image k
    does not depend on how many there are; the callers take the first ``num_images``)."""
    settings = {"generator": generator, "height": height, "width": width, "seed": seed}
    if generator == "project":
        settings["compress_level"] = level
    stamp = root / "fixture.json"
    paths = (root / "gt.json", root / "gt", root / "pred.json", root / "pred")
    if stamp.is_file():
        found = json.loads(stamp.read_text())
        if found.pop("images") >= num_images and found == settings:
            print(f"reusing the image pairs in {root}")
            return paths
    if generator == "project":
        generate(root, num_images, height, width, seed, level)
    else:
        generate_independent(root, num_images, height, width, seed)
    stamp.write_text(json.dumps({**settings, "images": num_images}))
    return paths


def pq_table(results: dict, keys=GROUPS, ours: bool = True) -> dict:
    """{group: (pq, sq, rq, n)} from ibs_study (lower-case keys) or panopticapi-style results."""
    return {
        name: tuple(results[name if ours else ref][m] for m in ("pq", "sq", "rq", "n")) for name, ref in keys
    }


def max_difference(a: dict, b: dict) -> float:
    return max(abs(x - y) for name in a for x, y in zip(a[name][:3], b[name][:3]))


def time_ibs_study(paths: tuple, workers: int) -> tuple[float, dict]:
    results, _ = evaluate_panoptic_folders(*paths, workers=workers)
    return results["timing"]["total_s"], pq_table(results)


# argv: gt json, gt dir, pred json, pred dir. panopticapi's per-core function over all images, timed inside.
_PANOPTICAPI_SCRIPT = """
import contextlib, io, json, sys, time
from pathlib import Path
from panopticapi.evaluation import pq_compute_single_core
start = time.perf_counter()
gt = json.loads(Path(sys.argv[1]).read_text())
pred = {a["image_id"]: a for a in json.loads(Path(sys.argv[3]).read_text())["annotations"]}
categories = {c["id"]: c for c in gt["categories"]}
pairs = [(a, pred[a["image_id"]]) for a in gt["annotations"]]
with contextlib.redirect_stdout(io.StringIO()):
    stat = pq_compute_single_core(0, pairs, sys.argv[2], sys.argv[4], categories)
seconds = time.perf_counter() - start
results = {ref: stat.pq_average(categories, isthing=flag)[0]
           for ref, flag in (("All", None), ("Things", True), ("Stuff", False))}
print(json.dumps({"seconds": seconds, "results": results}))
"""

# numpy's AVX-512 sort (x86-simd-sort) is several times slower than its AVX2 sort on the
# long runs of equal ids that panopticapi's np.unique sorts, on some CPUs: the peer is timed
# both ways and its faster configuration is the reference.
NO_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"}


def _timed_script(script: str, paths: tuple, env_update: dict[str, str]) -> tuple[float, dict]:
    """Run a timing script in a fresh process; its last stdout line is {"seconds", "results"}."""
    run = subprocess.run(
        [sys.executable, "-c", script, *(str(p) for p in paths)],
        capture_output=True,
        text=True,
        env={**os.environ, **env_update},
        check=True,
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    return out["seconds"], pq_table(out["results"], ours=False)


def time_panopticapi_single_core(paths: tuple, avx512: bool) -> tuple[float, dict]:
    """panopticapi on one core, in a fresh process (``avx512=False``: numpy's AVX-512 paths off)."""
    return _timed_script(_PANOPTICAPI_SCRIPT, paths, {} if avx512 else NO_AVX512)


# argv: gt json, gt dir, pred json, pred dir. panopticapi's own multi-core entry point, timed inside.
_PANOPTICAPI_MULTICORE_SCRIPT = """
import contextlib, io, json, sys, time
from panopticapi.evaluation import pq_compute
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    results = pq_compute(sys.argv[1], sys.argv[3], sys.argv[2], sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, "results": results}))
"""


def time_panopticapi(paths: tuple) -> tuple[float, dict]:
    """panopticapi's ``pq_compute`` (a process per core), numpy's AVX-512 paths off."""
    return _timed_script(_PANOPTICAPI_MULTICORE_SCRIPT, paths, NO_AVX512)


# argv: gt json, gt dir, pred json, pred dir. hotcoco prints its table from Rust; the JSON line comes last.
_HOTCOCO_SCRIPT = """
import json, sys, time
from hotcoco.panoptic import pq_compute
start = time.perf_counter()
results = pq_compute(sys.argv[1], sys.argv[3], sys.argv[2], sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, "results": results}))
"""


def time_hotcoco(paths: tuple, threads: int | None) -> tuple[float, dict]:
    """hotcoco's pq_compute in a fresh process (``threads``: RAYON_NUM_THREADS, None = its default)."""
    return _timed_script(
        _HOTCOCO_SCRIPT, paths, {} if threads is None else {"RAYON_NUM_THREADS": str(threads)}
    )


def decode_with_libpng(path: Path) -> torch.Tensor:
    """libpng through torchvision's op, to (3, H, W) uint8: the decoder ``decode_id_png`` replaced."""
    return torch.ops.image.decode_png(torch.from_numpy(np.fromfile(path, dtype=np.uint8)), 0, False)


def time_decoding(paths: tuple, threads: int, decode=decode_id_png) -> float:
    gt_json, gt_dir, pred_json, pred_dir = paths
    files = [
        Path(folder) / annotation["file_name"]
        for json_path, folder in ((gt_json, gt_dir), (pred_json, pred_dir))
        for annotation in json.loads(Path(json_path).read_text())["annotations"]
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(decode, files):
            pass
    return time.perf_counter() - start


def time_compute_only(paths: tuple, num_images: int) -> float:
    """Seconds per image of ``PanopticEvaluator.process`` alone, on maps decoded beforehand."""
    gt = load_panoptic_json(paths[0])
    pred = {r.image_id: r for r in load_panoptic_json(paths[2], gt.categories).records}
    decoded = [
        (
            decode_id_png(Path(paths[1]) / g.png_name),
            g.segments,
            decode_id_png(Path(paths[3]) / g.png_name),
            pred[g.image_id].segments,
        )
        for g in gt.records[:num_images]
    ]
    evaluator = PanopticEvaluator(gt.categories)
    start = time.perf_counter()
    for case in decoded:
        evaluator.process(*case)
    return (time.perf_counter() - start) / len(decoded)


def _segments(annotation: dict) -> list[Segment]:
    return [Segment(s["id"], s["category_id"], s.get("iscrowd", 0)) for s in annotation["segments_info"]]


def _crowd_as_void(id_map: np.ndarray, segments: list[Segment]) -> tuple[np.ndarray, list[Segment]]:
    crowd = [s.id for s in segments if s.iscrowd]
    return np.where(np.isin(id_map, crowd), 0, id_map), [s for s in segments if not s.iscrowd]


def _torchmetrics_input(id_map: np.ndarray, segments: list[Segment]) -> torch.Tensor:
    """(1, H, W, 2) (category id, segment id); void gets category 0, which torchmetrics ignores."""
    ids = np.array([0] + [s.id for s in segments])
    categories = np.array([0] + [s.category_id for s in segments])
    order = np.argsort(ids)
    category = categories[order][np.searchsorted(ids[order], id_map)]
    return torch.from_numpy(np.stack([category, id_map.astype(np.int64)], axis=-1))[None]


def time_torchmetrics(paths: tuple, num_images: int) -> tuple[float, float, float]:
    """(seconds per image, torchmetrics PQ, ibs_study PQ) on the first images, crowd as void."""
    from torchmetrics.detection import PanopticQuality

    gt_json, gt_dir, pred_json, pred_dir = paths
    gt = json.loads(Path(gt_json).read_text())["annotations"][:num_images]
    pred = {a["image_id"]: a for a in json.loads(Path(pred_json).read_text())["annotations"]}
    metric = PanopticQuality(
        things={c.id for c in SYNTHETIC_CATEGORIES if c.isthing},
        stuffs={c.id for c in SYNTHETIC_CATEGORIES if not c.isthing},
    )
    evaluator = PanopticEvaluator(CATEGORIES, keep_records=False)
    seconds = 0.0
    for annotation in tqdm(gt, desc="torchmetrics"):
        gt_map, gt_segments = _crowd_as_void(
            decode_id_png(Path(gt_dir) / annotation["file_name"]).astype(np.int64), _segments(annotation)
        )
        prediction = pred[annotation["image_id"]]
        pred_map = decode_id_png(Path(pred_dir) / prediction["file_name"]).astype(np.int64)
        pred_segments = _segments(prediction)
        start = time.perf_counter()
        metric.update(_torchmetrics_input(pred_map, pred_segments), _torchmetrics_input(gt_map, gt_segments))
        seconds += time.perf_counter() - start
        evaluator.process(gt_map, gt_segments, pred_map, pred_segments)
    return seconds / len(gt), float(metric.compute()), evaluator.summarize()["all"]["pq"]


# ----------------------------------------------------------------------------- the command line


def subset(paths: tuple, num_images: int) -> tuple:
    """GT and prediction JSONs of the first ``num_images`` images, next to the full ones."""
    gt_json, gt_dir, pred_json, pred_dir = paths
    out = []
    for json_path in (gt_json, pred_json):
        data = json.loads(Path(json_path).read_text())
        kept = {a["image_id"] for a in data["annotations"][:num_images]}
        data["annotations"] = data["annotations"][:num_images]
        data["images"] = [image for image in data.get("images", []) if image["id"] in kept]
        target = Path(json_path).with_name(f"{Path(json_path).stem}_{num_images}.json")
        target.write_text(json.dumps(data))
        out.append(target)
    return out[0], gt_dir, out[1], pred_dir


# argv: gt json, gt dir, pred json, pred dir. What a user of hotcoco's Python API runs.
_HOTCOCO_COMMAND = """
import json, sys
from hotcoco.panoptic import PanopticEval
evaluation = PanopticEval(sys.argv[1], sys.argv[3], gt_folder=sys.argv[2], pred_folder=sys.argv[4])
evaluation.evaluate()
results = evaluation.results()
print(json.dumps({ref: results[ref] for ref in ("All", "Things", "Stuff")}))
"""

# argv: gt json, gt dir, pred json, pred dir. panopticapi's pq_compute (a process per core).
_PANOPTICAPI_COMMAND = """
import contextlib, io, json, sys
from panopticapi.evaluation import pq_compute
with contextlib.redirect_stdout(io.StringIO()):
    results = pq_compute(sys.argv[1], sys.argv[3], sys.argv[2], sys.argv[4])
print(json.dumps({ref: results[ref] for ref in ("All", "Things", "Stuff")}))
"""

# argv: a PNG. The first decode of a fresh process, loading the compiled kernel included.
_FIRST_DECODE = """
import sys, time
from ibs_study.metrics.io import decode_id_png
start = time.perf_counter()
decode_id_png(sys.argv[1])
print(time.perf_counter() - start, "numba imported:", "numba" in sys.modules)
"""


def _command_line_methods(paths: tuple, out: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """label -> (argv, environment changes) of each command timed, as its user runs it."""
    ibs_study = str(Path(sys.executable).with_name("ibs-study"))
    folders = ["--gt-json", str(paths[0]), "--gt-dir", str(paths[1])]
    folders += ["--pred-json", str(paths[2]), "--pred-dir", str(paths[3])]
    peer_args = [str(p) for p in paths]
    return {
        "ibs-study score": ([ibs_study, "score", *folders, "--json", str(out)], {}),
        "ibs-study score --workers 1": (
            [ibs_study, "score", *folders, "--workers", "1", "--json", str(out)],
            {},
        ),
        "ibs-study score --workers 2": (
            [ibs_study, "score", *folders, "--workers", "2", "--json", str(out)],
            {},
        ),
        "hotcoco PanopticEval, default threads": ([sys.executable, "-c", _HOTCOCO_COMMAND, *peer_args], {}),
        "hotcoco PanopticEval, 1 thread": (
            [sys.executable, "-c", _HOTCOCO_COMMAND, *peer_args],
            {"RAYON_NUM_THREADS": "1"},
        ),
        "panopticapi-lite pq_compute, numpy AVX-512 off": (
            [sys.executable, "-c", _PANOPTICAPI_COMMAND, *peer_args],
            NO_AVX512,
        ),
    }


def time_command_line(paths: tuple, repeats: int, scratch: Path) -> dict[str, tuple[float, dict]]:
    """label -> (fastest wall-clock seconds of a fresh process, its PQ table); the methods take
    turns within each repeat, so a burst of load on the machine hits them alike."""
    out = scratch / "ibs_study_metrics.json"
    methods = _command_line_methods(paths, out)
    best: dict[str, tuple[float, dict]] = {}
    for _ in range(repeats):
        for label, (argv, env_update) in methods.items():
            start = time.perf_counter()
            run = subprocess.run(
                argv, capture_output=True, text=True, env={**os.environ, **env_update}, check=True
            )
            seconds = time.perf_counter() - start
            if label.startswith("ibs-study"):
                table = pq_table(json.loads(out.read_text()))
            else:
                table = pq_table(json.loads(run.stdout.strip().splitlines()[-1]), ours=False)
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, table)
    return best


def first_decode_seconds(png: Path, repeats: int) -> float:
    """The fastest first decode of ``png`` in a fresh process (the kernel's library loaded)."""
    times = []
    for _ in range(repeats):
        run = subprocess.run(
            [sys.executable, "-c", _FIRST_DECODE, str(png)], capture_output=True, text=True, check=True
        )
        seconds, _, _, imported = run.stdout.split()
        if imported != "False":
            raise RuntimeError("the fresh process ran the numba kernel: build the native library first")
        times.append(float(seconds))
    return min(times)


# (images, the largest ratio of ibs-study score's wall time to hotcoco's, default threads)
TARGETS = ((5, 2.0), (40, 1.0), (500, 0.67))


def report_command_line(rows: dict[int, dict], first_decode: float) -> None:
    """Print the fresh-process table and the targets, met or not."""
    labels = list(next(iter(rows.values())))
    sizes = sorted(rows)
    print("\nFresh processes, wall clock (imports and start-up included), fastest run, seconds:\n")
    print("| command | " + " | ".join(f"{n} images" for n in sizes) + " | max abs PQ/SQ/RQ diff vs hotcoco |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for label in labels:
        diff = max(
            max_difference(rows[n][label][1], rows[n]["hotcoco PanopticEval, default threads"][1])
            for n in sizes
        )
        print(f"| {label} | " + " | ".join(f"{rows[n][label][0]:.2f}" for n in sizes) + f" | {diff:.1e} |")
    print("\n| target | ibs-study | hotcoco | ratio | limit | |")
    print("|---|---|---|---|---|---|")
    for n, limit in TARGETS:
        if n not in rows:
            continue
        ours, peer = rows[n]["ibs-study score"][0], rows[n]["hotcoco PanopticEval, default threads"][0]
        verdict = "met" if ours <= limit * peer else "NOT met"
        print(
            f"| {n} images, `ibs-study score` vs hotcoco | {ours:.2f} s | {peer:.2f} s | {ours / peer:.2f}× | ≤ {limit}× | {verdict} |"
        )
    if 40 in rows:
        one, two = rows[40]["ibs-study score --workers 1"][0], rows[40]["ibs-study score --workers 2"][0]
        verdict = "met" if two <= one else "NOT met"
        print(
            f"| 40 images, `--workers 2` vs `--workers 1` | {two:.2f} s | ({one:.2f} s) | {two / one:.2f}× | ≤ 1× | {verdict} |"
        )
    verdict = "met" if first_decode < 0.020 else "NOT met"
    print(
        f"| first decode in a fresh process (library loaded) | {1000 * first_decode:.1f} ms | | | < 20 ms | {verdict} |"
    )


def in_process_table(paths: tuple, n: int, args: argparse.Namespace) -> None:
    """Every tool on the same ``n`` images, each timing itself (JSONs, PNGs, computing)."""
    rows = []
    for label, timed in (
        ("decode PNGs only, 1 thread", lambda: (time_decoding(paths, 1), None)),
        ("decode PNGs only, 2 threads", lambda: (time_decoding(paths, 2), None)),
        (
            "decode PNGs with libpng, 1 thread",
            lambda: (time_decoding(paths, 1, decode_with_libpng), None),
        ),
        ("decode PNGs to runs (as score), 1 thread", lambda: (time_decoding(paths, 1, read_id_runs), None)),
        ("decode PNGs to runs (as score), 2 threads", lambda: (time_decoding(paths, 2, read_id_runs), None)),
        ("ibs_study, 1 worker thread", lambda: time_ibs_study(paths, 1)),
        ("ibs_study, 2 worker threads", lambda: time_ibs_study(paths, 2)),
        ("panopticapi-lite, 1 core", lambda: time_panopticapi_single_core(paths, avx512=True)),
        (
            "panopticapi-lite, 1 core, numpy AVX-512 off",
            lambda: time_panopticapi_single_core(paths, avx512=False),
        ),
        ("panopticapi-lite pq_compute (all cores), numpy AVX-512 off", lambda: time_panopticapi(paths)),
        ("hotcoco, default threads", lambda: time_hotcoco(paths, None)),
        ("hotcoco, 1 thread", lambda: time_hotcoco(paths, 1)),
    ):
        runs = [timed() for _ in range(args.repeats)]
        seconds, table = min(runs, key=lambda run: run[0])
        rows.append((label, seconds / n, table))
        print(f"  {label:42s} {1000 * seconds / n:8.1f} ms/image")
    # the reference: panopticapi on one core in its faster configuration on this machine
    label, single, reference = min(
        (row for row in rows if row[0].startswith("panopticapi-lite, 1 core")), key=lambda row: row[1]
    )
    print(f"\nreference for the ratios: {label}")
    print("\n| method | ms / image | vs panopticapi 1 core | PQ | SQ | RQ | max abs diff vs panopticapi |")
    print("|---|---|---|---|---|---|---|")
    for label, per_image, table in rows:
        if table is None:
            print(f"| {label} | {1000 * per_image:.1f} | {single / per_image:.1f}× | | | | |")
            continue
        pq, sq, rq, _ = table["all"]
        print(
            f"| {label} | {1000 * per_image:.1f} | {single / per_image:.1f}× | {100 * pq:.4f} | "
            f"{100 * sq:.4f} | {100 * rq:.4f} | {max_difference(table, reference):.1e} |"
        )
    compute = min(time_compute_only(paths, min(n, 10)) for _ in range(args.repeats))
    print(
        f"| ibs_study compute only (process() on decoded maps, {min(n, 10)} images) | {1000 * compute:.1f} | | | | | |"
    )
    if args.torchmetrics_images:
        per_image, tm_pq, our_pq = time_torchmetrics(paths, args.torchmetrics_images)
        print(
            f"| torchmetrics PanopticQuality ({args.torchmetrics_images} images, crowd as void) | "
            f"{1000 * per_image:.0f} | {single / per_image:.3f}× | {100 * tm_pq:.4f} "
            f"(ibs_study on the same input: {100 * our_pq:.4f}) | | | {abs(tm_pq - our_pq):.1e} vs ibs_study |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=50, help="image pairs of the in-process table (0: none)"
    )
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--torchmetrics-images", type=int, default=2, help="0 skips torchmetrics")
    parser.add_argument("--compress-level", type=int, default=6, help="PNG zlib level (Pillow's default: 6)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dir",
        default=None,
        help="keep the generated data here, and reuse it when generated with the same settings "
        "(default: a temporary folder)",
    )
    parser.add_argument(
        "--generator",
        choices=("project", "pillow"),
        default="project",
        help="project: ibs_study's renderer and simulated predictions, written at --compress-level; "
        "pillow: the independent scene generator, written by Pillow with its default settings",
    )
    parser.add_argument(
        "--command-line",
        default="",
        help="comma-separated image counts, e.g. 5,40,500: time fresh processes of each command "
        "on the first that many images and print the targets",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.command_line.split(",") if size]
    # an installed package has its bytecode compiled; a source checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module in every fresh process
    compileall.compile_dir(Path(ibs_study.__file__).parent, quiet=1)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.dir or scratch)
        total = max([args.images, *sizes])
        full = fixture(root, args.generator, total, args.height, args.width, args.seed, args.compress_level)
        written = "Pillow defaults" if args.generator == "pillow" else f"zlib level {args.compress_level}"
        print(
            f"\n{args.generator} generator, pairs of {args.height}x{args.width} PNGs ({written}), "
            f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
        )
        if args.images:
            in_process_table(subset(full, args.images), args.images, args)
        if sizes:
            rows = {}
            for size in tqdm(sizes, desc="command line"):
                rows[size] = time_command_line(subset(full, size), args.repeats, Path(scratch))
            first_png = Path(full[1]) / json.loads(Path(full[0]).read_text())["annotations"][0]["file_name"]
            report_command_line(rows, first_decode_seconds(first_png, args.repeats))


if __name__ == "__main__":
    main()
