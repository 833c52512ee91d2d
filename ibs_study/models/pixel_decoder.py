"""Mask2Former's pixel decoder: multi-scale deformable attention over res3..res5, FPN to stride 4.

Pure PyTorch (``F.grid_sample``), no custom CUDA operators. The structure follows the
official ``MSDeformAttnPixelDecoder``:

1. res5, res4, res3 are projected to ``conv_dim`` channels (1x1 conv + GroupNorm);
2. ``num_layers`` deformable encoder layers let every position of every level attend to
   ``num_points`` sampled positions per head on each of the three levels;
3. one FPN step per remaining finer level (res2 for stride-4 output): lateral 1x1 conv plus
   the bilinearly upsampled coarser map, then a 3x3 conv;
4. a 1x1 conv turns the finest map into the ``mask_features`` F of the unified product
   ``E · F``; the three encoder outputs (strides 32, 16, 8) feed the transformer decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sine_position_embedding",
    "multi_scale_deformable_attention",
    "MultiScaleDeformableAttention",
    "DeformableEncoderLayer",
    "MSDeformAttnPixelDecoder",
    "c2_xavier_fill",
]


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """detectron2's ``c2_xavier_fill``: kaiming-uniform (a=1) weights, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def sine_position_embedding(
    height: int, width: int, num_feats: int, device: torch.device, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR's normalised sine position embedding of an unpadded ``height x width`` map.

    Position ``(i, j)`` is encoded by ``y = (i + 1) / height * 2 pi`` and
    ``x = (j + 1) / width * 2 pi`` (the cumulative-sum form of the official code), each
    expanded over ``num_feats`` sin/cos frequencies.

    Returns:
        (1, 2 * num_feats, height, width) float32: y features first, then x features.
    """
    eps = 1e-6
    scale = 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(values: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, num_feats)
        phase = values[:, None] / dim_t
        return torch.stack((phase[:, 0::2].sin(), phase[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_feats)
    pos_x = encode(x)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0)


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention core: bilinear samples of each level, weighted and summed.

    Locations follow ``grid_sample(align_corners=False)``: (0, 0) is the top-left corner of
    the map and the centre of pixel (row i, column j) of an ``H x W`` level is at
    ``((j + 0.5) / W, (i + 0.5) / H)``; samples outside the map read zeros.

    Args:
        value: (B, S, M, D) values of all levels flattened, ``S = sum_l H_l W_l``, M heads.
        spatial_shapes: (H_l, W_l) of each of the L levels, in the order of ``value``.
        sampling_locations: (B, Q, M, L, P, 2) (x, y) in [0, 1] per level.
        attention_weights: (B, Q, M, L, P), normalised over (L, P) by the caller.

    Returns:
        (B, Q, M * D).
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    output = None
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, H*W, M, D) -> (B*M, D, H, W)
        level_value = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        # (B, Q, M, P, 2) -> (B*M, Q, P, 2)
        level_grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, points, 2)
        sampled = F.grid_sample(
            level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        # (B*M, D, Q, P) weighted over P -> (B*M, D, Q); a flat product broadcasts faster than (1, Q, P)
        weights = (
            attention_weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, num_queries * points)
        )
        weighted = sampled.flatten(2) * weights
        contribution = weighted.view(batch * heads, head_dim, num_queries, points).sum(-1)
        output = contribution if output is None else output + contribution
    assert output is not None, "at least one level is needed"
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR attention: each query samples ``num_points`` positions per head and level
    around its reference point; offsets and weights are linear functions of the query.

    Args:
        dim: model width d (divisible by ``num_heads``).
        num_levels: L feature levels.
        num_heads: M attention heads.
        num_points: P sampling points per head and level.
    """

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"MultiScaleDeformableAttention: dim {dim} not divisible by num_heads {num_heads}"
            )
        self.dim = dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions (one per head), growing with the point index."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # (M, 2) on the unit square
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        values: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Q, d) queries (with position embedding added).
            reference_points: (B, Q, L, 2) or (B, Q, 1, 2), (x, y) in [0, 1].
            values: (B, S, d) all levels flattened.
            spatial_shapes: (H_l, W_l) per level.

        Returns:
            (B, Q, d).
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(values).view(batch, values.shape[1], heads, self.dim // heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        # offsets are in pixels of each level: normalise by (W_l, H_l)
        normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        )
        return self.output_proj(multi_scale_deformable_attention(value, spatial_shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then an FFN.

    Args:
        dim: model width.
        dim_feedforward: FFN hidden width (official: 1024).
        num_heads: attention heads.
        num_levels: feature levels.
        num_points: sampling points per head and level.
        dropout: dropout after attention and in the FFN.
    """

    def __init__(
        self, dim: int, dim_feedforward: int, num_heads: int, num_levels: int, num_points: int, dropout: float
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, dim),
            nn.Dropout(dropout),
        )
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """src, pos: (B, S, d); reference_points: (B or 1, S, 1, 2). Returns (B, S, d)."""
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference_points, src, spatial_shapes)))
        return self.norm2(src + self.ffn(src))


def encoder_reference_points(spatial_shapes: Sequence[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1] (no padding, so valid ratios are 1).

    Returns:
        (1, S, 1, 2) (x, y); the level axis broadcasts over all levels.
    """
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    return torch.cat(points, 0)[None, :, None, :]


def _group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    if channels % num_groups != 0:
        raise ValueError(f"GroupNorm: {channels} channels not divisible by num_groups {num_groups}")
    return nn.GroupNorm(num_groups, channels)


class MSDeformAttnPixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder.

    Args:
        in_channels: channels of each backbone feature, e.g. ``{"res2": 256, ..., "res5": 2048}``.
        in_strides: stride of each backbone feature.
        conv_dim: width of the encoder and the FPN (official CONVS_DIM 256).
        mask_dim: channels C of ``mask_features`` (official MASK_DIM 256).
        num_layers: deformable encoder layers (official 6).
        num_heads: encoder attention heads (official 8).
        num_points: sampling points per head and level (official 4).
        dim_feedforward: encoder FFN width (official 1024).
        dropout: encoder dropout (official 0.0 for Mask2Former).
        transformer_in_features: the features the encoder attends over (official res3..res5).
        common_stride: stride of ``mask_features`` (official 4).
        num_groups: GroupNorm groups (official 32).
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        in_strides: dict[str, int],
        *,
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        common_stride: int = 4,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        missing = [name for name in transformer_in_features if name not in in_channels]
        if missing:
            raise ValueError(f"MSDeformAttnPixelDecoder: backbone lacks features {missing}")
        if conv_dim % 2 != 0:
            raise ValueError(f"MSDeformAttnPixelDecoder: conv_dim {conv_dim} must be even")
        ordered = sorted(in_channels, key=lambda name: in_strides[name])  # fine to coarse
        # encoder levels, coarse to fine (res5, res4, res3) as in the official code
        self.encoder_features = sorted(transformer_in_features, key=lambda name: -in_strides[name])
        finest_encoder_stride = min(in_strides[name] for name in transformer_in_features)
        num_fpn_levels = int(math.log2(finest_encoder_stride) - math.log2(common_stride))
        # FPN levels, coarse to fine (e.g. only res2)
        self.fpn_features = ordered[:num_fpn_levels][::-1]
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.num_levels = len(self.encoder_features)

        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[name], conv_dim, kernel_size=1), _group_norm(conv_dim, num_groups)
            )
            for name in self.encoder_features
        )
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim))
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, dim_feedforward, num_heads, self.num_levels, num_points, dropout)
            for _ in range(num_layers)
        )
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[name], conv_dim, kernel_size=1, bias=False),
                _group_norm(conv_dim, num_groups),
            )
            for name in self.fpn_features
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False),
                _group_norm(conv_dim, num_groups),
                nn.ReLU(inplace=True),
            )
            for _ in self.fpn_features
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation of the official code (xavier for the encoder, c2-xavier for the convs)."""
        for layer in self.encoder:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        for conv in [
            *(m[0] for m in self.lateral_convs),
            *(m[0] for m in self.output_convs),
            self.mask_features,
        ]:
            c2_xavier_fill(conv)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            features: backbone maps ``{"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}``.

        Returns:
            mask_features: (B, mask_dim, H/4, W/4).
            multi_scale: three (B, conv_dim, h_l, w_l) maps, coarse to fine (strides 32, 16, 8).
        """
        device_type = features[self.encoder_features[0]].device.type
        with torch.autocast(device_type=device_type, enabled=False):  # float32, as the official decoder
            return self._forward_float(features)

    def _forward_float(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs, pos, shapes = [], [], []
        for level, name in enumerate(self.encoder_features):
            x = features[name].float()
            projected = self.input_proj[level](x)
            b, c, h, w = projected.shape
            shapes.append((h, w))
            srcs.append(projected.flatten(2).transpose(1, 2))  # (B, h*w, d)
            embedding = sine_position_embedding(h, w, c // 2, x.device).flatten(2).transpose(1, 2)
            pos.append(embedding + self.level_embed[level].view(1, 1, -1))
        src = torch.cat(srcs, 1)  # (B, S, d)
        pos_all = torch.cat(pos, 1)  # (1, S, d)
        reference = encoder_reference_points(shapes, src.device)
        for layer in self.encoder:
            src = layer(src, pos_all, reference, shapes)

        batch = src.shape[0]
        outs = [
            level.transpose(1, 2).reshape(batch, self.conv_dim, h, w)
            for level, (h, w) in zip(src.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for name, lateral, output_conv in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            x = lateral(features[name].float())
            coarser = F.interpolate(outs[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(output_conv(x + coarser))
        return self.mask_features(outs[-1]), outs[: self.num_levels]
