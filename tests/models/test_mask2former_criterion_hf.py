"""Cross-check of the set criterion against Hugging Face transformers' ``Mask2FormerLoss``.

Both sides get identical predictions and targets. The importance-sampled loss points are
replaced on both sides by the same fixed coordinates, and the matcher's uniform points come
from the global RNG, seeded identically before each side (both draw P x 2 uniforms per crop,
crop by crop, stage by stage).
"""

from __future__ import annotations

import pytest
import torch

from ibs_study.models import mask2former_criterion
from ibs_study.models.mask2former_criterion import SetCriterion
from ibs_study.models.matcher import HungarianMatcher

modeling = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
Mask2FormerConfig = pytest.importorskip("transformers").Mask2FormerConfig

NUM_CLASSES, QUERIES, POINTS = 5, 7, 200


@pytest.fixture
def fixed_points(monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    coords = torch.rand(64, POINTS, 2, generator=torch.Generator().manual_seed(11))

    def ours(logits: torch.Tensor, num_points: int, *args, **kwargs) -> torch.Tensor:
        assert num_points == POINTS
        return coords[: logits.shape[0]]

    def theirs(self, logits: torch.Tensor, uncertainty, num_points: int, *args) -> torch.Tensor:
        assert num_points == POINTS
        return coords[: logits.shape[0]]

    monkeypatch.setattr(mask2former_criterion, "uncertain_point_coords", ours)
    monkeypatch.setattr(modeling.Mask2FormerLoss, "sample_points_using_uncertainty", theirs)
    return coords


def make_case(seed: int, num_layers: int):
    generator = torch.Generator().manual_seed(seed)
    batch, h, w = 3, 12, 16
    class_logits = [
        2 * torch.randn(batch, QUERIES, NUM_CLASSES + 1, generator=generator) for _ in range(num_layers)
    ]
    mask_logits = [3 * torch.randn(batch, QUERIES, h, w, generator=generator) for _ in range(num_layers)]
    counts = [4, 1, 6]
    labels = [torch.randint(0, NUM_CLASSES, (n,), generator=generator) for n in counts]
    masks = [torch.rand(n, 4 * h, 4 * w, generator=generator) > 0.7 for n in counts]
    return class_logits, mask_logits, labels, masks


def hf_loss() -> torch.nn.Module:
    config = Mask2FormerConfig(
        num_labels=NUM_CLASSES,
        no_object_weight=0.1,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        train_num_points=POINTS,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    return modeling.Mask2FormerLoss(config, weight_dict={})


def our_criterion() -> SetCriterion:
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=POINTS)
    return SetCriterion(NUM_CLASSES, matcher, no_object_weight=0.1, num_points=POINTS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_and_matching_agree_with_transformers(seed: int, fixed_points: torch.Tensor) -> None:
    num_layers = 3
    class_logits, mask_logits, labels, masks = make_case(seed, num_layers)
    theirs = hf_loss()
    float_masks = [m.float() for m in masks]
    # one RNG stream, stage by stage in our order (query-only first); the loss itself draws
    # nothing (fixed points), so the matcher of each stage sees the same uniforms as ours
    torch.manual_seed(100 + seed)
    expected = [
        theirs(mask, classes, float_masks, labels) for classes, mask in zip(class_logits, mask_logits)
    ]
    torch.manual_seed(100 + seed)
    expected_matches = [
        theirs.matcher(mask, classes, float_masks, labels) for classes, mask in zip(class_logits, mask_logits)
    ]

    criterion = our_criterion()
    torch.manual_seed(100 + seed)
    ours = criterion(class_logits, mask_logits, labels, masks)
    weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    names = {"loss_ce": "loss_cross_entropy", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}
    for layer in range(num_layers):
        suffix = "" if layer == num_layers - 1 else f"_{layer}"
        for name, weight in weights.items():
            ours_raw = float(ours.losses[name + suffix]) / weight
            assert ours_raw == pytest.approx(float(expected[layer][names[name]]), abs=1e-5, rel=1e-5), (
                layer,
                name,
            )
        for (q, t), (hq, ht) in zip(ours.matches[layer], expected_matches[layer]):
            assert q.tolist() == torch.as_tensor(hq).tolist() and t.tolist() == torch.as_tensor(ht).tolist()
    assert ours.num_masks == 11.0


def test_nonzero_values(fixed_points: torch.Tensor) -> None:
    """Guard against comparing zeros: every compared term is clearly positive."""
    class_logits, mask_logits, labels, masks = make_case(0, 1)
    torch.manual_seed(0)
    ours = our_criterion()(class_logits, mask_logits, labels, masks)
    assert all(float(v) > 0.1 for v in ours.losses.values())
