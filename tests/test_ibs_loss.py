"""IBS loss, partner assignment and the shared-thing-class statistic.

The loss is checked against an independent formula written with explicit loops and the
focal loss for a zero target spelled out: ``FL(x) = (1 - alpha) * sigmoid(x)**gamma * log(1 + e^x)``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ibs_study.data.batch import CropTarget
from ibs_study.losses import (
    IBSConfig,
    assign_partners,
    ibs_loss,
    shared_thing_class_fraction,
    weighted_ibs_loss,
)
from ibs_study.models.mask_ops import point_sample, uncertain_point_coords
from ibs_study.models.output import UnifiedOutput


def focal_zero_target(logit: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(1.0 - alpha) * p**gamma * math.log(1.0 - p)


def reference_ibs(
    features: list,
    embeddings: list,
    thing_index: list,
    thing_weights: list,
    layers: tuple[int, ...],
    partners: dict[int, list[int]],
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[int, float]:
    """Per-layer IBS value from nested Python lists, one pixel at a time."""
    channels, height, width = len(features[0]), len(features[0][0]), len(features[0][0][0])
    values = {}
    for layer in layers:
        weighted_sum, weight_total = 0.0, 0.0
        for crop in range(len(features)):
            partner = partners[layer][crop]
            for row, weight in zip(thing_index[layer][crop], thing_weights[layer][crop]):
                pixel_sum = 0.0
                for y in range(height):
                    for x in range(width):
                        logit = sum(
                            embeddings[layer][crop][row][c] * features[partner][c][y][x]
                            for c in range(channels)
                        )
                        pixel_sum += focal_zero_target(logit, alpha, gamma)
                weighted_sum += weight * pixel_sum / (height * width)
                weight_total += weight
        values[layer] = weighted_sum / max(weight_total, 1.0)
    return values


def make_output(
    generator: torch.Generator,
    things_per_crop: list[int],
    *,
    num_layers: int = 1,
    ibs_layers: tuple[int, ...] = (0,),
    kernels_per_thing: int = 1,
    extra_rows: int = 2,
    channels: int = 3,
    size: tuple[int, int] = (2, 3),
    mask_loss_weight: float = 1.0,
) -> UnifiedOutput:
    """A small UnifiedOutput in float64: per crop, ``kernels_per_thing`` rows per thing
    (weights summing to 1 per thing) after ``extra_rows`` non-thing rows."""
    batch = len(things_per_crop)
    features = torch.randn(batch, channels, *size, generator=generator, dtype=torch.float64)
    embeddings, thing_index, thing_weights = [], [], []
    for _ in range(num_layers):
        layer_embeddings, layer_index, layer_weights = [], [], []
        for things in things_per_crop:
            rows = things * kernels_per_thing
            layer_embeddings.append(
                torch.randn(extra_rows + rows, channels, generator=generator, dtype=torch.float64)
            )
            layer_index.append(torch.arange(extra_rows, extra_rows + rows))
            raw = torch.rand(things, kernels_per_thing, generator=generator, dtype=torch.float64) + 0.1
            layer_weights.append((raw / raw.sum(1, keepdim=True)).reshape(-1))
        embeddings.append(layer_embeddings)
        thing_index.append(layer_index)
        thing_weights.append(layer_weights)
    return UnifiedOutput(
        features=features,
        embeddings=embeddings,
        thing_index=thing_index,
        thing_weights=thing_weights,
        ibs_layers=ibs_layers,
        mask_loss_weight=mask_loss_weight,
    )


def as_lists(output: UnifiedOutput) -> tuple[list, list, list, list]:
    return (
        output.features.tolist(),
        [[e.tolist() for e in layer] for layer in output.embeddings],
        [[i.tolist() for i in layer] for layer in output.thing_index],
        [[w.tolist() for w in layer] for layer in output.thing_weights],
    )


# --------------------------------------------------------------------------- value


def test_panoptic_fcn_style_value_matches_loops() -> None:
    """One layer, 3 kernels per GT thing with weights summing to 1, pair-mate partners:
    the normaliser is the number of GT things (2 + 0 + 1 + 3 = 6)."""
    gen = torch.Generator().manual_seed(0)
    output = make_output(gen, [2, 0, 1, 3], kernels_per_thing=3)
    partner = assign_partners(4, "pair_mate")
    assert partner.tolist() == [1, 0, 3, 2]
    cfg = IBSConfig(partner="pair_mate")
    terms = ibs_loss(output, partner, cfg)
    expected = reference_ibs(*as_lists(output), (0,), {0: partner.tolist()})
    assert terms["loss_ibs"].shape == ()
    assert terms["loss_ibs"].item() == pytest.approx(expected[0], rel=1e-10)
    assert terms["ibs_layer0"].item() == pytest.approx(expected[0], rel=1e-10)
    weight_total = sum(float(w.sum()) for w in output.thing_weights[0])
    assert weight_total == pytest.approx(6.0)


def test_mask2former_style_value_matches_loops_per_layer() -> None:
    """Three layers, IBS on layers 1 and 2 only, weight 1 per matched query; with B = 2 the
    per-layer random partner can only be the other crop."""
    gen = torch.Generator().manual_seed(1)
    output = make_output(gen, [3, 2], num_layers=3, ibs_layers=(1, 2))
    for layer in output.thing_weights:
        for crop, weights in enumerate(layer):
            layer[crop] = torch.ones_like(weights)
    cfg = IBSConfig(partner="random_per_layer")
    terms = ibs_loss(output, None, cfg, generator=torch.Generator().manual_seed(5))
    expected = reference_ibs(*as_lists(output), (1, 2), {1: [1, 0], 2: [1, 0]})
    assert set(terms) == {"loss_ibs", "ibs_layer1", "ibs_layer2"}
    assert terms["ibs_layer1"].item() == pytest.approx(expected[1], rel=1e-10)
    assert terms["ibs_layer2"].item() == pytest.approx(expected[2], rel=1e-10)
    assert terms["loss_ibs"].item() == pytest.approx(expected[1] + expected[2], rel=1e-10)


def test_uneven_partner_groups_over_layers_match_loops() -> None:
    """Five crops, three IBS layers, a new random partner per layer: some crops are the partner
    of several crops at a layer and of none at another, and one crop has no thing. Every
    (layer, crop) pair must still meet exactly its own partner's features."""
    gen = torch.Generator().manual_seed(11)
    output = make_output(gen, [2, 0, 3, 1, 2], num_layers=4, ibs_layers=(1, 2, 3), kernels_per_thing=2)
    terms = ibs_loss(output, None, IBSConfig(partner="random_per_layer"), torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    partners = {layer: assign_partners(5, "random", replay).tolist() for layer in (1, 2, 3)}
    assert any(len(set(p)) < 5 for p in partners.values())  # a crop shared as partner somewhere
    expected = reference_ibs(*as_lists(output), (1, 2, 3), partners)
    for layer in (1, 2, 3):
        assert terms[f"ibs_layer{layer}"].item() == pytest.approx(expected[layer], rel=1e-10)
    assert terms["loss_ibs"].item() == pytest.approx(sum(expected.values()), rel=1e-10)


def test_random_partner_value_and_alpha_gamma() -> None:
    gen = torch.Generator().manual_seed(2)
    output = make_output(gen, [1, 2, 1], kernels_per_thing=2)
    partner = torch.tensor([2, 0, 1])
    cfg = IBSConfig(partner="random", alpha=0.4, gamma=1.5)
    expected = reference_ibs(*as_lists(output), (0,), {0: [2, 0, 1]}, alpha=0.4, gamma=1.5)
    assert ibs_loss(output, partner, cfg)["loss_ibs"].item() == pytest.approx(expected[0], rel=1e-10)


def test_normaliser_is_clamped_to_one() -> None:
    """A total thing weight below 1 is not divided by: the loss is the plain weighted sum."""
    gen = torch.Generator().manual_seed(3)
    output = make_output(gen, [1, 0])
    output.thing_weights[0][0] = torch.tensor([0.25], dtype=torch.float64)
    features, embeddings, thing_index, _ = as_lists(output)
    row = thing_index[0][0][0]
    pixel_losses = [
        focal_zero_target(sum(embeddings[0][0][row][c] * features[1][c][y][x] for c in range(3)))
        for y in range(2)
        for x in range(3)
    ]
    expected = 0.25 * sum(pixel_losses) / 6
    value = ibs_loss(output, torch.tensor([1, 0]), IBSConfig())["loss_ibs"].item()
    assert value == pytest.approx(expected, rel=1e-10)


def test_point_sampling_matches_manual_points() -> None:
    """Point sampling: focal averaged over importance-sampled points of the IBS logits
    themselves, drawn for all thing rows at once from the generator, the rows grouped by the
    partner crop they meet (partner 0's rows first: here crop 1's, then crop 0's)."""
    gen = torch.Generator().manual_seed(4)
    output = make_output(gen, [2, 1], size=(8, 12))
    cfg = IBSConfig(point_sampling=True, num_points=20, oversample_ratio=3.0, importance_sample_ratio=0.75)
    value = ibs_loss(output, torch.tensor([1, 0]), cfg, generator=torch.Generator().manual_seed(9))[
        "loss_ibs"
    ]

    replay = torch.Generator().manual_seed(9)
    logits = torch.cat(
        [
            torch.einsum("nc,chw->nhw", output.thing_embeddings(0, crop), output.features[partner])
            for crop, partner in ((1, 0), (0, 1))
        ]
    )[:, None]  # (3, 1, 8, 12)
    coords = uncertain_point_coords(logits, 20, 3.0, 0.75, generator=replay)
    assert coords.shape == (3, 20, 2)
    points = point_sample(logits, coords).squeeze(1).tolist()
    weights = output.thing_weights[0][1].tolist() + output.thing_weights[0][0].tolist()
    weighted_sum = sum(
        w * sum(focal_zero_target(v) for v in row) / len(row) for w, row in zip(weights, points)
    )
    assert value.item() == pytest.approx(weighted_sum / max(sum(weights), 1.0), rel=1e-10)


def test_point_sampling_on_zero_logits_equals_full_map() -> None:
    """Zero features give logit 0 everywhere: points and pixels then agree exactly, and the
    value is FL(0) * Σw / max(Σw, 1) = FL(0) (Σw = 3 things)."""
    gen = torch.Generator().manual_seed(6)
    output = make_output(gen, [2, 1], size=(8, 8))
    output.features.zero_()
    partner = torch.tensor([1, 0])
    full = ibs_loss(output, partner, IBSConfig())["loss_ibs"].item()
    points = ibs_loss(output, partner, IBSConfig(point_sampling=True, num_points=16))["loss_ibs"].item()
    assert full == pytest.approx(focal_zero_target(0.0), rel=1e-12)
    assert points == pytest.approx(full, rel=1e-12)


# --------------------------------------------------------------------------- gradients, edge cases


def test_one_sgd_step_lowers_cross_crop_logits_and_reaches_both_sides() -> None:
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(4, 5, 6, 6, generator=gen).abs().requires_grad_()
    embeddings = [torch.randn(4, 5, generator=gen).abs().requires_grad_() for _ in range(4)]
    thing_index = [torch.tensor([1, 3]) for _ in range(4)]  # rows 0 and 2 are stuff
    output = UnifiedOutput(
        features=features,
        embeddings=[embeddings],
        thing_index=[thing_index],
        thing_weights=[[torch.ones(2) for _ in range(4)]],
        ibs_layers=(0,),
    )
    partner = assign_partners(4, "pair_mate")

    def cross_logits() -> torch.Tensor:
        return torch.stack(
            [torch.einsum("nc,chw->n", embeddings[b][[1, 3]], features[int(partner[b])]) for b in range(4)]
        )

    before = cross_logits().detach()
    ibs_loss(output, partner, IBSConfig())["loss_ibs"].backward()
    for b in range(4):
        assert embeddings[b].grad[[1, 3]].abs().sum() > 0
        assert torch.equal(embeddings[b].grad[[0, 2]], torch.zeros(2, 5))  # stuff rows untouched
        assert features.grad[b].abs().sum() > 0  # every crop is someone's partner
    with torch.no_grad():
        features -= 10.0 * features.grad
        for e in embeddings:
            e -= 10.0 * e.grad
    after = cross_logits().detach()
    assert bool((after < before).all())


def test_no_thing_gives_exact_zero_with_gradient_path() -> None:
    features = torch.randn(2, 3, 4, 4).requires_grad_()
    output = UnifiedOutput(
        features=features,
        embeddings=[[torch.randn(2, 3), torch.randn(1, 3)]],
        thing_index=[[torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)]],
        thing_weights=[[torch.zeros(0), torch.zeros(0)]],
        ibs_layers=(0,),
    )
    for cfg in (IBSConfig(), IBSConfig(point_sampling=True, num_points=8)):
        loss = ibs_loss(output, torch.tensor([1, 0]), cfg)["loss_ibs"]
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(features.grad, torch.zeros_like(features))
        features.grad = None


