"""Mask losses shared by the unified models (and, with :func:`ibs_loss`, Intra-Batch Supervision).

All functions are pure and return per-mask values; callers normalise (by a count that
is computed once and clamped to >= 1) and weight them in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ibs_study.data.batch import CropTarget
from ibs_study.ibs_config import IBS_PARTNER_MODES, IBSConfig
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


def _negative_log(probabilities: torch.Tensor) -> torch.Tensor:
    """``-log(q)``, in place on a fresh copy, with ``q`` clamped at the dtype's smallest normal."""
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log_().neg_()


def _softplus_from(logits: torch.Tensor, sigmoid_of_negative: torch.Tensor) -> torch.Tensor:
    """``softplus(x) = -log σ(-x)`` from ``σ(-x)``: one vectorised log instead of the log1p of
    ``F.softplus`` (unvectorised on CPUs). Where σ(-x) underflows (x > ~87 in float32) the
    clamp caps the log and ``max(., x)`` restores softplus(x) = x. The absolute error stays
    within a few ulps of 1; for x < 0 the relative error grows as softplus(x) shrinks, where
    the focal factor σ(x)^γ makes the term negligible."""
    return torch.maximum(_negative_log(sigmoid_of_negative), logits)


class _ZeroTargetFocal(torch.autograd.Function):
    """Per-mask mean of ``(1 - α) σ(x)^γ softplus(x)`` with a hand-written gradient
    ``(1 - α) σ(x)^γ (γ σ(-x) softplus(x) + σ(x)) / P``. Only ``σ(-x)`` is kept for the
    backward pass, which needs nothing else (where ``σ(-x)`` underflows, the term that
    would need softplus(x) vanishes): the IBS logits are the largest tensors of the loss, so
    this saves several logit-sized buffers and autograd nodes."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
        negative = torch.neg(logits).sigmoid_()  # σ(-x) = 1 - σ(x), exact where σ(x) rounds to 1
        ctx.save_for_backward(negative)
        ctx.alpha, ctx.gamma = alpha, gamma
        per_pixel = torch.sigmoid(logits).pow_(gamma).mul_(_softplus_from(logits, negative))
        return per_pixel.mean(-1).mul_(1 - alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (negative,) = ctx.saved_tensors
        positive = 1 - negative
        # the capped -log σ(-x) is exact enough here: where it is capped, σ(-x) ≈ 0 multiplies it
        slope = _negative_log(negative).mul_(negative).mul_(ctx.gamma).add_(positive)
        slope.mul_(positive.pow_(ctx.gamma))
        scale = grad * ((1 - ctx.alpha) / negative.shape[-1])  # (N,)
        return slope.mul_(scale.unsqueeze(-1)), None, None


def focal_loss_zero_target(logits: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """:func:`focal_loss` against an all-zero target, in closed form: ``(1 - alpha) σ(x)^γ softplus(x)``.

    Equal to torchvision's ``sigmoid_focal_loss(x, 0)`` (for target 0, ``p_t = 1 - σ(x)`` and the
    cross-entropy is ``softplus(x)``), with a fused gradient that keeps only ``σ(-x)`` for the
    backward pass (:class:`_ZeroTargetFocal`): the IBS logits are large (every thing row over a whole
    partner map), so this saves memory and time.

    Args:
        logits: (N, P) float logits. Returns: (N,) loss per mask, averaged over its P pixels or points.
    """
    if not logits.is_floating_point():
        raise TypeError(f"focal_loss_zero_target needs floating-point logits, got {logits.dtype}")
    return _ZeroTargetFocal.apply(logits, alpha, gamma)


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


def _layer_partners(
    batch_size: int,
    num_layers: int,
    partner_index: torch.Tensor | None,
    cfg: IBSConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(L, B) int64 on the CPU: the partner of every crop at every IBS layer (``partner_index``
    on the CPU)."""
    if cfg.partner == "random_per_layer":
        return torch.stack([assign_partners(batch_size, "random", generator) for _ in range(num_layers)])
    return partner_index.expand(num_layers, batch_size)


