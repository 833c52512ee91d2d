"""Mask losses shared by the unified models (and, with :func:`ibs_loss`, Intra-Batch Supervision).

All functions are pure and return per-mask values; callers normalise (by a count that
is computed once and clamped to >= 1) and weight them in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ibs_study.data.batch import CropTarget
from ibs_study.models.mask_ops import point_sample, uncertain_point_coords
from ibs_study.models.output import UnifiedOutput

__all__ = [
    "dice_loss",
    "squared_dice_loss",
    "sigmoid_ce_loss",
    "focal_loss",
    "focal_loss_zero_target",
    "IBSConfig",
    "IBS_PARTNER_MODES",
    "assign_partners",
    "shared_thing_class_fraction",
    "ibs_loss",
    "weighted_ibs_loss",
]


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask, as in Mask2Former (``1 - (2 |p t| + eps) / (|p| + |t| + eps)``).

    Args:
        logits: (N, P) mask logits over P pixels or points.
        targets: (N, P) binary targets.

    Returns:
        (N,) loss per mask.
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + eps) / (denominator + eps)


def squared_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Dice loss with squared terms in the denominator, as Panoptic FCN
    (``1 - 2 |p t| / max(|p^2| + |t^2|, eps)``).

    Args:
        logits: (N, P) mask logits over P pixels.
        targets: (N, P) targets in [0, 1] (soft targets allowed).
        valid: (P,) or (N, P) bool; pixels where it is False do not count. None: all count.

    Returns:
        (N,) loss per mask.
    """
    probs = logits.sigmoid()
    targets = targets.to(probs.dtype)
    if valid is not None:
        probs = probs * valid
        targets = targets * valid
    denominator = (probs**2).sum(-1) + (targets**2).sum(-1)
    return 1 - 2 * (probs * targets).sum(-1) / denominator.clamp(min=eps)


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per mask, averaged over its P pixels or points.

    Args:
        logits: (N, P). targets: (N, P).

    Returns:
        (N,) loss per mask.
    """
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(-1)


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss per mask (torchvision's), averaged over its P pixels or points.

    Args:
        logits: (N, P). targets: (N, P).

    Returns:
        (N,) loss per mask.
    """
    return sigmoid_focal_loss(
        logits, targets.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="none"
    ).mean(-1)


# --------------------------------------------------------------------------- Intra-Batch Supervision

IBS_PARTNER_MODES = ("pair_mate", "random", "random_per_layer")


