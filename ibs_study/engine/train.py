"""Training: one readable loop for one process (CPU or one GPU) or each torchrun process.

Recipe of :func:`train`:

1. set the torch threads (``train.threads``), join the process group (torchrun), pick the
   device and its float32 matmul precision;
2. lock and prepare the run directory (config, environment; refuses to overwrite);
3. open the training split (a missing synthetic dataset is generated first);
4. build the model, optimiser, poly schedule and AMP scaler;
5. resume from the newest checkpoint that loads if asked (model, optimiser, schedule, scaler, RNG);
6. loop over steps: batch -> model's own losses + lambda * IBS -> backward -> clip -> step;
   log every ``train.log_every`` steps to ``log.jsonl`` and TensorBoard, checkpoint every
   ``train.checkpoint_every`` steps and at the end.

A loss that is NaN or infinite stops the run with :class:`FloatingPointError` naming the
step and the term; the last checkpoint on disk is the last good state. A start that fails
before it has written a checkpoint (nothing to resume from) leaves the run directory as it found
it (:class:`~ibs_study.engine.run_dir.RunStart`), so the same command can run again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ibs_study.atomic import write_text_atomic
from ibs_study.config import ExperimentConfig, config_to_dict
from ibs_study.data.batch import Batch
from ibs_study.data.datasets import PanopticDataset
from ibs_study.data.transforms import TrainAugmentation
from ibs_study.engine.checkpoint import (
    latest_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from ibs_study.engine.checks import warn_if_crop_exceeds_images
from ibs_study.engine.data import open_split
from ibs_study.engine.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from ibs_study.engine.optim import build_optimizer, build_scheduler, clip_gradients
from ibs_study.engine.run_dir import RunDirError, RunStart
from ibs_study.losses import assign_partners, shared_thing_class_fraction, weighted_ibs_loss
from ibs_study.models.build import build_model
from ibs_study.sampling import build_train_loader

logger = logging.getLogger(__name__)

__all__ = [
    "train",
    "train_step",
    "step_partner_index",
    "train_loader",
    "TrainResult",
    "step_generator",
    "local_batch_size",
    "train_augmentation",
    "set_threads",
]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    seconds: float
    is_main: bool = True


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The torch generator of one step (IBS partners): a pure function of (seed, rank, step)."""
    mixed = np.random.SeedSequence([seed, rank, step, 0x1B5]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(mixed))


def local_batch_size(cfg: ExperimentConfig, info: DistInfo) -> int:
    """Crops per process: ``train.batch_size`` (the global batch) split over the processes."""
    batch, world = cfg.train.batch_size, info.world_size
    if batch % world:
        raise ValueError(f"train.batch_size={batch} is not divisible by the {world} torchrun processes")
    local = batch // world
    if cfg.sampler.kind == "paired" and local % 2:
        raise ValueError(
            f"train.batch_size={batch} over {world} processes gives {local} crops per process; "
            "paired sampling needs an even number per process"
        )
    return local


def train_augmentation(cfg: ExperimentConfig) -> TrainAugmentation:
    data = cfg.data
    return TrainAugmentation(
        resize_mode=data.resize_mode,
        scale_range=data.scale_range,
        short_edges=data.short_edges,
        max_size=data.max_size,
        crop_size=data.crop_size,
        flip_prob=data.flip_prob,
    )


