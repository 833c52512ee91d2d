"""Presets: every required name exists and loads, and the paper rows carry the paper's settings."""

from __future__ import annotations

import itertools

import pytest

from ibs_study.config import config_to_dict, list_presets, load_preset
from ibs_study.study.paper_reference import PAPER_TRAINING

ROWS = ("pfcn_full", "pfcn_crop", "pfcn_crop_ibs_random", "pfcn_crop_ibs", "m2f_crop", "m2f_crop_ibs")
REQUIRED = [
    f"{d}_{r}" for d, r in itertools.product(("cityscapes", "vistas", "synthetic", "synthetic_gpu"), ROWS)
]
REQUIRED += [
    f"{d}_m2f_instance_{r}"
    for d, r in itertools.product(("vistas", "synthetic", "synthetic_gpu"), ("crop", "crop_ibs"))
]


def _get(cfg, dotted: str):
    node = config_to_dict(cfg)
    for part in dotted.split("."):
        node = node[part]
    return tuple(node) if isinstance(node, list) else node


def test_required_presets_exist():
    missing = sorted(set(REQUIRED) - set(list_presets()))
    assert not missing, f"missing presets: {missing}"


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_is_consistent(name):
    cfg = load_preset(name)
    model = "mask2former" if "_m2f" in name else "panoptic_fcn"
    assert cfg.model.name == model
    ibs = name.endswith("_crop_ibs") or name.endswith("_crop_ibs_random")
    assert cfg.ibs.enabled is ibs, name
    assert cfg.sampler.kind == ("paired" if name.endswith("_crop_ibs") else "random"), name
    assert (cfg.data.crop_size is None) is name.endswith("_full"), name
    if "instance" in name:
        assert cfg.model.mask2former.task == "instance" and cfg.eval.task == "instance"
    if model == "mask2former":
        assert cfg.data.min_pixels == 2  # the paper's crop fix: GT segments absent from the crop are dropped
        assert cfg.ibs.point_sampling and cfg.ibs.partner == "random_per_layer"
    elif ibs:
        assert cfg.ibs.scale_by_mask_weight and not cfg.ibs.point_sampling


@pytest.mark.parametrize("name", sorted(PAPER_TRAINING))
def test_paper_rows_carry_the_papers_settings(name):
    cfg = load_preset(name)
    for key, value in PAPER_TRAINING[name].items():
        assert _get(cfg, key) == value, f"{name}: {key} = {_get(cfg, key)!r}, paper/official: {value!r}"


def test_effective_ibs_multipliers_match_the_official_code():
    """Official Panoptic FCN: SEGMENT x IBS_WEIGHT = 4 (Cityscapes) and 15 (Vistas); Mask2Former 50 / 100."""
    effective = {}
    for name in (
        "cityscapes_pfcn_crop_ibs",
        "vistas_pfcn_crop_ibs",
        "cityscapes_m2f_crop_ibs",
        "vistas_m2f_crop_ibs",
    ):
        cfg = load_preset(name)
        scale = cfg.model.panoptic_fcn.segment_weight if cfg.ibs.scale_by_mask_weight else 1.0
        effective[name] = cfg.ibs.weight * scale
    assert effective == {
        "cityscapes_pfcn_crop_ibs": 4.0,
        "vistas_pfcn_crop_ibs": 15.0,
        "cityscapes_m2f_crop_ibs": 50.0,
        "vistas_m2f_crop_ibs": 100.0,
    }


def test_only_the_real_data_panoptic_fcn_crops_are_centred_on_things():
    """Official Panoptic FCN crops hold a random instance's bbox centre (RandomCropWithInstance);
    Mask2Former's are uniform; the synthetic presets keep the study's uniform crops."""
    for name in list_presets():
        cfg = load_preset(name)
        official_pfcn = name.startswith(("cityscapes_pfcn", "vistas_pfcn"))
        assert cfg.sampler.random_crop_centre == ("thing" if official_pfcn else "uniform"), name
