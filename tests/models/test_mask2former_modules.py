"""Mask2Former building blocks on random multi-scale inputs: deformable attention, pixel decoder,
masked-attention decoder and the set criterion with zero targets."""

from __future__ import annotations

import math

import pytest
import torch

from ibs_study.models.mask2former_criterion import SetCriterion, count_masks, layer_suffix
from ibs_study.models.matcher import HungarianMatcher
from ibs_study.models.pixel_decoder import (
    MSDeformAttnPixelDecoder,
    MultiScaleDeformableAttention,
    multi_scale_deformable_attention,
    sine_position_embedding,
)
from ibs_study.models.transformer_decoder import MaskedAttentionDecoder

CHANNELS = {"res2": 8, "res3": 16, "res4": 24, "res5": 32}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def bilinear_reference(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear read of value (H, W, D) at normalised (x, y), zeros outside: a direct formula."""
    h, w, d = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=value.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value[yy, xx]
    return out


def test_deformable_attention_at_pixel_centres_gathers_those_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    h, w, d, points = 3, 5, 4, 3
    value = torch.randn(1, h * w, 1, d, generator=generator, dtype=torch.float64)
    rows = torch.tensor([[0, 2, 1], [1, 1, 0]])  # Q = 2 queries x 3 points
    cols = torch.tensor([[0, 4, 3], [2, 2, 1]])
    locations = torch.stack(((cols.double() + 0.5) / w, (rows.double() + 0.5) / h), -1)
    locations = locations.view(1, 2, 1, 1, points, 2)
    weights = torch.softmax(torch.randn(1, 2, 1, 1, points, generator=generator, dtype=torch.float64), -1)
    out = multi_scale_deformable_attention(value, [(h, w)], locations, weights)
    assert out.shape == (1, 2, d)
    grid = value[0, :, 0].view(h, w, d)
    for q in range(2):
        expected = sum(weights[0, q, 0, 0, p] * grid[rows[q, p], cols[q, p]] for p in range(points))
        torch.testing.assert_close(out[0, q], expected)


def test_deformable_attention_matches_bilinear_reference_on_two_levels_and_heads() -> None:
    generator = torch.Generator().manual_seed(1)
    shapes = [(4, 6), (2, 3)]
    heads, d, points, queries = 2, 3, 2, 5
    total = sum(h * w for h, w in shapes)
    value = torch.randn(1, total, heads, d, generator=generator, dtype=torch.float64)
    # off-centre points, some beyond the border (zeros padding)
    locations = (
        torch.rand(1, queries, heads, len(shapes), points, 2, generator=generator, dtype=torch.float64) * 1.2
        - 0.1
    )
    weights = torch.softmax(torch.randn(1, queries, heads, len(shapes) * points, generator=generator), -1)
    weights = weights.to(torch.float64).view(1, queries, heads, len(shapes), points)
    out = multi_scale_deformable_attention(value, shapes, locations, weights)
    starts = [0, shapes[0][0] * shapes[0][1]]
    for q in range(queries):
        for m in range(heads):
            expected = torch.zeros(d, dtype=torch.float64)
            for level, (h, w) in enumerate(shapes):
                grid = value[0, starts[level] : starts[level] + h * w, m].view(h, w, d)
                for p in range(points):
                    x, y = locations[0, q, m, level, p].tolist()
                    expected += weights[0, q, m, level, p] * bilinear_reference(grid, x, y)
            torch.testing.assert_close(out[0, q, m * d : (m + 1) * d], expected)


def test_deformable_attention_gradients_match_finite_differences() -> None:
    generator = torch.Generator().manual_seed(2)
    shapes = [(3, 4), (2, 2)]
    value = torch.randn(1, 16, 1, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    locations = (
        0.1 + 0.8 * torch.rand(1, 2, 1, 2, 2, 2, generator=generator, dtype=torch.float64)
    ).requires_grad_()
    weights = torch.rand(1, 2, 1, 2, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, loc, wt: multi_scale_deformable_attention(v, shapes, loc, wt), (value, locations, weights)
    )


def test_deformable_attention_module_initial_offsets_follow_head_directions() -> None:
    """With zero input the sampling points are ref + (k+1) * direction_m pixels (official grid init)."""
    module = MultiScaleDeformableAttention(dim=8, num_levels=1, num_heads=4, num_points=2)
    offsets = module.sampling_offsets(torch.zeros(8)).view(4, 1, 2, 2)
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for k in range(2):
        torch.testing.assert_close(offsets[:, 0, k], (k + 1) * directions, atol=1e-6, rtol=0)
    weights = module.attention_weights(torch.randn(3, 8)).view(3, 4, 2).softmax(-1)
    torch.testing.assert_close(weights, torch.full_like(weights, 0.5))


def test_sine_position_embedding_hand_values() -> None:
    pos = sine_position_embedding(4, 8, num_feats=6, device=torch.device("cpu"))
    assert pos.shape == (1, 12, 4, 8)
    y = (2 + 1) / 4 * 2 * math.pi  # row 2
    x = (5 + 1) / 8 * 2 * math.pi  # column 5
    assert float(pos[0, 0, 2, 5]) == pytest.approx(math.sin(y), abs=1e-5)
    assert float(pos[0, 1, 2, 5]) == pytest.approx(math.cos(y), abs=1e-5)
    assert float(pos[0, 2, 2, 5]) == pytest.approx(math.sin(y / 10000 ** (2 / 6)), abs=1e-5)
    assert float(pos[0, 6, 2, 5]) == pytest.approx(math.sin(x), abs=1e-5)
    assert float(pos[0, 7, 2, 5]) == pytest.approx(math.cos(x), abs=1e-5)


def make_features(batch: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch, c, height // STRIDES[name], width // STRIDES[name], generator=generator)
        for name, c in CHANNELS.items()
    }


def test_pixel_decoder_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    decoder = MSDeformAttnPixelDecoder(
        CHANNELS,
        STRIDES,
        conv_dim=16,
        mask_dim=12,
        num_layers=2,
        num_heads=2,
        dim_feedforward=32,
        num_groups=4,
    )
    features = {k: v.requires_grad_() for k, v in make_features(2, 64, 96).items()}
    mask_features, multi_scale = decoder(features)
    assert mask_features.shape == (2, 12, 16, 24)
    assert [tuple(m.shape) for m in multi_scale] == [(2, 16, 2, 3), (2, 16, 4, 6), (2, 16, 8, 12)]
    (mask_features.sum() + sum(m.sum() for m in multi_scale)).backward()
    for name in CHANNELS:
        assert features[name].grad.abs().sum() > 0, name
    assert decoder.encoder[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_pixel_decoder_rejects_indivisible_group_norm() -> None:
    with pytest.raises(ValueError, match="num_groups 32"):
        MSDeformAttnPixelDecoder(CHANNELS, STRIDES, conv_dim=16, mask_dim=16, num_groups=32)


def tiny_decoder(
    num_queries: int = 5, num_predictions: int = 4, num_classes: int = 3
) -> MaskedAttentionDecoder:
    return MaskedAttentionDecoder(
        16,
        num_classes,
        hidden_dim=16,
        num_queries=num_queries,
        num_heads=2,
        dim_feedforward=32,
        num_predictions=num_predictions,
        mask_dim=8,
    )


def test_decoder_predictions_and_mask_product() -> None:
    torch.manual_seed(0)
    decoder = tiny_decoder()
    multi_scale = [torch.randn(2, 16, 2, 3), torch.randn(2, 16, 4, 6), torch.randn(2, 16, 8, 12)]
    mask_features = torch.randn(2, 8, 16, 24)
    out = decoder(multi_scale, mask_features)
    assert out.num_predictions == 4 and len(decoder.layers) == 3
    for classes, masks, embeddings in zip(out.class_logits, out.mask_logits, out.mask_embeddings):
        assert classes.shape == (2, 5, 4)
        assert masks.shape == (2, 5, 16, 24)
        assert embeddings.shape == (2, 5, 8)
        torch.testing.assert_close(masks, torch.einsum("bqc,bchw->bqhw", embeddings, mask_features))


def test_masked_cross_attention_ignores_memory_outside_the_predicted_mask() -> None:
    """One query, mask features that make its first mask positive on the left half only: layer 1 reads
    the left half of the coarsest level and nothing else. A mask negative everywhere attends everywhere."""
    torch.manual_seed(0)
    decoder = tiny_decoder(num_queries=1, num_predictions=2)
    decoder.eval()
    multi_scale = [torch.randn(1, 16, 2, 4), torch.randn(1, 16, 4, 8), torch.randn(1, 16, 8, 16)]
    embedding = decoder(multi_scale, torch.zeros(1, 8, 16, 32)).mask_embeddings[0][0, 0]  # (C,)
    direction = embedding / embedding.pow(2).sum()  # E . direction = 1

    def final_class_logits(sign_left: float, sign_right: float, level0: torch.Tensor) -> torch.Tensor:
        features = torch.zeros(1, 8, 16, 32)
        features[0, :, :, :16] = sign_left * direction[:, None, None]
        features[0, :, :, 16:] = sign_right * direction[:, None, None]
        with torch.no_grad():
            return decoder([level0, *multi_scale[1:]], features).class_logits[-1]

    base = multi_scale[0]
    changed_right = base.clone()
    changed_right[..., 2:] += 5.0
    changed_left = base.clone()
    changed_left[..., :2] += 5.0
    reference = final_class_logits(1.0, -1.0, base)
    torch.testing.assert_close(final_class_logits(1.0, -1.0, changed_right), reference)
    assert not torch.allclose(final_class_logits(1.0, -1.0, changed_left), reference)
    # empty mask: the fully blocked row is cleared, so the right half matters again
    reference_empty = final_class_logits(-1.0, -1.0, base)
    assert not torch.allclose(final_class_logits(-1.0, -1.0, changed_right), reference_empty)


def test_criterion_with_zero_targets_gives_only_no_object_cross_entropy() -> None:
    torch.manual_seed(0)
    num_classes, batch, queries = 4, 2, 6
    criterion = SetCriterion(num_classes, HungarianMatcher(num_points=64), num_points=64)
    class_logits = [torch.randn(batch, queries, num_classes + 1, requires_grad=True) for _ in range(3)]
    mask_logits = [torch.randn(batch, queries, 8, 8, requires_grad=True) for _ in range(3)]
    labels = [torch.zeros(0, dtype=torch.int64)] * batch
    masks = [torch.zeros(0, 32, 32, dtype=torch.bool)] * batch
    out = criterion(class_logits, mask_logits, labels, masks)
    assert out.num_masks == 1.0
    assert sorted(out.losses) == sorted(
        f"{t}{s}" for t in ("loss_ce", "loss_mask", "loss_dice") for s in ("_0", "_1", "")
    )
    for layer, suffix in enumerate(("_0", "_1", "")):
        expected_ce = -torch.log_softmax(class_logits[layer].detach(), -1)[..., num_classes].mean()
        assert out.losses[f"loss_ce{suffix}"].item() == pytest.approx(2.0 * expected_ce.item(), rel=1e-6)
        assert out.losses[f"loss_mask{suffix}"].item() == 0.0
        assert out.losses[f"loss_dice{suffix}"].item() == 0.0
        assert all(q.numel() == 0 for q, _ in out.matches[layer])
    sum(out.losses.values()).backward()
    assert class_logits[0].grad.abs().sum() > 0
    assert mask_logits[0].grad is not None and torch.all(mask_logits[0].grad == 0)


def test_criterion_weights_and_normaliser() -> None:
    """Weighted terms = weight x unweighted; mask terms summed over matches / num_masks."""
    torch.manual_seed(1)
    criterion = SetCriterion(
        3, HungarianMatcher(num_points=32), class_weight=2.0, mask_weight=5.0, dice_weight=7.0, num_points=32
    )
    class_logits = torch.randn(2, 4, 4)
    mask_logits = torch.randn(2, 4, 8, 8)
    labels = [torch.tensor([0, 2, 1]), torch.tensor([1])]
    masks = [torch.rand(3, 16, 16) > 0.5, torch.rand(1, 16, 16) > 0.5]
    torch.manual_seed(5)
    weighted = criterion([class_logits], [mask_logits], labels, masks)
    torch.manual_seed(5)
    raw, matches = criterion.layer_losses(class_logits, mask_logits, labels, [m.float() for m in masks], 4.0)
    assert weighted.num_masks == 4.0
    assert [len(q) for q, _ in matches] == [3, 1]
    assert float(weighted.losses["loss_ce"]) == pytest.approx(2.0 * float(raw["loss_ce"]), rel=1e-6)
    assert float(weighted.losses["loss_mask"]) == pytest.approx(5.0 * float(raw["loss_mask"]), rel=1e-6)
    assert float(weighted.losses["loss_dice"]) == pytest.approx(7.0 * float(raw["loss_dice"]), rel=1e-6)


def test_criterion_rejects_bad_targets() -> None:
    criterion = SetCriterion(3, HungarianMatcher(num_points=8), num_points=8)
    logits, masks = [torch.randn(1, 2, 4)], [torch.randn(1, 2, 4, 4)]
    with pytest.raises(ValueError, match="crop 0 has labels outside"):
        criterion(logits, masks, [torch.tensor([3])], [torch.ones(1, 16, 16)])
    with pytest.raises(ValueError, match="crop 0 has 2 labels but 1 masks"):
        criterion(logits, masks, [torch.tensor([0, 1])], [torch.ones(1, 16, 16)])


def test_count_masks_and_suffixes() -> None:
    assert count_masks([torch.zeros(0), torch.zeros(0)], torch.device("cpu")) == 1.0
    assert count_masks([torch.zeros(3), torch.zeros(2)], torch.device("cpu")) == 5.0
    assert [layer_suffix(i, 3) for i in range(3)] == ["_0", "_1", ""]


CASES = [([3, 0], 1.5), ([5, 2], 3.5), ([0, 1], 1.0), ([0, 0], 1.0)]  # local counts -> normaliser


def _count_masks_worker(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for case, (local_counts, _) in enumerate(CASES):
            results[(rank, case)] = count_masks([torch.zeros(local_counts[rank])], torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_count_masks_is_averaged_over_processes_then_clamped(tmp_path) -> None:
    """Two gloo processes with different local target counts get the same averaged normaliser."""
    context = torch.multiprocessing.get_context("fork")  # the workers only all-reduce scalars
    with context.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(
            _count_masks_worker, args=(str(tmp_path / "init"), results), nprocs=2, start_method="fork"
        )
        for case, (_, expected) in enumerate(CASES):
            assert results[(0, case)] == results[(1, case)] == expected
