"""Mask2Former model: UnifiedOutput contract, gradients, determinism, full-image inference, over-fit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

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
from ibs_study.models.backbone import BackboneConfig
from ibs_study.models.mask2former import Mask2Former, Mask2FormerConfig
from ibs_study.models.output import UnifiedOutput

# contiguous label 0 is a thing on purpose (the official IBS code skips it; this model must not)
META = DatasetMeta.from_categories(
    "toy",
    [
        CategoryInfo(1, "car", True, (0, 0, 142), "vehicle"),
        CategoryInfo(2, "sky", False, (70, 130, 180), "sky"),
        CategoryInfo(3, "road", False, (128, 64, 128), "flat"),
        CategoryInfo(4, "person", True, (220, 20, 60), "human"),
    ],
)
H, W = 64, 128


def toy_crop(seed: int, height: int = H, width: int = W) -> PanopticSample:
    """Sky above a random horizon, road below, and three ellipses (car, person, car) with noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    ids = np.zeros((height, width), np.int32)
    horizon = int(rng.integers(height // 3, 2 * height // 3))
    ids[:horizon], ids[horizon:] = 2, 3
    image[:horizon], image[horizon:] = (90, 140, 200), (110, 100, 110)
    category = {2: 2, 3: 3}
    yy, xx = np.mgrid[:height, :width]
    for k in range(3):
        category_id = 1 if k % 2 == 0 else 4
        cy, cx = int(rng.integers(15, height - 14)), int(rng.integers(15, width - 15))
        ry = int(rng.integers(6, 12))
        rx = int(rng.integers(8, 16)) if category_id == 1 else int(rng.integers(4, 7))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        ids[inside] = 100 + k
        image[inside] = (20, 20, 160) if category_id == 1 else (220, 40, 60)
        category[100 + k] = category_id
    image = np.clip(image.astype(int) + rng.integers(-15, 16, image.shape), 0, 255).astype(np.uint8)
    present = {i: c for i, c in category.items() if (ids == i).any()}
    return PanopticSample(seed, image, ids, segments_from_id_map(ids, present))


def batch_of(samples: list[PanopticSample]) -> tuple[torch.Tensor, list[CropTarget]]:
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    return images, [target_from_sample(s, META, min_pixels=2) for s in samples]


def tiny_model(task: str = "panoptic", seed: int = 0, **overrides: object) -> Mask2Former:
    torch.manual_seed(seed)
    cfg = Mask2FormerConfig.tiny(**{"task": task, "train_num_points": 256, **overrides})
    return Mask2Former(cfg, BackboneConfig.tiny(), META)


def total_loss(out: UnifiedOutput) -> torch.Tensor:
    return sum(out.losses.values())


def test_config_defaults_are_the_official_cityscapes_values() -> None:
    cfg = Mask2FormerConfig()
    assert (cfg.num_queries, cfg.dec_layers, cfg.hidden_dim, cfg.num_heads) == (100, 10, 256, 8)
    assert (cfg.dim_feedforward, cfg.enc_dim_feedforward, cfg.enc_layers) == (2048, 1024, 6)
    assert (cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert (cfg.object_mask_threshold, cfg.overlap_threshold, cfg.task) == (0.8, 0.8, "panoptic")
    with pytest.raises(ValueError, match="task"):
        Mask2FormerConfig(task="semantic")
    with pytest.raises(ValueError, match="unknown fields"):
        Mask2FormerConfig.tiny(hiden_dim=8)


def test_full_size_model_layers_follow_dec_layers() -> None:
    model = Mask2Former(Mask2FormerConfig(), BackboneConfig(name="resnet50"), META)
    assert len(model.decoder.layers) == 9  # DEC_LAYERS 10 = query-only prediction + 9 layers
    assert len(model.pixel_decoder.encoder) == 6
    assert model.decoder.class_embed.out_features == META.num_classes + 1


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_unified_output_shapes_and_dtypes(task: str) -> None:
    model = tiny_model(task)
    samples = [toy_crop(0), toy_crop(1), toy_crop(2)]
    images, targets = batch_of(samples)
    out = model(images, targets)
    cfg = model.cfg
    layers = cfg.dec_layers
    assert out.features.shape == (3, cfg.mask_dim, H // 4, W // 4) and out.features.dtype == torch.float32
    assert len(out.embeddings) == len(out.thing_index) == len(out.thing_weights) == layers
    assert out.ibs_layers == tuple(range(1, layers))
    assert out.mask_loss_weight == 1.0
    expected_keys = {
        f"{t}{s}"
        for t in ("loss_ce", "loss_mask", "loss_dice")
        for s in ["", *(f"_{i}" for i in range(layers - 1))]
    }
    assert set(out.losses) == expected_keys
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    num_things = [int(t.is_thing.sum()) for t in targets]
    num_targets = num_things if task == "instance" else [len(t.labels) for t in targets]
    assert out.stats["num_masks"] == float(sum(num_targets))
    for layer in range(layers):
        for b in range(3):
            assert out.embeddings[layer][b].shape == (cfg.num_queries, cfg.mask_dim)
            index = out.thing_index[layer][b]
            assert index.dtype == torch.int64 and len(set(index.tolist())) == len(index)
            assert len(index) == num_things[b]  # Q >= N: every thing is matched
            assert torch.all(out.thing_weights[layer][b] == 1.0)
            assert out.thing_weights[layer][b].dtype == torch.float32
            assert out.thing_embeddings(layer, b).shape == (num_things[b], cfg.mask_dim)
    # embeddings and features give the model's own mask logits
    decoded, features = model.forward_features(images)
    torch.testing.assert_close(
        torch.einsum("qc,chw->qhw", out.embeddings[-1][0], out.features[0]), decoded.mask_logits[-1][0]
    )
    num_classes = len(META.thing_labels) if task == "instance" else META.num_classes
    assert decoded.class_logits[-1].shape == (3, cfg.num_queries, num_classes + 1)


def test_thing_index_is_the_matching_restricted_to_things_including_label_zero() -> None:
    """A crop whose only thing has contiguous label 0 (car): its matched query is the thing index."""
    model = tiny_model()
    sample = toy_crop(0)
    target = target_from_sample(sample, META, min_pixels=2)
    keep = (target.labels == 0) | ~target.is_thing  # car (label 0) and the stuff
    keep &= torch.cumsum((target.labels == 0).long(), 0) <= 1  # only the first car
    target = CropTarget(
        *(getattr(target, f)[keep] if f != "ignore" else target.ignore for f in target.__dataclass_fields__)
    )
    images = torch.from_numpy(sample.image).permute(2, 0, 1)[None].contiguous()
    torch.manual_seed(3)
    out = model(images, [target])
    labels, masks = model.prepare_targets([target], (H, W))
    torch.manual_seed(3)
    decoded, _ = model.forward_features(images)
    result = model.criterion(decoded.class_logits, decoded.mask_logits, labels, masks)
    for layer, matches in enumerate(result.matches):
        queries, targets_index = matches[0]
        car_query = queries[labels[0][targets_index] == 0]
        assert out.thing_index[layer][0].tolist() == car_query.tolist() and len(car_query) == 1


def test_gradients_reach_backbone_pixel_decoder_decoder_and_heads() -> None:
    model = tiny_model()
    images, targets = batch_of([toy_crop(0), toy_crop(1)])
    total_loss(model(images, targets)).backward()
    parameters = {
        "backbone stem": model.backbone.stem[0].weight,
        "backbone res5": model.backbone.res5[0][0].weight,
        "pixel decoder input projection": model.pixel_decoder.input_proj[0][0].weight,
        "deformable attention offsets": model.pixel_decoder.encoder[0].self_attn.sampling_offsets.weight,
        "deformable attention values": model.pixel_decoder.encoder[0].self_attn.value_proj.weight,
        "pixel decoder FPN": model.pixel_decoder.lateral_convs[0][0].weight,
        "mask features": model.pixel_decoder.mask_features.weight,
        "decoder cross-attention": model.decoder.layers[0].cross_attn.in_proj_weight,
        "decoder self-attention": model.decoder.layers[-1].self_attn.in_proj_weight,
        "decoder FFN": model.decoder.layers[-1].ffn[0].weight,
        "query features": model.decoder.query_feat.weight,
        "query position": model.decoder.query_embed.weight,
        "class head": model.decoder.class_embed.weight,
        "mask MLP": model.decoder.mask_embed.layers[-1].weight,
    }
    for name, parameter in parameters.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_training_step_under_autocast_keeps_losses_float32() -> None:
    """bf16 autocast on the CPU (as AMP on a GPU): the pixel decoder, matching and losses run in
    float32; the step is finite and reaches the backbone."""
    model = tiny_model()
    images, targets = batch_of([toy_crop(0), toy_crop(1)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, targets)
    assert out.features.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    total_loss(out).backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_same_seed_same_losses() -> None:
    images, targets = batch_of([toy_crop(0), toy_crop(1)])
    losses = []
    for _ in range(2):
        model = tiny_model(seed=7)
        torch.manual_seed(11)
        losses.append({k: float(v.detach()) for k, v in model(images, targets).losses.items()})
    assert losses[0] == losses[1]
    other = tiny_model(seed=8)
    torch.manual_seed(11)
    assert float(total_loss(other(images, targets)).detach()) != pytest.approx(sum(losses[0].values()))


def test_crop_without_targets_and_padding_to_size_divisibility() -> None:
    """A 50 x 70 crop (padded to 64 x 96) with no targets next to one with targets: finite losses."""
    model = tiny_model()
    sample = toy_crop(4, 50, 70)
    empty = CropTarget(
        masks=torch.zeros(0, 50, 70, dtype=torch.bool),
        labels=torch.zeros(0, dtype=torch.int64),
        is_thing=torch.zeros(0, dtype=torch.bool),
        ignore=torch.zeros(50, 70, dtype=torch.bool),
        segment_ids=torch.zeros(0, dtype=torch.int64),
    )
    images = torch.from_numpy(np.stack([sample.image, sample.image])).permute(0, 3, 1, 2).contiguous()
    out = model(images, [empty, target_from_sample(sample, META, min_pixels=2)])
    assert out.features.shape[-2:] == (16, 24)
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert all(len(out.thing_index[layer][0]) == 0 for layer in range(model.cfg.dec_layers))
    total_loss(out).backward()

    empty_only = model(images[:1], [empty])
    assert empty_only.losses["loss_mask"].item() == 0.0 and empty_only.losses["loss_dice"].item() == 0.0
    assert empty_only.losses["loss_ce"].item() > 0.0


def test_bad_inputs_are_rejected() -> None:
    model = tiny_model()
    images, targets = batch_of([toy_crop(0)])
    with pytest.raises(ValueError, match="uint8"):
        model(images.float(), targets)
    with pytest.raises(ValueError, match="1 images but 2 targets"):
        model(images, targets * 2)
    with pytest.raises(ValueError, match=r"target 0 masks are \(64, 64\)"):
        model(
            images,
            [
                CropTarget(
                    targets[0].masks[..., :64],
                    *[getattr(targets[0], f) for f in ("labels", "is_thing", "ignore", "segment_ids")],
                )
            ],
        )


FULL_IMAGE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from ibs_study.models.backbone import BackboneConfig
    from ibs_study.models.mask2former import Mask2Former, Mask2FormerConfig
    from ibs_study.models.postprocess import write_instance_predictions, write_panoptic_predictions
    sys.path.insert(0, sys.argv[2])
    from test_mask2former import META

    torch.set_num_threads(int(sys.argv[3]))
    torch.manual_seed(0)
    # threshold 0: the untrained model's queries all take part in the merge
    model = Mask2Former(Mask2FormerConfig.tiny(object_mask_threshold=0.0), BackboneConfig.tiny(), META).eval()
    image = torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    panoptic = model.predict_panoptic(image, image_id="full")
    instances = model.predict_instances(image, image_id="full")
    seconds = time.perf_counter() - start
    out = sys.argv[1]
    write_panoptic_predictions(out + "/panoptic", [panoptic], META)
    write_instance_predictions(out + "/instances.json", [instances])
    import numpy as np
    np.save(out + "/instance_masks.npy", instances.masks)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak_mb, "seconds": seconds, "segments": len(panoptic.segments),
                      "instances": int(instances.masks.shape[0])}))
    """
)


def test_full_image_inference_on_cpu_within_memory_bound(tmp_path) -> None:
    """predict_panoptic / predict_instances on 1024 x 2048 in a fresh process: peak RSS < 2.5 GB and
    valid COCO-panoptic / COCO-instances output."""
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    run = subprocess.run(
        [sys.executable, "-c", FULL_IMAGE_SCRIPT, str(tmp_path), tests_dir, "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print("full image:", report)
    assert report["peak_mb"] < 2500, report
    assert report["segments"] > 0 and 0 < report["instances"] <= 100, report

    annotations = load_panoptic_json(tmp_path / "panoptic" / "predictions.json", META.by_id())
    (record,) = annotations.records
    assert (record.width, record.height) == (2048, 1024)
    png_path = tmp_path / "panoptic" / "predictions" / record.png_name
    check_segments_match_png(
        read_id_png(png_path), record.segments, png_path=png_path, image_id=record.image_id
    )
    assert all(s.score is not None for s in record.segments)

    results = json.loads((tmp_path / "instances.json").read_text())
    masks = np.load(tmp_path / "instance_masks.npy")
    assert len(results) == masks.shape[0] == report["instances"]
    thing_ids = {c.id for c in META.categories if c.isthing}
    for result, mask in zip(results, masks):
        assert result["image_id"] == "full" and result["category_id"] in thing_ids
        assert 0.0 <= result["score"] <= 1.0
        decoded = mask_util.decode(
            {"size": result["segmentation"]["size"], "counts": result["segmentation"]["counts"].encode()}
        )
        assert np.array_equal(decoded.astype(bool), mask)


def test_predict_instances_scores_and_topk() -> None:
    """Score = class probability x mean mask probability inside the mask; top-k by class probability."""
    model = tiny_model(test_topk_per_image=5).eval()
    image = torch.from_numpy(toy_crop(0).image).permute(2, 0, 1).contiguous()
    prediction = model.predict_instances(image)
    assert prediction.masks.shape[0] <= 5 and prediction.masks.shape[1:] == (H, W)
    class_logits, masks = model._final_prediction(image)
    probs = class_logits.softmax(-1)[:, :-1]
    top, index = probs.flatten().topk(5)
    queries, labels = index // model.num_classes, index % model.num_classes
    thing = model.class_is_thing[labels]
    mask_probs = masks.probs(0, len(masks))
    expected_scores = []
    for query, score in zip(queries[thing].tolist(), top[thing].tolist()):
        inside = mask_probs[query] > 0.5
        expected_scores.append(score * float((mask_probs[query] * inside).sum() / (inside.sum() + 1e-6)))
    np.testing.assert_allclose(prediction.scores, np.array(expected_scores, dtype=np.float32), rtol=1e-5)
    expected_ids = [META.categories[int(label)].id for label in labels[thing].tolist()]
    assert prediction.category_ids.tolist() == expected_ids


@pytest.fixture
def one_thread():
    """The tiny model's many small operations gain nothing from two threads and lose a lot when
    another job holds a core (OpenMP threads wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_four_crops_to_high_pq(one_thread) -> None:
    """120 AdamW steps on four fixed crops (about 8 s), then PQ on those crops."""
    from ibs_study.metrics.panoptic import PanopticEvaluator

    samples = [toy_crop(seed) for seed in range(4)]
    images, targets = batch_of(samples)
    model = tiny_model(seed=0, train_num_points=512)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    start = time.perf_counter()
    for _ in range(120):
        loss = total_loss(model(images, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    evaluator = PanopticEvaluator(META, keep_records=False)
    for sample in samples:
        prediction = model.predict_panoptic(torch.from_numpy(sample.image).permute(2, 0, 1).contiguous())
        evaluator.process(
            sample.id_map, sample.segments, prediction.id_map, prediction.segments, image_id=sample.image_id
        )
    result = evaluator.summarize()
    print(
        f"over-fit: {time.perf_counter() - start:.1f} s, PQ {result['all']['pq']:.3f}, PQ_th {result['things']['pq']:.3f}"
    )
    assert result["all"]["pq"] > 0.85, result["all"]
    assert result["things"]["pq"] > 0.7, result["things"]
    assert result["stuff"]["pq"] > 0.9, result["stuff"]


def test_predict_instances_without_thing_classes_is_empty_and_instance_task_needs_things() -> None:
    stuff_only = DatasetMeta.from_categories("stuff", [c for c in META.categories if not c.isthing])
    torch.manual_seed(0)
    model = Mask2Former(Mask2FormerConfig.tiny(), BackboneConfig.tiny(), stuff_only).eval()
    prediction = model.predict_instances(torch.zeros(3, 40, 60, dtype=torch.uint8), image_id=7)
    assert prediction.masks.shape == (0, 40, 60) and prediction.masks.dtype == bool
    assert prediction.scores.shape == (0,) and prediction.category_ids.dtype == np.int64
    with pytest.raises(ValueError, match="needs thing classes"):
        Mask2Former(Mask2FormerConfig.tiny(task="instance"), BackboneConfig.tiny(), stuff_only)
