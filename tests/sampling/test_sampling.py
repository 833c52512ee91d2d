"""Crop samplers: segment index and its cache, random and class-aware paired crop plans,
cutting planned crops, the training loader (determinism, workers, resume, DDP ranks).

The fixture is a small COCO-panoptic dataset written here: sky / building / road stuff
bands and non-overlapping rectangular things (one thing class per image), so every
segment contains its bbox centre.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare

from ibs_study.data.batch import collate, target_from_sample
from ibs_study.data.datasets import PanopticDataset, coco_panoptic_folder
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    Segment,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)
from ibs_study.data.transforms import TrainAugmentation, crop, hflip, resize
from ibs_study.losses import assign_partners, shared_thing_class_fraction
from ibs_study.sampling import (
    CropDataset,
    CropPlan,
    PairedCropSampler,
    RandomCropSampler,
    ResizeConfig,
    SamplerConfig,
    SegmentIndex,
    StepPlanSampler,
    apply_plan,
    build_train_loader,
    image_sizes,
    step_rng,
    thing_pair_resize,
)

CATEGORIES = [
    CategoryInfo(1, "sky", False, (70, 130, 180)),
    CategoryInfo(2, "building", False, (70, 70, 70)),
    CategoryInfo(3, "road", False, (128, 64, 128)),
    CategoryInfo(4, "car", True, (0, 0, 142)),
    CategoryInfo(5, "person", True, (220, 20, 60)),
    CategoryInfo(6, "truck", True, (0, 0, 70)),
    CategoryInfo(7, "bicycle", True, (119, 11, 32)),  # in one image only
    CategoryInfo(8, "tree", False, (107, 142, 35)),  # in no image
]
THING_CLASSES = (4, 5, 6)
NUM_IMAGES = 30
CROP = (48, 64)
SAMPLER = SamplerConfig(
    kind="paired", pair_sizes=(8, 16), min_short_side=48, max_short_side=192, max_long_side=384
)
THING_PAIRS = dataclasses.replace(SAMPLER, pair_classes="thing")
AUGMENTATION = TrainAugmentation(resize_mode="scale", scale_range=(0.5, 1.5), crop_size=CROP, flip_prob=0.5)


def _write_dataset(
    root: Path, num_images: int = NUM_IMAGES, single_class_images: bool = False
) -> PanopticDataset:
    """Write the fixture; ``single_class_images``: each image holds one class only (no
    class in two images), to exercise the no-class error."""
    rng = np.random.default_rng(123)
    (root / "images").mkdir(parents=True)
    (root / "png").mkdir()
    records = []
    for i in range(num_images):
        height, width = (96, 160) if i % 5 else (80, 120)
        ids = np.zeros((height, width), dtype=np.int32)
        category_of: dict[int, int] = {}
        iscrowd_of: dict[int, int] = {}
        if single_class_images:
            ids[:] = 1
            category_of[1] = CATEGORIES[i].id
        else:
            ids[:24] = 1
            ids[24:72] = 2
            ids[72:] = 3
            category_of.update({1: 1, 2: 2, 3: 3})
            thing_class = 4 if i == 0 else int(rng.choice(THING_CLASSES))
            cells = rng.choice(width // 32 * 2, size=int(rng.integers(1, 5)), replace=False)
            for k, cell in enumerate(cells):
                top, left = 24 + 24 * (cell // (width // 32)), 32 * (cell % (width // 32))
                h, w = int(rng.integers(6, 23)), int(rng.integers(6, 31))
                ids[top : top + h, left : left + w] = 100 + k
                category_of[100 + k] = thing_class
            if i == 0:  # a crowd truck region: image 0 must not be listed for truck
                ids[80:90, 10:40] = 99
                category_of[99], iscrowd_of[99] = 6, 1
            if i == 7:
                ids[74:90, 100:130] = 98
                category_of[98] = 7
        colours = {c.id: c.color for c in CATEGORIES}
        image = np.zeros((height, width, 3), dtype=np.uint8)
        for seg_id, cat in category_of.items():
            image[ids == seg_id] = colours[cat]
        image = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
        name = f"img{i:03d}"
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        write_id_png(root / "png" / f"{name}.png", ids)
        segments = segments_from_id_map(ids, category_of, iscrowd_of)
        records.append(ImageRecord(name, f"{name}.png", width, height, f"{name}.png", segments))
    write_panoptic_json(root / "panoptic.json", records, CATEGORIES)
    return coco_panoptic_folder(root / "panoptic.json", root / "png", root / "images")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PanopticDataset:
    return _write_dataset(tmp_path_factory.mktemp("sampling_fixture"))


@pytest.fixture(scope="module")
def index(dataset: PanopticDataset) -> SegmentIndex:
    return SegmentIndex.build(dataset.records, dataset.meta, dataset.content_hash)


@pytest.fixture(scope="module")
def paired(index: SegmentIndex, dataset: PanopticDataset) -> PairedCropSampler:
    return PairedCropSampler(index, SAMPLER, AUGMENTATION, class_names=dataset.meta.class_names)


def _label(dataset: PanopticDataset, name: str) -> int:
    return dataset.meta.class_names.index(name)


# --------------------------------------------------------------------------- index


def test_index_lists_non_crowd_segments_per_class(dataset: PanopticDataset, index: SegmentIndex) -> None:
    expected: dict[int, dict[int, list[int]]] = {}
    for image, record in enumerate(dataset.records):
        for seg in record.segments:
            if not seg.iscrowd:
                label = dataset.meta.contiguous_of[seg.category_id]
                expected.setdefault(label, {}).setdefault(image, []).append(seg.id)
    for label in range(dataset.meta.num_classes):
        per_image = expected.get(label, {})
        assert index.images_of(label).tolist() == sorted(per_image)
        for entry in index.entries_of(label):
            image = int(index.entry_image[entry])
            rows = index.segment_rows(entry)
            assert index.segment_id[rows.start : rows.stop].tolist() == per_image[image]
    truck = _label(dataset, "truck")
    assert 0 not in index.images_of(truck).tolist()  # image 0 only has a crowd truck
    assert index.images_per_class()[_label(dataset, "bicycle")] == 1
    assert index.images_per_class()[_label(dataset, "tree")] == 0
    assert index.images_per_class()[_label(dataset, "sky")] == NUM_IMAGES
    assert index.image_hw[0].tolist() == [80, 120] and index.image_hw[1].tolist() == [96, 160]
    record = dataset.records[3]
    seg = next(s for s in record.segments if s.id == 100)
    entry = next(
        e for e in index.entries_of(dataset.meta.contiguous_of[seg.category_id]) if index.entry_image[e] == 3
    )
    row = index.segment_rows(entry).start
    assert index.segment_bbox[row].tolist() == list(seg.bbox)
    assert index.segment_area[row] == seg.area


def test_index_rejects_empty_bbox(dataset: PanopticDataset) -> None:
    record = dataset.records[2]
    broken = ImageRecord(
        record.image_id,
        record.file_name,
        record.width,
        record.height,
        record.png_name,
        [Segment(id=5, category_id=4, area=10, bbox=(0, 0, 0, 0))],
    )
    with pytest.raises(ValueError, match="image id 'img002', segment id 5: bbox"):
        SegmentIndex.build([broken], dataset.meta, source="x.json")


def test_cache_miss_hit_stale_corrupt(
    dataset: PanopticDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ibs_study.sampling.index")
    path = tmp_path / f"segment_index_{dataset.content_hash}.npz"
    reference = SegmentIndex.build(dataset.records, dataset.meta, dataset.content_hash)

    def same(a: SegmentIndex, b: SegmentIndex) -> bool:
        names = (
            "category_ids",
            "image_hw",
            "class_ptr",
            "entry_image",
            "entry_ptr",
            "segment_id",
            "segment_bbox",
        )
        return a.content_hash == b.content_hash and all(
            np.array_equal(getattr(a, n), getattr(b, n)) for n in names
        )

    # miss: built and written
    built = SegmentIndex.for_dataset(dataset, cache_dir=tmp_path)
    assert path.is_file() and same(built, reference)

    # hit: loaded, never rebuilt
    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(SegmentIndex, "build", classmethod(no_build))
        assert same(SegmentIndex.for_dataset(dataset, cache_dir=tmp_path), reference)
        assert same(SegmentIndex.from_json(dataset.json_path, cache_dir=tmp_path), reference)

    # stale: a file of other JSON content under this name is rebuilt
    SegmentIndex.build(dataset.records, dataset.meta, content_hash="0" * 40).save(path)
    caplog.clear()
    assert same(SegmentIndex.for_dataset(dataset, cache_dir=tmp_path), reference)
    assert "stale segment index" in caplog.text
    assert same(SegmentIndex.load(path), reference)  # rewritten

    # corrupt: garbage bytes, then inconsistent pointers
    path.write_bytes(b"not an npz file")
    caplog.clear()
    assert same(SegmentIndex.for_dataset(dataset, cache_dir=tmp_path), reference)
    assert "unreadable segment index" in caplog.text
    arrays = dict(np.load(path))
    arrays["entry_ptr"] = arrays["entry_ptr"][::-1].copy()
    np.savez(path, **arrays)
    caplog.clear()
    assert same(SegmentIndex.for_dataset(dataset, cache_dir=tmp_path), reference)
    assert "inconsistent segment index" in caplog.text
    assert [r.levelname for r in caplog.records if "rebuilding" in r.message] == ["WARNING"]


def test_from_json_needs_no_png(dataset: PanopticDataset, tmp_path: Path) -> None:
    json_only = tmp_path / "only.json"
    json_only.write_bytes(dataset.json_path.read_bytes())
    index = SegmentIndex.from_json(json_only, cache_dir=tmp_path / "cache")
    assert index.content_hash == dataset.content_hash
    assert (
        index.images_per_class().tolist()
        == SegmentIndex.build(dataset.records, dataset.meta).images_per_class().tolist()
    )


def test_excluded_classes_warning_and_no_class_error(
    index: SegmentIndex, dataset: PanopticDataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ibs_study.sampling.plans"):
        sampler = PairedCropSampler(index, SAMPLER, AUGMENTATION, class_names=dataset.meta.class_names)
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "bicycle (1 image)" in warnings[0] and "tree (0 images)" in warnings[0]
    assert sorted(sampler.labels.tolist()) == [
        k for k in range(8) if dataset.meta.class_names[k] not in ("bicycle", "tree")
    ]

    lonely = _write_dataset(tmp_path / "lonely", num_images=len(CATEGORIES), single_class_images=True)
    lonely_index = SegmentIndex.build(lonely.records, lonely.meta)
    with pytest.raises(ValueError, match="at least two images"):
        PairedCropSampler(lonely_index, SAMPLER, AUGMENTATION)


# --------------------------------------------------------------------------- paired plans


def _pairs(sampler: PairedCropSampler, count: int, seed: int = 0) -> list[tuple[CropPlan, CropPlan]]:
    rng = np.random.default_rng(seed)
    return [sampler.plan_pair(rng) for _ in range(count)]


def test_pair_classes_are_uniform_over_eligible_classes(paired: PairedCropSampler) -> None:
    pairs = _pairs(paired, 2000)
    assert all(a.pair_class == b.pair_class for a, b in pairs)
    counts = np.bincount([a.pair_class for a, _ in pairs], minlength=8)
    assert counts[paired.labels].sum() == 2000  # nothing outside the eligible classes
    assert chisquare(counts[paired.labels]).pvalue > 1e-3
    # images within a class: uniform too (sky is in every image)
    sky_images = [p.image_index for a, b in pairs for p in (a, b) if p.pair_class == 0]
    assert chisquare(np.bincount(sky_images, minlength=NUM_IMAGES)).pvalue > 1e-3


def test_thing_pair_classes_draw_only_thing_classes_uniformly(
    index: SegmentIndex, dataset: PanopticDataset, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ibs_study.sampling.plans"):
        sampler = PairedCropSampler(index, THING_PAIRS, AUGMENTATION, class_names=dataset.meta.class_names)
    things = sorted(_label(dataset, name) for name in ("car", "person", "truck"))
    assert sorted(sampler.labels.tolist()) == things  # bicycle: in one image only
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "bicycle (1 image)" in warnings[0] and "tree" not in warnings[0]
    pairs = _pairs(sampler, 1500, seed=3)
    counts = np.bincount([a.pair_class for a, _ in pairs], minlength=8)
    assert counts[things].sum() == 1500
    assert chisquare(counts[things]).pvalue > 1e-3
    assert all(a.pair_size > 0 and b.pair_size > 0 for a, b in pairs)  # thing pairs are rescaled to S


def test_thing_pair_classes_need_a_thing_class_in_two_images(index: SegmentIndex) -> None:
    stuff_only = dataclasses.replace(index, is_thing=np.zeros_like(index.is_thing))
    with pytest.raises(ValueError, match=r"pair_classes='thing'.* thing class .* at least two images"):
        PairedCropSampler(stuff_only, THING_PAIRS, AUGMENTATION)
    PairedCropSampler(stuff_only, SAMPLER, AUGMENTATION)  # the official pool still has stuff classes


def test_crops_contain_the_pair_segment_bbox_centre(paired: PairedCropSampler, index: SegmentIndex) -> None:
    for a, b in _pairs(paired, 1000, seed=1):
        for plan in (a, b):
            entry = next(
                e for e in index.entries_of(plan.pair_class) if index.entry_image[e] == plan.image_index
            )
            rows = [r for r in index.segment_rows(entry) if index.segment_id[r] == plan.segment_id]
            assert len(rows) == 1, "the chosen segment is a non-crowd segment of the pair class in this image"
            x, y, w, h = index.segment_bbox[rows[0]]
            height, width = index.image_hw[plan.image_index]
            cy = (y + h / 2) * plan.resize_hw[0] / height
            cx = (x + w / 2) * plan.resize_hw[1] / width
            top, left, crop_h, crop_w = plan.crop_box
            assert (crop_h, crop_w) == CROP
            assert top <= cy < top + crop_h and left <= cx < left + crop_w


def test_thing_pairs_scale_segments_to_s_unless_clamped(
    paired: PairedCropSampler, index: SegmentIndex
) -> None:
    unclamped = clamped = 0
    for a, b in _pairs(paired, 1500, seed=2):
        if not index.is_thing[a.pair_class]:
            assert a.pair_size == b.pair_size == 0.0
            continue
        assert a.pair_size == b.pair_size and a.pair_size in SAMPLER.pair_sizes
        for plan in (a, b):
            entry = next(
                e for e in index.entries_of(plan.pair_class) if index.entry_image[e] == plan.image_index
            )
            row = next(r for r in index.segment_rows(entry) if index.segment_id[r] == plan.segment_id)
            _, _, w, h = index.segment_bbox[row]
            height, width = (int(v) for v in index.image_hw[plan.image_index])
            out_h, out_w = plan.resize_hw
            raw = plan.pair_size / math.sqrt(w * h)
            short, long = min(height, width), max(height, width)
            if short * raw < SAMPLER.min_short_side:
                clamped += 1
                assert min(out_h, out_w) == SAMPLER.min_short_side
            elif short * raw > SAMPLER.max_short_side:
                clamped += 1
                assert min(out_h, out_w) == SAMPLER.max_short_side
            elif long * raw > SAMPLER.max_long_side:
                clamped += 1
                assert max(out_h, out_w) == SAMPLER.max_long_side
            else:
                unclamped += 1
                scaled = math.sqrt(w * out_w / width * h * out_h / height)
                assert scaled == pytest.approx(plan.pair_size, rel=0.02)
    assert unclamped > 100 and clamped > 100  # both regimes exercised


@pytest.mark.parametrize(
    ("image_hw", "bbox_wh", "size", "expected"),
    [
        ((1024, 2048), (30, 120), 120, (2048, 4096)),  # factor 2, within the clamps
        ((1024, 2048), (64, 16), 128, (3096, 6192)),  # factor 4 -> short side capped at 3096
        ((1024, 2048), (100, 100), 32, (512, 1024)),  # factor 0.32 -> short side raised to 512
        ((1000, 4000), (10, 10), 64, (1548, 6192)),  # short cap 3.096, then long side 12384 -> 6192
        ((2048, 1024), (8, 32), 64, (6192, 3096)),  # portrait: factor 4 -> short side capped at 3096
    ],
)
def test_thing_pair_resize_by_hand(image_hw, bbox_wh, size, expected) -> None:
    cfg = SamplerConfig(kind="paired")  # official Cityscapes clamps 512 / 3096 / 6192
    assert thing_pair_resize(image_hw, bbox_wh, size, cfg) == expected


def test_distinct_images_by_default_same_image_possible_otherwise(
    index: SegmentIndex, dataset: PanopticDataset
) -> None:
    distinct = PairedCropSampler(index, SAMPLER, AUGMENTATION)
    assert all(a.image_index != b.image_index for a, b in _pairs(distinct, 1000, seed=3))
    same_cfg = SamplerConfig(**{**SAMPLER.__dict__, "distinct_images": False})
    official = PairedCropSampler(index, same_cfg, AUGMENTATION)
    pairs = _pairs(official, 1000, seed=3)
    same = [a for a, b in pairs if a.image_index == b.image_index]
    # expected fraction: mean over classes of 1 / (images of the class)
    counts = index.images_per_class()[official.labels]
    assert len(same) / 1000 == pytest.approx(float(np.mean(1 / counts)), abs=0.04)


def test_batches_hold_pair_mates_at_2k_2k1(paired: PairedCropSampler) -> None:
    plans = paired.plan_batch(np.random.default_rng(4), 16)
    assert len(plans) == 16
    assert all(plans[2 * k].pair_class == plans[2 * k + 1].pair_class for k in range(8))
    assert len({plans[2 * k].pair_class for k in range(8)}) > 1
    assert assign_partners(16, "pair_mate").tolist() == [k ^ 1 for k in range(16)]
    with pytest.raises(ValueError, match="train.batch_size"):
        paired.plan_batch(np.random.default_rng(0), 7)


def test_stuff_pairs_use_the_stuff_resize(index: SegmentIndex) -> None:
    cfg = SamplerConfig(
        **{**SAMPLER.__dict__, "stuff_resize": ResizeConfig("shortest_edge", short_edges=(40, 56))}
    )
    sampler = PairedCropSampler(index, cfg, AUGMENTATION)
    shorts = {min(p.resize_hw) for a, b in _pairs(sampler, 500, seed=5) for p in (a, b) if p.pair_size == 0.0}
    assert shorts == {40, 56}


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="sampler.kind"):
        SamplerConfig(kind="balanced")
    with pytest.raises(ValueError, match="sampler.min_short_side"):
        SamplerConfig(min_short_side=800, max_short_side=600)
    with pytest.raises(ValueError, match="sampler.pair_sizes"):
        SamplerConfig(pair_sizes=())
    with pytest.raises(
        ValueError, match=r"sampler.pair_classes must be one of \['all', 'thing'\], got 'stuff'"
    ):
        SamplerConfig(pair_classes="stuff")
    with pytest.raises(ValueError, match="sampler.stuff_resize: .*short_edges"):
        ResizeConfig(resize_mode="shortest_edge")


def test_paired_needs_crops(index: SegmentIndex) -> None:
    full = TrainAugmentation(crop_size=None)
    with pytest.raises(ValueError, match="data.crop_size"):
        PairedCropSampler(index, SAMPLER, full)


# --------------------------------------------------------------------------- determinism


def test_plans_are_a_pure_function_of_seed_rank_step(paired: PairedCropSampler, index: SegmentIndex) -> None:
    plans = StepPlanSampler(paired, 8, seed=11, rank=0)
    again = StepPlanSampler(paired, 8, seed=11, rank=0, start_step=5)
    assert plans.plans(7) == again.plans(7)
    assert next(iter(again)) == plans.plans(5)
    assert plans.plans(7) != plans.plans(8)
    assert plans.plans(7) != StepPlanSampler(paired, 8, seed=11, rank=1).plans(7)
    assert plans.plans(7) != StepPlanSampler(paired, 8, seed=12, rank=0).plans(7)
    random = RandomCropSampler(index.image_hw, AUGMENTATION)
    assert random.plan_batch(step_rng(1, 0, 3), 4) == random.plan_batch(step_rng(1, 0, 3), 4)
    assert random.plan_batch(step_rng(1, 0, 3), 4) != random.plan_batch(step_rng(1, 1, 3), 4)


def _batches_equal(first, second) -> bool:
    if not torch.equal(first.images, second.images) or first.image_ids != second.image_ids:
        return False
    return all(
        torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels) and torch.equal(a.ignore, b.ignore)
        for a, b in zip(first.targets, second.targets)
    )


def test_loader_is_independent_of_workers_and_resumes(dataset: PanopticDataset, tmp_path: Path) -> None:
    cfg = SamplerConfig(**{**SAMPLER.__dict__, "cache_dir": str(tmp_path)})

    def take(num_workers: int, start_step: int, count: int) -> list:
        loader = build_train_loader(
            dataset,
            dataset.meta,
            cfg,
            AUGMENTATION,
            batch_size=4,
            seed=3,
            start_step=start_step,
            num_workers=num_workers,
        )
        iterator = iter(loader)
        batches = [next(iterator) for _ in range(count)]
        del iterator
        return batches

    serial = take(0, 0, 3)
    parallel = take(2, 0, 3)
    resumed = take(0, 2, 1)
    assert all(_batches_equal(a, b) for a, b in zip(serial, parallel))
    assert _batches_equal(serial[2], resumed[0])
    assert not _batches_equal(serial[0], serial[1])
    batch = serial[0]
    assert batch.images.shape == (4, 3, *CROP) and batch.images.dtype == torch.uint8
    assert batch.partner_index is None
    assert batch.pair_class.tolist()[0] == batch.pair_class.tolist()[1]


def test_ranks_draw_their_own_pairs(dataset: PanopticDataset, tmp_path: Path) -> None:
    cfg = SamplerConfig(**{**SAMPLER.__dict__, "cache_dir": str(tmp_path)})
    per_rank = [
        next(
            iter(
                build_train_loader(dataset, dataset.meta, cfg, AUGMENTATION, 4, seed=3, rank=r, world_size=2)
            )
        )
        for r in range(2)
    ]
    assert not _batches_equal(*per_rank)
    for batch in per_rank:  # pairs are complete within each rank's batch
        assert batch.pair_class[0::2].tolist() == batch.pair_class[1::2].tolist()
    with pytest.raises(ValueError, match="rank 2"):
        build_train_loader(dataset, dataset.meta, cfg, AUGMENTATION, 4, seed=3, rank=2, world_size=2)


# --------------------------------------------------------------------------- cutting crops


def test_apply_plan_equals_resize_crop_flip(dataset: PanopticDataset) -> None:
    sample = dataset[1]  # 96 x 160
    plans = [
        CropPlan(1, (192, 320), (40, 100, 48, 64), flip=False),  # enlarge
        CropPlan(1, (61, 97), (5, 20, 48, 64), flip=True),  # shrink, window past the right edge
        CropPlan(1, (40, 50), (0, 0, 48, 64), flip=False),  # image smaller than the crop
        CropPlan(1, (96, 160), (10, 30, 48, 64), flip=True),  # no resize
        CropPlan(1, (150, 250), (0, 0, 150, 250), flip=False),  # full image
    ]
    for plan in plans:
        cut, pad = apply_plan(sample, plan)
        reference, ref_pad = crop(resize(sample, *plan.resize_hw), *plan.crop_box)
        if plan.flip:
            reference, ref_pad = hflip(reference), ref_pad[:, ::-1]
        assert np.array_equal(cut.id_map, reference.id_map), plan
        assert np.array_equal(pad, ref_pad), plan
        assert np.abs(cut.image.astype(int) - reference.image.astype(int)).max() <= 1, plan
        assert cut.segments == reference.segments, plan


def test_random_plan_describes_the_train_augmentation(dataset: PanopticDataset, index: SegmentIndex) -> None:
    sampler = RandomCropSampler(index.image_hw, AUGMENTATION)
    for seed in range(6):
        plan = sampler.plan_crop(np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        assert int(rng.integers(len(index.image_hw))) == plan.image_index
        augmented, pad = AUGMENTATION(dataset[plan.image_index], rng)
        cut, cut_pad = apply_plan(dataset[plan.image_index], plan)
        assert np.array_equal(cut.id_map, augmented.id_map) and np.array_equal(cut_pad, pad)


def test_paired_crops_hold_the_pair_segment(dataset: PanopticDataset, paired: PairedCropSampler) -> None:
    """Cut crops hold the chosen segment; in the resized image (before cropping), an
    unclamped thing segment's pixel bbox has sqrt(area) within rounding of S."""
    crops = CropDataset(dataset, min_pixels=1)
    measured = 0
    for a, b in _pairs(paired, 30, seed=6):
        for plan in (a, b):
            item = crops[plan]
            assert item.image.shape == (*CROP, 3)
            assert plan.pair_class in item.target.labels.tolist()
            assert plan.segment_id in item.target.segment_ids.tolist()
            if not plan.pair_size or min(plan.resize_hw) in (SAMPLER.min_short_side, SAMPLER.max_short_side):
                continue
            resized = resize(dataset[plan.image_index], *plan.resize_hw).segment_by_id()[plan.segment_id]
            assert math.sqrt(resized.bbox[2] * resized.bbox[3]) == pytest.approx(plan.pair_size, abs=1.5)
            measured += 1
    assert measured >= 5


