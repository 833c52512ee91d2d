"""Backbones: output maps and strides, normalisation choices, FREEZE_AT, weights by name, FPN levels."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ibs_study.models.backbone import FPN, BackboneConfig, build_backbone, freeze_batchnorm


def _norms(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(
    "cfg, channels",
    [
        (BackboneConfig.tiny(), [16, 32, 64, 128]),
        (BackboneConfig(name="tiny", norm="bn", freeze_at=0, tiny_width=8), [8, 16, 32, 64]),
        (BackboneConfig(name="resnet18"), [64, 128, 256, 512]),
        (BackboneConfig(name="resnet50"), [256, 512, 1024, 2048]),
    ],
)
def test_maps_have_the_declared_channels_and_strides(cfg, channels):
    backbone = build_backbone(cfg)
    images = torch.randn(2, 3, 64, 96)
    features = backbone(images)
    assert list(features) == ["res2", "res3", "res4", "res5"]
    assert backbone.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert [backbone.out_channels[k] for k in features] == channels
    for name, feature in features.items():
        stride = backbone.strides[name]
        assert tuple(feature.shape) == (2, backbone.out_channels[name], 64 // stride, 96 // stride)


def test_frozen_bn_and_freeze_at_two_stop_stem_and_res2():
    backbone = build_backbone(BackboneConfig(name="resnet18", norm="frozen_bn", freeze_at=2))
    assert not _norms(backbone, nn.BatchNorm2d) and len(_norms(backbone, FrozenBatchNorm2d)) == 20
    assert all(not p.requires_grad for unit in (backbone.stem, backbone.res2) for p in unit.parameters())
    assert all(p.requires_grad for unit in (backbone.res3, backbone.res5) for p in unit.parameters())
    out = backbone(torch.randn(1, 3, 64, 64))
    sum(f.sum() for f in out.values()).backward()
    assert backbone.stem[0].weight.grad is None and backbone.res2[0].conv1.weight.grad is None
    assert backbone.res3[0].conv1.weight.grad.abs().sum() > 0


def test_freeze_at_with_trainable_bn_freezes_only_the_frozen_stages_norms():
    backbone = build_backbone(BackboneConfig(name="resnet18", norm="bn", freeze_at=2))
    assert isinstance(backbone.stem[1], FrozenBatchNorm2d)
    assert isinstance(backbone.res2[0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.res3[0].bn1, nn.BatchNorm2d)
    # stem (1 norm) + res2 (2 blocks x 2 norms) frozen, the remaining 15 stay batch norms
    assert len(_norms(backbone, FrozenBatchNorm2d)) == 5 and len(_norms(backbone, nn.BatchNorm2d)) == 15


@pytest.mark.parametrize("freeze_at, trainable_units", [(0, 5), (1, 4), (3, 2), (5, 0)])
def test_freeze_at_counts_stem_then_stages(freeze_at, trainable_units):
    backbone = build_backbone(BackboneConfig(name="tiny", norm="gn", freeze_at=freeze_at))
    units = backbone.stem_and_stages()
    trainable = [all(p.requires_grad for p in unit.parameters()) for unit in units]
    frozen = [not any(p.requires_grad for p in unit.parameters()) for unit in units]
    assert trainable == [False] * (5 - trainable_units) + [True] * trainable_units
    assert frozen == [True] * (5 - trainable_units) + [False] * trainable_units


def test_freeze_batchnorm_keeps_the_learned_statistics():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    block.train()
    for _ in range(3):
        block(torch.randn(4, 3, 10, 10) * 3 + 1)
    with torch.no_grad():
        block[1].weight.uniform_(0.5, 2.0)
        block[1].bias.uniform_(-1.0, 1.0)
    block.eval()
    x = torch.randn(2, 3, 10, 10)
    expected = block(x)
    frozen = freeze_batchnorm(block)
    assert isinstance(frozen[1], FrozenBatchNorm2d)
    torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-5)


def test_sync_bn_runs_on_cpu_without_a_process_group():
    backbone = build_backbone(BackboneConfig(name="tiny", norm="sync_bn", freeze_at=0))
    assert len(_norms(backbone, nn.SyncBatchNorm)) == 9
    backbone.train()
    out = backbone(torch.randn(2, 3, 32, 32))
    assert out["res5"].shape == (2, 128, 1, 1)


def test_named_weights_are_resolved_and_loaded_into_frozen_bn(monkeypatch):
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.bn1.running_mean.fill_(0.25)
        reference.conv1.weight.fill_(0.5)
    calls = []

    def fake_state_dict(self, *args, **kwargs):  # stands in for the download
        calls.append(self.name)
        return reference.state_dict()

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", fake_state_dict)
    backbone = build_backbone(BackboneConfig(name="resnet18", weights="IMAGENET1K_V1"))
    assert calls == ["IMAGENET1K_V1"]
    assert torch.all(backbone.stem[0].weight == 0.5)
    assert isinstance(backbone.stem[1], FrozenBatchNorm2d) and torch.all(
        backbone.stem[1].running_mean == 0.25
    )


def test_bad_configurations_name_the_field():
    with pytest.raises(ValueError, match="unknown torchvision weights 'IMAGENET_V9'"):
        build_backbone(BackboneConfig(name="resnet50", weights="IMAGENET_V9"))
    with pytest.raises(ValueError, match="BackboneConfig.name"):
        BackboneConfig(name="resnet101")
    with pytest.raises(ValueError, match="BackboneConfig.norm"):
        BackboneConfig(norm="ln")
    with pytest.raises(ValueError, match="freeze_at"):
        BackboneConfig(freeze_at=6)
    with pytest.raises(ValueError, match="tiny backbone has no pretrained"):
        BackboneConfig(name="tiny", weights="IMAGENET1K_V1")


def test_fpn_levels_strides_and_extra_levels():
    backbone = build_backbone(BackboneConfig.tiny())
    features = backbone(torch.randn(1, 3, 256, 384))
    fpn = FPN(backbone.out_channels, out_channels=24)
    pyramid = fpn(features)
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert fpn.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    for name, level in pyramid.items():
        assert tuple(level.shape) == (1, 24, 256 // fpn.strides[name], 384 // fpn.strides[name])
    plain = FPN(backbone.out_channels, out_channels=24, extra_levels=False)
    assert list(plain(features)) == ["p2", "p3", "p4", "p5"]
