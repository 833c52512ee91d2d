"""The synthetic street-scene dataset: format, determinism, scene properties, folder handling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute
from scipy import stats

from ibs_study.data import synthetic as S
from ibs_study.data.datasets import synthetic
from ibs_study.data.panoptic import segments_from_id_map
from ibs_study.data.statistics import things_in_crop
from ibs_study.errors import DataError

THING_IDS = {s.category_id for s in S.THING_STYLES}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "ds"
    return S.generate_dataset(root, num_train=5, num_val=3, height=96, width=192, seed=3, workers=2)


@pytest.fixture(scope="module")
def cpu_scenes() -> list:
    """Thirty in-memory scenes at the cpu scale."""
    return [render_scale("cpu", np.random.default_rng(i)) for i in range(30)]


def render_scale(name: str, rng: np.random.Generator, **kwargs):
    scale = S.SYNTHETIC_SCALES[name]
    options = {
        "things_per_image": scale.things_per_image,
        "depth_exponent": scale.depth_exponent,
        "instance_colours": scale.instance_colours,
        **kwargs,
    }
    return S.render_image(scale.height, scale.width, rng, **options)


def things_of(sample) -> list:
    """Non-crowd thing segments (of the four shape classes or of the colour classes)."""
    return [
        s
        for s in sample.segments
        if (s.category_id in THING_IDS or s.category_id >= S.COLOUR_CLASS_BASE) and not s.iscrowd
    ]


# ------------------------------------------------------------------------------ the format


def test_round_trip_matches_in_memory_rendering(small_root):
    info = json.loads((small_root / S.INFO_FILE).read_text())
    assert info == S.synthetic_parameters("cpu", num_train=5, num_val=3, height=96, width=192, seed=3)
    assert info["crop_size"] == [48, 48]  # the cpu scale's eighth of the image area
    for split, count in (("train", 5), ("val", 3)):
        dataset = synthetic(small_root, split)
        dataset.validate()
        assert len(dataset) == count
        assert {c.id for c in dataset.meta.categories} == {c.id for c in S.SYNTHETIC_CATEGORIES}
        assert all(c.color == S.SYNTHETIC_CATEGORIES[k].color for k, c in enumerate(dataset.meta.categories))
        for index in range(count):
            sample = dataset[index]
            # Image i of a split is rendered from the seed (seed, split, i), whatever the worker.
            rng = np.random.default_rng(np.random.SeedSequence([3, S._SPLIT_CODE[split], index]))
            expected = S.render_image(
                96,
                192,
                rng,
                min_segment_pixels=info["min_segment_pixels"],
                things_per_image=S.SYNTHETIC_SCALES["cpu"].things_per_image,
                depth_exponent=S.SYNTHETIC_SCALES["cpu"].depth_exponent,
                instance_colours=S.SYNTHETIC_SCALES["cpu"].instance_colours,
            )
            np.testing.assert_array_equal(sample.image, expected.image)
            np.testing.assert_array_equal(sample.id_map, expected.id_map)
            assert sample.segments == expected.segments


def test_json_categories_and_segment_ids(small_root):
    data = json.loads((small_root / "annotations" / "panoptic_train.json").read_text())
    assert {"isthing", "color", "supercategory"} <= set(data["categories"][0])
    ids = [s["id"] for a in data["annotations"] for s in a["segments_info"]]
    things = [s for a in data["annotations"] for s in a["segments_info"] if s["category_id"] in THING_IDS]
    assert all(s["id"] > 65535 for s in things)  # needs the third PNG byte
    assert min(ids) >= 1 and max(ids) < 2**24
    for ann in data["annotations"]:
        assert len({s["id"] for s in ann["segments_info"]}) == len(ann["segments_info"])


def test_gt_scored_against_itself_is_perfect(small_root):
    gt_json = small_root / "annotations" / "panoptic_val.json"
    folder = str(small_root / "panoptic_val")
    results = pq_compute(str(gt_json), str(gt_json), folder, folder)
    assert results["All"]["pq"] == pytest.approx(1.0)
    assert results["Things"]["n"] == len(THING_IDS)


def test_generation_is_byte_identical_for_any_worker_count(tmp_path):
    kwargs = dict(num_train=4, num_val=2, height=64, width=128, seed=11)
    a = S.generate_dataset(tmp_path / "a", workers=1, **kwargs)
    b = S.generate_dataset(tmp_path / "b", workers=2, **kwargs)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * (4 + 2) + 3
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = S.generate_dataset(tmp_path / "c", workers=1, **{**kwargs, "seed": 12})
    assert (c / "annotations/panoptic_train.json").read_bytes() != (
        a / "annotations/panoptic_train.json"
    ).read_bytes()


# ---------------------------------------------------------------------------- the scenes


def test_stuff_layout_sky_on_top_ground_below(cpu_scenes):
    for sample in cpu_scenes:
        stuff = np.where(
            np.isin(sample.id_map, [S.SKY, S.BUILDING, S.VEGETATION, S.ROAD, S.SIDEWALK]), sample.id_map, 0
        )
        rows = np.arange(sample.height)[:, None]
        mean_row = {c: rows.repeat(sample.width, 1)[stuff == c].mean() for c in (S.SKY, S.BUILDING, S.ROAD)}
        assert mean_row[S.SKY] < mean_row[S.BUILDING] < mean_row[S.ROAD]
        assert (stuff[0] == S.SKY).mean() > 0.3  # the top row is mostly sky
        bottom_stuff = set(np.unique(stuff[-1]).tolist()) - {0}
        assert S.ROAD in bottom_stuff and bottom_stuff <= {S.ROAD, S.SIDEWALK}
        assert (stuff[sample.height // 2 :] == S.SIDEWALK).any()


def test_dense_scales_place_tens_of_things_per_image():
    per_image = [
        len(things_of(S.render_image(256, 512, np.random.default_rng(i)))) for i in range(5)
    ]  # the paper scale's density, rendered at 256x512
    assert 30 <= np.mean(per_image) <= 60 and min(per_image) >= 15


def test_cpu_scale_has_many_things_per_image_and_few_per_crop(cpu_scenes):
    crop_h, crop_w = S.SYNTHETIC_SCALES["cpu"].crop_size
    rng = np.random.default_rng(0)
    per_image, per_crop = [], []
    for sample in cpu_scenes:
        things = things_of(sample)
        per_image.append(len(things))
        for _ in range(4):
            top = int(rng.integers(0, sample.height - crop_h + 1))
            left = int(rng.integers(0, sample.width - crop_w + 1))
            window = sample.id_map[top : top + crop_h, left : left + crop_w]
            expected = len({s.id for s in things} & set(np.unique(window).tolist()))
            assert things_in_crop(sample.id_map, things, top, left, crop_h, crop_w) == expected
            per_crop.append(expected)
    assert 8 <= np.mean(per_image) <= 20 and min(per_image) >= 5
    assert np.mean(per_image) >= 2.5 * np.mean(per_crop)
    # Every class appears; a typical image holds several look-alike people and cars.
    counts = np.array(
        [[sum(s.category_id == c for s in things_of(x)) for c in sorted(THING_IDS)] for x in cpu_scenes]
    )
    assert (counts.sum(axis=0) >= 3).all()
    assert (np.median(counts[:, :2], axis=0) >= 2).all()  # person, car


def test_perspective_size_grows_with_the_foot_row(cpu_scenes):
    scale = S.SYNTHETIC_SCALES["cpu"]
    for category in THING_IDS:
        feet, heights = [], []
        for sample in cpu_scenes:
            for seg in things_of(sample):
                x, y, w, h = seg.bbox
                if seg.category_id == category and y + h < sample.height:  # not cut by the border
                    feet.append(y + h)
                    heights.append(h)
        assert len(feet) >= 15
        assert stats.spearmanr(feet, heights)[0] > 0.8, category
    # A wide size range: tiny far instances and ones covering a large part of a crop.
    areas = np.array([s.area for x in cpu_scenes for s in things_of(x)])
    crop_area = scale.crop_size[0] * scale.crop_size[1]
    assert areas.min() < 0.002 * crop_area and (areas > 0.15 * crop_area).sum() >= 5


def _median_colours(sample, colours: dict[int, list]) -> list[tuple[int, int, float, np.ndarray]]:
    """(category, index of the nearest of ``colours[category]``, its distance, the median colour)
    of every thing instance of at least 150 pixels in ``sample``."""
    out = []
    for seg in things_of(sample):
        if seg.area < 150:
            continue
        median = np.median(sample.image[sample.id_map == seg.id], axis=0)
        distances = [np.linalg.norm(median - np.array(c, dtype=float)) for c in colours[seg.category_id]]
        out.append((seg.category_id, int(np.argmin(distances)), float(min(distances)), median))
    return out


def _nearest_body_colours(scenes: list, colours: dict[int, list]) -> list[tuple[int, int, float]]:
    """(category, index of the nearest of ``colours[category]``, its distance) for the median
    colour of every thing instance of at least 150 pixels."""
    return [found[:3] for sample in scenes for found in _median_colours(sample, colours)]


def test_instances_of_a_class_share_a_shape_but_not_always_a_colour(cpu_scenes):
    """At the cpu scale every instance's median colour is one of its class's body colours (up to
    shading), and each class shows several of them: look-alikes in shape, told apart by colour
    only sometimes (two instances of one class share a colour in most scenes)."""
    assert S.SYNTHETIC_SCALES["cpu"].instance_colours
    body = {s.category_id: list(s.body_colours) for s in S.THING_STYLES}
    assert all(s.color in s.body_colours and len(set(s.body_colours)) >= 4 for s in S.THING_STYLES)
    found = _nearest_body_colours(cpu_scenes, body)
    assert len(found) > 100
    assert np.median([d for *_, d in found]) < 15
    for category in body:
        used = {k for c, k, _ in found if c == category}
        assert len(used) >= 3, (category, used)
    same_colour_pairs = 0
    for sample in cpu_scenes:
        seen = [(c, k) for c, k, _ in _nearest_body_colours([sample], body)]
        same_colour_pairs += len(seen) > len(set(seen))
    assert same_colour_pairs >= len(cpu_scenes) // 2


def test_shared_colours_make_instances_of_a_class_identical_in_colour():
    """``instance_colours=False``: every instance has its class's one body colour."""
    scenes = [render_scale("cpu", np.random.default_rng(i), instance_colours=False) for i in range(10)]
    body = {
        s.category_id: [s.color] + [t.color for t in S.THING_STYLES if t is not s] for s in S.THING_STYLES
    }
    found = _nearest_body_colours(scenes, body)  # index 0: the own class's colour
    assert len(found) > 30
    assert np.mean([k == 0 for _, k, _ in found]) > 0.95 and np.median([d for *_, d in found]) < 15