def train_loader(
    cfg: ExperimentConfig,
    dataset: PanopticDataset,
    *,
    start_step: int = 0,
    info: DistInfo | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """The training batches of ``cfg`` over ``dataset`` (:func:`~ibs_study.sampling.build_train_loader`),
    from ``start_step`` on: process ``info``'s local batch (one process when None), crops
    augmented as ``train_augmentation(cfg)``, loaded by ``num_workers`` worker processes."""
    info = info or DistInfo()
    if info.is_main:
        warn_if_crop_exceeds_images(cfg, dataset)
    return build_train_loader(
        dataset,
        dataset.meta,
        cfg.sampler,
        train_augmentation(cfg),
        batch_size=local_batch_size(cfg, info),
        seed=cfg.seed,
        start_step=start_step,
        num_workers=num_workers,
        rank=info.rank,
        world_size=info.world_size,
        min_pixels=cfg.data.min_pixels,
    )


def set_matmul_precision(cfg: ExperimentConfig, device: torch.device) -> None:
    """Apply ``train.float32_matmul_precision`` for this process when it trains on CUDA
    (process-wide, as ``torch.set_float32_matmul_precision``); leave the CPU untouched."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision(cfg.train.float32_matmul_precision)


def set_threads(cfg: ExperimentConfig) -> None:
    """Apply ``train.threads`` (torch's intra-op CPU threads, for this whole process); None
    leaves torch's default."""
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)


def step_partner_index(
    batch_size: int, cfg: ExperimentConfig, generator: torch.Generator
) -> torch.Tensor | None:
    """(B,) the IBS partner of every crop of a step (:func:`~ibs_study.losses.assign_partners`),
    or None for a single crop or when the IBS loss draws its partners per layer. It stays on
    the CPU, where the loss and the logged statistics read it, even when training on a GPU."""
    if batch_size < 2 or cfg.ibs.partner == "random_per_layer":
        return None
    return assign_partners(batch_size, cfg.ibs.partner, generator)


def train_step(
    model: nn.Module,
    batch: Batch,
    cfg: ExperimentConfig,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    step: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One optimiser step; returns every loss term and statistic as floats.

    Raises:
        FloatingPointError: a loss term is NaN or infinite (named, with the step).
    """
    device = batch.images.device
    partner_index = step_partner_index(len(batch), cfg, generator)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
        output = model(batch.images, batch.targets)
        losses = dict(output.losses)
        if cfg.ibs.enabled:
            losses.update(weighted_ibs_loss(output, partner_index, cfg.ibs, generator))
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(total) if scaler is not None else total).backward()
    # every term in one device-to-host copy, once the backward pass is queued (a copy per term,
    # before it, would make a GPU wait for the host between the forward and backward passes)
    read = torch.stack([value.detach().float() for value in [*losses.values(), total]]).tolist()
    values = dict(zip(losses, read[:-1]))
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad or not math.isfinite(read[-1]):
        raise FloatingPointError(
            f"step {step}: non-finite loss term(s) {bad or ['total']}; all terms: {values}. "
            "The run stopped before the optimiser step; the last checkpoint holds the last good state."
        )
    if scaler is not None:
        scaler.unscale_(optimizer)
        clip_gradients(model, cfg.optimizer)
        scaler.step(optimizer)
        scaler.update()
    else:
        clip_gradients(model, cfg.optimizer)
        optimizer.step()
    values["loss_total"] = read[-1]
    values.update(output.stats)
    if partner_index is not None:
        values["ibs_pairs_share_thing_class"] = shared_thing_class_fraction(batch.targets, partner_index)
    return values


class _RunLog:
    """``log.jsonl`` (one JSON object per logged step) plus TensorBoard scalars.

    On resume from step ``s``, records of steps after ``s`` (training that the resume
    rolls back and redoes) move to ``log.rolled_back.jsonl``, so ``log.jsonl`` holds
    each step once and nothing is lost.
    """

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        path = run_dir / "log.jsonl"
        if path.is_file():
            kept, rolled_back = [], []
            for line in _read_log_lines(path):
                (kept if json.loads(line)["step"] <= start_step else rolled_back).append(line + "\n")
            if rolled_back:
                old = run_dir / "log.rolled_back.jsonl"
                earlier = old.read_text() if old.is_file() else ""
                write_text_atomic(old, earlier + "".join(rolled_back))
            if "".join(kept) != path.read_text(errors="replace"):
                write_text_atomic(path, "".join(kept))
        self.file = open(path, "a")
        self.board = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        for name, value in values.items():
            self.board.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.board.close()


def _read_log_lines(path: Path) -> list[str]:
    """The records of ``log.jsonl``, one JSON line each; a blank or partial last line (a run
    killed while writing it) is dropped with a warning.

    Raises:
        RunDirError: a line before the last is not a JSON record.
    """
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            good = isinstance(record, dict) and isinstance(record.get("step"), int)
        except json.JSONDecodeError:
            good = False
        if good:
            records.append(line)
        elif number == len(lines) or not line.strip():
            logger.warning("%s: dropped line %d, %r (cut when the run was stopped)", path, number, line[:80])
        else:
            raise RunDirError(
                f"{path}: line {number} is not a JSON record with a step ({line[:60]!r}); "
                "repair or remove that line, then resume"
            )
    return records


def _checkpoint_state(model, optimizer, scheduler, scaler, cfg: ExperimentConfig, step: int) -> dict:
    unwrapped = model.module if hasattr(model, "module") else model
    return {
        "model": unwrapped.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step,
        "config": config_to_dict(cfg),
        "rng": rng_state(),
    }


def train(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    dataset: PanopticDataset | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir``; see the module docstring for the recipe.

    Args:
        cfg: resolved experiment config.
        run_dir: run directory (new, or existing with ``resume``).
        resume: continue from the newest checkpoint in ``run_dir`` that loads.
        force: allow resuming with a config that differs from the recorded one.
        progress: show a tqdm bar.
        dataset: training split already opened (default: from ``cfg.data``).

    Raises:
        RunDirError: see :class:`~ibs_study.engine.run_dir.RunStart` (a run directory in use,
            not empty, or of another config).
        CheckpointError: a resume whose checkpoints are all unreadable.
    """
    started = time.perf_counter()
    set_threads(cfg)
    device_kind = (
        "cuda"
        if cfg.train.device.startswith("cuda") or (cfg.train.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    info: DistInfo = init_distributed(device_kind)
    start: RunStart | None = None
    try:
        device = resolve_device(cfg.train.device, info)
        set_matmul_precision(cfg, device)
        run_dir = Path(run_dir)
        if info.is_main:
            start = RunStart(run_dir, cfg, device, resume=resume, force=force)
        barrier(info)
        torch.manual_seed(cfg.seed + info.rank)
        if dataset is None:
            if info.is_main:  # generates a missing synthetic dataset once, before any rank reads it
                dataset = open_split(cfg, cfg.data.train_split, prepare=True)
            barrier(info)
            if not info.is_main:
                dataset = open_split(cfg, cfg.data.train_split, prepare=False)

        model = build_model(cfg.model, dataset.meta).to(device)
        optimizer = build_optimizer(model, cfg.optimizer)
        scheduler = build_scheduler(optimizer, cfg.optimizer, cfg.train.max_steps)
        scaler = torch.amp.GradScaler("cuda") if cfg.train.amp and device.type == "cuda" else None
        start_step = 0
        if resume:
            loaded = load_latest_checkpoint(run_dir / "checkpoints", map_location=device)
            if loaded is not None:
                checkpoint_path, state = loaded
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if scaler is not None and state["scaler"] is not None:
                    scaler.load_state_dict(state["scaler"])
                restore_rng_state(state["rng"])
                start_step = int(state["step"])
                logger.info("resuming %s from %s (step %d)", run_dir, checkpoint_path.name, start_step)
            else:
                logger.info("resuming %s: no checkpoint yet, starting at step 0", run_dir)
        if info.enabled:
            model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        model.train()

        loader = train_loader(
            cfg, dataset, start_step=start_step, info=info, num_workers=cfg.data.num_workers
        )
        log = _RunLog(run_dir, enabled=info.is_main, start_step=start_step)
        last_checkpoint = latest_checkpoint(run_dir / "checkpoints")
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=start_step,
            desc=cfg.name,
            disable=not (progress and info.is_main),
        )
        step = start_step
        window_start = time.perf_counter()
        for batch in loader:
            if step >= cfg.train.max_steps:
                break
            values = train_step(
                model,
                batch.to(device),
                cfg,
                optimizer,
                scaler,
                step,
                step_generator(cfg.seed, info.rank, step),
            )
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                values["lr"] = optimizer.param_groups[0]["lr"]
                values["seconds_per_step"] = (time.perf_counter() - window_start) / cfg.train.log_every
                window_start = time.perf_counter()
                log.write(step, values)
                bar.set_postfix(loss=f"{values['loss_total']:.3f}")
            if info.is_main and (step % cfg.train.checkpoint_every == 0 or step == cfg.train.max_steps):
                state = _checkpoint_state(model, optimizer, scheduler, scaler, cfg, step)
                last_checkpoint = save_checkpoint(state, run_dir / "checkpoints", step)
                start.commit()  # from here on the run's files stay, for --resume
        bar.close()
        log.close()
        barrier(info)
        return TrainResult(run_dir, step, last_checkpoint, time.perf_counter() - started, info.is_main)
    except BaseException:
        if start is not None:
            start.close(failed=True)  # undoes a start that wrote no checkpoint
            start = None
        raise
    finally:
        if start is not None:
            start.close(failed=False)
        cleanup_distributed(info)
