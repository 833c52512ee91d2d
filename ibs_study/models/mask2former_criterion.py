"""Mask2Former's set criterion: match, then supervise.

For every prediction stage (the query-only prediction and each decoder layer):

1. the :class:`~ibs_study.models.matcher.HungarianMatcher` assigns ground-truth segments to
   queries (each stage is matched on its own);
2. the matched pairs are supervised:

   * ``loss_ce``: cross-entropy over all Q queries of every crop; unmatched queries target
     the "no object" class K, whose weight is ``no_object_weight`` (official 0.1); the mean
     is weighted by the class weights (``F.cross_entropy`` with ``weight``);
   * ``loss_mask`` / ``loss_dice``: sigmoid BCE and dice of each matched mask against its
     target on ``num_points`` PointRend importance-sampled points
     (:func:`~ibs_study.models.mask_ops.uncertain_point_coords`), summed over matched masks
     and divided by ``num_masks``.

``num_masks`` is the number of ground-truth segments in the batch, computed once: under
``torch.distributed`` it is all-reduced and divided by the world size, then clamped to >= 1.
A crop without targets contributes only "no object" cross-entropy.

Terms are multiplied by their weights (official class 2, mask 5, dice 5) in
:meth:`SetCriterion.forward` only. The final stage's keys are ``loss_ce``, ``loss_mask``,
``loss_dice``; stage ``l`` of the others gets the suffix ``_l`` (``loss_ce_0`` is the
query-only prediction), as the official code names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ibs_study.losses import dice_loss, sigmoid_ce_loss
from ibs_study.models.mask_ops import point_sample, uncertain_point_coords
from ibs_study.models.matcher import HungarianMatcher

__all__ = ["SetCriterion", "CriterionOutput", "count_masks", "layer_suffix"]

Match = tuple[torch.Tensor, torch.Tensor]


@dataclass
class CriterionOutput:
    """What the criterion computed.

    Attributes:
        losses: weighted loss terms (see the module docstring for the keys).
        matches: ``[L][B]`` pairs ``(query_index, target_index)`` of every stage and crop.
        num_masks: the normaliser of the mask terms.
    """

    losses: dict[str, torch.Tensor]
    matches: list[list[Match]]
    num_masks: float


def layer_suffix(layer: int, num_layers: int) -> str:
    """Key suffix of stage ``layer`` of ``num_layers``: "" for the final one, else ``_<layer>``."""
    return "" if layer == num_layers - 1 else f"_{layer}"


def count_masks(target_labels: list[torch.Tensor], device: torch.device) -> float:
    """Number of target masks per process: local count, averaged over processes under DDP, >= 1."""
    count = torch.tensor(float(sum(int(t.numel()) for t in target_labels)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(float(count.item()), 1.0)


class SetCriterion(nn.Module):
    """Mask2Former losses for all prediction stages.

    Args:
        num_classes: K (the class logits have K + 1 entries).
        matcher: the Hungarian matcher.
        class_weight: weight of ``loss_ce`` (official 2.0).
        mask_weight: weight of ``loss_mask`` (official 5.0).
        dice_weight: weight of ``loss_dice`` (official 5.0).
        no_object_weight: cross-entropy weight of the "no object" class (official 0.1).
        num_points: points per mask (official 12544).
        oversample_ratio: PointRend oversampling (official 3.0).
        importance_sample_ratio: fraction of points picked by uncertainty (official 0.75).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        *,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def loss_labels(
        self, class_logits: torch.Tensor, target_labels: list[torch.Tensor], matches: list[Match]
    ) -> torch.Tensor:
        """Weighted cross-entropy of all queries.

        Args:
            class_logits: (B, Q, K + 1).
            target_labels: B tensors (N_b,) int64.
            matches: B pairs (query_index, target_index).

        Returns:
            () unweighted ``loss_ce``.
        """
        target_classes = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.int64, device=class_logits.device
        )  # (B, Q), "no object" unless matched
        for b, (queries, targets) in enumerate(matches):
            target_classes[b, queries.to(class_logits.device)] = target_labels[b][
                targets.to(target_labels[b].device)
            ]
        return F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, self.class_weights)

    def loss_masks(
        self,
        mask_logits: torch.Tensor,
        target_masks: list[torch.Tensor],
        matches: list[Match],
        num_masks: float,
    ) -> dict[str, torch.Tensor]:
        """BCE and dice of matched masks on importance-sampled points.

        Args:
            mask_logits: (B, Q, h, w).
            target_masks: B tensors (N_b, H, W) float, same field of view as ``mask_logits``.
            matches: B pairs (query_index, target_index).
            num_masks: normaliser.

        Returns:
            unweighted ``{"loss_mask": (), "loss_dice": ()}``.
        """
        device = mask_logits.device
        batch_index = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(device)
        query_index = torch.cat([q for q, _ in matches]).to(device)
        if query_index.numel() == 0:
            zero = mask_logits.sum() * 0.0  # keeps the graph connected (DDP) and the value exact
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        predicted = mask_logits[batch_index, query_index][:, None]  # (M, 1, h, w)
        targets = torch.cat([masks[t.to(masks.device)] for masks, (_, t) in zip(target_masks, matches)])[
            :, None
        ]
        with torch.no_grad():
            coords = uncertain_point_coords(
                predicted, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )  # (M, P, 2)
            point_targets = point_sample(targets, coords).squeeze(1)  # (M, P)
        # float32 under autocast: sums over 12544 points in half precision lose the dice loss
        point_logits = point_sample(predicted.float(), coords).squeeze(1)  # (M, P)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_targets).sum() / num_masks,
            "loss_dice": dice_loss(point_logits, point_targets).sum() / num_masks,
        }

    def layer_losses(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        target_labels: list[torch.Tensor],
        target_masks: list[torch.Tensor],
        num_masks: float,
    ) -> tuple[dict[str, torch.Tensor], list[Match]]:
        """Match one stage and return its unweighted terms and the matching."""
        matches = self.matcher(class_logits, mask_logits, target_labels, target_masks)
        terms = {"loss_ce": self.loss_labels(class_logits, target_labels, matches)}
        terms.update(self.loss_masks(mask_logits, target_masks, matches, num_masks))
        return terms, matches

    def forward(
        self,
        class_logits: list[torch.Tensor],
        mask_logits: list[torch.Tensor],
        target_labels: list[torch.Tensor],
        target_masks: list[torch.Tensor],
    ) -> CriterionOutput:
        """
        Args:
            class_logits: L stages (B, Q, K + 1), final stage last.
            mask_logits: L stages (B, Q, h, w).
            target_labels: B tensors (N_b,) int64 in [0, K).
            target_masks: B tensors (N_b, H, W) bool or float, covering the same (padded) area
                as ``mask_logits`` (H / h = W / w = the mask stride).

        Returns:
            weighted losses of all stages, the matching of every stage, and ``num_masks``.
        """
        if len(class_logits) != len(mask_logits):
            raise ValueError(
                f"SetCriterion: {len(class_logits)} class stages but {len(mask_logits)} mask stages"
            )
        for b, (labels, masks) in enumerate(zip(target_labels, target_masks)):
            if labels.shape[0] != masks.shape[0]:
                raise ValueError(
                    f"SetCriterion: crop {b} has {labels.shape[0]} labels but {masks.shape[0]} masks"
                )
            if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
                raise ValueError(
                    f"SetCriterion: crop {b} has labels outside [0, {self.num_classes}): {labels.tolist()}"
                )
        device = class_logits[0].device
        num_masks = count_masks(target_labels, device)
        float_masks = [m.to(device=device, dtype=torch.float32) for m in target_masks]
        losses: dict[str, torch.Tensor] = {}
        all_matches = []
        for layer, (classes, masks) in enumerate(zip(class_logits, mask_logits)):
            terms, matches = self.layer_losses(classes, masks, target_labels, float_masks, num_masks)
            suffix = layer_suffix(layer, len(class_logits))
            losses.update({f"{name}{suffix}": self.weights[name] * value for name, value in terms.items()})
            all_matches.append(matches)
        return CriterionOutput(losses=losses, matches=all_matches, num_masks=num_masks)
