"""The Panoptic FCN optimiser: SGD with momentum, linear warm-up, poly decay, clipping by value."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ibs_study.config import OptimizerConfig
from ibs_study.engine.optim import build_optimizer, build_scheduler, clip_gradients, lr_factor

OFFICIAL = OptimizerConfig(name="sgd", lr=0.02, momentum=0.9, warmup_steps=31, warmup_factor=0.001)


def test_warm_up_rises_linearly_from_the_factor_then_poly_decays():
    decay = lambda step: (1 - step / 2000) ** 0.9  # noqa: E731
    assert lr_factor(0, 2000, OFFICIAL) == pytest.approx(0.001)
    halfway = 0.001 * (1 - 15 / 31) + 15 / 31
    assert lr_factor(15, 2000, OFFICIAL) == pytest.approx(halfway * decay(15))
    assert lr_factor(31, 2000, OFFICIAL) == pytest.approx(decay(31))
    assert lr_factor(2000, 2000, OFFICIAL) == 0.0


def test_sgd_schedule_sets_the_learning_rate_of_every_group():
    model = nn.Sequential(nn.Linear(3, 2), nn.GroupNorm(1, 2))
    optimizer = build_optimizer(model, OFFICIAL)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(group["momentum"] == 0.9 for group in optimizer.param_groups)
    scheduler = build_scheduler(optimizer, OFFICIAL, 2000)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02 * 0.001] * 2)
    for _ in range(31):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02 * (1 - 31 / 2000) ** 0.9] * 2)


def test_clip_by_value_caps_every_gradient_component():
    model = nn.Linear(2, 2)
    model.weight.grad = torch.tensor([[-12.0, 3.0], [4.5, 7.5]])
    model.bias.grad = torch.tensor([-5.0, 0.25])
    clip_gradients(model, OFFICIAL)
    assert model.weight.grad.tolist() == [[-5.0, 3.0], [4.5, 5.0]]
    assert model.bias.grad.tolist() == [-5.0, 0.25]
    model.weight.grad = torch.tensor([[-12.0, 3.0], [4.5, 7.5]])
    clip_gradients(model, OptimizerConfig(clip="none"))
    assert model.weight.grad[0, 0] == -12.0