def test_colour_classes_relabel_the_same_scene_by_shape_and_body_colour():
    """``colour_classes`` draws nothing extra outside crowds: without crowds the scene is pixel
    for pixel the plain one, and each thing's class is its shape's colour class whose colour is
    the nearest to the instance's median colour."""
    categories = S.synthetic_categories(colour_classes=True)
    things = [c for c in categories if c.isthing]
    assert len(categories) == 29 and len(things) == 24 and len({c.id for c in categories}) == 29
    assert [c.id for c in categories if not c.isthing] == [
        S.ROAD,
        S.SIDEWALK,
        S.BUILDING,
        S.VEGETATION,
        S.SKY,
    ]
    assert max(c.id for c in categories) < 256
    car = S._STYLE_OF[S.CAR]
    car_2 = next(c for c in things if c.id == S.colour_class_id(car, 2))
    assert (car_2.name, car_2.color, car_2.supercategory) == ("car 2", car.body_colours[2], "vehicle")
    shape_of = {
        S.colour_class_id(s, k): s.category_id for s in S.THING_STYLES for k in range(len(s.body_colours))
    }
    colours_of = {S.colour_class_id(s, k): [c] for s in S.THING_STYLES for k, c in enumerate(s.body_colours)}
    body = {s.category_id: list(s.body_colours) for s in S.THING_STYLES}

    found, distances = 0, []
    for seed in range(12):
        plain = render_scale("cpu", np.random.default_rng(seed), crowd_probability=0.0)
        relabelled = render_scale(
            "cpu", np.random.default_rng(seed), crowd_probability=0.0, colour_classes=True
        )
        np.testing.assert_array_equal(plain.image, relabelled.image)
        np.testing.assert_array_equal(plain.id_map, relabelled.id_map)
        category_in_plain = {seg.id: seg.category_id for seg in plain.segments}
        for seg in relabelled.segments:
            expected = category_in_plain[seg.id]
            assert shape_of.get(seg.category_id, seg.category_id) == expected
        # The colour class is the body colour the instance shows (median, >= 150 pixels).
        for (shape, nearest, _, _), seg in zip(
            _median_colours(plain, body), [s for s in things_of(relabelled) if s.area >= 150]
        ):
            assert seg.category_id == S.colour_class_id(S._STYLE_OF[shape], nearest)
            found += 1
        distances += [distance for _, _, distance, _ in _median_colours(relabelled, colours_of)]
    assert found > 100 and len(distances) == found
    assert np.median(distances) < 15


