"""Config tree: YAML round trip, typed overrides, clear errors, presets."""

from __future__ import annotations

import re

import pytest

from ibs_study.config import (
    _RANGES,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    config_value,
    list_presets,
    load_config,
    load_preset,
    resolve_config,
    save_config,
)
from ibs_study.errors import DataError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = resolve_config(overrides=["train.max_steps=123", "data.crop_size=[64, 96]", "ibs.weight=2.5"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.train.max_steps == 123 and again.data.crop_size == (64, 96) and again.ibs.weight == 2.5
    assert config_hash(again) == config_hash(cfg)


def test_overrides_are_type_checked():
    data: dict = {}
    apply_overrides(
        data,
        ["train.batch_size=6", "optimizer.lr=1e-4", "ibs.enabled=true", "data.crop_size=null", "seed=7"],
    )
    cfg = config_from_dict(data)
    assert cfg.train.batch_size == 6 and isinstance(cfg.optimizer.lr, float) and cfg.optimizer.lr == 1e-4
    assert cfg.ibs.enabled is True and cfg.data.crop_size is None and cfg.seed == 7
    with pytest.raises(ConfigError, match=r"train.batch_size must be an integer, got 'eight'"):
        apply_overrides({}, ["train.batch_size=eight"])
    with pytest.raises(ConfigError, match=r"ibs.enabled must be true or false, got 'maybe'"):
        apply_overrides({}, ["ibs.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"data.crop_size needs 2 values, got 3"):
        apply_overrides({}, ["data.crop_size=[1, 2, 3]"])


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.max_step'; valid keys of train: \[.*'max_steps'"
    ):
        apply_overrides({}, ["train.max_step=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; valid keys: \[.*'train'"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match=r"train is a section"):
        apply_overrides({}, ["train=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["train.max_steps"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match=r"train.batch_size=5 must be even with sampler.kind='paired'"):
        resolve_config(overrides=["sampler.kind=paired", "train.batch_size=5"])
    with pytest.raises(ValueError, match="ibs.weight"):
        resolve_config(overrides=["ibs.weight=-1"])
    with pytest.raises(ConfigError, match=r"model.name='maskrcnn' is not valid"):
        resolve_config(overrides=["model.name=maskrcnn"])
    with pytest.raises(
        ConfigError,
        match=r"train.float32_matmul_precision='tf32' is not valid; choose one of \['highest', 'high', 'medium'\]",
    ):
        resolve_config(overrides=["train.float32_matmul_precision=tf32"])
    with pytest.raises(ConfigError, match=r"ibs.detach_bias applies to model.name=panoptic_fcn"):
        resolve_config(preset="synthetic_m2f_crop_ibs", overrides=["ibs.detach_bias=true"])
    with pytest.raises(ConfigError, match=r"feature_activation must be one of \['relu', 'none'\]"):
        resolve_config(overrides=["model.panoptic_fcn.feature_activation=tanh"])
    assert resolve_config(preset="synthetic_pfcn_crop").model.panoptic_fcn.feature_activation == "relu"


def test_contract_keys_exist():
    """Scripts rely on these dotted keys; they must keep their names."""
    data = config_to_dict(ExperimentConfig())
    for key in (
        "seed",
        "data.root",
        "model.name",
        "sampler.kind",
        "ibs.enabled",
        "ibs.weight",
        "ibs.detach_bias",
        "model.panoptic_fcn.feature_activation",
        "train.max_steps",
        "train.batch_size",
        "train.checkpoint_every",
        "train.device",
    ):
        node = data
        for part in key.split("."):
            assert part in node, key
            node = node[part]


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; valid presets: \["):
        load_preset("nope")


def test_every_preset_loads():
    names = list_presets()
    for name in names:
        cfg = load_preset(name)
        assert cfg.name == name


def test_a_synthetic_root_is_generated_and_checked_with_the_configured_colour_jitter(tmp_path):
    from ibs_study.data.synthetic import read_generation_info
    from ibs_study.engine.data import ensure_synthetic, open_split

    root = tmp_path / "synthetic"
    overrides = [f"data.root={root}", "data.synthetic_scale=tiny", "data.synthetic_colour_jitter=8"]
    cfg = load_preset("synthetic_pfcn_crop", overrides)
    assert len(open_split(cfg, "val")) == 8  # generated: the tiny scale's validation split
    assert read_generation_info(root)["colour_jitter"] == 8.0
    plain = load_preset("synthetic_pfcn_crop", overrides[:2])
    assert plain.data.synthetic_colour_jitter == 0.0
    assert len(open_split(plain, "val")) == 8  # the generation at data.root is used as it is
    assert read_generation_info(root)["colour_jitter"] == 8.0
    with pytest.raises(DataError, match="colour_jitter: found 8.0, expected 0.0"):
        ensure_synthetic(plain, strict=True)  # as the study runner asks


def test_a_synthetic_root_is_generated_with_the_configured_colour_classes(tmp_path):
    from ibs_study.engine.data import ensure_synthetic, open_split

    overrides = [f"data.root={tmp_path / 'synthetic'}", "data.synthetic_scale=tiny"]
    cfg = load_preset("synthetic_pfcn_crop", [*overrides, "data.synthetic_colour_classes=true"])
    assert cfg.data.synthetic_colour_classes is True
    dataset = open_split(cfg, "val")
    assert dataset.meta.num_classes == 29 and sum(dataset.meta.is_thing) == 24
    plain = load_preset("synthetic_pfcn_crop", overrides)
    assert open_split(plain, "val").meta.num_classes == 29  # categories come from the generation's JSON
    with pytest.raises(DataError, match="colour_classes: found True, expected False"):
        ensure_synthetic(plain, strict=True)
    with pytest.raises(ConfigError, match="data.synthetic_colour_classes"):
        load_preset("synthetic_pfcn_crop", ["data.synthetic_colour_classes=several"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=nan", "optimizer.lr"),
        ("optimizer.lr=.inf", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay"),
        ("optimizer.momentum=1.5", "optimizer.momentum"),
        ("ibs.weight=-0.5", "ibs.weight"),
        ("ibs.weight=inf", "ibs.weight"),
        ("model.panoptic_fcn.thing_score_threshold=-0.01", "model.panoptic_fcn.thing_score_threshold"),
        ("model.panoptic_fcn.overlap_threshold=1.01", "model.panoptic_fcn.overlap_threshold"),
        ("model.panoptic_fcn.mask_threshold=-0.1", "model.panoptic_fcn.mask_threshold"),
        ("model.mask2former.overlap_threshold=2", "model.mask2former.overlap_threshold"),
        ("model.mask2former.object_mask_threshold=nan", "model.mask2former.object_mask_threshold"),
        ("eval.confusion_thresholds=[0.5, 1.5]", "eval.confusion_thresholds"),
        ("eval.max_images=0", "eval.max_images"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.checkpoint_every=-5", "train.checkpoint_every"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.crop_size=[0, 64]", "data.crop_size"),
        ("data.scale_range=[nan, 2]", "data.scale_range[0]"),
        ("data.flip_prob=nan", "data.flip_prob"),
        ("seed=-1", "seed"),
        ("train.device=gpu0", "train.device"),
    ],
)
def test_non_finite_and_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}(?![\w.])"):
        resolve_config(preset="synthetic_pfcn_crop", overrides=[override])


def test_limits_admit_the_edges_and_every_limited_key_exists():
    """Each key of the range table is a real config key (a typo would disable its check), and the
    closed edges of the ranges are accepted."""
    data = config_to_dict(ExperimentConfig())
    for key in _RANGES:
        config_value(data, key)  # KeyError on a key that does not exist
    cfg = resolve_config(
        preset="synthetic_pfcn_crop",
        overrides=[
            "ibs.weight=0",
            "model.panoptic_fcn.thing_score_threshold=1",
            "data.num_workers=0",
            "seed=0",
        ],
    )
    assert (cfg.ibs.weight, cfg.model.panoptic_fcn.thing_score_threshold, cfg.data.num_workers) == (
        0.0,
        1.0,
        0,
    )


def test_a_config_file_with_a_non_finite_value_names_file_and_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("_base_: synthetic_pfcn_crop\noptimizer:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"optimizer\.lr=nan is not a finite number"):
        load_config(path)
    path.write_text("_base_: synthetic_pfcn_crop\noptimizer: {lr: [1,\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: not valid YAML \(line 3"):
        load_config(path)


def test_keys_added_later_keep_earlier_config_hashes():
    """The hashes the study's provenance recorded before ``model.hf``, ``data.coco_panoptic``,
    ``ibs.detach_bias`` and ``feature_activation`` existed stay as they were; setting one changes it."""
    assert config_hash(load_preset("synthetic_pfcn_crop_ibs")) == "e15b835ad034"
    assert config_hash(load_preset("synthetic_m2f_crop_ibs")) == "1bb5d343443c"
    for override in (
        "model.panoptic_fcn.feature_activation=none",
        "ibs.detach_bias=true",
        "data.coco_panoptic.val_json=annotations/val.json",
        "model.hf.mask_threshold=0.4",
    ):
        assert config_hash(load_preset("synthetic_pfcn_crop_ibs", [override])) != "e15b835ad034", override
