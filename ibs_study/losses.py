"""Mask losses shared by the unified models (and, with :func:`ibs_loss`, Intra-Batch Supervision).

All functions are pure and return per-mask values; callers normalise (by a count that
is computed once and clamped to >= 1) and weight them in one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

__all__ = ["dice_loss", "sigmoid_ce_loss", "focal_loss"]


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
    return sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="none").mean(-1)