def test_a_crowd_of_colour_classes_is_one_body_colour():
    crowds = []
    for seed in range(16):
        sample = S.render_image(
            128, 256, np.random.default_rng(seed), crowd_probability=1.0, colour_classes=True
        )
        crowds += [(sample, s) for s in sample.segments if s.iscrowd]
    assert len(crowds) >= 10
    shapes = {S.colour_class_id(s, k): s for s in S.THING_STYLES for k in range(len(s.body_colours))}
    for sample, segment in crowds:
        style = shapes[segment.category_id]
        assert style.category_id in (S.PERSON, S.BICYCLE)
        colours = np.asarray(style.body_colours, dtype=float)
        pixels = sample.image[sample.id_map == segment.id].astype(float)
        nearest = np.argmin(np.linalg.norm(pixels[:, None, :] - colours[None], axis=2), axis=1)
        # Most pixels are body pixels, all near the crowd's one colour (faces, tyres: other parts).
        assert np.mean(nearest == segment.category_id - S.colour_class_id(style, 0)) > 0.5


def test_colour_classes_need_instance_colours():
    with pytest.raises(ValueError, match="colour_classes needs instance_colours"):
        S.render_image(64, 128, np.random.default_rng(0), instance_colours=False, colour_classes=True)
    with pytest.raises(ValueError, match="index 6"):
        S.colour_class_id(S.THING_STYLES[0], 6)


