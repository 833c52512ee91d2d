"""Mask2Former's transformer decoder: learnable queries refined by masked attention.

Each decoder layer runs, in this order (post-norm, as the official
``MultiScaleMaskedTransformerDecoder``):

1. masked cross-attention from the queries to one level of the pixel decoder's
   multi-scale features (round-robin: stride 32, 16, 8, 32, ...), where a query may attend
   only to the positions its previous prediction's mask covers (sigmoid > 0.5; a query whose
   mask is empty attends everywhere);
2. self-attention among the queries;
3. a feed-forward network.

After the learnable queries and after every layer, a shared head (LayerNorm, then a class
linear layer with K + 1 outputs, the last being "no object", and a 3-layer mask MLP)
predicts class logits and mask embeddings E; the mask logits are ``E · F`` with the stride-4
``mask_features`` F.

``num_predictions`` has the official meaning of ``DEC_LAYERS``: the number of predictions,
i.e. the query-only prediction plus ``num_predictions - 1`` decoder layers (official 10:
9 layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ibs_study.models.pixel_decoder import c2_xavier_fill, sine_position_embedding

__all__ = ["DecoderOutput", "MaskedAttentionDecoder", "MLP", "DecoderLayer"]


@dataclass
class DecoderOutput:
    """Predictions of every decoder stage, query-only first and final last (``L`` stages).

    Attributes:
        class_logits: L tensors (B, Q, K + 1); index K is "no object".
        mask_logits: L tensors (B, Q, h, w) at the resolution of ``mask_features``.
        mask_embeddings: L tensors (B, Q, C): E with ``mask_logits = einsum("bqc,bchw", E, F)``.
    """

    class_logits: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    mask_embeddings: list[torch.Tensor]

    @property
    def num_predictions(self) -> int:
        return len(self.class_logits)


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last).

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of linear layers.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Masked cross-attention, self-attention and FFN, each followed by residual + LayerNorm.

    Args:
        dim: query width d.
        num_heads: attention heads.
        dim_feedforward: FFN hidden width (official 2048).
        dropout: dropout of attention and FFN (official 0.0).
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, dim),
        )
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        queries: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        blocked: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            queries: (B, Q, d).
            query_pos: (B, Q, d) learnable query position embedding.
            memory: (B, S, d) one level of multi-scale features, flattened.
            memory_pos: (1, S, d) its position + level embedding.
            blocked: (B * heads, Q, S) bool, True where a query may not attend.

        Returns:
            (B, Q, d).
        """
        attended = self.cross_attn(
            queries + query_pos, memory + memory_pos, memory, attn_mask=blocked, need_weights=False
        )[0]
        queries = self.cross_norm(queries + self.dropout(attended))
        q = k = queries + query_pos
        attended = self.self_attn(q, k, queries, need_weights=False)[0]
        queries = self.self_norm(queries + self.dropout(attended))
        return self.ffn_norm(queries + self.dropout(self.ffn(queries)))


class MaskedAttentionDecoder(nn.Module):
    """Learnable queries, masked-attention decoder layers and the prediction head.

    Args:
        in_channels: channels of the multi-scale features (the pixel decoder's conv_dim).
        num_classes: K classes (the head predicts K + 1 with "no object").
        hidden_dim: query width d (official 256).
        num_queries: N learnable queries (official 100).
        num_heads: attention heads (official 8).
        dim_feedforward: FFN width (official 2048).
        num_predictions: official DEC_LAYERS (10): predictions including the query-only one.
        mask_dim: channels C of ``mask_features`` and of the mask embeddings (official 256).
        dropout: dropout (official 0.0).
        num_feature_levels: levels the cross-attention cycles over (official 3).
        enforce_input_proj: add a 1x1 projection even if ``in_channels == hidden_dim``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_predictions: int = 10,
        mask_dim: int = 256,
        dropout: float = 0.0,
        num_feature_levels: int = 3,
        enforce_input_proj: bool = False,
    ) -> None:
        super().__init__()
        if num_predictions < 1:
            raise ValueError(f"MaskedAttentionDecoder: num_predictions must be >= 1, got {num_predictions}")
        if hidden_dim % 2 != 0:
            raise ValueError(f"MaskedAttentionDecoder: hidden_dim {hidden_dim} must be even")
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, dim_feedforward, dropout) for _ in range(num_predictions - 1)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor) -> DecoderOutput:
        """
        Args:
            multi_scale: ``num_feature_levels`` maps (B, in_channels, h_l, w_l), coarse to fine.
            mask_features: (B, C, h, w) stride-4 pixel features F.

        Returns:
            the predictions of all stages (see :class:`DecoderOutput`).
        """
        if len(multi_scale) != self.num_feature_levels:
            raise ValueError(
                f"MaskedAttentionDecoder: expected {self.num_feature_levels} feature levels, got {len(multi_scale)}"
            )
        memories, memory_pos, sizes = [], [], []
        for level, x in enumerate(multi_scale):
            h, w = x.shape[-2:]
            sizes.append((h, w))
            projected = self.input_proj[level](x).flatten(2).transpose(1, 2)  # (B, h*w, d)
            memories.append(projected + self.level_embed.weight[level].view(1, 1, -1))
            pos = sine_position_embedding(h, w, projected.shape[-1] // 2, x.device)
            memory_pos.append(pos.flatten(2).transpose(1, 2).to(projected.dtype))  # (1, h*w, d)

        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        output = DecoderOutput([], [], [])
        blocked = self._predict(queries, mask_features, sizes[0], output)
        for i, layer in enumerate(self.layers):
            level = i % self.num_feature_levels
            queries = layer(queries, query_pos, memories[level], memory_pos[level], blocked)
            blocked = self._predict(queries, mask_features, sizes[(i + 1) % self.num_feature_levels], output)
        return output

    def _predict(
        self,
        queries: torch.Tensor,
        mask_features: torch.Tensor,
        attn_size: tuple[int, int],
        output: DecoderOutput,
    ) -> torch.Tensor:
        """Append one stage's predictions to ``output``; return the next layer's attention mask.

        Returns:
            (B * heads, Q, h_l * w_l) bool, True where the query's predicted mask (resized to
            the next level) has probability < 0.5; rows that would block everything are cleared.
        """
        normed = self.decoder_norm(queries)
        embeddings = self.mask_embed(normed)  # (B, Q, C)
        masks = torch.einsum("bqc,bchw->bqhw", embeddings, mask_features)
        output.class_logits.append(self.class_embed(normed))
        output.mask_logits.append(masks)
        output.mask_embeddings.append(embeddings)
        with torch.no_grad():
            resized = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
            blocked = resized.flatten(2).sigmoid() < 0.5  # (B, Q, S)
            blocked &= ~blocked.all(-1, keepdim=True)
            blocked = blocked.repeat_interleave(self.num_heads, dim=0)
        return blocked
