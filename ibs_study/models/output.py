"""The contract every unified model returns in training, and what IBS reads from it.

Unified models predict mask logits as the product of per-segment embeddings ``E`` and
per-image pixel features ``F``. Intra-Batch Supervision needs only those two and the
knowledge of which embeddings stand for a ground-truth *thing*, so it works with any
model that fills :class:`UnifiedOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["UnifiedOutput"]


@dataclass
class UnifiedOutput:
    """Training-mode output of a unified panoptic model.

    ``L`` is the number of prediction layers (1 for Panoptic FCN; for Mask2Former the
    learnable-query prediction plus one per decoder layer, last = final prediction).

    Attributes:
        features: (B, C, h, w) pixel features F that the mask product uses (stride 4).
        embeddings: ``[L][B]`` tensors (N_b, C): every per-segment embedding E of crop b
            at layer l, such that ``masks = einsum("nc,chw->nhw", E, F[b])`` are logits.
        thing_index: ``[L][B]`` int64 tensors (T_b,): rows of ``embeddings[l][b]`` that
            belong to a ground-truth thing segment (by construction or by matching).
        thing_weights: ``[L][B]`` float tensors (T_b,): weight of each such row in the IBS
            loss. Rows of one ground-truth thing sum to 1 (Panoptic FCN: top-k centre
            scores; Mask2Former: 1 per matched query), so their sum counts the things.
        ibs_layers: the layers IBS is applied to (Mask2Former excludes layer 0).
        mask_loss_weight: the model's own mask-loss weight; the official Panoptic FCN
            multiplies the IBS term by it.
        losses: the model's own weighted loss terms, e.g. ``{"loss_dice": ..}``.
        stats: scalars worth logging that are not losses (e.g. number of matched things).
        thing_segments: ``[L][B]`` int64 tensors (T_b,): for each ``thing_index`` row, the
            index of its ground-truth thing among the crop target's segments; None: the model
            does not record it.
        bias_detached_thing_embeddings: ``(layer, crop) -> (T_b, C)``: the rows of
            :meth:`thing_embeddings`, computed again with the bias of the projection that
            makes them detached (equal values; no gradient reaches that bias through them),
            for ``ibs.detach_bias``; None: the model offers no such view.
        layer_features: ``[L]`` tensors (B, C, h, w) when each layer multiplies its
            embeddings with features of its own (EoMT: the upscaled patch tokens of the block
            it predicts from; ``features`` is then the last layer's); None: every layer uses
            ``features``.
    """

    features: torch.Tensor
    embeddings: list[list[torch.Tensor]]
    thing_index: list[list[torch.Tensor]]
    thing_weights: list[list[torch.Tensor]]
    ibs_layers: tuple[int, ...]
    mask_loss_weight: float = 1.0
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    thing_segments: list[list[torch.Tensor]] | None = None
    bias_detached_thing_embeddings: Callable[[int, int], torch.Tensor] | None = None
    layer_features: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        batch = self.features.shape[0]
        for name in ("embeddings", "thing_index", "thing_weights"):
            layers = getattr(self, name)
            if any(len(per_crop) != batch for per_crop in layers):
                raise ValueError(f"UnifiedOutput.{name} must hold {batch} crops per layer")
        if not (len(self.embeddings) == len(self.thing_index) == len(self.thing_weights)):
            raise ValueError("UnifiedOutput: embeddings, thing_index and thing_weights need the same layers")
        if any(not 0 <= layer < len(self.embeddings) for layer in self.ibs_layers):
            raise ValueError(
                f"UnifiedOutput.ibs_layers {self.ibs_layers} outside 0..{len(self.embeddings) - 1}"
            )

        if self.layer_features is not None:
            if len(self.layer_features) != len(self.embeddings):
                raise ValueError(
                    f"UnifiedOutput.layer_features holds {len(self.layer_features)} layers, "
                    f"embeddings {len(self.embeddings)}"
                )
            if any(f.shape != self.features.shape for f in self.layer_features):
                raise ValueError("UnifiedOutput.layer_features must each have the shape of features")

    @property
    def batch_size(self) -> int:
        return int(self.features.shape[0])

    def features_of(self, layer: int) -> torch.Tensor:
        """(B, C, h, w) the features that ``embeddings[layer]`` multiply."""
        return self.features if self.layer_features is None else self.layer_features[layer]

    def thing_embeddings(self, layer: int, crop: int) -> torch.Tensor:
        """(T_b, C) embeddings of crop ``crop``'s ground-truth things at ``layer``."""
        return self.embeddings[layer][crop][self.thing_index[layer][crop]]
