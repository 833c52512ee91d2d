"""CPU time of the training loader per step, with and without the decoded-image cache of
:class:`ibs_study.sampling.loader.CropDataset`, one thread, for the demo's three presets.

The loader's own plans of steps ``--warmup`` .. ``--warmup + --steps`` are cut by both datasets in
turn (step by step, alternating, so that a change in the machine's load hits both alike), after the
cached one has seen the plans of the first ``--warmup`` steps (as a training run has by then).
Both give the same crops (tests/sampling/test_sampling.py); only the decoding differs.

    python benchmarks/decoded_cache.py --set data.root=data/synthetic
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm.auto import tqdm

from ibs_study.config import load_preset
from ibs_study.engine.data import open_split
from ibs_study.engine.train import train_loader
from ibs_study.sampling.loader import CropDataset

PRESETS = ("synthetic_pfcn_full", "synthetic_pfcn_crop", "synthetic_pfcn_crop_ibs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--warmup", type=int, default=150, help="steps the cached dataset has seen")
    parser.add_argument("--steps", type=int, default=150, help="steps timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("preset | decoded every time (ms / step) | cached (ms / step)")
    for preset in PRESETS:
        cfg = load_preset(preset, args.set)
        loader = train_loader(cfg, open_split(cfg, cfg.data.train_split))
        crops = loader.dataset
        datasets = {
            "plain": CropDataset(crops.dataset, crops.meta, crops.min_pixels, cache_bytes=0),
            "cached": CropDataset(crops.dataset, crops.meta, crops.min_pixels),
        }
        for step in range(args.warmup):
            for plan in loader.batch_sampler.plans(step):
                datasets["cached"][plan]
        seconds = dict.fromkeys(datasets, 0.0)
        for step in tqdm(range(args.warmup, args.warmup + args.steps), desc=preset, leave=False):
            plans = loader.batch_sampler.plans(step)
            for name, dataset in datasets.items():
                start = time.process_time()
                loader.collate_fn([dataset[plan] for plan in plans])
                seconds[name] += time.process_time() - start
        print(
            f"{preset} | {1000 * seconds['plain'] / args.steps:.1f} | {1000 * seconds['cached'] / args.steps:.1f}"
        )


if __name__ == "__main__":
    main()
