"""Process-group setup for ``torchrun``; a single process needs none of it.

Under ``torchrun --nproc_per_node=N -m ibs_study train ...`` every process trains on its
own local batch; IBS partners are drawn within that local batch (as the official code
does), and the paired sampler gives each rank its own pairs, so pairs never straddle
processes. Gradients are averaged by DistributedDataParallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ibs_study.errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "resolve_device", "barrier", "cleanup_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group if launched by torchrun (NCCL on CUDA, Gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(requested: str, info: DistInfo) -> torch.device:
    """``auto`` -> CUDA if available else CPU; under torchrun each rank takes its local GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r} asked for, but no CUDA device is available; use cpu (or auto)"
            )
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
