"""Which runs the study trains: its rows (model x setting x preset), seeds and sweeps.

* :func:`study_rows` names the paper's rows (Tables 1-4) as synthetic presets;
* :func:`study_specs` / :func:`sweep_specs` turn rows x seeds and a swept config key into
  :class:`~ibs_study.study.grid.RunSpec` s, which :func:`ibs_study.study.grid.run_grid` trains
  and evaluates; :func:`sweep_anchors` names the study runs that are also points of a sweep;
* :func:`key_of` names a row (the run directories are ``<row key>_s<seed>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ibs_study.study.grid import RunSpec

__all__ = [
    "variants_of",
    "MODELS",
    "SETTINGS",
    "StudyRow",
    "key_of",
    "study_rows",
    "study_specs",
    "sweep_specs",
    "sweep_anchors",
]

SETTINGS = ("full", "crop", "crop_ibs_random", "crop_ibs")
MODELS = ("pfcn", "m2f", "m2f_instance")


@dataclass(frozen=True)
class StudyRow:
    """One row of the study: a model, a training setting and the preset that trains it.

    A *variant* row trains the setting with ``overrides`` on top of the preset (e.g.
    ``signed_features``: ``model.panoptic_fcn.feature_activation=none``); the study's own rows
    have none (``variant`` empty). Rows are told apart by (model, setting, variant).
    """

    model: str
    setting: str
    preset: str
    variant: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``<model>_<setting>[_<variant>]``: the run directories are ``<key>_s<seed>``."""
        return key_of(self.model, self.setting, self.variant)


def variants_of(rows: Iterable[Any]) -> list[str]:
    """The variants of ``rows`` (anything with a ``variant``: study rows, results rows) in order of
    appearance, without the study's own ("")."""
    return list(dict.fromkeys(row.variant for row in rows if row.variant))


def key_of(model: str, setting: str, variant: str = "") -> str:
    """``<model>_<setting>[_<variant>]``: a row's key (the run directories are ``<key>_s<seed>``)."""
    return f"{model}_{setting}" + (f"_{variant}" if variant else "")


def study_rows(scale: str = "cpu", models: Iterable[str] = MODELS) -> list[StudyRow]:
    """The paper's rows as synthetic presets (``cpu``: ``synthetic_*``; ``paper``: ``synthetic_gpu_*``)."""
    prefix = {"cpu": "synthetic", "paper": "synthetic_gpu"}[scale]
    settings = {"pfcn": SETTINGS, "m2f": ("crop", "crop_ibs"), "m2f_instance": ("crop", "crop_ibs")}
    return [
        StudyRow(model, setting, f"{prefix}_{model}_{setting}")
        for model in models
        for setting in settings[model]
    ]


def study_specs(
    rows: Sequence[StudyRow],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
) -> list[RunSpec]:
    """One run per (row, seed), named ``<row.key>_s<seed>``; a row's own overrides come last."""
    specs = []
    for row in rows:
        for seed in seeds:
            extra = [
                f"seed={seed}",
                *([f"train.max_steps={steps}"] if steps else []),
                *overrides,
                *row.overrides,
            ]
            specs.append(
                RunSpec(f"{row.key}_s{seed}", row.preset, tuple(extra), tags={"row": row.key, "seed": seed})
            )
    return specs


def sweep_specs(
    preset: str,
    key: str,
    values: Sequence[Any],
    *,
    seed: int = 0,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    label: str | None = None,
) -> list[RunSpec]:
    """One run per value of config ``key`` (e.g. ``ibs.weight`` or ``data.crop_size``)."""
    label = label or key.split(".")[-1]
    specs = []
    for value in values:
        text = json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)
        tag = "x".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        extra = [  # the swept value last: it wins over an override of the same key
            f"seed={seed}",
            *([f"train.max_steps={steps}"] if steps else []),
            *overrides,
            f"{key}={text}",
        ]
        specs.append(
            RunSpec(
                f"sweep_{label}_{preset}_{tag}_s{seed}",
                preset,
                tuple(extra),
                tags={"key": key, "value": value, "seed": seed},
            )
        )
    return specs


def sweep_anchors(
    rows: Sequence[StudyRow], seeds: Sequence[int], sweep: Sequence[RunSpec], overrides: Sequence[str] = ()
) -> list[RunSpec]:
    """The study runs that are also points of ``sweep``: a row trained with the sweep's preset at
    the sweep's seed is the sweep at the preset's own value of the swept key (e.g. the
    ``crop_ibs`` row at seed 0 is the lambda sweep's point at the preset's lambda), so the
    sweep needs no second run of it.

    Returns:
        RunSpecs naming those row runs, tagged with the key and the preset's value; empty when
        no row matches, or when a sweep run already trains that value.
    """
    from ibs_study.config import config_to_dict, config_value, resolve_config

    if not sweep:
        return []
    preset, key, seed = sweep[0].preset, sweep[0].tags["key"], sweep[0].tags.get("seed")
    anchors = []
    for row in rows:
        if row.variant or row.preset != preset or seed not in seeds:
            continue
        value = config_value(config_to_dict(resolve_config(preset=preset, overrides=overrides)), key)
        if any(_same_value(spec.tags["value"], value) for spec in sweep):
            continue
        anchors.append(RunSpec(f"{row.key}_s{seed}", preset, tags={"key": key, "value": value, "seed": seed}))
    return anchors


def _same_value(a: Any, b: Any) -> bool:
    return (list(a) if isinstance(a, list | tuple) else a) == (list(b) if isinstance(b, list | tuple) else b)