def test_decoded_cache_gives_the_same_crops_and_decodes_each_image_once(
    dataset: PanopticDataset, paired: PairedCropSampler
) -> None:
    """Kept decoded samples give crops identical to decoding every time; each image is decoded once
    while the cache holds it, and a sample is read-only (no crop can change a later one)."""
    decoded: list[int] = []

    class Counting(PanopticDataset):
        def __getitem__(self, index: int):
            decoded.append(index)
            return super().__getitem__(index)

    counting = Counting(dataset.json_path, dataset.png_dir, dataset.image_path)
    plans = [plan for pair in _pairs(paired, 40, seed=11) for plan in pair]
    cached, uncached = CropDataset(counting), CropDataset(dataset, cache_bytes=0)
    for plan in plans:
        a, b = cached[plan], uncached[plan]
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and torch.equal(
            a.target.masks, b.target.masks
        )
        assert torch.equal(a.target.labels, b.target.labels)
    used = {plan.image_index for plan in plans}
    assert sorted(decoded) == sorted(used) and len(plans) > len(used)
    sample = cached.sample(plans[0].image_index)
    with pytest.raises(ValueError, match="read-only"):
        sample.image[0, 0] = 0
    one = sample.image.nbytes + sample.id_map.nbytes
    small = CropDataset(dataset, cache_bytes=2 * one)  # the two most recently used samples
    for index in range(len(dataset)):
        small.sample(index)
    assert list(small._decoded) == [len(dataset) - 2, len(dataset) - 1]