def test_no_colour_jitter_renders_the_study_scenes_bit_for_bit():
    """``colour_jitter`` 0 (every scale's default) draws nothing extra: the scenes are the ones the
    study's dataset was generated from (generator version 4; digest of the cpu-scale scene of
    seed 0, image and id map, recorded when the option was added)."""
    scale = S.SYNTHETIC_SCALES["cpu"]
    assert all(s.colour_jitter == 0 for s in S.SYNTHETIC_SCALES.values())
    sample = render_scale("cpu", np.random.default_rng(0))
    digest = hashlib.sha256(sample.image.tobytes() + sample.id_map.tobytes()).hexdigest()
    assert digest == "a4e20488bfc122053cab05603eacd8c1a38230cb9ba1799bfd2727f1a0aaf4e8"
    assert S.GENERATOR_VERSION == 4 and scale.instance_colours


def _same_palette_colour_distances(scenes: list) -> list[float]:
    """Median-colour distances between two instances of one class nearest to one body colour
    in the same scene (instances of at least 150 pixels)."""
    body = {s.category_id: list(s.body_colours) for s in S.THING_STYLES}
    distances = []
    for sample in scenes:
        groups: dict[tuple[int, int], list[np.ndarray]] = {}
        for category, nearest, _, median in _median_colours(sample, body):
            groups.setdefault((category, nearest), []).append(median)
        for medians in groups.values():
            distances += [
                float(np.linalg.norm(a - b)) for i, a in enumerate(medians) for b in medians[i + 1 :]
            ]
    return distances