def test_reads_no_value_of_the_model_tensors() -> None:
    """The loss never copies a value of the model's tensors to the host (which, on a GPU, waits
    for every queued kernel): on the meta device, which holds no values, any such read raises."""
    cpu = make_output(torch.Generator().manual_seed(6), [2, 0, 3, 1], num_layers=3, ibs_layers=(1, 2))
    for cfg in (IBSConfig(), IBSConfig(point_sampling=True, num_points=5)):
        features = cpu.features.to("meta").requires_grad_()
        embeddings = [[e.to("meta").requires_grad_() for e in layer] for layer in cpu.embeddings]
        output = replace(
            cpu,
            features=features,
            embeddings=embeddings,
            thing_index=[[i.to("meta") for i in layer] for layer in cpu.thing_index],
            thing_weights=[[w.to("meta") for w in layer] for layer in cpu.thing_weights],
        )
        terms = ibs_loss(output, torch.tensor([1, 0, 3, 2]), cfg)
        assert sorted(terms) == ["ibs_layer1", "ibs_layer2", "loss_ibs"]
        assert all(t.device.type == "meta" and t.shape == () for t in terms.values())
        terms["loss_ibs"].backward()
        assert features.grad.shape == features.shape
        assert embeddings[2][2].grad.shape == embeddings[2][2].shape


