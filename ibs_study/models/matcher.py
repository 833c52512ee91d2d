"""Hungarian matching of Mask2Former's queries to ground-truth segments.

For each crop, the cost of assigning query q to ground-truth segment n is

    cost_class * (-p_q(label_n)) + cost_mask * BCE(q, n) + cost_dice * dice(q, n),

where ``p_q`` is the softmax class probability and BCE / dice compare the sigmoid mask of
q with the target mask of n on the same ``num_points`` uniformly random points (shared
by all queries and targets of the crop). The minimum-cost one-to-one assignment
(``scipy.optimize.linear_sum_assignment``) matches ``min(Q, N)`` pairs; unmatched queries
are "no object". Costs are computed without gradients, in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from ibs_study.models.mask_ops import point_sample

__all__ = ["HungarianMatcher", "pairwise_sigmoid_ce", "pairwise_dice", "solve_assignment"]


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        logits: (Q, P) mask logits at P points.
        targets: (N, P) target values in [0, 1] at the same points.

    Returns:
        (Q, N): ``cost[q, n] = mean_p BCE(logits[q, p], targets[n, p])``.
    """
    # BCE(x, t) = t softplus(-x) + (1 - t) softplus(x) = softplus(x) - t x
    num_points = logits.shape[1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / num_points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss of every prediction against every target.

    Args:
        logits: (Q, P) mask logits. targets: (N, P) values in [0, 1].

    Returns:
        (Q, N): ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` with ``p = sigmoid(logits)``.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + eps) / (denominator + eps)


def solve_assignment(cost: torch.Tensor, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment.

    Args:
        cost: (Q, N) finite costs.
        crop: index of the crop, named in the error for non-finite costs.

    Returns:
        (query_index, target_index), both (min(Q, N),) int64 on the CPU, query indices ascending.

    Raises:
        FloatingPointError: the cost matrix holds NaN or infinity (diverged predictions).
    """
    cost = cost.detach().float().cpu()
    if not torch.isfinite(cost).all():
        where = "" if crop is None else f" of crop {crop}"
        raise FloatingPointError(f"Hungarian matching: the cost matrix{where} holds NaN or infinite values")
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """Bipartite matching between predictions and ground-truth segments, one crop at a time.

    Args:
        cost_class: weight of the class cost (official 2.0).
        cost_mask: weight of the sigmoid BCE cost (official 5.0).
        cost_dice: weight of the dice cost (official 5.0).
        num_points: random points the mask costs are evaluated on (official 112 * 112).
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice cannot all be 0")
        if num_points < 1:
            raise ValueError(f"HungarianMatcher: num_points must be >= 1, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost of one crop.

        Args:
            class_logits: (Q, K + 1).
            mask_logits: (Q, h, w).
            labels: (N,) int64 class labels in [0, K).
            masks: (N, H, W) target masks (bool or float), same field of view as ``mask_logits``.
            point_coords: (P, 2) (x, y) in [0, 1], shared by predictions and targets.

        Returns:
            (Q, N) float32 costs.
        """
        probs = class_logits.float().softmax(-1)
        cost_class = -probs[:, labels]  # (Q, N)
        pred_points = point_sample(
            mask_logits[:, None].float(), point_coords.expand(mask_logits.shape[0], -1, -1)
        )
        target_points = point_sample(masks[:, None].float(), point_coords.expand(masks.shape[0], -1, -1))
        pred_points = pred_points.squeeze(1)  # (Q, P)
        target_points = target_points.squeeze(1)  # (N, P)
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_sigmoid_ce(pred_points, target_points)
            + self.cost_dice * pairwise_dice(pred_points, target_points)
        )

    @torch.no_grad()
    def forward(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        target_labels: list[torch.Tensor],
        target_masks: list[torch.Tensor],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match the queries of every crop.

        Args:
            class_logits: (B, Q, K + 1) class logits.
            mask_logits: (B, Q, h, w) mask logits.
            target_labels: B tensors (N_b,) int64 class labels.
            target_masks: B tensors (N_b, H, W), covering the same area as ``mask_logits``.

        Returns:
            B pairs ``(query_index, target_index)`` of (min(Q, N_b),) int64 CPU tensors:
            query ``query_index[i]`` is matched to target ``target_index[i]``.
        """
        batch, num_queries = class_logits.shape[:2]
        matches = []
        with torch.autocast(device_type=class_logits.device.type, enabled=False):
            for b in range(batch):
                if target_labels[b].numel() == 0:
                    empty = torch.zeros(0, dtype=torch.int64)
                    matches.append((empty, empty.clone()))
                    continue
                # all masks of the crop share one set of points
                points = torch.rand(self.num_points, 2, device=mask_logits.device)
                cost = self.cost_matrix(
                    class_logits[b], mask_logits[b], target_labels[b], target_masks[b], points
                )
                matches.append(solve_assignment(cost.reshape(num_queries, -1), crop=b))
        return matches
