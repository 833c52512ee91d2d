"""Data-loader throughput: training batches per second for the random and the paired crop sampler.

Times ``build_train_loader`` (read PNGs, resize, crop, flip, build targets, collate) for a
number of batches after a warm-up, for each sampler and number of DataLoader workers.

    python benchmarks/loader_throughput.py                      # CPU scale: 256x512 images, 8 crops of 128x128
    python benchmarks/loader_throughput.py --preset-prefix synthetic_gpu_pfcn --batches 20   # 1024x2048, 16 crops of 512x1024
"""

from __future__ import annotations

import argparse
import time

from ibs_study.config import load_preset
from ibs_study.engine.data import open_split
from ibs_study.engine.train import train_augmentation
from ibs_study.sampling import build_train_loader


def throughput(
    preset: str, workers: int, batches: int, warmup: int, overrides: list[str]
) -> tuple[float, int]:
    """Batches per second and crops per batch."""
    cfg = load_preset(preset, overrides)
    dataset = open_split(cfg, cfg.data.train_split)
    loader = build_train_loader(
        dataset,
        dataset.meta,
        cfg.sampler,
        train_augmentation(cfg),
        batch_size=cfg.train.batch_size,
        seed=0,
        num_workers=workers,
        min_pixels=cfg.data.min_pixels,
    )
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start), cfg.train.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset-prefix", default="synthetic_pfcn", help="presets <prefix>_crop / <prefix>_crop_ibs"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    print(f"{'sampler':8s} {'workers':>7s} {'batches/s':>10s} {'crops/s':>8s}")
    for sampler, preset in (
        ("random", f"{args.preset_prefix}_crop"),
        ("paired", f"{args.preset_prefix}_crop_ibs"),
    ):
        for workers in args.workers:
            rate, crops = throughput(preset, workers, args.batches, args.warmup, args.overrides)
            print(f"{sampler:8s} {workers:7d} {rate:10.2f} {rate * crops:8.1f}")


if __name__ == "__main__":
    main()
