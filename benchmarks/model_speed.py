"""Training-step time and peak memory of the unified models.

Compares our Mask2Former-R50 with Hugging Face ``transformers``'
``Mask2FormerForUniversalSegmentation`` (randomly initialised, ResNet-50 backbone config, no
downloads) at the same input size, queries, decoder depth, points and batch, and reports our
Panoptic FCN R50 (no peer) when ``ibs_study.models.panoptic_fcn`` exists.

One step = zero the gradients, forward with the losses (matching included), backward of the
summed loss; no optimiser update. Each model runs in its own fresh process; the first
``--warmup`` steps are excluded and the median of ``--steps`` is reported. Peak memory: on a
CPU the highest resident set size sampled every 2 ms during the timed steps, minus the
resident size just before them (the step's working memory; the model and its gradients are
resident before); on a GPU ``torch.cuda.max_memory_allocated`` during the timed steps.

Example (what docs/benchmarks.md records)::

    .venv/bin/python benchmarks/model_speed.py --device cpu --batch 2 --height 256 --width 512
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

import numpy as np
import torch
from tqdm import tqdm

from ibs_study.data.batch import CropTarget
from ibs_study.data.datasets import CITYSCAPES_META

NUM_CLASSES = CITYSCAPES_META.num_classes


@dataclass
class BenchmarkSettings:
    device: str
    batch: int
    height: int
    width: int
    warmup: int
    steps: int
    threads: int
    segments: int
    seed: int = 0


@dataclass
class StepResult:
    """Timings of one model: wall and process-CPU seconds per timed step, memory in MB."""

    name: str
    wall_s: list[float]
    cpu_s: list[float]
    peak_mb: float
    baseline_mb: float
    parameters_m: float

    @property
    def median_wall_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def step_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


def synthetic_targets(settings: BenchmarkSettings) -> list[CropTarget]:
    """Per crop: horizontal stuff bands, then ``segments`` rectangles on top (non-overlapping id map)."""
    rng = np.random.default_rng(settings.seed)
    h, w = settings.height, settings.width
    thing_labels = CITYSCAPES_META.thing_labels
    stuff_labels = CITYSCAPES_META.stuff_labels
    targets = []
    for _ in range(settings.batch):
        ids = np.zeros((h, w), np.int64)
        labels = {}
        bands = np.sort(rng.choice(np.arange(1, h), size=3, replace=False))
        for k, (top, bottom) in enumerate(zip([0, *bands], [*bands, h])):
            ids[top:bottom] = k + 1
            labels[k + 1] = int(rng.choice(stuff_labels))
        for k in range(settings.segments):
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            sh, sw = int(rng.integers(8, h // 3)), int(rng.integers(8, w // 4))
            ids[y : y + sh, x : x + sw] = 100 + k
            labels[100 + k] = int(rng.choice(thing_labels))
        present = [i for i in labels if (ids == i).any()]
        masks = torch.from_numpy(np.stack([ids == i for i in present]))
        label_tensor = torch.tensor([labels[i] for i in present], dtype=torch.int64)
        targets.append(
            CropTarget(
                masks=masks,
                labels=label_tensor,
                is_thing=torch.from_numpy(CITYSCAPES_META.is_thing[label_tensor.numpy()]),
                ignore=torch.zeros(h, w, dtype=torch.bool),
                segment_ids=torch.tensor(present, dtype=torch.int64),
            )
        )
    return targets


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory between ``start`` and ``stop``: sampled RSS on a CPU, the allocator's peak on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self.baseline_mb = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.baseline_mb = _rss_mb()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        peak = self.baseline_mb
        while not self._stop.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.002)
        self.peak_mb = peak

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def build_ours_mask2former() -> torch.nn.Module:
    from ibs_study.models.backbone import BackboneConfig
    from ibs_study.models.mask2former import Mask2Former, Mask2FormerConfig

    # official Cityscapes config: SyncBN (plain BN in one process), FREEZE_AT 0
    return Mask2Former(
        Mask2FormerConfig(), BackboneConfig(name="resnet50", norm="bn", freeze_at=0), CITYSCAPES_META
    )


def build_ours_panoptic_fcn() -> torch.nn.Module:
    from ibs_study.models.backbone import BackboneConfig
    from ibs_study.models.panoptic_fcn import PanopticFCN, PanopticFCNConfig

    return PanopticFCN(PanopticFCNConfig(), BackboneConfig(name="resnet50"), CITYSCAPES_META)


def build_transformers_mask2former() -> torch.nn.Module:
    from transformers import Mask2FormerConfig as HFConfig
    from transformers import Mask2FormerForUniversalSegmentation, ResNetConfig

    backbone = ResNetConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[256, 512, 1024, 2048],
        layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = HFConfig(
        backbone_config=backbone,
        num_labels=NUM_CLASSES,
        num_queries=100,
        decoder_layers=10,  # same meaning as ours: 9 layers + the query-only prediction
        encoder_layers=6,
        train_num_points=12544,
    )
    return Mask2FormerForUniversalSegmentation(config)


def ours_step(
    build: Callable[[], torch.nn.Module],
    images: torch.Tensor,
    targets: list[CropTarget],
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[], None]]:
    model = build().to(device).train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(images, targets)
        sum(out.losses.values()).backward()

    return model, step


def transformers_step(
    images: torch.Tensor, targets: list[CropTarget], device: torch.device
) -> tuple[torch.nn.Module, Callable[[], None]]:
    model = build_transformers_mask2former().to(device).train()
    mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)
    mask_labels = [t.masks.float() for t in targets]
    class_labels = [t.labels for t in targets]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        pixel_values = (images.float() - mean) / std
        model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss.backward()

    return model, step


STEPS: dict[str, Callable] = {
    "ours Mask2Former R50": lambda images, targets, device: ours_step(
        build_ours_mask2former, images, targets, device
    ),
    "transformers Mask2Former R50": transformers_step,
    "ours Panoptic FCN R50": lambda images, targets, device: ours_step(
        build_ours_panoptic_fcn, images, targets, device
    ),
}


def _worker(name: str, settings: BenchmarkSettings, connection: Connection) -> None:
    """Build one model, then answer "step" (one timed step) and "finish" (memory, parameters)."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    targets = [t.to(device) for t in synthetic_targets(settings)]
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch, 3, settings.height, settings.width)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    model, step = STEPS[name](images, targets, device)
    for _ in range(settings.warmup):
        step()
    memory = PeakMemory(device)
    memory.start()
    connection.send("ready")
    while connection.recv() == "step":
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        connection.send((time.perf_counter() - wall, time.process_time() - cpu))
    memory.stop()
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    connection.send((memory.peak_mb, memory.baseline_mb, parameters))