def test_weighted_loss_applies_lambda_and_mask_weight_once() -> None:
    gen = torch.Generator().manual_seed(8)
    output = make_output(gen, [1, 2], mask_loss_weight=4.0)
    partner = torch.tensor([1, 0])
    plain = ibs_loss(output, partner, IBSConfig())["loss_ibs"].item()
    assert weighted_ibs_loss(output, partner, IBSConfig(enabled=False, weight=3.0)) == {}
    on = weighted_ibs_loss(output, partner, IBSConfig(enabled=True, weight=3.0))
    assert list(on) == ["loss_ibs"]
    assert on["loss_ibs"].item() == pytest.approx(3.0 * plain, rel=1e-12)
    scaled = weighted_ibs_loss(
        output, partner, IBSConfig(enabled=True, weight=3.0, scale_by_mask_weight=True)
    )
    assert scaled["loss_ibs"].item() == pytest.approx(12.0 * plain, rel=1e-12)


def test_per_layer_redraw_never_picks_itself_and_varies() -> None:
    """Crop 0 holds the only thing; each crop's features give a distinct constant logit, so
    each layer's value reveals the partner drawn for it."""
    num_layers = 200
    features = torch.ones(3, 1, 2, 2) * torch.tensor([2.0, 1.0, 3.0]).view(3, 1, 1, 1)
    output = UnifiedOutput(
        features=features,
        embeddings=[[torch.ones(1, 1), torch.ones(0, 1), torch.ones(0, 1)] for _ in range(num_layers)],
        thing_index=[[torch.tensor([0]), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)]]
        * num_layers,
        thing_weights=[[torch.ones(1), torch.zeros(0), torch.zeros(0)]] * num_layers,
        ibs_layers=tuple(range(num_layers)),
    )
    terms = ibs_loss(output, None, IBSConfig(partner="random_per_layer"), torch.Generator().manual_seed(0))
    by_partner = {1: focal_zero_target(1.0), 2: focal_zero_target(3.0)}
    drawn = []
    for layer in range(num_layers):
        value = terms[f"ibs_layer{layer}"].item()
        matches = [p for p, v in by_partner.items() if v == pytest.approx(value, rel=1e-5)]
        assert len(matches) == 1, f"layer {layer}: value {value} matches no other crop"
        drawn.append(matches[0])
    assert 70 <= drawn.count(1) <= 130  # fair coin over 200 layers: outside is p < 1e-5


