"""Backbones shared by the unified models: torchvision ResNet-18/50, a tiny CNN for CPU work, and the FPN.

A :class:`Backbone` maps normalised images to four feature maps ``res2..res5`` at strides
4, 8, 16 and 32. Panoptic FCN adds a :class:`FPN` (P2..P5 plus the extra P6/P7 levels);
Mask2Former feeds ``res2..res5`` to its own pixel decoder.

Normalisation and freezing follow detectron2: ``norm="frozen_bn"`` keeps batch-norm
statistics and affine parameters fixed, and ``freeze_at`` (detectron2's
``MODEL.BACKBONE.FREEZE_AT``) stops gradients through the stem (1) and the first
``freeze_at - 1`` residual stages; their normalisation layers become frozen as well.
"""

from __future__ import annotations

import abc
import logging
from collections import OrderedDict
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ibs_study.errors import ConfigError
from ibs_study.models.configs import BACKBONE_NAMES, NORMS, BackboneConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BackboneConfig",
    "Backbone",
    "ResNetBackbone",
    "TinyBackbone",
    "FPN",
    "build_backbone",
    "freeze_batchnorm",
    "BACKBONE_NAMES",
    "NORMS",
]

STAGES = ("res2", "res3", "res4", "res5")
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

NormLayer = Callable[[int], nn.Module]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels // 4) if channels >= 8 else 1, num_channels=channels)


def _norm_layer(norm: str) -> NormLayer:
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        return _group_norm
    return nn.BatchNorm2d  # "bn"; "sync_bn" converts these after construction


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a :class:`FrozenBatchNorm2d` with its statistics.

    Returns the converted module (a new object when ``module`` itself is a batch norm).
    """
    if isinstance(module, nn.BatchNorm2d | nn.SyncBatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.running_mean is not None:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = freeze_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


class Backbone(nn.Module, abc.ABC):
    """Base class: ``forward(images_normalised: (B, 3, H, W) float) -> {"res2": .., "res5": ..}``.

    Attributes:
        out_channels: channels of each output map.
        strides: stride of each output map relative to the input.
    """

    out_channels: dict[str, int]
    strides: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.strides = dict(STRIDES)

    @abc.abstractmethod
    def stem_and_stages(self) -> list[nn.Module]:
        """[stem, res2, res3, res4, res5]: the units FREEZE_AT counts."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, 3, H, W) normalised. Returns maps (B, C_k, H / s_k, W / s_k) for res2..res5."""
        stem, *stages = self.stem_and_stages()
        x = stem(images)
        features = {}
        for name, stage in zip(STAGES, stages, strict=True):
            x = stage(x)
            features[name] = x
        return features

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients through the first ``freeze_at`` units and freeze their normalisation."""
        units = self.stem_and_stages()
        for unit in units[:freeze_at]:
            for parameter in unit.parameters():
                parameter.requires_grad_(False)
            freeze_batchnorm(unit)


class ResNetBackbone(Backbone):
    """A torchvision ResNet trunk (no pooling or classifier).

    Args:
        depth: 18 or 50.
        weights: torchvision weight name, e.g. "IMAGENET1K_V1", or None.
        norm_layer: the normalisation layer the blocks are built with.
    """

    def __init__(self, depth: int, weights: str | None, norm_layer: NormLayer) -> None:
        super().__init__()
        builders = {
            18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, 1),
            50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights, 4),
        }
        if depth not in builders:
            raise ValueError(f"ResNetBackbone: depth must be 18 or 50, got {depth}")
        build, weights_enum, expansion = builders[depth]
        resolved = None
        if weights is not None:
            if weights not in weights_enum.__members__:
                raise ConfigError(
                    f"model.backbone.weights: unknown torchvision weights {weights!r} for resnet{depth}; "
                    f"choose one of {sorted(weights_enum.__members__)} or null"
                )
            resolved = weights_enum[weights]
            logger.info("loading torchvision weights %s for resnet%d", resolved, depth)
        try:
            net = build(weights=resolved, norm_layer=norm_layer)
        except OSError as err:  # only the weights are read from disk or the network
            raise ConfigError(
                f"model.backbone.weights={weights!r}: the torchvision weights are not in torch's cache "
                f"({torch.hub.get_dir()}/checkpoints) and cannot be downloaded ({err}); download them once "
                "with network access, or set model.backbone.weights=null (random initialisation)"
            ) from err
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.res2, self.res3, self.res4, self.res5 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = {
            name: base * expansion for name, base in zip(STAGES, (64, 128, 256, 512), strict=True)
        }

    def stem_and_stages(self) -> list[nn.Module]:
        return [self.stem, self.res2, self.res3, self.res4, self.res5]


def _conv_norm_relu(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """A small CNN with the ResNet interface, fast enough to train on a CPU.

    Stem: one 3x3 stride-2 conv. Each stage: a 3x3 stride-2 conv and a 3x3 conv, each
    followed by normalisation and ReLU.

    Args:
        width: channels of res2; res3..res5 have 2, 4 and 8 times as many.
        norm_layer: the normalisation layer.
    """

    def __init__(self, width: int, norm_layer: NormLayer) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = _conv_norm_relu(3, width, 2, norm_layer)
        stages = []
        in_channels = width
        for out_channels in widths:
            stages.append(
                nn.Sequential(
                    _conv_norm_relu(in_channels, out_channels, 2, norm_layer),
                    _conv_norm_relu(out_channels, out_channels, 1, norm_layer),
                )
            )
            in_channels = out_channels
        self.res2, self.res3, self.res4, self.res5 = stages
        self.out_channels = dict(zip(STAGES, widths, strict=True))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stem_and_stages(self) -> list[nn.Module]:
        return [self.stem, self.res2, self.res3, self.res4, self.res5]


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Build the backbone ``cfg`` names, with its normalisation and FREEZE_AT applied."""
    norm_layer = _norm_layer(cfg.norm)
    if cfg.name == "tiny":
        backbone: Backbone = TinyBackbone(cfg.tiny_width, norm_layer)
    else:
        backbone = ResNetBackbone(int(cfg.name.removeprefix("resnet")), cfg.weights, norm_layer)
    if cfg.norm == "sync_bn":
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    backbone.freeze(cfg.freeze_at)
    return backbone


class FPN(nn.Module):
    """Feature pyramid over res2..res5 (torchvision's), plus P6/P7 from P5 as Panoptic FCN uses.

    Args:
        in_channels: channels of res2..res5 (``Backbone.out_channels``).
        out_channels: channels of every pyramid level.
        extra_levels: add P6 (3x3 stride-2 conv on P5) and P7 (ReLU, then the same on P6).

    ``forward(features)`` returns ``{"p2": .., "p5": .., ["p6", "p7"]}`` with strides 4..128.
    """

    def __init__(
        self, in_channels: dict[str, int], out_channels: int = 256, extra_levels: bool = True
    ) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(
            [in_channels[name] for name in STAGES],
            out_channels,
            extra_blocks=LastLevelP6P7(out_channels, out_channels) if extra_levels else None,
        )
        self.out_channels = out_channels
        num_levels = 6 if extra_levels else 4
        self.level_names = [f"p{k}" for k in range(2, 2 + num_levels)]
        self.strides = {name: 2 ** (2 + k) for k, name in enumerate(self.level_names)}

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """features: res2..res5 maps. Returns (B, out_channels, H / s, W / s) per level."""
        pyramid = self.fpn(OrderedDict((name, features[name]) for name in STAGES))
        return dict(zip(self.level_names, pyramid.values(), strict=True))
