"""Checks of the notebooks' parameters (the ``parameters`` cell, papermill's ``-p`` / ``-y``).

:func:`check_parameters` is the first call after a notebook's parameters cell: a bad value stops
the notebook there with one line naming the parameter (:class:`ParameterError`, a
:class:`~ibs_study.errors.ConfigError`), as the CLI reports a bad option. Parameters that are
config values are checked by the config itself (:func:`ibs_study.config.load_preset` with the
override they become), so the message ends with the one ``ibs-study train --set`` prints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ibs_study.config import ConfigError, load_preset
from ibs_study.study.specs import MODELS, SETTINGS

__all__ = ["ParameterError", "check_parameters", "CHECKED_PARAMETERS"]

CONFIG_PRESET = "synthetic_pfcn_crop_ibs"  # checks config values when the notebook names no preset
Check = Callable[[str, Any, str], None]  # (parameter name, value, preset) -> None or ParameterError


class ParameterError(ConfigError):
    """A notebook parameter that is not valid; the message names it and what to pass instead."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it: the one line, no traceback."""
        return [f"{type(self).__name__}: {self}"]


def _fail(name: str, value: Any, what: str) -> NoReturn:
    raise ParameterError(f"notebook parameter {name}={value!r}: {what}")


def _flag(name: str, value: Any, preset: str) -> None:
    if not isinstance(value, bool):
        _fail(name, value, "must be True or False")


def _path(name: str, value: Any, preset: str) -> None:
    if not isinstance(value, str | os.PathLike) or not str(value):
        _fail(name, value, "must be a non-empty path")


def _text(name: str, value: Any, preset: str) -> None:
    if not isinstance(value, str) or not value:
        _fail(name, value, "must be a non-empty string")


def _integer(minimum: int) -> Check:
    def check(name: str, value: Any, preset: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            _fail(name, value, f"must be an integer >= {minimum}")

    return check


def _number(low: float, high: float, *, high_open: bool = False, low_open: bool = False) -> Check:
    def check(name: str, value: Any, preset: str) -> None:
        valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if (
            not valid
            or value < low
            or value > high
            or (low_open and value == low)
            or (high_open and value == high)
        ):
            _fail(
                name,
                value,
                f"must be a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}",
            )

    return check


def _choice(choices: Sequence[str]) -> Check:
    def check(name: str, value: Any, preset: str) -> None:
        if value not in choices:
            _fail(name, value, f"choose one of {list(choices)}")

    return check


def _optional(inner: Check) -> Check:
    def check(name: str, value: Any, preset: str) -> None:
        if value is not None:
            inner(name, value, preset)

    return check


def _list(inner: Check, min_len: int = 0, max_len: int | None = None) -> Check:
    """A list whose every item passes ``inner``; a string says how to pass a list with papermill."""

    def check(name: str, value: Any, preset: str) -> None:
        if isinstance(value, str):
            _fail(
                name,
                value,
                f'must be a list, not a string; pass it with papermill\'s -y: -y "{name}: [{value}]"',
            )
        if not isinstance(value, list | tuple):
            _fail(name, value, "must be a list")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            count = f"{min_len} to {max_len}" if max_len is not None else f"at least {min_len}"
            _fail(name, value, f"must list {count} items, got {len(value)}")
        for index, item in enumerate(value):
            inner(f"{name}[{index}]", item, preset)

    return check


def _config(key: str) -> Check:
    """A value of config key ``key``: checked as ``--set key=VALUE`` on the preset."""

    def check(name: str, value: Any, preset: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            _fail(name, value, f"{key} must be a finite number")
        try:
            load_preset(preset, [f"{key}={json.dumps(value, default=str)}"])
        except ConfigError as err:
            _fail(name, value, str(err))

    return check


def _preset(name: str, value: Any, preset: str) -> None:
    if not isinstance(value, str):
        _fail(name, value, "must be a preset name (`ibs-study presets` lists them)")
    try:
        load_preset(value)
    except ConfigError as err:
        _fail(name, value, str(err))


def _overrides(name: str, value: Any, preset: str) -> None:
    _list(_text)(name, value, preset)
    try:
        load_preset(preset, value)
    except ConfigError as err:
        _fail(name, value, str(err))


_CHECKS: dict[str, Check] = {
    "smoke": _flag,
    "resume": _flag,
    "collect_only": _flag,
    "out_dir": _optional(_path),
    "root": _path,
    "run_dir": _optional(_path),
    "runs_root": _optional(_path),
    "results_json": _path,
    "state_path": _optional(_path),
    "run_dirs": _list(_path, 1, 2),
    "labels": _optional(_list(_text, 1, 2)),
    # config values, checked by the config
    "preset": _preset,
    "presets": _list(_preset, 2, 2),
    "overrides": _overrides,
    "data_root": _optional(_path),
    "max_steps": _optional(_config("train.max_steps")),
    "steps": _optional(_config("train.max_steps")),
    "warmup_steps": _config("optimizer.warmup_steps"),
    "seeds": _list(_integer(0), 1),
    "sweep_seed": _integer(0),
    "view_seed": _integer(0),
    "lambdas": _list(_config("ibs.weight")),
    "m2f_lambdas": _list(_config("ibs.weight")),
    "crop_sizes": _list(_config("data.crop_size")),
    "score_thresholds": _list(_config("model.panoptic_fcn.thing_score_threshold")),
    # the notebooks' own settings
    "scale": _choice(("cpu", "paper")),
    "models": _list(_choice(MODELS), 1),
    "settings": _optional(_list(_choice(SETTINGS), 1)),
    "split": _choice(("train", "val")),
    "parallel": _integer(0),
    "threads": _integer(1),
    "nproc": _integer(1),
    "poll_s": _number(0, 3600, low_open=True),
    "threshold": _number(0, 1, high_open=True),
    "score_threshold": _number(0, 1),
    "top_k": _integer(1),
    "crops_per_image": _integer(1),
    "max_images": _optional(_integer(1)),
    "sampler_batches": _integer(1),
    "example_index": _integer(0),
    "merge_counts": _list(_integer(1), 1),
    "step": _integer(0),
    "crops_shown": _integer(1),
    "trace_steps": _integer(1),
    "record_every": _integer(1),
}
CHECKED_PARAMETERS = frozenset(_CHECKS)


def check_parameters(**values: Any) -> None:
    """Check a notebook's parameters, given by name; raise :class:`ParameterError` for the first bad one.

    Config values are checked on the notebook's ``preset`` (else ``synthetic_pfcn_crop_ibs``).

    Raises:
        ParameterError: a value of the wrong type or range, a list given as a string, an unknown
            preset, an override the config refuses, ``labels`` not one per ``run_dirs``, ``resume``
            without ``run_dir``.
        KeyError: a parameter name this module has no check for (a notebook parameter without one).
    """
    unknown = sorted(set(values) - CHECKED_PARAMETERS)
    if unknown:
        raise KeyError(
            f"no check for notebook parameters {unknown}; add them to ibs_study.study.notebook_parameters"
        )
    if "preset" in values:
        _preset("preset", values["preset"], CONFIG_PRESET)
    preset = values.get("preset", CONFIG_PRESET)
    for name, value in values.items():
        _CHECKS[name](name, value, preset)
    if values.get("resume") and values.get("run_dir") is None:
        _fail("resume", True, "needs run_dir: the run directory to continue")
    labels, run_dirs = values.get("labels"), values.get("run_dirs")
    if labels is not None and run_dirs is not None and len(labels) != len(run_dirs):
        _fail("labels", labels, f"needs one label per run directory ({len(run_dirs)} in run_dirs)")