def test_partner_index_is_validated() -> None:
    output = make_output(torch.Generator().manual_seed(0), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="itself"):
        ibs_loss(output, torch.tensor([1, 1, 3, 2]), IBSConfig())
    with pytest.raises(ValueError, match="shape"):
        ibs_loss(output, torch.tensor([1, 0]), IBSConfig())
    with pytest.raises(ValueError, match="in \\[0, 3\\]"):
        ibs_loss(output, torch.tensor([1, 0, 4, 2]), IBSConfig())
    with pytest.raises(ValueError, match="partner_index"):
        ibs_loss(output, None, IBSConfig(partner="pair_mate"))


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ValueError, match="ibs.weight"):
        IBSConfig(weight=-0.5)
    with pytest.raises(ValueError, match="ibs.partner"):
        IBSConfig(partner="mate")
    assert IBSConfig(weight=0.0).weight == 0.0


def test_detach_bias_needs_the_bias_detached_view() -> None:
    output = make_output(torch.Generator().manual_seed(0), [1, 2])
    with pytest.raises(ValueError, match="ibs.detach_bias needs a model"):
        ibs_loss(output, assign_partners(2, "pair_mate"), IBSConfig(detach_bias=True))


# --------------------------------------------------------------------------- partners


def test_pair_mates_and_errors() -> None:
    partner = assign_partners(6, "pair_mate")
    assert partner.dtype == torch.int64 and partner.shape == (6,)
    assert partner.tolist() == [1, 0, 3, 2, 5, 4]
    with pytest.raises(ValueError, match="train.batch_size"):
        assign_partners(5, "pair_mate")
    with pytest.raises(ValueError, match="train.batch_size"):
        assign_partners(1, "random")
    with pytest.raises(ValueError, match="mode"):
        assign_partners(4, "random_per_layer")