def test_full_image_batches_are_padded_to_multiples_of_32(dataset: PanopticDataset) -> None:
    full = TrainAugmentation(resize_mode="scale", scale_range=(0.6, 0.9), crop_size=None, flip_prob=0.5)
    loader = build_train_loader(
        dataset, dataset.meta, SamplerConfig(kind="random"), full, batch_size=6, seed=0
    )
    batch = next(iter(loader))
    _, _, height, width = batch.images.shape
    assert height % 32 == 0 and width % 32 == 0
    plans = StepPlanSampler(RandomCropSampler(image_sizes(dataset.records), full), 6, seed=0).plans(0)
    assert height == -(-max(p.resize_hw[0] for p in plans) // 32) * 32
    for plan, target, image in zip(plans, batch.targets, batch.images):
        h, w = plan.resize_hw
        assert plan.crop_box == (0, 0, h, w)
        assert target.masks.shape[1:] == (height, width)
        assert bool(target.ignore[h:].all()) and bool(target.ignore[:, w:].all())
        assert not bool(target.masks[:, h:].any()) and int(image[:, h:].sum()) == 0
        assert not bool(target.ignore[:h, :w].all())


def test_collate_pads_only_when_asked(dataset: PanopticDataset) -> None:
    small, large = dataset[0], dataset[1]
    targets = [target_from_sample(s, dataset.meta) for s in (small, large)]
    with pytest.raises(ValueError, match="one size"):
        collate([small.image, large.image], targets, ["a", "b"])
    batch = collate([small.image, large.image], targets, ["a", "b"], pad_to_multiple=32)
    assert batch.images.shape == (2, 3, 96, 160)
    assert bool(batch.targets[0].ignore[80:].all()) and bool(batch.targets[0].ignore[:, 120:].all())
    assert torch.equal(batch.targets[1].ignore, targets[1].ignore)


# --------------------------------------------------------------------------- what pairing buys


def test_paired_crops_share_thing_classes_far_more_often(dataset: PanopticDataset, tmp_path: Path) -> None:
    def fraction(kind: str, partner: str) -> float:
        cfg = SamplerConfig(**{**SAMPLER.__dict__, "kind": kind, "cache_dir": str(tmp_path)})
        loader = iter(build_train_loader(dataset, dataset.meta, cfg, AUGMENTATION, batch_size=8, seed=0))
        gen = torch.Generator().manual_seed(0)
        values = []
        for _ in range(12):
            batch = next(loader)
            values.append(shared_thing_class_fraction(batch.targets, assign_partners(8, partner, gen)))
        return float(np.mean(values))

    paired_fraction = fraction("paired", "pair_mate")
    random_fraction = fraction("random", "random")
    # thing pairs (3 of 6 eligible classes) always share their class; random crops of
    # images with one of three thing classes rarely do
    assert paired_fraction > 0.5
    assert paired_fraction > 2 * random_fraction


# --------------------------------------------------------------------------- thing-centred random crops


def test_thing_boxes_by_image_are_the_non_crowd_thing_segments(
    dataset: PanopticDataset, index: SegmentIndex
) -> None:
    is_thing = {c.id: c.isthing for c in CATEGORIES}
    boxes = index.thing_boxes_by_image()
    assert len(boxes) == len(dataset.records)
    for record, found in zip(dataset.records, boxes, strict=True):
        expected = sorted(tuple(s.bbox) for s in record.segments if is_thing[s.category_id] and not s.iscrowd)
        assert sorted(map(tuple, found.tolist())) == expected
    assert sum(len(b) for b in boxes) > len(boxes)  # several things per image somewhere


def _contains_a_thing_centre(plan: CropPlan, boxes: np.ndarray, image_hw: np.ndarray) -> bool:
    height, width = image_hw[plan.image_index]
    top, left, crop_h, crop_w = plan.crop_box
    cy = (boxes[:, 1] + boxes[:, 3] / 2) * plan.resize_hw[0] / height
    cx = (boxes[:, 0] + boxes[:, 2] / 2) * plan.resize_hw[1] / width
    return bool(((top <= cy) & (cy < top + crop_h) & (left <= cx) & (cx < left + crop_w)).any())


def test_thing_centred_random_crops_always_hold_a_thing_centre(index: SegmentIndex) -> None:
    boxes = index.thing_boxes_by_image()
    centred = RandomCropSampler(index.image_hw, AUGMENTATION, thing_boxes=boxes)
    uniform = RandomCropSampler(index.image_hw, AUGMENTATION)
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    plans = [centred.plan_crop(rng_a) for _ in range(1500)]
    assert all(_contains_a_thing_centre(p, boxes[p.image_index], index.image_hw) for p in plans)
    assert all(p.crop_box[2:] == CROP for p in plans)
    misses = sum(
        not _contains_a_thing_centre(uniform.plan_crop(rng_b), boxes[p.image_index], index.image_hw)
        for p in plans
    )
    assert misses > 100  # uniform offsets often miss every thing: the option is what makes the difference


def test_thing_centred_random_crops_config_and_errors(
    dataset: PanopticDataset, index: SegmentIndex, tmp_path: Path
) -> None:
    from ibs_study.sampling.loader import build_sampler

    with pytest.raises(
        ValueError, match=r"sampler.random_crop_centre must be one of \['uniform', 'thing'\], got 'any'"
    ):
        SamplerConfig(random_crop_centre="any")
    cfg = SamplerConfig(kind="random", random_crop_centre="thing", cache_dir=str(tmp_path))
    sampler = build_sampler(dataset, dataset.meta, cfg, AUGMENTATION)
    assert isinstance(sampler, RandomCropSampler) and len(sampler.thing_boxes) == len(dataset.records)
    full_images = build_sampler(dataset, dataset.meta, cfg, TrainAugmentation(crop_size=None))
    assert full_images.thing_boxes is None  # full images: nothing to centre
    no_things = [np.zeros((0, 4), dtype=np.int64)] * len(index.image_hw)
    with pytest.raises(ValueError, match="no image of this dataset has a non-crowd thing segment"):
        RandomCropSampler(index.image_hw, AUGMENTATION, thing_boxes=no_things)