def test_colour_jitter_makes_look_alikes_differ_without_leaving_their_body_colour(cpu_scenes):
    """Without jitter two instances of one class and body colour differ only by shading; with
    ``colour_jitter=32`` each moves by up to 32 levels per channel, so such pairs differ clearly
    (but stay nearer their own body colour than to the class's other ones)."""
    jittered = [render_scale("cpu", np.random.default_rng(i), colour_jitter=32) for i in range(30)]
    plain, spread = _same_palette_colour_distances(cpu_scenes), _same_palette_colour_distances(jittered)
    assert len(plain) > 20 and len(spread) > 20
    assert np.median(plain) < 12
    assert np.median(spread) > 25 and np.median(spread) > 3 * np.median(plain)
    body = {s.category_id: list(s.body_colours) for s in S.THING_STYLES}
    found = _nearest_body_colours(jittered, body)
    assert np.median([d for *_, d in found]) < 40


def test_occlusion_bookkeeping_and_minimum_size():
    min_pixels = 30
    for seed in range(4):
        sample = S.render_image(128, 256, np.random.default_rng(seed), min_segment_pixels=min_pixels)
        assert sample.segments == segments_from_id_map(
            sample.id_map,
            {s.id: s.category_id for s in sample.segments},
            {s.id: s.iscrowd for s in sample.segments},
        )
        assert all(s.area >= min_pixels for s in sample.segments if s.category_id in THING_IDS)
        assert np.isin(np.unique(sample.id_map), [0] + [s.id for s in sample.segments]).all()


def test_crowds_when_enabled_and_never_when_disabled():
    def crowds(probability: float) -> list[list]:
        return [
            [
                s
                for s in S.render_image(
                    96, 192, np.random.default_rng(i), crowd_probability=probability
                ).segments
                if s.iscrowd
            ]
            for i in range(12)
        ]

    assert not any(crowds(0.0))
    always = crowds(1.0)
    assert sum(bool(c) for c in always) >= 9  # a crowd may be hidden behind nearer things
    for segments in always:
        assert len(segments) <= 1
        assert all(s.category_id in (S.PERSON, S.BICYCLE) and s.id > 65535 for s in segments)
    # The default gives crowds in a fraction of the images.
    default = [bool(c) for c in crowds(S.CROWD_PROBABILITY)]
    assert 0 < sum(default) < len(default)


def test_render_is_deterministic_and_seed_dependent():
    a = S.render_image(64, 128, np.random.default_rng(5))
    b = S.render_image(64, 128, np.random.default_rng(5))
    c = S.render_image(64, 128, np.random.default_rng(6))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.id_map, b.id_map)
    assert not np.array_equal(a.id_map, c.id_map)


# ------------------------------------------------------------------- folders and parameters