def _to_device(values: list[int], device: torch.device) -> torch.Tensor:
    """(N,) int64 ``values`` on ``device``, without waiting for the device: a CUDA copy goes
    from pinned memory, asynchronously (a copy from pageable memory would first wait for every
    queued kernel, stalling the step)."""
    tensor = torch.tensor(values, dtype=torch.int64)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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
    weighted by ``thing_weights``; a layer's weighted sum over the batch is divided by
    ``max(Σ thing_weights, 1)`` of that layer (the number of ground-truth things for
    Panoptic FCN, of thing-matched queries for Mask2Former; local to this process).
    Nothing is detached, unless ``cfg.detach_bias``: then the rows come from
    ``output.bias_detached_thing_embeddings`` (same values, no gradient into the projection bias).

    A model whose layers have features of their own (``output.layer_features``, EoMT) has
    each layer's rows meet the partner's features of that layer.

    All layers and crops are computed at once: the thing rows of every (layer, crop) are
    grouped by the crop whose features they meet, and each group meets those features in one
    matrix product (no gathered copy of the features, no padding to the largest group), so
    the point sampling, focal loss and per-layer sums run once for the whole batch.

    Args:
        output: the model's training output; ``features`` (B, C, h, w) and per layer and
            crop ``embeddings`` (N_b, C), ``thing_index`` (T_b,), ``thing_weights`` (T_b,).
        partner_index: (B,) int64, the partner crop of every crop, best on the CPU (on a GPU,
            reading it waits for the queued kernels); ignored (may be None) when
            ``cfg.partner == "random_per_layer"``, which draws a new partner among the other
            crops for every IBS layer.
        cfg: the IBS settings (``weight`` is applied by :func:`weighted_ibs_loss`, not here).
        generator: randomness for per-layer partners (drawn first, layer by layer) and then
            point sampling (all rows at once, grouped by partner crop in crop order; within
            a partner in (layer, crop, row) order).

    Returns:
        ``{"loss_ibs": (), the sum over IBS layers}`` plus ``"ibs_layer{l}"`` (): each
        layer's value, for logging (already included in ``loss_ibs``). Exactly 0 when the
        batch has no thing.
    """
    batch_size, layers = output.batch_size, output.ibs_layers
    if cfg.partner != "random_per_layer":
        if partner_index is None:
            raise ValueError(f"ibs.partner={cfg.partner!r} needs a partner_index (see assign_partners)")
        partner_index = partner_index.cpu()
        _check_partner_index(partner_index, batch_size)
    features = output.features  # (B, C, h, w)
    height, width = features.shape[-2:]
    # a zero that depends on the features: the term keeps a gradient path with no thing at all
    zero = features.reshape(-1)[:1].sum() * 0.0
    if not layers:
        return {"loss_ibs": zero}
    partners = _layer_partners(batch_size, len(layers), partner_index, cfg, generator).tolist()  # [L][B]
    # every (layer, crop) with a thing, stably sorted by the crop whose features it meets, so
    # that the rows meeting one partner are contiguous (sorted in Python: no gather on the device)
    pairs = [
        (position, layer, crop)
        for position, layer in enumerate(layers)
        for crop in range(batch_size)
        if output.thing_index[layer][crop].numel()
    ]
    if not pairs:
        return {"loss_ibs": zero, **{f"ibs_layer{layer}": zero for layer in layers}}
    # rows meet the features of their partner crop at their layer: one group per such map
    layer_own_features = output.layer_features is not None
    pairs.sort(key=lambda pair: (partners[pair[0]][pair[2]], pair[1] if layer_own_features else 0))
    counts = [output.thing_index[layer][crop].numel() for _, layer, crop in pairs]
    thing_rows = output.thing_embeddings
    if cfg.detach_bias:
        if output.bias_detached_thing_embeddings is None:
            raise ValueError("ibs.detach_bias needs a model whose output has bias_detached_thing_embeddings")
        thing_rows = output.bias_detached_thing_embeddings
    rows = torch.cat([thing_rows(layer, crop) for _, layer, crop in pairs])  # (R, C)
    weights = torch.cat([output.thing_weights[layer][crop].reshape(-1) for _, layer, crop in pairs])  # (R,)
    device = features.device
    row_layer = _to_device(
        [position for (position, _, _), count in zip(pairs, counts) for _ in range(count)], device
    )  # (R,) the position in ``layers`` of every row's layer
    # (partner crop, layer of its features) -> its rows, in that order (pairs are sorted)
    group_sizes: dict[tuple[int, int], int] = {}
    for (position, layer, crop), count in zip(pairs, counts):
        key = (partners[position][crop], layer if layer_own_features else layers[0])
        group_sizes[key] = group_sizes.get(key, 0) + count

    flat = {}  # layer -> B x (C, h * w)
    products, start = [], 0
    for (partner, layer), size in group_sizes.items():
        if layer not in flat:
            flat[layer] = output.features_of(layer).flatten(2).to(rows.dtype).unbind(0)
        products.append(rows[start : start + size] @ flat[layer][partner])  # (size, h * w)
        start += size
    logits = products[0] if len(products) == 1 else torch.cat(products)  # (R, h * w), by partner
    if cfg.point_sampling:
        maps = logits.reshape(-1, 1, height, width)
        coords = uncertain_point_coords(
            maps,
            cfg.num_points,
            cfg.oversample_ratio,
            cfg.importance_sample_ratio,
            generator=_generator_on(device, generator),
        )  # (R, P, 2)
        logits = point_sample(maps, coords).squeeze(1)  # (R, P)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 focal under AMP
    per_mask = focal_loss_zero_target(logits, alpha=cfg.alpha, gamma=cfg.gamma)  # (R,)
    weights = weights.to(per_mask)
    layer_sums = per_mask.new_zeros(len(layers)).index_add(0, row_layer, per_mask * weights)  # (L,)
    # a count per layer: no gradient through it
    normalisers = per_mask.new_zeros(len(layers)).index_add(0, row_layer, weights.detach()).clamp(min=1.0)
    per_layer = layer_sums / normalisers
    terms = {f"ibs_layer{layer}": per_layer[i] for i, layer in enumerate(layers)}
    return {"loss_ibs": zero + per_layer.sum(), **terms}


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
