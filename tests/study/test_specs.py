"""Which runs the study names, and with which overrides."""

from __future__ import annotations

from ibs_study.config import resolve_config
from ibs_study.study.specs import study_rows, study_specs, sweep_specs


def test_swept_value_wins_over_an_override_of_the_same_key():
    specs = sweep_specs(
        "synthetic_pfcn_crop_ibs",
        "ibs.weight",
        [0.5, 2.0],
        seed=3,
        overrides=["ibs.weight=0.25", "train.max_steps=7"],
    )
    resolved = [resolve_config(preset=s.preset, overrides=list(s.overrides)) for s in specs]
    assert [cfg.ibs.weight for cfg in resolved] == [0.5, 2.0]
    assert all(cfg.train.max_steps == 7 and cfg.seed == 3 for cfg in resolved)
    assert [s.name for s in specs] == [
        "sweep_weight_synthetic_pfcn_crop_ibs_0.5_s3",
        "sweep_weight_synthetic_pfcn_crop_ibs_2.0_s3",
    ]


def test_study_specs_apply_overrides_to_every_row_and_seed():
    rows = study_rows("cpu", ["pfcn"])
    specs = study_specs(rows, [1, 4], overrides=["ibs.weight=0.25"])
    assert [s.name for s in specs][:2] == ["pfcn_full_s1", "pfcn_full_s4"] and len(specs) == 8
    paired = resolve_config(preset="synthetic_pfcn_crop_ibs", overrides=list(specs[-1].overrides))
    assert (paired.seed, paired.ibs.weight, paired.ibs.enabled, paired.sampler.kind) == (
        4,
        0.25,
        True,
        "paired",
    )