def test_refuses_a_non_empty_folder_and_overwrite_replaces_only_its_files(tmp_path):
    root = tmp_path / "busy"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=str(root)):
        S.generate_dataset(root, scale="tiny")
    S.generate_dataset(root, scale="tiny", num_train=3, num_val=1, overwrite=True)
    S.generate_dataset(root, scale="tiny", num_train=2, num_val=1, overwrite=True)
    assert (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == [
        "train_00000.png",
        "train_00001.png",
    ]
    assert len(synthetic(root, "train")) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": "huge"}, "unknown synthetic scale"),
        ({"height": 16}, "at least 32x32"),
        ({"num_train": 0, "num_val": 0}, "not both 0"),
        ({"num_val": -1}, "num_val"),
        ({"colour_jitter": -1}, "colour_jitter must be in"),
        ({"colour_jitter": 300}, "colour_jitter must be in"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.generate_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_a_split_with_no_images_is_skipped(tmp_path):
    root = S.generate_dataset(tmp_path / "d", scale="tiny", num_train=2, num_val=0)
    assert len(synthetic(root, "train")) == 2
    assert not (root / "annotations" / "panoptic_val.json").exists()


def test_ensure_dataset_generates_reuses_and_refuses(tmp_path, monkeypatch):
    root = tmp_path / "ensured"
    assert S.ensure_dataset(root, scale="tiny", seed=1) == root
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def no_generation(*args, **kwargs):
        raise AssertionError("ensure_dataset regenerated a complete dataset")

    monkeypatch.setattr(S, "generate_dataset", no_generation)
    assert S.ensure_dataset(root, scale="tiny", seed=1) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before

    with pytest.raises(DataError, match=r"seed: found 1, expected 2"):
        S.ensure_dataset(root, scale="tiny", seed=2)
    with pytest.raises(DataError, match=r"scale: found 'tiny', expected 'cpu'"):
        S.ensure_dataset(root, scale="cpu", seed=1)
    (root / S.INFO_FILE).unlink()  # as if the generation had been interrupted
    with pytest.raises(DataError, match="not a complete synthetic dataset"):
        S.ensure_dataset(root, scale="tiny", seed=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "something.txt").write_text("x")
    with pytest.raises(DataError, match=str(other)):
        S.ensure_dataset(other, scale="tiny")


def test_ensure_dataset_checks_the_colour_jitter(tmp_path):
    root = S.ensure_dataset(tmp_path / "jittered", scale="tiny", colour_jitter=8)
    assert json.loads((root / S.INFO_FILE).read_text())["colour_jitter"] == 8.0
    with pytest.raises(DataError, match=r"colour_jitter: found 8.0, expected 0.0"):
        S.ensure_dataset(root, scale="tiny")
    assert S.ensure_dataset(root, scale="tiny", colour_jitter=8.0) == root


def test_ensure_dataset_checks_the_colour_classes_and_writes_their_categories(tmp_path):
    root = S.ensure_dataset(tmp_path / "classes", scale="tiny", colour_classes=True)
    assert json.loads((root / S.INFO_FILE).read_text())["colour_classes"] is True
    dataset = synthetic(root, "train")
    assert dataset.meta.num_classes == 29 and sum(dataset.meta.is_thing) == 24
    used = {s.category_id for record in dataset.records for s in record.segments}
    assert used & {c.id for c in S.synthetic_categories(True) if c.isthing}
    assert not used & THING_IDS
    with pytest.raises(DataError, match=r"colour_classes: found True, expected False"):
        S.ensure_dataset(root, scale="tiny")
    assert S.ensure_dataset(root, scale="tiny", colour_classes=True) == root


@pytest.mark.parametrize(
    ("parameter", "other", "message"),
    [
        ("colour_jitter", 16, r"found 0.0, expected 16.0.*--colour-jitter 16 --overwrite"),
        ("colour_classes", True, r"found False, expected True.*--colour-classes --overwrite"),
    ],
)
def test_ensure_dataset_reads_a_dataset_older_than_a_parameter_as_without_it(
    tmp_path, monkeypatch, parameter, other, message
):
    older = S.ensure_dataset(tmp_path / "older", scale="tiny")
    info = json.loads((older / S.INFO_FILE).read_text())
    del info[parameter]  # written before the parameter existed
    (older / S.INFO_FILE).write_text(json.dumps(info))
    monkeypatch.setattr(S, "generate_dataset", lambda *a, **k: pytest.fail("regenerated an older dataset"))
    assert S.ensure_dataset(older, scale="tiny") == older
    with pytest.raises(DataError, match=message):
        S.ensure_dataset(older, scale="tiny", **{parameter: other})


def test_scales_record_their_crop_share():
    for scale in S.SYNTHETIC_SCALES.values():
        if scale.name == "cpu":  # the study's scale: an eighth, so crops rarely hold two look-alikes
            assert scale.crop_size == (scale.height // 2, scale.width // 4)
        else:
            assert scale.crop_size == (scale.height // 2, scale.width // 2)
    assert (S.SYNTHETIC_SCALES["cpu"].height, S.SYNTHETIC_SCALES["cpu"].width) == (256, 512)
    assert S.SYNTHETIC_SCALES["paper"].crop_size == (512, 1024)
