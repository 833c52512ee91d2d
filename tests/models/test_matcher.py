"""Hungarian matcher: pairwise costs against direct formulas, assignment against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ibs_study.losses import dice_loss
from ibs_study.models.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_ce, solve_assignment


def brute_force_min_cost(cost: torch.Tensor) -> float:
    """Smallest total cost over all one-to-one assignments of min(Q, N) pairs."""
    q, n = cost.shape
    if q >= n:
        return min(
            sum(float(cost[rows[j], j]) for j in range(n)) for rows in itertools.permutations(range(q), n)
        )
    return min(sum(float(cost[i, cols[i]]) for i in range(q)) for cols in itertools.permutations(range(n), q))


@pytest.mark.parametrize("shape", [(4, 3), (3, 3), (5, 2), (2, 4), (1, 3)])
def test_solve_assignment_equals_brute_force(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    for _ in range(40):
        cost = torch.randn(shape, generator=generator, dtype=torch.float64)
        rows, cols = solve_assignment(cost)
        assert rows.dtype == cols.dtype == torch.int64
        assert len(rows) == len(cols) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert torch.all(rows[1:] > rows[:-1])
        assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min_cost(cost), abs=1e-9)


def test_solve_assignment_rejects_non_finite_costs() -> None:
    cost = torch.zeros(3, 2)
    cost[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="crop 5"):
        solve_assignment(cost, crop=5)


def test_pairwise_costs_equal_per_pair_losses() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(5, 40, generator=generator)
    targets = (torch.rand(3, 40, generator=generator) > 0.5).float()
    targets[2] = torch.rand(40, generator=generator)  # fractional targets (bilinear samples of mask edges)
    ce = pairwise_sigmoid_ce(logits, targets)
    dice = pairwise_dice(logits, targets)
    assert ce.shape == dice.shape == (5, 3)
    for q in range(5):
        for n in range(3):
            expected_ce = F.binary_cross_entropy_with_logits(logits[q], targets[n])
            assert float(ce[q, n]) == pytest.approx(float(expected_ce), rel=1e-5)
            expected_dice = dice_loss(logits[q : q + 1], targets[n : n + 1])[0]
            assert float(dice[q, n]) == pytest.approx(float(expected_dice), rel=1e-5)


def test_cost_matrix_on_pixel_centres_hand_case() -> None:
    """Points at pixel centres read exact pixel values, so every cost term has a closed form."""
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=4)
    # 2 x 2 maps; the points are the four pixel centres
    points = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    mask_logits = torch.tensor([[[2.0, -2.0], [0.0, 1.0]]])  # Q = 1
    class_logits = torch.tensor([[0.0, math.log(3.0), 0.0]])  # probs 0.2, 0.6, 0.2
    masks = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [1, 1]]], dtype=torch.bool)  # row-major pixels
    labels = torch.tensor([1, 0])
    cost = matcher.cost_matrix(class_logits, mask_logits, labels, masks, points)

    flat_logits = torch.tensor([2.0, -2.0, 0.0, 1.0])
    probs = flat_logits.sigmoid()
    for n, (label, class_prob) in enumerate([(1, 0.6), (0, 0.2)]):
        target = masks[n].flatten().float()
        bce = -(target * probs.log() + (1 - target) * (1 - probs).log()).mean()
        dice = 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
        expected = 2.0 * -class_prob + 5.0 * bce + 5.0 * dice
        assert labels[n] == label
        assert float(cost[0, n]) == pytest.approx(float(expected), rel=1e-5)


def test_matcher_total_cost_is_minimal_for_its_points() -> None:
    """The matching it returns has the brute-force minimum of the cost on the points it drew."""
    matcher = HungarianMatcher(num_points=64)
    generator = torch.Generator().manual_seed(3)
    for draw in range(10):
        class_logits = torch.randn(1, 4, 6, generator=generator)
        mask_logits = 2 * torch.randn(1, 4, 8, 8, generator=generator)
        labels = torch.randint(0, 5, (3,), generator=generator)
        masks = torch.rand(3, 32, 32, generator=generator) > 0.6
        torch.manual_seed(draw)
        points = torch.rand(64, 2)
        cost = matcher.cost_matrix(class_logits[0], mask_logits[0], labels, masks, points)
        torch.manual_seed(draw)
        ((rows, cols),) = matcher(class_logits, mask_logits, [labels], [masks])
        assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min_cost(cost), abs=1e-5)


def test_matcher_recovers_a_planted_permutation() -> None:
    """Queries that copy the targets (permuted) and predict their classes are matched to them."""
    generator = torch.Generator().manual_seed(1)
    targets = torch.zeros(3, 16, 16, dtype=torch.bool)
    targets[0, :8, :8] = True
    targets[1, 8:, :] = True
    targets[2, :8, 8:] = True
    labels = torch.tensor([2, 0, 2])
    owner = {3: 0, 0: 1, 1: 2}  # query -> target; query 2 predicts nothing
    mask_logits = torch.full((1, 4, 16, 16), -8.0)
    class_logits = torch.zeros(1, 4, 4)
    class_logits[0, 2, 3] = 5.0  # "no object"
    for query, target in owner.items():
        mask_logits[0, query][targets[target]] = 8.0
        class_logits[0, query, labels[target]] = 5.0
    mask_logits += 0.1 * torch.randn(mask_logits.shape, generator=generator)
    empty = torch.zeros(0, 16, 16, dtype=torch.bool)
    matches = HungarianMatcher(num_points=256)(
        class_logits.expand(2, -1, -1),
        mask_logits.expand(2, -1, -1, -1),
        [labels, labels[:0]],
        [targets, empty],
    )
    rows, cols = matches[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == owner
    assert matches[1][0].numel() == 0 and matches[1][1].numel() == 0


def test_matcher_ignores_autocast_and_returns_cpu_int64() -> None:
    matcher = HungarianMatcher(num_points=32)
    class_logits = torch.randn(1, 3, 3, dtype=torch.bfloat16)
    mask_logits = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ((rows, cols),) = matcher(class_logits, mask_logits, [torch.tensor([0, 1])], [torch.ones(2, 16, 16)])
    assert rows.dtype == torch.int64 and rows.device.type == "cpu" and len(rows) == 2


def test_matcher_rejects_all_zero_weights() -> None:
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
