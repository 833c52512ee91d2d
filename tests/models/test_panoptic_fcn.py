"""Panoptic FCN: UnifiedOutput contract, gradients, determinism, ground-truth generation, kernel
weights, fusion, full-resolution inference within a memory bound, and an over-fit run."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ibs_study.data.batch import CropTarget, target_from_sample
from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import (
    CategoryInfo,
    PanopticSample,
    check_segments_match_png,
    load_panoptic_json,
    read_id_png,
    segments_from_id_map,
)
from ibs_study.losses import IBSConfig, assign_partners, ibs_loss
from ibs_study.metrics.panoptic import PanopticEvaluator
from ibs_study.models.backbone import BackboneConfig
from ibs_study.models.panoptic_fcn import (
    PanopticFCN,
    PanopticFCNConfig,
    fuse_stuff_kernels,
    fuse_thing_kernels,
)
from ibs_study.models.panoptic_fcn_targets import (
    build_crop_targets,
    downsample_masks,
    draw_gaussians,
    gaussian_radius,
)
from ibs_study.models.postprocess import write_panoptic_predictions

# contiguous labels: road 0, sky 1 (stuff); car 2, person 3 (things)
META = DatasetMeta.from_categories(
    "toy",
    [
        CategoryInfo(1, "road", False, (128, 64, 128)),
        CategoryInfo(2, "sky", False, (70, 130, 180)),
        CategoryInfo(3, "car", True, (0, 0, 142)),
        CategoryInfo(4, "person", True, (220, 20, 60)),
    ],
)
COLOURS = {1: (128, 64, 128), 2: (70, 130, 180), 3: (0, 0, 142), 4: (220, 20, 60)}


def toy_sample(seed: int, height: int = 64, width: int = 128, num_things: int = 3) -> PanopticSample:
    """Sky above road; ``num_things`` disks (radius 8..12) alternating car / person, one colour per class."""
    rng = np.random.default_rng(seed)
    ids = np.ones((height, width), np.int32)
    ids[: height // 2] = 2
    category_of = {1: 1, 2: 2}
    yy, xx = np.mgrid[:height, :width]
    for k in range(num_things):
        cy, cx = rng.integers(12, height - 12), rng.integers(12, width - 12)
        radius = rng.integers(8, 13)
        segment_id = 1000 + k
        ids[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = segment_id
        category_of[segment_id] = 3 if k % 2 == 0 else 4
    present = set(np.unique(ids).tolist())
    image = np.zeros((height, width, 3), np.uint8)
    for segment_id in present:
        image[ids == segment_id] = COLOURS[category_of[segment_id]]
    segments = segments_from_id_map(ids, {k: v for k, v in category_of.items() if k in present})
    return PanopticSample(f"toy{seed}", image, ids, segments)


def batch(samples: list[PanopticSample]) -> tuple[torch.Tensor, list[CropTarget]]:
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples])
    return images, [target_from_sample(s, META) for s in samples]


def tiny_model(seed: int = 0, **overrides) -> PanopticFCN:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(PanopticFCNConfig.tiny(), **overrides)
    return PanopticFCN(cfg, BackboneConfig.tiny(), META)


def empty_target(height: int, width: int, ignore: bool = False) -> CropTarget:
    return CropTarget(
        masks=torch.zeros((0, height, width), dtype=torch.bool),
        labels=torch.zeros(0, dtype=torch.int64),
        is_thing=torch.zeros(0, dtype=torch.bool),
        ignore=torch.full((height, width), ignore),
        segment_ids=torch.zeros(0, dtype=torch.int64),
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny ops: one thread is much faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- UnifiedOutput


def test_unified_output_shapes_dtypes_and_rows():
    model = tiny_model()
    stuff_only = toy_sample(1, num_things=0)
    images, targets = batch([toy_sample(0), stuff_only])
    images = torch.cat([images, torch.zeros_like(images[:1])])
    targets.append(empty_target(64, 128, ignore=True))  # a crop with nothing to learn
    out = model(images, targets)

    assert out.features.shape == (3, 32, 16, 32) and out.features.dtype == torch.float32
    assert out.ibs_layers == (0,) and out.mask_loss_weight == 4.0
    assert set(out.losses) == {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    assert len(out.embeddings) == len(out.thing_index) == len(out.thing_weights) == 1
    # crop 0: 3 things of sqrt(area) ~ 25..40 px -> level P3 only, 7 kernels each
    num_things = 3
    rows, index, weights = out.embeddings[0][0], out.thing_index[0][0], out.thing_weights[0][0]
    assert rows.dtype == torch.float32 and rows.shape[1] == 32
    assert index.dtype == torch.int64 and index.tolist() == list(range(num_things * 7))
    assert weights.shape == (num_things * 7,) and weights.dtype == torch.float32
    assert rows.shape[0] > num_things * 7  # stuff rows follow the thing rows
    torch.testing.assert_close(weights.view(num_things, 7).sum(1), torch.ones(num_things))
    # each thing row names its GT segment among the target's segments, 7 rows per thing
    things = torch.nonzero(targets[0].is_thing).flatten().tolist()
    assert out.thing_segments[0][0].tolist() == [t for t in things for _ in range(7)] and len(things) == 3
    assert out.thing_segments[0][1].shape == (0,) and out.thing_segments[0][2].dtype == torch.int64
    # crop 1: stuff only; crop 2: nothing at all
    assert out.thing_index[0][1].shape == (0,) and out.thing_weights[0][1].shape == (0,)
    assert out.embeddings[0][1].shape[0] > 0 and out.thing_embeddings(0, 1).shape == (0, 32)
    assert out.embeddings[0][2].shape == (0, 32) and out.thing_index[0][2].dtype == torch.int64
    assert out.stats["num_things"] == num_things


def test_losses_stay_finite_and_connected_without_things_or_stuff():
    model = tiny_model()
    images = torch.zeros((2, 3, 64, 64), dtype=torch.uint8)
    out = model(images, [empty_target(64, 64, ignore=True), empty_target(64, 64)])
    assert out.stats == {"num_things": 0.0, "num_stuff": 0.0}
    total = sum(out.losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.thing_projection.weight.grad is not None  # zero, but in the graph (DDP needs it)


def test_gradients_reach_backbone_and_every_head():
    model = tiny_model()
    images, targets = batch([toy_sample(0), toy_sample(1)])
    sum(model(images, targets).losses.values()).backward()
    parameters = {
        "backbone stem": model.backbone.stem[0].weight,
        "backbone res5": model.backbone.res5[0][0].weight,
        "fpn": model.fpn.fpn.inner_blocks[0][0].weight,
        "semantic fpn": model.semantic_fpn.scale_heads[0][0].weight,
        "encoder": model.encoder.layers[0].weight,
        "centre output": model.position_head.centers.weight,
        "region output": model.position_head.regions.weight,
        "position tower": model.position_head.tower.layers[0].weight,
        "kernel head": model.kernel_head.out.weight,
        "thing projection": model.thing_projection.weight,
        "stuff projection": model.stuff_projection.weight,
    }
    for name, parameter in parameters.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_same_seed_gives_identical_losses():
    images, targets = batch([toy_sample(2), toy_sample(3)])
    first = tiny_model(seed=5)(images, targets).losses
    second = tiny_model(seed=5)(images, targets).losses
    third = tiny_model(seed=6)(images, targets).losses
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], third[k]) for k in first)


def test_losses_are_fp32_and_close_under_autocast():
    model = tiny_model()
    images, targets = batch([toy_sample(0), toy_sample(1)])
    reference = model(images, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(images, targets)
    assert mixed.features.dtype == torch.bfloat16 and mixed.thing_weights[0][0].dtype == torch.float32
    for name, value in mixed.losses.items():
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference.losses[name].item(), rel=0.05), name


def test_deformable_position_head_trains():
    model = tiny_model(position_deform=True)
    images, targets = batch([toy_sample(0), toy_sample(1)])
    sum(model(images, targets).losses.values()).backward()
    assert model.position_head.tower.layers[0].conv.weight.grad.abs().sum() > 0


def test_feature_activation_none_gives_signed_features_from_the_same_weights():
    images, targets = batch([toy_sample(0), toy_sample(1)])
    official = tiny_model(seed=3)
    signed = tiny_model(seed=3, feature_activation="none")
    official_state, signed_state = official.state_dict(), signed.state_dict()
    assert official_state.keys() == signed_state.keys()  # checkpoints load across both
    assert all(torch.equal(official_state[k], signed_state[k]) for k in official_state)
    relu_features = official(images, targets).features
    signed_features = signed(images, targets).features
    assert relu_features.min() == 0.0
    assert (signed_features < 0).float().mean() > 0.1  # signed: a good share of negative values
    torch.testing.assert_close(signed_features.clamp(min=0), relu_features, rtol=0, atol=0)
    with pytest.raises(ValueError, match="panoptic_fcn.feature_activation must be one of"):
        PanopticFCNConfig(feature_activation="tanh")


def test_detach_bias_stops_only_the_ibs_gradient_into_the_thing_projection_bias():
    """Same value; the IBS term gives the thing projection's bias no gradient (its weight the
    same gradient as without detaching), while the model's own mask loss still trains it."""
    model = tiny_model(seed=1)
    with torch.no_grad():  # a non-zero bias (it starts at 0), so that detaching it could change a value
        model.thing_projection.bias.normal_(std=0.5)
    images, targets = batch([toy_sample(0), toy_sample(1)])
    output = model(images, targets)
    partners = assign_partners(2, "pair_mate")
    bias, weight = model.thing_projection.bias, model.thing_projection.weight

    def grads(loss):
        return torch.autograd.grad(loss, [bias, weight], retain_graph=True, allow_unused=True)

    attached = ibs_loss(output, partners, IBSConfig(enabled=True))["loss_ibs"]
    detached = ibs_loss(output, partners, IBSConfig(enabled=True, detach_bias=True))["loss_ibs"]
    assert attached > 0 and torch.equal(attached, detached)
    bias_attached, weight_attached = grads(attached)
    bias_detached, weight_detached = grads(detached)
    assert bias_attached.abs().sum() > 0
    assert bias_detached is None or not bias_detached.any()
    torch.testing.assert_close(weight_detached, weight_attached, rtol=0, atol=0)
    mask_loss = output.losses["loss_seg_th"]
    bias_mask, _ = grads(mask_loss)
    bias_total, _ = grads(mask_loss + detached)
    assert bias_mask.abs().sum() > 0
    torch.testing.assert_close(bias_total, bias_mask, rtol=0, atol=0)


