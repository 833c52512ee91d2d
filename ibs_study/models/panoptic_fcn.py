"""Panoptic FCN (Li et al., CVPR 2021) as the IBS study uses it: kernels gathered at thing centres
and stuff regions, convolved with one high-resolution feature map.

Architecture (official ``panopticfcn/head.py``, ``panoptic_seg.py``; defaults from the
official Cityscapes config with the IBS paper's C = 256):

* backbone res2..res5 -> :class:`~ibs_study.models.backbone.FPN` P2..P7;
* a semantic FPN merges P2..P5 at stride 4 and the *feature encoder* (3 convs on it plus
  two coordinate channels) gives the features ``F`` (B, C, H/4, W/4), non-negative: every
  conv, the last included, is followed by a ReLU (``feature_activation: none`` drops the last
  one, so ``F`` is signed);
* on each head level P3..P7, shared across levels: the *position head* predicts
  thing-centre heatmaps (one channel per thing class) and stuff-region maps (one channel
  per region class: every class with ``stuff_all_classes``, as the Cityscapes config), the
  *kernel head* a kernel map (B, C_k, h, w);
* training: a thing assigned to a level gathers the kernels at the ``pos_num`` positions
  of its region with the highest predicted centre score; the scores, normalised to sum
  to 1 per thing, weight the dice losses of these kernels' masks (kept in the graph as
  in the official code). A region class present on a level gathers one kernel: the kernel
  map summed over its region divided by the level's pixel count (the official average
  pooling of the masked map). A 1x1 projection (one for things, one for stuff) maps
  kernels to embeddings ``E`` (N, C); masks are ``E · F``;
* inference: centre peaks (3x3 max-pool NMS of the heatmap averaged with its local mean),
  top-k and a score threshold per level give thing kernels; stuff kernels come from the
  region argmax of each level. Thing kernels of one class with cosine similarity above
  ``similarity_threshold`` are averaged (official kernel fusion), stuff kernels of one class
  are averaged; thing scores are rescored by their mask's mean probability; then
  :func:`~ibs_study.models.postprocess.paste_by_score`. Masks are upsampled to the input
  resolution as logits, chunk by chunk (the official code upsamples probabilities; the 0.5
  boundary can move by less than one stride-4 cell).

Losses (names as the official code): ``loss_pos_th`` (sigmoid focal loss on the Gaussian
centre targets, summed, divided by the number of (thing, level) assignments),
``loss_pos_st`` (sigmoid focal loss on the region targets, mean over pixels, summed over
classes and levels, divided by the batch size), ``loss_seg_th`` and ``loss_seg_st``
(squared-denominator dice, weighted by ``segment_weight``). Unlike the official code,
pixels the :class:`~ibs_study.data.batch.CropTarget` marks as ``ignore`` (void, crowd,
padding) do not count in any loss (centre peaks stay counted), and the kernel region of
a thing always holds its centre cell (so its top-k weights never all vanish). Group norm
keeps at least 8 channels per group in layers narrower than 256 (the tiny variant).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d, sigmoid_focal_loss

from ibs_study.data.batch import CropTarget
from ibs_study.data.datasets import DatasetMeta
from ibs_study.errors import DataError
from ibs_study.losses import squared_dice_loss
from ibs_study.models.backbone import FPN, build_backbone
from ibs_study.models.configs import HEAD_LEVELS, BackboneConfig, PanopticFCNConfig
from ibs_study.models.mask_ops import mask_logits
from ibs_study.models.output import UnifiedOutput
from ibs_study.models.panoptic_fcn_targets import CropTargets, TargetSpec, build_crop_targets
from ibs_study.models.postprocess import MaskLogits, PanopticPrediction, paste_by_score

logger = logging.getLogger(__name__)

__all__ = ["PanopticFCNConfig", "PanopticFCN", "HeadOutputs", "fuse_thing_kernels", "fuse_stuff_kernels"]

SEMANTIC_LEVELS = ("p2", "p3", "p4", "p5")


# ----------------------------------------------------------------------------- building blocks


def _group_norm(channels: int) -> nn.GroupNorm:
    """detectron2's "GN" (32 groups) for 256 channels; narrower layers keep >= 8 channels per group."""
    return nn.GroupNorm(math.gcd(32, max(channels // 8, 1)), channels)


def coordinate_channels(features: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w): row and column coordinates, each linearly spaced in [-1, 1]."""
    b, _, h, w = features.shape
    rows = torch.linspace(-1, 1, h, device=features.device, dtype=features.dtype)
    cols = torch.linspace(-1, 1, w, device=features.device, dtype=features.dtype)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))  # (2, h, w)
    return grid[None].expand(b, -1, -1, -1)


class ModulatedDeformConv(nn.Module):
    """3x3 modulated deformable conv (DCNv2) whose offsets and mask come from a plain conv.

    The offset conv starts at zero, so the layer starts as a plain conv with mask 0.5.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.offset_mask = nn.Conv2d(in_channels, 3 * 9, 3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets_and_mask = self.offset_mask(x)  # (B, 2 * 9 offsets + 9 mask values, h, w)
        return self.conv(x, offsets_and_mask[:, :18], offsets_and_mask[:, 18:].sigmoid())


class ConvStack(nn.Module):
    """``num_convs`` x (3x3 conv -> [group norm] -> ReLU), optionally on coordinate-augmented input.

    Args:
        in_channels: input channels (without the coordinate channels).
        channels: output channels of every conv.
        num_convs: number of convs.
        norm: group norm after each conv (the convs then have no bias).
        coord: append :func:`coordinate_channels` to the input.
        deform: modulated deformable convs instead of plain ones.
        last_relu: False: no ReLU after the last conv (signed output).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        *,
        norm: bool,
        coord: bool,
        deform: bool = False,
        last_relu: bool = True,
    ) -> None:
        super().__init__()
        self.coord = coord
        layers: list[nn.Module] = []
        for k in range(num_convs):
            conv_in = (in_channels + 2 * coord) if k == 0 else channels
            if deform:
                layers.append(ModulatedDeformConv(conv_in, channels, bias=not norm))
            else:
                layers.append(nn.Conv2d(conv_in, channels, 3, padding=1, bias=not norm))
            if norm:
                layers.append(_group_norm(channels))
            if last_relu or k < num_convs - 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coord:
            x = torch.cat([x, coordinate_channels(x)], dim=1)
        return self.layers(x)


class SemanticFPN(nn.Module):
    """Merges P2..P5 at stride 4 (Panoptic FPN's semantic head): per level, convs with GN and
    ReLU, each followed by a 2x bilinear upsampling until stride 4; the levels are summed.

    Args:
        in_channels: FPN channels. channels: output channels.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride_log2 in range(2, 2 + len(SEMANTIC_LEVELS)):
            ops: list[nn.Module] = []
            for k in range(max(1, stride_log2 - 2)):
                conv = nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                ops += [conv, _group_norm(channels), nn.ReLU(inplace=True)]
                if stride_log2 > 2:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))

    def forward(self, pyramid: dict[str, torch.Tensor]) -> torch.Tensor:
        """pyramid: FPN levels. Returns (B, channels, H/4, W/4)."""
        return sum(head(pyramid[name]) for head, name in zip(self.scale_heads, SEMANTIC_LEVELS, strict=True))


def _init_output_conv(conv: nn.Conv2d, bias: float) -> nn.Conv2d:
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


class PositionHead(nn.Module):
    """Thing-centre heatmaps (T channels) and stuff-region maps (R channels) of one level."""

    def __init__(self, cfg: PanopticFCNConfig, num_thing_classes: int, num_region_classes: int) -> None:
        super().__init__()
        self.tower = ConvStack(
            cfg.fpn_channels,
            cfg.position_channels,
            cfg.position_num_convs,
            norm=True,
            coord=False,
            deform=cfg.position_deform,
        )
        self.centers = _init_output_conv(
            nn.Conv2d(cfg.position_channels, num_thing_classes, 3, padding=1), cfg.center_bias
        )
        self.regions = _init_output_conv(
            nn.Conv2d(cfg.position_channels, num_region_classes, 3, padding=1), cfg.center_bias
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C_fpn, h, w). Returns centre logits (B, T, h, w) and region logits (B, R, h, w)."""
        x = self.tower(x)
        return self.centers(x), self.regions(x)


class KernelHead(nn.Module):
    """The kernel map (B, C_k, h, w) of one level: coordinate convs with GN, then a 3x3 output conv."""

    def __init__(self, cfg: PanopticFCNConfig) -> None:
        super().__init__()
        self.tower = ConvStack(
            cfg.fpn_channels, cfg.kernel_channels, cfg.kernel_num_convs, norm=True, coord=True
        )
        self.out = _init_output_conv(nn.Conv2d(cfg.kernel_channels, cfg.kernel_channels, 3, padding=1), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.tower(x))


def _embedding_projection(kernel_channels: int, encoder_channels: int) -> nn.Linear:
    """The official 1x1 ``embed_extractor`` conv, applied to gathered kernels."""
    projection = nn.Linear(kernel_channels, encoder_channels)
    nn.init.normal_(projection.weight, std=0.01)
    nn.init.zeros_(projection.bias)
    return projection


# --------------------------------------------------------------------------------- fusion


def fuse_thing_kernels(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    threshold: float,
    class_specific: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official thing kernel fusion: greedy grouping of similar kernels in descending score order.

    Kernel j joins the first kernel i <= j (in the given order) with cosine similarity
    >= ``threshold`` (and the same class when ``class_specific``); a kernel that joins an
    earlier one does not start a group; a group is the mean of the kernels that joined it.

    Args:
        embeddings: (N, C), sorted by descending score.
        scores: (N,). classes: (N,) int64.

    Returns:
        fused (M, C), their scores (M,) and classes (M,) (those of each group's first kernel).
    """
    if embeddings.shape[0] == 0:
        return embeddings, scores, classes
    unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1e-8)
    similar = (unit @ unit.T).triu() >= threshold  # (N, N): i <= j similar
    similar |= torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    if class_specific:
        similar &= classes[:, None] == classes[None, :]
    first = similar.float().cumsum(0) < 2  # (N, N): row i is at most the first similar row of column j
    starts = first.diagonal()  # kernels similar to no earlier kernel
    members = (similar[starts] & first[starts]).to(embeddings.dtype)  # (M, N)
    fused = members @ embeddings / members.sum(1, keepdim=True)
    return fused, scores[starts], classes[starts]


def fuse_stuff_kernels(
    embeddings: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average the kernels and scores of each class (official stuff kernel fusion).

    Args:
        embeddings: (N, C). scores: (N,). classes: (N,) int64.

    Returns:
        (M, C), (M,), (M,) with one row per class, classes ascending.
    """
    if classes.numel() == 0:
        return embeddings, scores, classes
    unique, inverse = torch.unique(classes, return_inverse=True)
    members = F.one_hot(inverse, len(unique)).T.to(embeddings.dtype)  # (M, N)
    count = members.sum(1, keepdim=True)
    return (
        members @ embeddings / count,
        (members @ scores[:, None].to(embeddings.dtype))[:, 0] / count[:, 0],
        unique,
    )


# ---------------------------------------------------------------------------------- model


@dataclass
class HeadOutputs:
    """Everything the heads predict for a batch.

    Attributes:
        features: (B, C, h4, w4) encoder features F over the padded input.
        center_logits: [L] (B, T, h_l, w_l).
        region_logits: [L] (B, R, h_l, w_l).
        kernel_maps: [L] (B, C_k, h_l, w_l).
        padded_size: (H_pad, W_pad) network input size.
        image_size: (H, W) before padding.
    """

    features: torch.Tensor
    center_logits: list[torch.Tensor]
    region_logits: list[torch.Tensor]
    kernel_maps: list[torch.Tensor]
    padded_size: tuple[int, int]
    image_size: tuple[int, int]


@dataclass
class _CropKernels:
    """Kernels gathered from one crop for training, and what supervises them.

    Attributes:
        thing_kernels: (N_th, C_k), rows ordered by level, thing, then rank k.
        thing_weights: (N_th,) normalised centre scores, summing to 1 per (thing, level).
        thing_groups: per level with things: (number of things, k, (things, h4, w4) target masks).
        thing_segments: (N_th,) int64 index of each row's thing among the crop target's segments.
        stuff_kernels: (N_st, C_k), one per (level, present region class).
        stuff_targets: (N_st, h4, w4) soft semantic targets.
    """

    thing_kernels: torch.Tensor
    thing_weights: torch.Tensor
    thing_groups: list[tuple[int, int, torch.Tensor]]
    thing_segments: torch.Tensor
    stuff_kernels: torch.Tensor
    stuff_targets: torch.Tensor


class PanopticFCN(nn.Module):
    """Panoptic FCN with the UnifiedOutput interface (see the module docstring).

    Args:
        cfg: model hyper-parameters.
        backbone: which backbone to build.
        meta: dataset categories; thing classes get centre channels, region classes
            (all, or only stuff) region channels.
    """

    # the config keys a thing prediction must pass (their thresholds), named when none does
    THING_THRESHOLD_KEYS = (
        "model.panoptic_fcn.center_threshold",
        "model.panoptic_fcn.rescored_score_threshold",
        "model.panoptic_fcn.thing_score_threshold",
    )

    def __init__(self, cfg: PanopticFCNConfig, backbone: BackboneConfig, meta: DatasetMeta) -> None:
        super().__init__()
        if not meta.thing_labels:
            raise DataError(f"PanopticFCN needs at least one thing class; the dataset {meta.name} has none")
        region_labels = list(range(meta.num_classes)) if cfg.stuff_all_classes else meta.stuff_labels
        if not region_labels:
            raise DataError(
                f"PanopticFCN with model.panoptic_fcn.stuff_all_classes=false needs a stuff class; the "
                f"dataset {meta.name} has none (set model.panoptic_fcn.stuff_all_classes=true)"
            )
        self.cfg = cfg
        self.meta = meta
        self.backbone = build_backbone(backbone)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels, extra_levels=True)
        self.semantic_fpn = SemanticFPN(cfg.fpn_channels, cfg.semantic_fpn_channels)
        self.encoder = ConvStack(
            cfg.semantic_fpn_channels,
            cfg.encoder_channels,
            cfg.encoder_num_convs,
            norm=False,
            coord=True,
            last_relu=cfg.feature_activation == "relu",
        )
        self.position_head = PositionHead(cfg, len(meta.thing_labels), len(region_labels))
        self.kernel_head = KernelHead(cfg)
        self.thing_projection = _embedding_projection(cfg.kernel_channels, cfg.encoder_channels)
        self.stuff_projection = _embedding_projection(cfg.kernel_channels, cfg.encoder_channels)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)
        # contiguous label of each heatmap channel / region channel
        self.register_buffer("thing_labels", torch.tensor(meta.thing_labels), persistent=False)
        self.register_buffer("region_labels", torch.tensor(region_labels), persistent=False)
        thing_index = torch.full((meta.num_classes,), -1, dtype=torch.int64)
        thing_index[meta.thing_labels] = torch.arange(len(meta.thing_labels))
        region_index = torch.full((meta.num_classes,), -1, dtype=torch.int64)
        region_index[region_labels] = torch.arange(len(region_labels))
        self.target_spec = TargetSpec(
            thing_index=thing_index,
            region_index=region_index,
            num_thing_classes=len(meta.thing_labels),
            num_region_classes=len(region_labels),
            scale_ranges=tuple(zip(cfg.instance_scale_low, cfg.instance_scale_high, strict=True)),
            min_overlap=cfg.min_overlap,
            gaussian_sigma=cfg.gaussian_sigma,
            max_things=cfg.tensor_dim,
        )

    @property
    def thing_embedding_bias(self) -> torch.Tensor:
        """(C,) the thing projection's bias: the part of every thing embedding that no kernel sets."""
        return self.thing_projection.bias

    # ------------------------------------------------------------------------- features

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> normalised and zero-padded to ``size_divisibility`` (float)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"PanopticFCN expects (B, 3, H, W) uint8 RGB images, got {tuple(images.shape)} {images.dtype}"
            )
        x = (images.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std
        d = self.cfg.size_divisibility
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % d, 0, -h % d))

    def forward_features(self, images: torch.Tensor) -> HeadOutputs:
        """Run backbone, FPN, encoder and heads on (B, 3, H, W) uint8 images."""
        x = self._preprocess(images)
        pyramid = self.fpn(self.backbone(x))
        features = self.encoder(self.semantic_fpn(pyramid))
        centers, regions, kernels = [], [], []
        for name in HEAD_LEVELS:
            center_logits, region_logits = self.position_head(pyramid[name])
            centers.append(center_logits)
            regions.append(region_logits)
            kernels.append(self.kernel_head(pyramid[name]))
        return HeadOutputs(features, centers, regions, kernels, tuple(x.shape[-2:]), tuple(images.shape[-2:]))

    # ------------------------------------------------------------------------- training

    def forward(self, images: torch.Tensor, targets: list[CropTarget]) -> UnifiedOutput:
        """Training forward pass.

        Args:
            images: (B, 3, H, W) uint8 RGB crops.
            targets: B crop targets at (H, W).

        Returns:
            :class:`UnifiedOutput` with one layer: ``embeddings[0][b]`` (N_b, C) are crop b's
            gathered kernels (things, then stuff), ``thing_index[0][b]`` the thing rows (all
            ``pos_num`` rows of every (thing, level) assignment), ``thing_weights[0][b]`` their
            normalised centre scores (summing to 1 per assignment), ``thing_segments[0][b]``
            the index of each thing row's segment in ``targets[b]``, ``features`` the encoder
            output, ``losses`` the four weighted terms.
        """
        if len(targets) != images.shape[0]:
            raise ValueError(f"PanopticFCN.forward: {images.shape[0]} images but {len(targets)} targets")
        heads = self.forward_features(images)
        level_sizes = [tuple(c.shape[-2:]) for c in heads.center_logits]
        encoder_size = tuple(heads.features.shape[-2:])
        device = heads.features.device
        crop_targets = [
            build_crop_targets(
                target.to(device), heads.padded_size, encoder_size, level_sizes, self.target_spec, b
            )
            for b, target in enumerate(targets)
        ]
        return self._training_output(heads, crop_targets)

    def _position_losses(
        self, heads: HeadOutputs, crop_targets: list[CropTargets]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums of the centre focal loss and of the per-class mean region focal loss over the batch."""
        alpha, gamma = self.cfg.focal_alpha, self.cfg.focal_gamma
        center_sum = heads.features.new_zeros(())
        region_sum = heads.features.new_zeros(())
        for level in range(len(HEAD_LEVELS)):
            heatmaps = torch.stack([t.heatmaps[level] for t in crop_targets])  # (B, T, h, w)
            region_scores = torch.stack([t.region_scores[level] for t in crop_targets])  # (B, R, h, w)
            valid = torch.stack([t.valid[level] for t in crop_targets])[:, None]  # (B, 1, h, w)
            center_logits = heads.center_logits[level].float()  # losses in fp32, also under autocast
            center = sigmoid_focal_loss(center_logits, heatmaps, alpha, gamma, reduction="none")
            center_sum = center_sum + (center * (valid | (heatmaps > 0))).sum()
            region_logits = heads.region_logits[level].float()
            region = sigmoid_focal_loss(region_logits, region_scores, alpha, gamma, reduction="none")
            region_sum = region_sum + (region * valid).flatten(2).mean(2).sum()
        return center_sum, region_sum

    def _gather_kernels(self, heads: HeadOutputs, targets: CropTargets, crop: int) -> _CropKernels:
        """Training kernels of one crop: top-``pos_num`` centre-score positions per thing and
        level, and one region kernel per region class present on a level."""
        thing_kernels, thing_weights, thing_groups, thing_segments = [], [], [], []
        stuff_kernels, stuff_targets = [], []
        for level in range(len(HEAD_LEVELS)):
            kernel_map = heads.kernel_maps[level][crop].flatten(1)  # (C_k, h * w)
            things = targets.things[level]
            if len(things):
                centers = heads.center_logits[level][crop][things.classes].float().sigmoid()  # (N, h, w)
                guidance = (centers * things.regions).flatten(1)
                k = min(self.cfg.pos_num, guidance.shape[1])
                scores, positions = guidance.topk(k, dim=1)  # (N, k)
                thing_kernels.append(kernel_map[:, positions.flatten()].T)  # (N * k, C_k)
                thing_weights.append((scores / scores.sum(1, keepdim=True).clamp(min=1e-8)).flatten())
                thing_groups.append((len(things), k, things.masks))
                thing_segments.append(things.segments.repeat_interleave(k))
            region_scores = targets.region_scores[level]  # (R, h, w)
            present = region_scores.flatten(1).sum(1) > 0
            if present.any():
                region_masks = (region_scores[present] > 0).flatten(1).to(kernel_map.dtype)  # (S, h * w)
                stuff_kernels.append(region_masks @ kernel_map.T / kernel_map.shape[1])  # (S, C_k)
                stuff_targets.append(targets.semantic[present])
        empty = heads.kernel_maps[0].new_zeros((0, self.cfg.kernel_channels))
        encoder_size = heads.features.shape[-2:]
        return _CropKernels(
            torch.cat(thing_kernels) if thing_kernels else empty,
            torch.cat(thing_weights) if thing_weights else empty.new_zeros(0),
            thing_groups,
            torch.cat(thing_segments) if thing_segments else empty.new_zeros(0, dtype=torch.int64),
            torch.cat(stuff_kernels) if stuff_kernels else empty,
            torch.cat(stuff_targets) if stuff_targets else empty.new_zeros((0, *encoder_size)),
        )

    def _training_output(self, heads: HeadOutputs, crop_targets: list[CropTargets]) -> UnifiedOutput:
        cfg = self.cfg
        center_sum, region_sum = self._position_losses(heads, crop_targets)
        # zero terms that keep both projections in the graph when a batch has no thing or no stuff
        thing_dice = sum(p.sum() for p in self.thing_projection.parameters()) * 0.0
        stuff_dice = sum(p.sum() for p in self.stuff_projection.parameters()) * 0.0
        num_things = num_stuff = 0
        embeddings, thing_index, thing_weights, thing_kernels, thing_segments = [], [], [], [], []
        for crop, targets in enumerate(crop_targets):
            kernels = self._gather_kernels(heads, targets, crop)
            thing_kernels.append(kernels.thing_kernels)
            thing_segments.append(kernels.thing_segments)
            thing_embeddings = self.thing_projection(kernels.thing_kernels)
            stuff_embeddings = self.stuff_projection(kernels.stuff_kernels)
            crop_embeddings = torch.cat([thing_embeddings, stuff_embeddings])  # (N_th + N_st, C)
            logits = mask_logits(crop_embeddings, heads.features[crop]).flatten(1).float()  # (N, h4 * w4)
            valid = targets.valid4.flatten()
            row = 0
            for count, k, masks in kernels.thing_groups:
                group_logits = logits[row : row + count * k].view(count, k, -1)
                dice = squared_dice_loss(group_logits, masks.flatten(1)[:, None], valid)  # (count, k)
                thing_dice = (
                    thing_dice + (dice.flatten() * kernels.thing_weights[row : row + count * k]).sum()
                )
                row += count * k
                num_things += count
            if len(stuff_embeddings):
                dice = squared_dice_loss(logits[row:], kernels.stuff_targets.flatten(1), valid)
                stuff_dice = stuff_dice + dice.sum()
                num_stuff += len(stuff_embeddings)
            embeddings.append(crop_embeddings)
            thing_index.append(torch.arange(row, device=logits.device))
            thing_weights.append(kernels.thing_weights)
        losses = {
            "loss_pos_th": cfg.position_weight * center_sum / max(num_things, 1),
            "loss_pos_st": cfg.position_weight * region_sum / len(crop_targets),
            "loss_seg_th": cfg.segment_weight * thing_dice / max(num_things, 1),
            "loss_seg_st": cfg.segment_weight * stuff_dice / max(num_stuff, 1),
        }
        projection = self.thing_projection

        def bias_detached_thing_embeddings(layer: int, crop: int) -> torch.Tensor:
            """(T_b, C): crop's thing embeddings, the projection's bias detached (same kernel call)."""
            return F.linear(thing_kernels[crop], projection.weight, projection.bias.detach())

        return UnifiedOutput(
            features=heads.features,
            embeddings=[embeddings],
            thing_index=[thing_index],
            thing_weights=[thing_weights],
            ibs_layers=(0,),
            mask_loss_weight=cfg.segment_weight,
            losses=losses,
            stats={"num_things": float(num_things), "num_stuff": float(num_stuff)},
            thing_segments=[thing_segments],
            bias_detached_thing_embeddings=bias_detached_thing_embeddings,
        )

    # ------------------------------------------------------------------------ inference

    def _thing_candidates(self, heads: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kernels (N, C_k), scores (N,) and thing-class indices (N,) at centre peaks of image 0,
        sorted by descending score."""
        kernels, scores, classes = [], [], []
        for level, pool_size in enumerate(self.cfg.center_pool_sizes):
            centers = heads.center_logits[level][:1].sigmoid()  # (1, T, h, w)
            local_mean = F.avg_pool2d(centers, pool_size, stride=1, padding=(pool_size - 1) // 2)
            centers = (centers + local_mean) / 2
            peaks = F.max_pool2d(centers, 3, stride=1, padding=1) == centers
            h, w = centers.shape[-2:]
            top = min(h * w, self.cfg.center_top_num // 2)
            level_scores, index = (centers * peaks).flatten().topk(top)
            keep = level_scores > self.cfg.center_threshold
            index = index[keep]
            kernel_map = heads.kernel_maps[level][0].flatten(1)  # (C_k, h * w)
            kernels.append(kernel_map[:, index % (h * w)].T)
            scores.append(level_scores[keep])
            classes.append(index // (h * w))
        scores, order = torch.cat(scores).sort(descending=True, stable=True)
        return torch.cat(kernels)[order], scores, torch.cat(classes)[order]

    def _stuff_candidates(self, heads: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kernels (N, C_k), scores (N,) and region-class indices (N,) of image 0's region argmax
        on every level (region mean probability above ``stuff_threshold``)."""
        kernels, scores, classes = [], [], []
        for level in range(len(HEAD_LEVELS)):
            probs = heads.region_logits[level][0].sigmoid()  # (R, h, w)
            winners = F.one_hot(probs.argmax(0), probs.shape[0]).permute(2, 0, 1).flatten(1)  # (R, h * w)
            area = winners.sum(1)
            mean_prob = (probs.flatten(1) * winners).sum(1) / area.clamp(min=1)
            keep = (area > 0) & (mean_prob > self.cfg.stuff_threshold)
            kernel_map = heads.kernel_maps[level][0].flatten(1)  # (C_k, h * w)
            kernels.append(winners[keep].to(kernel_map.dtype) @ kernel_map.T / kernel_map.shape[1])
            scores.append(mean_prob[keep])
            classes.append(torch.nonzero(keep).flatten())
        return torch.cat(kernels), torch.cat(scores), torch.cat(classes)

    def _rescore(self, embeddings: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(N,) mean probability inside each thing mask (prob > mask_threshold) at stride 4."""
        chunk = self.cfg.inference_chunk_size
        means = []
        for start in range(0, embeddings.shape[0], chunk):
            probs = mask_logits(embeddings[start : start + chunk], features).flatten(1).sigmoid()
            inside = probs > self.cfg.mask_threshold
            means.append((probs * inside).sum(1) / (inside.sum(1) + 1e-6))
        return torch.cat(means) if means else embeddings.new_zeros(0)

    @torch.inference_mode()
    def predict_panoptic(self, image: torch.Tensor, image_id: str | int = "") -> PanopticPrediction:
        """Panoptic prediction of one full image at its input resolution (call ``eval()`` first).

        Args:
            image: (3, H, W) uint8 RGB.
            image_id: copied into the prediction.
        """
        if image.ndim != 3:
            raise ValueError(
                f"predict_panoptic expects one (3, H, W) uint8 image, got shape {tuple(image.shape)}"
            )
        cfg = self.cfg
        heads = self.forward_features(image[None])
        features = heads.features[0]
        kernels, scores, classes = self._thing_candidates(heads)
        embeddings, scores, classes = fuse_thing_kernels(
            self.thing_projection(kernels),
            scores,
            classes,
            cfg.similarity_threshold,
            cfg.class_specific_fusion,
        )
        scores = scores * self._rescore(embeddings, features)
        scores, order = scores.sort(descending=True, stable=True)
        keep = order[scores >= cfg.rescored_score_threshold][: cfg.center_top_num]
        thing_embeddings, thing_scores, thing_classes = embeddings[keep], scores[: len(keep)], classes[keep]

        stuff_kernels, stuff_scores, stuff_classes = self._stuff_candidates(heads)
        stuff_embeddings, stuff_scores, stuff_classes = fuse_stuff_kernels(
            self.stuff_projection(stuff_kernels), stuff_scores, stuff_classes
        )
        chunk = cfg.inference_chunk_size
        geometry = dict(padded_size=heads.padded_size, image_size=heads.image_size)
        return paste_by_score(
            MaskLogits(mask_logits(thing_embeddings, features, chunk), **geometry),
            thing_scores,
            self.thing_labels[thing_classes],
            MaskLogits(mask_logits(stuff_embeddings, features, chunk), **geometry),
            stuff_scores,
            self.region_labels[stuff_classes],
            self.meta,
            mask_threshold=cfg.mask_threshold,
            overlap_threshold=cfg.overlap_threshold,
            score_threshold=cfg.thing_score_threshold,
            stuff_area_limit=cfg.stuff_area_limit,
            chunk_size=chunk,
            image_id=image_id,
        )
