"""check_parameters: one ParameterError line naming the notebook parameter; config values checked by the config."""

from __future__ import annotations

import math

import pytest

from ibs_study.errors import ConfigError
from ibs_study.study.notebook_parameters import ParameterError, check_parameters


@pytest.mark.parametrize(
    "parameters, message",
    [
        (
            {"overrides": "train.max_steps=10"},
            "notebook parameter overrides='train.max_steps=10': must be a list, not a string; pass it with "
            'papermill\'s -y: -y "overrides: [train.max_steps=10]"',
        ),
        (
            {"overrides": ["train.nope=1"]},
            "notebook parameter overrides=['train.nope=1']: unknown config key 'train.nope'",
        ),
        (
            {"preset": "synthetic_pfcn_crop", "max_steps": -3},
            "notebook parameter max_steps=-3: train.max_steps",  # then the config's own words
        ),
        ({"steps": "many"}, "notebook parameter steps='many': train.max_steps"),
        ({"preset": "nope"}, "notebook parameter preset='nope': unknown preset 'nope'"),
        ({"crop_sizes": [[64, 128], [0, 3]]}, "notebook parameter crop_sizes[1]=[0, 3]: data.crop_size="),
        (
            {"lambdas": [1.0, math.nan]},
            "notebook parameter lambdas[1]=nan: ibs.weight must be a finite number",
        ),
        ({"seeds": []}, "notebook parameter seeds=[]: must list at least 1 items, got 0"),
        ({"seeds": [0, -1]}, "notebook parameter seeds[1]=-1: must be an integer >= 0"),
        ({"smoke": "yes"}, "notebook parameter smoke='yes': must be True or False"),
        ({"threshold": 1.0}, "notebook parameter threshold=1.0: must be a number in [0, 1)"),
        ({"poll_s": 0}, "notebook parameter poll_s=0: must be a number in (0, 3600]"),
        ({"top_k": True}, "notebook parameter top_k=True: must be an integer >= 1"),
        ({"split": "test"}, "notebook parameter split='test': choose one of ['train', 'val']"),
        ({"models": ["pfcn", "detr"]}, "notebook parameter models[1]='detr': choose one of"),
        ({"data_root": 3}, "notebook parameter data_root=3: must be a non-empty path"),
        (
            {"run_dirs": ["a"], "labels": ["x", "y"]},
            "notebook parameter labels=['x', 'y']: needs one label per run directory (1 in run_dirs)",
        ),
        (
            {"resume": True, "run_dir": None},
            "notebook parameter resume=True: needs run_dir: the run directory to continue",
        ),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it(parameters, message):
    with pytest.raises(ParameterError) as failure:
        check_parameters(**parameters)
    assert str(failure.value).startswith(message) and "\n" not in str(failure.value)
    assert isinstance(failure.value, ConfigError)
    assert failure.value._render_traceback_() == [f"ParameterError: {failure.value}"]  # what IPython shows


def test_good_parameters_pass_and_an_unknown_name_is_a_bug():
    check_parameters(
        smoke=True,
        preset="synthetic_pfcn_crop",
        overrides=["train.max_steps=3", "ibs.weight=2"],
        max_steps=None,
        data_root="data/x",
        seeds=[0, 1],
        lambdas=[0.25, 4],
        crop_sizes=[[64, 128]],
        score_thresholds=[0.0, 0.4],
        threshold=0.0,
        run_dirs=["a", "b"],
        labels=None,
        out_dir=None,
    )
    with pytest.raises(KeyError, match=r"no check for notebook parameters \['colour'\]"):
        check_parameters(colour="red")
