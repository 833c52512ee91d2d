"""The Intra-Batch Supervision config section (``ibs.*``), importable without torch: the loss
itself lives in :mod:`ibs_study.losses`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IBS_PARTNER_MODES", "IBSConfig"]

IBS_PARTNER_MODES = ("pair_mate", "random", "random_per_layer")


@dataclass
class IBSConfig:
    """Intra-Batch Supervision settings (config keys ``ibs.*``).

    Attributes:
        enabled: add the IBS term to the training loss.
        weight: λ_IBS, the weight of the IBS term (>= 0).
        partner: which crop's features each crop's thing embeddings meet: ``"pair_mate"``
            (crop 2k <-> 2k+1, official Panoptic FCN with crop sampling), ``"random"`` (one
            uniform other crop per step, shared by all layers) or ``"random_per_layer"``
            (a new uniform other crop for every IBS layer, official Mask2Former).
        scale_by_mask_weight: also multiply by the model's own mask-loss weight
            (official Panoptic FCN multiplies by its SEGMENT weight).
        point_sampling: evaluate the loss at importance-sampled points of the IBS logits
            (official Mask2Former) instead of at every pixel of the partner's map.
        num_points: points per mask when ``point_sampling``.
        oversample_ratio: PointRend candidate factor.
        importance_sample_ratio: fraction of the points chosen by uncertainty.
        alpha: focal-loss alpha (weight of positives; zero targets weigh ``1 - alpha``).
        gamma: focal-loss focusing exponent.
        detach_bias: the IBS term reaches no bias of the projection that makes the thing
            embeddings (it reads ``UnifiedOutput.bias_detached_thing_embeddings``; Panoptic FCN:
            the thing projection's bias); the model's own losses still train that bias.
    """

    enabled: bool = False
    weight: float = 1.0
    partner: str = "pair_mate"
    scale_by_mask_weight: bool = False
    point_sampling: bool = False
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    alpha: float = 0.25
    gamma: float = 2.0
    detach_bias: bool = False

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"ibs.weight must be >= 0, got {self.weight}")
        if self.partner not in IBS_PARTNER_MODES:
            raise ValueError(f"ibs.partner must be one of {list(IBS_PARTNER_MODES)}, got {self.partner!r}")
        if self.num_points < 1:
            raise ValueError(f"ibs.num_points must be >= 1, got {self.num_points}")
        if self.oversample_ratio < 1:
            raise ValueError(f"ibs.oversample_ratio must be >= 1, got {self.oversample_ratio}")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError(
                f"ibs.importance_sample_ratio must be in [0, 1], got {self.importance_sample_ratio}"
            )
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"ibs.alpha must be in [0, 1], got {self.alpha}")
        if self.gamma < 0:
            raise ValueError(f"ibs.gamma must be >= 0, got {self.gamma}")
