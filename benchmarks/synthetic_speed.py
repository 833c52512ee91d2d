"""Speed of the synthetic dataset generator at the paper scale (1024 x 2048 images).

Generates N training images (no validation split) into a temporary folder with each given
number of worker processes and prints wall time, images per second and the load average
of the machine (the development machine is shared, so the load matters).

    .venv/bin/python benchmarks/synthetic_speed.py --images 100 --workers 2
    .venv/bin/python benchmarks/synthetic_speed.py --images 20 --workers 1 2

Target: 100 images of 1024 x 2048 in <= 60 s on 2 cores. Results go to docs/benchmarks.md
("Synthetic data generation").
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from ibs_study.data.synthetic import SYNTHETIC_SCALES, generate_dataset


def time_generation(images: int, workers: int, scale: str, seed: int) -> dict:
    """Generate ``images`` training images; returns wall seconds, images/s, CPU seconds and load."""
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        root = generate_dataset(
            Path(tmp) / "synthetic", scale=scale, num_train=images, num_val=0, seed=seed, workers=workers
        )
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "workers": workers,
        "images": images,
        "wall_s": wall,
        "images_per_s": images / wall,
        "cpu_s_per_image": cpu / images,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "mib": size / 2**20,
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="training images per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--scale", default="paper", choices=sorted(SYNTHETIC_SCALES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scale = SYNTHETIC_SCALES[args.scale]
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}; "
        f"scale {scale.name}: {scale.height}x{scale.width}, {args.images} images per run"
    )
    print(
        f"{'workers':>7} {'wall s':>8} {'images/s':>9} {'CPU s/img':>10} {'MiB':>7} {'load before/after':>18}"
    )
    for workers in args.workers:
        r = time_generation(args.images, workers, args.scale, args.seed)
        print(
            f"{r['workers']:>7} {r['wall_s']:>8.1f} {r['images_per_s']:>9.2f} {r['cpu_s_per_image']:>10.3f} "
            f"{r['mib']:>7.0f} {r['load_before']:>8.1f} / {r['load_after']:<8.1f}"
        )


if __name__ == "__main__":
    main()