def run_interleaved(names: list[str], settings: BenchmarkSettings) -> list[StepResult]:
    """One fresh process per model; timed steps alternate between the models so that each sees
    the same machine load (the models never run at the same time)."""
    context = multiprocessing.get_context("spawn")
    workers = []
    for name in names:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(name, settings, child), daemon=True)
        process.start()
        if parent.recv() != "ready":  # builds and warms up one model at a time
            raise RuntimeError(f"{name}: worker failed to start")
        workers.append((name, process, parent))
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in tqdm(range(settings.steps), desc="timed steps"):
        for name, _, connection in workers:
            connection.send("step")
            timings[name].append(connection.recv())
    results = []
    for name, process, connection in workers:
        connection.send("finish")
        peak, baseline, parameters = connection.recv()
        process.join()
        wall = [t[0] for t in timings[name]]
        cpu = [t[1] for t in timings[name]]
        results.append(StepResult(name, wall, cpu, peak, baseline, parameters))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--batch", type=int, default=2, help="crops per step")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument(
        "--segments", type=int, default=15, help="thing rectangles per crop (plus 4 stuff bands)"
    )
    parser.add_argument("--skip-peer", action="store_true", help="do not run the transformers model")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    settings = BenchmarkSettings(
        args.device, args.batch, args.height, args.width, args.warmup, args.steps, args.threads, args.segments
    )
    names = ["ours Mask2Former R50"]
    if not args.skip_peer:
        names.append("transformers Mask2Former R50")
    if importlib.util.find_spec("ibs_study.models.panoptic_fcn") is not None:
        names.append("ours Panoptic FCN R50")
    else:
        print("ibs_study.models.panoptic_fcn not found: Panoptic FCN skipped")
    results = run_interleaved(names, settings)

    if settings.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(settings.device)
    else:
        machine = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    print(f"device {settings.device} ({machine}), {settings.threads} threads, torch {torch.__version__}")
    print(
        f"batch {settings.batch} x {settings.height}x{settings.width}, warm-up {settings.warmup}, median of {settings.steps}"
    )
    header = (
        f"{'model':30s} {'wall s':>8s} {'wall s/img':>10s} {'CPU s':>8s} {'step MB':>8s} {'params M':>9s}"
    )
    print(header)
    for r in results:
        print(
            f"{r.name:30s} {r.median_wall_s:8.2f} {r.median_wall_s / settings.batch:10.2f} "
            f"{r.median_cpu_s:8.2f} {r.step_mb:8.0f} {r.parameters_m:9.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"settings": asdict(settings), "machine": machine, "results": [asdict(r) for r in results]},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