# ------------------------------------------------------------------ ground-truth generation


def test_gaussian_radius_matches_the_cornernet_formula_by_hand():
    # 5 x 5 box, min_overlap 0.7: r1 = 9.537, r2 = 18.366, r3 = (-14 + sqrt(280)) / 2 = 1.3666
    radius = gaussian_radius(torch.tensor([[5.0, 5.0]]), 0.7)
    assert radius.item() == pytest.approx((-14 + math.sqrt(280)) / 2, abs=1e-5)


def _reference_gaussians(num_classes, size, classes, centers, radii, sigma_factor):
    """The official draw_gaussian, pixel by pixel."""
    heatmap = np.zeros((num_classes, *size))
    for c, (x, y), r in zip(classes, centers, radii, strict=True):
        sigma = (2 * r + 1) / sigma_factor
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if 0 <= y + dy < size[0] and 0 <= x + dx < size[1]:
                    value = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                    heatmap[c, y + dy, x + dx] = max(heatmap[c, y + dy, x + dx], value)
    return heatmap


@pytest.mark.parametrize("seed", range(5))
def test_draw_gaussians_matches_the_pixel_loop(seed):
    rng = np.random.default_rng(seed)
    n, size = 6, (13, 17)
    classes = rng.integers(0, 3, n)
    centers = np.stack([rng.integers(0, size[1], n), rng.integers(0, size[0], n)], 1)
    radii = rng.integers(0, 5, n)
    got = draw_gaussians(3, size, torch.tensor(classes), torch.tensor(centers), torch.tensor(radii), 3.0)
    expected = _reference_gaussians(3, size, classes, centers, radii, 3.0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def _square_target(rows: slice, cols: slice, size: tuple[int, int] = (128, 128)) -> CropTarget:
    masks = torch.zeros((2, *size), dtype=torch.bool)
    masks[0] = True
    masks[0, rows, cols] = False
    masks[1, rows, cols] = True
    return CropTarget(
        masks=masks,
        labels=torch.tensor([0, 2]),  # road, car
        is_thing=torch.tensor([False, True]),
        ignore=torch.zeros(size, dtype=torch.bool),
        segment_ids=torch.tensor([1, 1000]),
    )


def test_heatmap_peak_at_the_mass_centre_with_the_cornernet_radius():
    model = tiny_model()
    target = _square_target(slice(16, 56), slice(32, 72))  # 40 x 40 car: sqrt(area) 40 -> P3 only
    levels = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    targets = build_crop_targets(target, (128, 128), (32, 32), levels, model.target_spec)
    assert [len(t) for t in targets.things] == [1, 0, 0, 0, 0]
    car = 0  # thing-class index of "car"
    heatmap = targets.heatmaps[0][car]
    # mass centre of the stride-4 mask: rows 4..13, cols 8..17 -> (x, y) = (12.5, 8.5), on P3 (6.25, 4.25)
    assert targets.things[0].centers.tolist() == [[6, 4]]
    assert heatmap[4, 6] == 1.0 and heatmap.max() == 1.0
    # box 5 x 5 cells on P3 -> radius int(1.37) = 1, sigma = 3 / 3 = 1
    np.testing.assert_allclose(
        heatmap[3:6, 5:8].numpy(),
        [[math.exp(-1), math.exp(-0.5), math.exp(-1)], [math.exp(-0.5), 1, math.exp(-0.5)],
         [math.exp(-1), math.exp(-0.5), math.exp(-1)]],
        rtol=1e-6,
    )  # fmt: skip
    assert heatmap.sum().item() == pytest.approx(1 + 4 * math.exp(-0.5) + 4 * math.exp(-1), rel=1e-6)
    assert targets.heatmaps[0][1].sum() == 0 and all(h.sum() == 0 for h in targets.heatmaps[1:])
    # the kernel region is the P3 cells where the resized mask exceeds 0.1, and holds the centre
    region = targets.things[0].regions[0]
    assert region[4, 6] and region.sum() == 25 and not region[:2].any()
    # region targets: road and car present on P3, values in {0} U [0.5, 1]
    scores = targets.region_scores[0]
    assert scores[2].max() == 1.0 and scores[1].sum() == 0
    assert ((scores == 0) | (scores >= 0.5)).all()


def test_large_things_are_assigned_to_two_levels_and_ignore_is_honoured():
    model = tiny_model()
    target = _square_target(slice(0, 100), slice(0, 100))  # sqrt(area) 100: P3 (1..128) and P4 (64..256)
    target.ignore[:, 64:] = True
    levels = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    targets = build_crop_targets(target, (128, 128), (32, 32), levels, model.target_spec)
    assert [len(t) for t in targets.things] == [1, 1, 0, 0, 0]
    assert targets.heatmaps[0].max() == 1.0 and targets.heatmaps[1].max() == 1.0
    assert targets.valid4[:, :16].all() and not targets.valid4[:, 16:].any()
    assert targets.valid[0][:, :8].all() and not targets.valid[0][:, 8:].any()


@pytest.mark.parametrize("size, out", [((64, 96), (16, 24)), ((30, 50), (8, 13))])
def test_downsample_masks_equals_bilinear_interpolation(size, out):
    masks = torch.rand((5, *size), generator=torch.Generator().manual_seed(0)) > 0.6
    expected = torch.nn.functional.interpolate(
        masks.float()[None], size=out, mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(downsample_masks(masks, out), expected)


def test_a_thing_too_thin_for_stride_four_still_gets_a_centre():
    model = tiny_model()
    target = _square_target(slice(40, 41), slice(8, 120))  # one row, 4i + 0: no stride-4 sample sees it
    levels = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    targets = build_crop_targets(target, (128, 128), (32, 32), levels, model.target_spec)
    assert targets.things[0].masks.sum() == 0  # invisible at stride 4
    # full-resolution centre (x, y) = (63.5, 40) -> stride 4 (15.5, 9.625) -> P3 (7, 4)
    assert targets.things[0].centers.tolist() == [[7, 4]] and targets.heatmaps[0][0, 4, 7] == 1.0


def test_too_many_things_is_an_error_naming_the_limit():
    model = tiny_model(tensor_dim=2)
    images, targets = batch([toy_sample(0)])
    with pytest.raises(
        ValueError, match="crop 0: 3 things on head level 0, more than the limit tensor_dim=2"
    ):
        model(images, targets)


def test_kernel_weights_are_the_normalised_top_k_centre_scores():
    model = tiny_model()
    images, targets = batch([toy_sample(4), toy_sample(5)])
    out = model(images, targets)
    heads = model.forward_features(images)
    level_sizes = [tuple(c.shape[-2:]) for c in heads.center_logits]
    for crop in range(2):
        crop_targets = build_crop_targets(
            targets[crop], heads.padded_size, (16, 32), level_sizes, model.target_spec
        )
        things = crop_targets.things[0]
        scores = heads.center_logits[0][crop][things.classes].sigmoid() * things.regions
        top = scores.flatten(1).topk(7, dim=1).values
        expected = top / top.sum(1, keepdim=True)
        weights = out.thing_weights[0][crop].view(len(things), 7)
        torch.testing.assert_close(weights, expected)
        assert (weights >= 0).all() and torch.allclose(weights.sum(1), torch.ones(len(things)))


# --------------------------------------------------------------------------- fusion


def test_thing_kernel_fusion_groups_similar_kernels_of_one_class():
    a = torch.tensor([1.0, 0.0, 0.0])
    near_a = torch.tensor([0.99, 0.05, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0])
    kernels = torch.stack([a, b, near_a, near_a, a])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    classes = torch.tensor([0, 0, 0, 1, 0])
    fused, fused_scores, fused_classes = fuse_thing_kernels(kernels, scores, classes, threshold=0.97)
    # groups: {a, near_a, a} (class 0), {b}, {near_a of class 1}
    torch.testing.assert_close(fused, torch.stack([(a + near_a + a) / 3, b, near_a]))
    torch.testing.assert_close(fused_scores, torch.tensor([0.9, 0.8, 0.6]))
    assert fused_classes.tolist() == [0, 0, 1]
    merged, _, _ = fuse_thing_kernels(kernels, scores, classes, threshold=0.97, class_specific=False)
    assert merged.shape[0] == 2
    kept, _, _ = fuse_thing_kernels(kernels, scores, classes, threshold=1.01)
    torch.testing.assert_close(kept, kernels)


def test_stuff_kernel_fusion_averages_per_class():
    kernels = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    fused, scores, classes = fuse_stuff_kernels(
        kernels, torch.tensor([0.2, 0.4, 0.9]), torch.tensor([4, 1, 4])
    )
    assert classes.tolist() == [1, 4]
    torch.testing.assert_close(fused, torch.tensor([[3.0, 2.0], [3.0, 2.5]]))
    torch.testing.assert_close(scores, torch.tensor([0.4, 0.55]))


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="panoptic_fcn.instance_scale_low needs one value per head level"):
        PanopticFCNConfig(instance_scale_low=(1, 2))
    with pytest.raises(ValueError, match="center_pool_sizes must be odd"):
        PanopticFCNConfig(center_pool_sizes=(3, 3, 3, 4, 5))
    with pytest.raises(ValueError, match="size_divisibility must be a multiple of 32"):
        PanopticFCNConfig(size_divisibility=48)
    with pytest.raises(ValueError, match="expects \\(B, 3, H, W\\) uint8"):
        tiny_model()(torch.zeros((1, 3, 32, 32)), [empty_target(32, 32)])


# ------------------------------------------------------------------------- inference

_FULL_RESOLUTION_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, resource, sys, time
    import torch
    sys.path.insert(0, {tests_dir!r})
    from test_panoptic_fcn import META, tiny_model
    from ibs_study.models.postprocess import write_panoptic_predictions

    torch.set_num_threads(1)
    # every peak becomes a thing (no thresholds, no fusion): the most masks the merge can get
    model = tiny_model(
        center_threshold=0.0, rescored_score_threshold=0.0, thing_score_threshold=0.0,
        similarity_threshold=2.0, center_top_num=100,
    ).eval()
    image = torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    prediction = model.predict_panoptic(image, image_id="full")
    seconds = time.perf_counter() - started
    peak_increase_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    write_panoptic_predictions({out_dir!r}, [prediction], META)
    print(json.dumps({{"seconds": seconds, "peak_increase_mb": peak_increase_mb, "segments": len(prediction.segments)}}))
    """
)


def test_predict_panoptic_full_resolution_bounded_memory_and_valid_output(tmp_path):
    """1024x2048 with up to 100 thing masks: unchunked, the upsampled thing probabilities alone
    would take 100 x 1024 x 2048 x 4 B = 800 MB (twice that with the interpolation output)."""
    script = _FULL_RESOLUTION_SCRIPT.format(
        tests_dir=str(__import__("pathlib").Path(__file__).parent), out_dir=str(tmp_path)
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["peak_increase_mb"] < 700, report
    loaded = load_panoptic_json(tmp_path / "predictions.json")
    (record,) = loaded.records
    assert (record.image_id, record.height, record.width) == ("full", 1024, 2048)
    id_map = read_id_png(tmp_path / "predictions" / record.png_name)
    check_segments_match_png(id_map, record.segments, png_path=record.png_name, image_id=record.image_id)
    assert len(record.segments) == report["segments"] >= 1
    assert all(s.score is not None and s.category_id in (1, 2, 3, 4) for s in record.segments)


def test_predict_panoptic_segments_describe_the_id_map():
    model = tiny_model().eval()
    sample = toy_sample(0)
    prediction = model.predict_panoptic(torch.from_numpy(sample.image).permute(2, 0, 1), image_id="toy0")
    assert prediction.id_map.shape == (64, 128) and prediction.id_map.dtype == np.int32
    assert prediction.image_id == "toy0"
    check_segments_match_png(prediction.id_map, prediction.segments, png_path="-", image_id="toy0")
    with pytest.raises(ValueError, match="one \\(3, H, W\\) uint8 image"):
        model.predict_panoptic(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))


# --------------------------------------------------------------------------- over-fit


@pytest.mark.slow
def test_tiny_model_overfits_three_crops(tmp_path):
    """Adam on 3 fixed 64x128 crops (sky, road, 3 car / person disks each); PQ on the same crops."""
    samples = [toy_sample(seed) for seed in range(3)]
    images, targets = batch(samples)
    model = tiny_model(stuff_area_limit=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(120):
        loss = sum(model(images, targets).losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    evaluator = PanopticEvaluator(META, keep_records=False)
    predictions = []
    for sample, image in zip(samples, images, strict=True):
        prediction = model.predict_panoptic(image, image_id=sample.image_id)
        evaluator.process(
            sample.id_map, sample.segments, prediction.id_map, prediction.segments, sample.image_id
        )
        predictions.append(prediction)
    metrics = evaluator.summarize()
    assert metrics["all"]["pq"] >= 0.75, metrics["all"]
    assert metrics["things"]["rq"] >= 0.9 and metrics["stuff"]["pq"] >= 0.85, (
        metrics["things"],
        metrics["stuff"],
    )
    write_panoptic_predictions(tmp_path, predictions, META)
    assert len(json.loads((tmp_path / "predictions.json").read_text())["annotations"]) == 3