def test_random_partners_are_uniform_among_others() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([assign_partners(4, "random", gen) for _ in range(3000)])  # (3000, 4)
    assert draws.shape == (3000, 4)
    for crop in range(4):
        counts = torch.bincount(draws[:, crop], minlength=4)
        assert counts[crop] == 0
        others = counts[[c for c in range(4) if c != crop]].double()
        assert bool(((others / 3000 - 1 / 3).abs() < 0.04).all())  # 0.04 ≈ 4.6 standard deviations


def _target(labels: list[int], is_thing: list[bool]) -> CropTarget:
    n = len(labels)
    return CropTarget(
        masks=torch.zeros(n, 2, 2, dtype=torch.bool),
        labels=torch.tensor(labels, dtype=torch.int64),
        is_thing=torch.tensor(is_thing, dtype=torch.bool),
        ignore=torch.zeros(2, 2, dtype=torch.bool),
        segment_ids=torch.arange(1, n + 1),
    )


def test_shared_thing_class_fraction_by_hand() -> None:
    targets = [
        _target([0, 3, 4], [False, True, True]),  # things {3, 4}
        _target([0, 4], [False, True]),  # things {4}
        _target([0, 2], [False, False]),  # stuff only (label 2 stuff)
        _target([2, 5], [False, True]),  # things {5}
    ]
    # pairs (0,1) share 4; (1,0) share 4; (2,3) none; (3,2) none
    assert shared_thing_class_fraction(targets, torch.tensor([1, 0, 3, 2])) == 0.5
    # (0,2) none, (1,0) share, (2,1) none, (3,0) none
    assert shared_thing_class_fraction(targets, torch.tensor([2, 0, 1, 0])) == 0.25