def focal_loss_zero_target(logits: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """:func:`focal_loss` against an all-zero target, in closed form: ``(1 - alpha) σ(x)^γ softplus(x)``.

    Equal to torchvision's ``sigmoid_focal_loss(x, 0)`` (for target 0, ``p_t = 1 - σ(x)`` and the
    cross-entropy is ``softplus(x)``) with three temporaries instead of about eight: the IBS
    logits are large (every thing row over a whole partner map), so this saves memory and time.

    Args:
        logits: (N, P). Returns: (N,) loss per mask, averaged over its P pixels or points.
    """
    return ((1 - alpha) * torch.sigmoid(logits).pow(gamma) * F.softplus(logits)).mean(-1)


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


def assign_partners(batch_size: int, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The crop whose features each crop's thing embeddings meet in the IBS loss.

    Args:
        batch_size: B, crops in the local (per-process) batch.
        mode: ``"pair_mate"``: crop 2k <-> 2k+1 (B must be even); ``"random"``: uniform
            among the other B - 1 crops, never the crop itself (B >= 2).
        generator: source of randomness for ``"random"`` (None: torch's global generator).

    Returns:
        (B,) int64 partner index on the CPU.
    """
    if mode == "pair_mate":
        if batch_size % 2:
            raise ValueError(
                f"IBS partner 'pair_mate' pairs crops 2k and 2k+1: train.batch_size (per process) must be "
                f"even, got {batch_size}"
            )
        return torch.arange(batch_size) ^ 1
    if mode == "random":
        if batch_size < 2:
            raise ValueError(
                f"IBS partner 'random' needs another crop in the batch: train.batch_size (per process) "
                f"must be >= 2, got {batch_size}"
            )
        # an offset among the other B - 1 crops, shifted past the crop itself
        offset = torch.randint(0, batch_size - 1, (batch_size,), generator=generator)
        return offset + (offset >= torch.arange(batch_size)).long()
    raise ValueError(f"assign_partners mode must be 'pair_mate' or 'random', got {mode!r}")


def shared_thing_class_fraction(targets: Sequence[CropTarget], partner_index: torch.Tensor) -> float:
    """Fraction of (crop, partner) pairs whose ground-truth thing classes intersect.

    IBS supervision is most useful when a crop and its partner hold things of one class
    (Sec. 4.2); class-aware paired sampling exists to raise this fraction.

    Args:
        targets: B crop targets.
        partner_index: (B,) int64.

    Returns:
        The fraction in [0, 1] over the B ordered pairs ``(b, partner_index[b])``.
    """
    if len(targets) != len(partner_index):
        raise ValueError(f"{len(targets)} targets but {len(partner_index)} partner indices")
    classes = [set(t.labels[t.is_thing].tolist()) for t in targets]
    shared = sum(bool(classes[b] & classes[int(p)]) for b, p in enumerate(partner_index))
    return shared / max(len(targets), 1)


def _check_partner_index(partner_index: torch.Tensor, batch_size: int) -> None:
    if partner_index.shape != (batch_size,):
        raise ValueError(f"partner_index must have shape ({batch_size},), got {tuple(partner_index.shape)}")
    if bool(((partner_index < 0) | (partner_index >= batch_size)).any()):
        raise ValueError(
            f"partner_index values must be in [0, {batch_size - 1}], got {partner_index.tolist()}"
        )
    if bool((partner_index == torch.arange(batch_size, device=partner_index.device)).any()):
        raise ValueError(f"partner_index pairs a crop with itself: {partner_index.tolist()}")


def _generator_on(device: torch.device, generator: torch.Generator | None) -> torch.Generator | None:
    """A generator on ``device`` seeded from ``generator`` (random points are drawn where the
    logits are; drawing them on the CPU and copying them would cost more than the loss)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device).manual_seed(seed)


def _ibs_layer_sum(
    output: UnifiedOutput,
    layer: int,
    partner_index: torch.Tensor,
    cfg: IBSConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Σ over crops b and thing rows t of ``thing_weight[t] · mean focal(E_b[t] · F[partner[b]], 0)``.

    All crops are computed at once: the thing rows are padded to (B, T_max, C) and meet
    their partners' features in one batched product, so the cost does not grow with the
    number of Python-level crops (and nothing waits for the device).
    """
    features = output.features  # (B, C, h, w)
    batch, channels, height, width = features.shape
    rows = [output.thing_embeddings(layer, crop) for crop in range(batch)]  # (T_b, C) each
    counts = torch.tensor([r.shape[0] for r in rows])
    # a zero that depends on the features: the term keeps a gradient path with no thing at all
    zero = features.reshape(-1)[:1].sum() * 0.0
    if int(counts.sum()) == 0:
        return zero
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T_max, C)
    partners = features[partner_index.to(features.device)].flatten(2)  # (B, C, h * w)
    logits = torch.bmm(padded, partners.to(padded.dtype))  # (B, T_max, h * w)
    valid = torch.arange(padded.shape[1])[None, :] < counts[:, None]  # (B, T_max)
    logits = logits[valid.to(logits.device)]  # (T, h * w), rows in crop order
    if cfg.point_sampling:
        maps = logits.reshape(-1, 1, height, width)
        coords = uncertain_point_coords(
            maps, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio, generator=generator
        )  # (T, P, 2)
        values = point_sample(maps, coords).squeeze(1)  # (T, P)
    else:
        values = logits
    values = values.to(torch.promote_types(values.dtype, torch.float32))  # fp32 focal under AMP
    per_mask = focal_loss_zero_target(values, alpha=cfg.alpha, gamma=cfg.gamma)  # (T,)
    weights = torch.cat([w.reshape(-1) for w in output.thing_weights[layer]]).to(per_mask)  # (T,)
    return zero + (per_mask * weights).sum()


def ibs_loss(
    output: UnifiedOutput,
    partner_index: torch.Tensor | None,
    cfg: IBSConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Intra-Batch Supervision: thing embeddings of one crop must not fire on another crop.

    For each IBS layer l and crop b, the thing embeddings ``E_b`` (rows ``thing_index``)
    meet the features ``F[p(b)]`` of the partner crop; the logits ``E_b · F[p(b)]`` get a
    sigmoid focal loss against all-zero targets, averaged over every pixel of the
    partner's map or over ``cfg.num_points`` importance-sampled points. Each row is
    weighted by ``thing_weights``; the weighted sum over the batch is divided by
    ``max(Σ thing_weights, 1)`` (the number of ground-truth things for Panoptic FCN, of
    thing-matched queries for Mask2Former; local to this process). Nothing is detached.

    Args:
        output: the model's training output; ``features`` (B, C, h, w) and per layer and
            crop ``embeddings`` (N_b, C), ``thing_index`` (T_b,), ``thing_weights`` (T_b,).
        partner_index: (B,) int64, the partner crop of every crop; ignored (may be None)
            when ``cfg.partner == "random_per_layer"``, which draws a new partner among the
            other crops for every IBS layer.
        cfg: the IBS settings (``weight`` is applied by :func:`weighted_ibs_loss`, not here).
        generator: randomness for per-layer partners and point sampling.

    Returns:
        ``{"loss_ibs": (), the sum over IBS layers}`` plus ``"ibs_layer{l}"`` (): each
        layer's value, for logging (already included in ``loss_ibs``). Exactly 0 when the
        batch has no thing.
    """
    batch_size = output.batch_size
    if cfg.partner != "random_per_layer":
        if partner_index is None:
            raise ValueError(f"ibs.partner={cfg.partner!r} needs a partner_index (see assign_partners)")
        _check_partner_index(partner_index, batch_size)
    terms: dict[str, torch.Tensor] = {}
    point_generator = _generator_on(output.features.device, generator) if cfg.point_sampling else None
    for layer in output.ibs_layers:
        if cfg.partner == "random_per_layer":
            partner_index = assign_partners(batch_size, "random", generator)
        layer_sum = _ibs_layer_sum(output, layer, partner_index, cfg, point_generator)
        weights = torch.cat([w.reshape(-1) for w in output.thing_weights[layer]])
        normaliser = weights.detach().sum().clamp(min=1.0)  # a count: no gradient through it
        terms[f"ibs_layer{layer}"] = layer_sum / normaliser.to(layer_sum)
    total = sum(terms.values()) if terms else output.features.reshape(-1)[:1].sum() * 0.0
    return {"loss_ibs": total, **terms}


def weighted_ibs_loss(
    output: UnifiedOutput,
    partner_index: torch.Tensor | None,
    cfg: IBSConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The IBS term to add to the training loss: ``{"loss_ibs": λ [· mask_loss_weight] · L_IBS}``.

    Returns an empty dict when ``cfg.enabled`` is False, so the training loop can always
    call it and sum what it returns. Arguments as for :func:`ibs_loss`.
    """
    if not cfg.enabled:
        return {}
    factor = cfg.weight * (output.mask_loss_weight if cfg.scale_by_mask_weight else 1.0)
    return {"loss_ibs": factor * ibs_loss(output, partner_index, cfg, generator)["loss_ibs"]}
