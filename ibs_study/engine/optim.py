"""Optimisers and schedules of the paper's two models.

* Panoptic FCN: SGD (momentum 0.9), weight decay 1e-4, poly decay (power 0.9), warm-up,
  gradient clipping by value (5.0).
* Mask2Former: AdamW, weight decay 0.05, backbone learning rate x 0.1, poly decay, no
  warm-up, full-model gradient-norm clipping (0.01).
"""

from __future__ import annotations

import torch
from torch import nn

from ibs_study.config import OptimizerConfig

__all__ = ["build_optimizer", "build_scheduler", "clip_gradients", "lr_factor"]

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Parameter groups: backbone vs rest (``backbone_lr_multiplier``), norms and biases
    with ``weight_decay_norm``; the model's backbone must be the attribute ``backbone``."""
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = id(param) in norm_ids or name.endswith(".bias")
        groups.setdefault((id(param) in backbone_ids, no_decay), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": cfg.lr * (cfg.backbone_lr_multiplier if in_backbone else 1.0),
            "weight_decay": cfg.weight_decay_norm if no_decay else cfg.weight_decay,
        }
        for (in_backbone, no_decay), params in sorted(groups.items())
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def lr_factor(step: int, max_steps: int, cfg: OptimizerConfig) -> float:
    """Learning-rate factor at ``step``: linear warm-up times poly decay ``(1 - step/max)^power``."""
    decay = (1.0 - min(step, max_steps) / max_steps) ** cfg.poly_power
    if step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        return decay * (cfg.warmup_factor * (1 - alpha) + alpha)
    return decay


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, max_steps: int):
    """Per-step LambdaLR of :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, max_steps, cfg))


def clip_gradients(model: nn.Module, cfg: OptimizerConfig) -> None:
    """Clip by value (Panoptic FCN) or by the global norm (Mask2Former), or not at all."""
    if cfg.clip == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.clip_value)
    elif cfg.clip == "norm":
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_value)