def test_autocast_keeps_the_focal_loss_in_float32() -> None:
    gen = torch.Generator().manual_seed(10)
    output = make_output(gen, [2, 3], size=(8, 8))
    output.features = output.features.float()
    for layer in output.embeddings:
        layer[:] = [e.float() for e in layer]
    partner = torch.tensor([1, 0])
    exact = ibs_loss(output, partner, IBSConfig())["loss_ibs"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ibs_loss(output, partner, IBSConfig())["loss_ibs"]
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(exact.item(), rel=2e-2)


def test_normaliser_carries_no_gradient() -> None:
    """Thing weights may carry gradients (Panoptic FCN's centre scores); the count that
    normalises the loss must not: the gradient w.r.t. w_t is FL_t / Σw."""
    gen = torch.Generator().manual_seed(11)
    output = make_output(gen, [2, 1])
    weights = [w.clone().requires_grad_() for w in output.thing_weights[0]]
    output.thing_weights[0] = weights
    partner = torch.tensor([1, 0])
    ibs_loss(output, partner, IBSConfig())["loss_ibs"].backward()
    total = sum(float(w.detach().sum()) for w in weights)
    for crop, w in enumerate(weights):
        logits = torch.einsum("nc,chw->nhw", output.thing_embeddings(0, crop), output.features[1 - crop])
        per_mask = [
            sum(focal_zero_target(v) for v in row) / row.numel() for row in logits.flatten(1).detach()
        ]
        assert w.grad.tolist() == pytest.approx([m / max(total, 1.0) for m in per_mask], rel=1e-9)


def test_zero_target_focal_equals_torchvision() -> None:
    """The closed form used by IBS equals torchvision's sigmoid focal loss with target 0."""
    from ibs_study.losses import focal_loss, focal_loss_zero_target

    logits = torch.cat(
        [torch.linspace(-40, 40, 161), torch.randn(199, generator=torch.Generator().manual_seed(0))]
    )
    logits = logits.reshape(4, -1).double()
    for alpha, gamma in ((0.25, 2.0), (0.5, 0.0), (0.1, 3.0)):
        expected = focal_loss(logits, torch.zeros_like(logits), alpha=alpha, gamma=gamma)
        assert torch.allclose(focal_loss_zero_target(logits, alpha, gamma), expected, rtol=1e-8, atol=0)


def test_zero_target_focal_gradient_equals_torchvision_and_gradcheck() -> None:
    """The hand-written backward equals autograd through torchvision's focal loss, and passes
    gradcheck; float32 stays within a few ulps of torchvision over logits from -40 to 40."""
    from ibs_study.losses import focal_loss, focal_loss_zero_target

    base = torch.cat(
        [torch.linspace(-40, 40, 81), torch.randn(79, generator=torch.Generator().manual_seed(1))]
    )
    for alpha, gamma in ((0.25, 2.0), (0.5, 0.0), (0.1, 3.0)):
        ours = base.reshape(4, -1).double().requires_grad_()
        theirs = ours.detach().clone().requires_grad_()
        weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
        (focal_loss_zero_target(ours, alpha, gamma) * weights).sum().backward()
        (focal_loss(theirs, torch.zeros_like(theirs), alpha=alpha, gamma=gamma) * weights).sum().backward()
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-9, atol=1e-15)
        single = base.reshape(4, -1).float()
        expected = focal_loss(single.double(), torch.zeros_like(single.double()), alpha=alpha, gamma=gamma)
        assert torch.allclose(focal_loss_zero_target(single, alpha, gamma).double(), expected, rtol=1e-6)
    small = (
        torch.randn(3, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    ).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: focal_loss_zero_target(x, 0.25, 2.0), (small,))
    with pytest.raises(TypeError, match="floating-point logits"):
        focal_loss_zero_target(torch.zeros(2, 3, dtype=torch.int64))
