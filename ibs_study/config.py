"""Experiment configuration: one dataclass tree, YAML presets, ``--set key=value`` overrides.

The tree (:class:`ExperimentConfig`) holds every setting of a run. A preset is a YAML
file in ``ibs_study/presets/`` that overrides the dataclass defaults; it may start from
other presets or shared bases (``_*.yaml``) with ``_base_: <name>`` or ``_base_: [a, b]``
(merged in order, the file's own values last). Command-line overrides (``--set train.max_steps=200``)
are type-checked against the dataclass fields; an unknown key is an error that lists the
valid keys at that level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ibs_study.errors import ConfigError
from ibs_study.ibs_config import IBSConfig
from ibs_study.input_files import read_text
from ibs_study.metrics.panoptic import DEFAULT_THRESHOLDS
from ibs_study.models.configs import BackboneConfig, HFConfig, Mask2FormerConfig, PanopticFCNConfig
from ibs_study.sampling.plans import SamplerConfig

__all__ = [
    "ConfigError",
    "CocoPanopticConfig",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "list_presets",
    "load_preset",
    "load_config",
    "save_config",
    "resolve_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "config_hash",
    "config_value",
    "check_device",
]

MODEL_NAMES = ("panoptic_fcn", "mask2former", "hf_mask2former", "hf_eomt")
# the devices ``train.device`` and ``--device`` accept
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(key: str, device: str) -> str:
    """``device`` itself if it matches :data:`DEVICE_PATTERN`, else :class:`ConfigError` naming ``key``."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{key}={device!r} is not a device; use auto, cpu, mps, cuda or cuda:N")
    return device


# libyaml's parser where PyYAML has it (same safe constructors, several times faster: `presets`
# reads every preset with its bases)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is a :class:`ConfigError` naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{where}: not valid YAML{line}: {problem}") from err


def _check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices)}")


@dataclass(frozen=True)
class _Range:
    """The values a numeric config key (or each item of a list-valued key) may take."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is outside the range
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"be {'>' if self.low_open else '>='} {self.low:g}"
        return f"lie in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_POSITIVE = _Range(0, low_open=True)
_NON_NEGATIVE = _Range(0)
_AT_LEAST_ONE = _Range(1)
_FRACTION = _Range(0, 1)

# dotted config key -> the range its value (each item, for a list) must lie in; None is always allowed
# where the field is optional. The sections' own checks (e.g. ibs.*, sampler.*) come on top.
_RANGES: dict[str, _Range] = {
    "seed": _NON_NEGATIVE,
    "data.synthetic_seed": _NON_NEGATIVE,
    "data.synthetic_colour_jitter": _NON_NEGATIVE,
    "data.crop_size": _AT_LEAST_ONE,
    "data.scale_range": _POSITIVE,
    "data.short_edges": _AT_LEAST_ONE,
    "data.max_size": _AT_LEAST_ONE,
    "data.flip_prob": _FRACTION,
    "data.min_pixels": _AT_LEAST_ONE,
    "data.num_workers": _NON_NEGATIVE,
    "model.backbone.freeze_at": _Range(0, 5),
    "model.backbone.tiny_width": _AT_LEAST_ONE,
    **{
        f"model.panoptic_fcn.{name}": _AT_LEAST_ONE
        for name in (
            "size_divisibility",
            "fpn_channels",
            "semantic_fpn_channels",
            "encoder_channels",
            "kernel_channels",
            "position_channels",
            "encoder_num_convs",
            "position_num_convs",
            "kernel_num_convs",
            "pos_num",
            "tensor_dim",
            "center_top_num",
            "inference_chunk_size",
        )
    },
    # score and probability thresholds: >= 0, where above 1 keeps nothing (an operating curve's end)
    **{
        f"model.panoptic_fcn.{name}": _NON_NEGATIVE
        for name in (
            "center_threshold",
            "stuff_threshold",
            "mask_threshold",
            "rescored_score_threshold",
            "thing_score_threshold",
        )
    },
    **{
        f"model.panoptic_fcn.{name}": _FRACTION
        for name in ("focal_alpha", "similarity_threshold", "overlap_threshold")
    },
    **{
        f"model.panoptic_fcn.{name}": _NON_NEGATIVE
        for name in (
            "instance_scale_low",
            "position_weight",
            "segment_weight",
            "focal_gamma",
            "stuff_area_limit",
        )
    },
    "model.panoptic_fcn.instance_scale_high": _POSITIVE,
    "model.panoptic_fcn.min_overlap": _Range(0, 1, low_open=True, high_open=True),
    "model.panoptic_fcn.gaussian_sigma": _POSITIVE,
    "model.panoptic_fcn.pixel_std": _POSITIVE,
    **{
        f"model.mask2former.{name}": _AT_LEAST_ONE
        for name in (
            "num_queries",
            "dec_layers",
            "hidden_dim",
            "num_heads",
            "dim_feedforward",
            "conv_dim",
            "mask_dim",
            "enc_layers",
            "enc_dim_feedforward",
            "enc_num_points",
            "norm_groups",
            "train_num_points",
            "test_topk_per_image",
            "size_divisibility",
            "inference_chunk_size",
        )
    },
    "model.mask2former.object_mask_threshold": _NON_NEGATIVE,
    **{f"model.mask2former.{name}": _FRACTION for name in ("importance_sample_ratio", "overlap_threshold")},
    **{
        f"model.mask2former.{name}": _NON_NEGATIVE
        for name in ("class_weight", "mask_weight", "dice_weight", "no_object_weight")
    },
    "model.mask2former.dropout": _Range(0, 1, high_open=True),
    "model.mask2former.oversample_ratio": _AT_LEAST_ONE,
    "model.mask2former.pixel_std": _POSITIVE,
    "sampler.pair_sizes": _AT_LEAST_ONE,
    "sampler.min_short_side": _AT_LEAST_ONE,
    "sampler.max_short_side": _AT_LEAST_ONE,
    "sampler.max_long_side": _AT_LEAST_ONE,
    "ibs.weight": _NON_NEGATIVE,
    "ibs.num_points": _AT_LEAST_ONE,
    "ibs.oversample_ratio": _AT_LEAST_ONE,
    "ibs.importance_sample_ratio": _FRACTION,
    "ibs.alpha": _FRACTION,
    "ibs.gamma": _NON_NEGATIVE,
    "optimizer.lr": _POSITIVE,
    "optimizer.weight_decay": _NON_NEGATIVE,
    "optimizer.weight_decay_norm": _NON_NEGATIVE,
    "optimizer.momentum": _Range(0, 1, high_open=True),
    "optimizer.backbone_lr_multiplier": _NON_NEGATIVE,
    "optimizer.poly_power": _NON_NEGATIVE,
    "optimizer.warmup_steps": _NON_NEGATIVE,
    "optimizer.warmup_factor": _Range(0, 1, low_open=True),
    "optimizer.clip_value": _POSITIVE,
    "train.max_steps": _AT_LEAST_ONE,
    "train.batch_size": _AT_LEAST_ONE,
    "train.checkpoint_every": _AT_LEAST_ONE,
    "train.log_every": _AT_LEAST_ONE,
    "eval.max_images": _AT_LEAST_ONE,
    "eval.test_short_side": _AT_LEAST_ONE,
    "eval.test_max_size": _AT_LEAST_ONE,
    "eval.confusion_thresholds": _FRACTION,
}


def _check_range(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming ``key`` if ``value`` (or an item of it) lies outside ``_RANGES[key]``."""
    bounds = _RANGES.get(key)
    if bounds is None or value is None:
        return
    for item in value if isinstance(value, list | tuple) else (value,):
        if not bounds.contains(item):
            raise ConfigError(
                f"{key}={value!r} is out of range: {'each value ' if item is not value else 'it '}must {bounds}"
            )


@dataclass
class CocoPanopticConfig:
    """Where ``data.dataset=coco_panoptic`` finds the splits ``data.train_split`` (``train_*``) and
    ``data.val_split`` (``val_*``): each path relative to ``data.root`` or absolute; null takes the
    default layout ``annotations/panoptic_{split}.json``, ``panoptic_{split}/``, ``images/{split}/``.

    Args:
        train_json / val_json: the COCO-panoptic JSON.
        train_png_dir / val_png_dir: the folder of id PNGs.
        train_image_dir / val_image_dir: the folder of images (the JSON's ``file_name`` s).
    """

    train_json: str | None = None
    train_png_dir: str | None = None
    train_image_dir: str | None = None
    val_json: str | None = None
    val_png_dir: str | None = None
    val_image_dir: str | None = None


@dataclass
class DataConfig:
    """Dataset and augmentation.

    Args:
        dataset: ``synthetic`` | ``cityscapes`` | ``mapillary_vistas`` | ``coco_panoptic`` (any
            COCO-panoptic folder; categories from its JSON).
        root: dataset root folder.
        coco_panoptic: the paths of a ``coco_panoptic`` dataset (:class:`CocoPanopticConfig`).
        synthetic_scale: scale generated when a synthetic ``root`` does not exist yet.
        synthetic_seed: seed of that generation.
        synthetic_colour_jitter: per-instance body-colour offset (RGB levels per channel) of that
            generation (0: the study's generator-version-4 scenes).
        synthetic_colour_classes: that generation makes one thing class per (shape, body
            colour), 24 instead of 4 (False: the study's classes).
        train_split / val_split: split names.
        crop_size: (H, W) training crop; None trains on full images.
        resize_mode: ``scale`` (factor uniform in ``scale_range``) or ``shortest_edge``
            (short side drawn from ``short_edges``, long side capped by ``max_size``).
        flip_prob: horizontal flip probability.
        min_pixels: a segment needs this many pixels in a crop to be a target
            (Mask2Former's crop fix: 2).
        num_workers: DataLoader worker processes.
    """

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    synthetic_scale: str = "cpu"
    synthetic_seed: int = 0
    synthetic_colour_jitter: float = 0.0
    synthetic_colour_classes: bool = False
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] | None = (128, 256)
    resize_mode: str = "scale"
    scale_range: tuple[float, float] = (0.5, 2.0)
    short_edges: tuple[int, ...] = ()
    max_size: int = 4096
    flip_prob: float = 0.5
    min_pixels: int = 1
    num_workers: int = 0
    coco_panoptic: CocoPanopticConfig = field(default_factory=CocoPanopticConfig)

    def __post_init__(self) -> None:
        _check_choice(
            "data.dataset", self.dataset, ("synthetic", "cityscapes", "mapillary_vistas", "coco_panoptic")
        )
        _check_choice("data.resize_mode", self.resize_mode, ("scale", "shortest_edge"))
        if self.resize_mode == "shortest_edge" and not self.short_edges:
            raise ConfigError("data.short_edges must list sizes when data.resize_mode='shortest_edge'")
        if self.crop_size is not None and min(self.crop_size) <= 0:
            raise ConfigError(f"data.crop_size={self.crop_size} must be positive (H, W) or null")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"data.flip_prob={self.flip_prob} must lie in [0, 1]")
        if self.scale_range[0] > self.scale_range[1]:
            raise ConfigError(
                f"data.scale_range={list(self.scale_range)} must be [low, high] with low <= high"
            )
        for name in ("root", "train_split", "val_split"):
            if not getattr(self, name).strip():
                raise ConfigError(
                    f"data.{name} is empty; give a {'folder' if name == 'root' else 'split name'}"
                )


@dataclass
class ModelConfig:
    """Which unified model and its hyper-parameters (only the chosen model's section is used;
    ``hf_mask2former`` and ``hf_eomt``, transformers' models, use ``hf`` and not ``backbone``)."""

    name: str = "panoptic_fcn"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    panoptic_fcn: PanopticFCNConfig = field(default_factory=PanopticFCNConfig)
    mask2former: Mask2FormerConfig = field(default_factory=Mask2FormerConfig)
    hf: HFConfig = field(default_factory=HFConfig)

    def __post_init__(self) -> None:
        _check_choice("model.name", self.name, MODEL_NAMES)


@dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule.

    Args:
        name: ``sgd`` (Panoptic FCN: momentum, poly) or ``adamw`` (Mask2Former).
        lr: base learning rate.
        weight_decay: weight decay (not applied to norm layers and biases when
            ``weight_decay_norm`` is 0).
        momentum: SGD momentum.
        backbone_lr_multiplier: learning-rate factor of the backbone (Mask2Former: 0.1).
        poly_power: power of the polynomial decay to 0 at ``train.max_steps``.
        warmup_steps / warmup_factor: linear warm-up from ``warmup_factor * lr``.
        clip: gradient clipping: ``none``, ``value`` (Panoptic FCN, 5.0) or ``norm``
            (Mask2Former's full-model norm, 0.01).
        clip_value: the clipping threshold.
    """

    name: str = "sgd"
    lr: float = 0.02
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    momentum: float = 0.9
    backbone_lr_multiplier: float = 1.0
    poly_power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    clip: str = "value"
    clip_value: float = 5.0

    def __post_init__(self) -> None:
        _check_choice("optimizer.name", self.name, ("sgd", "adamw"))
        _check_choice("optimizer.clip", self.clip, ("none", "value", "norm"))
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr} must be positive")


@dataclass
class TrainConfig:
    """The training run.

    Args:
        max_steps: optimiser steps.
        batch_size: crops per optimiser step over all processes, as the paper counts them
            (IMS_PER_BATCH); each of N torchrun processes takes ``batch_size / N`` (paired
            sampling: the per-process batch must be even).
        checkpoint_every: write a checkpoint every this many steps (and at the end).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA (ignored on CPU).
        log_every: steps between JSONL/TensorBoard records.
        float32_matmul_precision: how CUDA computes float32 matrix products, such as the
            mask and IBS logits (``torch.set_float32_matmul_precision``): ``highest``, true
            float32 (PyTorch's default since 1.12); ``high``, TF32 tensor cores (Ampere and
            later); ``medium``, bfloat16. Convolutions follow cuDNN's own setting (TF32 by
            default). Ignored on CPU.
        threads: torch's intra-op CPU threads (``torch.set_num_threads``), set before anything
            is computed by ``train`` and ``evaluate``; null: torch's default (the CPU cores, or
            ``OMP_NUM_THREADS``). Sums run in another order with another thread count, so CPU
            results change with it; the same config, seed, version and threads give
            bit-identical CPU results.
    """

    max_steps: int = 500
    batch_size: int = 8
    checkpoint_every: int = 250
    device: str = "auto"
    amp: bool = True
    log_every: int = 10
    float32_matmul_precision: str = "highest"
    threads: int | None = None

    def __post_init__(self) -> None:
        check_device("train.device", self.device)
        for name in ("max_steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be a positive integer")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"train.threads={self.threads} must be a positive integer or null")
        _check_choice(
            "train.float32_matmul_precision", self.float32_matmul_precision, ("highest", "high", "medium")
        )


@dataclass
class EvalConfig:
    """Full-image evaluation.

    Args:
        task: ``panoptic`` or ``instance`` (Mask2Former instance segmentation rows).
        max_images: evaluate only the first N images of the split (None: all).
        test_short_side / test_max_size: resize each image so its short side is
            ``test_short_side`` with the long side at most ``test_max_size`` before
            inference, and the prediction back to the original size (nearest); None: infer
            at the original size (Cityscapes). Official Vistas: 2048 / 2048.
        confusion_thresholds: thresholds T of the confusion curve (Fig. 5).
    """

    task: str = "panoptic"
    max_images: int | None = None
    test_short_side: int | None = None
    test_max_size: int | None = None
    confusion_thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    def __post_init__(self) -> None:
        _check_choice("eval.task", self.task, ("panoptic", "instance"))


@dataclass
class ExperimentConfig:
    """Everything a run needs. ``paper`` records the paper row a preset reproduces."""

    name: str = "unnamed"
    seed: int = 0
    paper: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    ibs: IBSConfig = field(default_factory=IBSConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.sampler.kind == "paired" and self.train.batch_size % 2:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} must be even with sampler.kind='paired' "
                "(crops come in pairs 2k, 2k+1)"
            )
        if self.sampler.kind == "paired" and self.data.crop_size is None:
            raise ConfigError("sampler.kind='paired' needs data.crop_size (paired crops), not full images")
        if self.ibs.enabled and self.train.batch_size < 2:
            raise ConfigError("ibs.enabled needs train.batch_size >= 2 (a partner crop in the batch)")
        if self.ibs.detach_bias and self.model.name != "panoptic_fcn":
            raise ConfigError(
                f"ibs.detach_bias applies to model.name=panoptic_fcn (its thing projection's bias), "
                f"not {self.model.name!r}: set ibs.detach_bias=false"
            )


# ----------------------------------------------------------------------- type coercion


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to field type ``tp`` or raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
            raise ConfigError(f"{key} may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: no valid type for {value!r}")
    if origin is tuple or origin is list:
        if isinstance(value, str):
            value = _load_yaml(value, key)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} needs {len(args)} values, got {len(value)}: {list(value)}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        number = None
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}={value} is not a finite number; give a finite value")
        return number
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} is a section with keys {_field_names(tp)}, not a value ({value!r})")
        return config_from_dict(value, tp, prefix=key)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# -------------------------------------------------------------------- dict <-> dataclass


def config_from_dict(data: Mapping[str, Any], cls: type = ExperimentConfig, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; every key must be a field of ``cls``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'a config'} must be a mapping of keys to values, got {data!r:.60}")
    hints = _type_hints(cls)
    names = _field_names(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(
                f"unknown config key {full!r}; valid keys{' of ' + prefix if prefix else ''}: {names}"
            )
        kwargs[key] = _coerce(value, hints[key], full)
        _check_range(full, kwargs[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{prefix or 'config'}: {err}") from err


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config dataclass."""

    def plain(value: Any, tp: Any, key: str) -> Any:
        if dataclasses.is_dataclass(value):
            hints = _type_hints(type(value))
            return {
                f.name: plain(getattr(value, f.name), hints[f.name], f"{key}.{f.name}")
                for f in dataclasses.fields(value)
            }
        value = _coerce(value, tp, key)  # canonical types: 1 -> 1.0 in a float field
        if isinstance(value, list | tuple):
            return [plain(v, Any, key) for v in value]
        return value

    return plain(cfg, type(cfg), type(cfg).__name__)


def config_value(data: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (e.g. ``model.panoptic_fcn.thing_score_threshold``) of a config
    dict (:func:`config_to_dict`)."""
    value: Any = data
    for part in key.split("."):
        value = value[part]
    return value


# Keys added to the config after the study's runs were recorded: they enter config_hash only when
# they differ from their defaults, so an earlier run's config keeps the hash it was recorded with.
HASHED_WHEN_CHANGED = (
    "data.coco_panoptic",
    "ibs.detach_bias",
    "model.hf",
    "model.panoptic_fcn.feature_activation",
)


def _pop_key(data: dict[str, Any], key: str) -> Any:
    """Remove dotted ``key`` from the nested dict ``data``; returns its value (None if absent)."""
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    return data.pop(last, None)


def config_hash(
    cfg: ExperimentConfig,
    exclude: Iterable[str] = ("name", "train.max_steps", "train.device", "train.threads"),
) -> str:
    """Short SHA-1 of the resolved config; ``exclude`` lists dotted keys that do not define the
    experiment; a key of :data:`HASHED_WHEN_CHANGED` counts only where it is not at its default."""
    data = config_to_dict(cfg)
    defaults = config_to_dict(ExperimentConfig())
    for key in exclude:
        _pop_key(data, key)
    for key in HASHED_WHEN_CHANGED:
        value = _pop_key(data, key)
        if value != _pop_key(defaults, key):
            data[key] = value
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------- overrides


def _parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. train.max_steps=200)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], cls: type = ExperimentConfig
) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a nested config dict, type-checked against ``cls``.

    Returns:
        The same dict, updated in place.
    """
    for item in overrides:
        key, raw = _parse_override(item)
        parts = key.split(".")
        node_cls, node = cls, data
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            names = _field_names(node_cls)
            if part not in names:
                where = f" of {prefix}" if prefix else ""
                raise ConfigError(f"unknown config key {key!r}; valid keys{where}: {names}")
            tp = _type_hints(node_cls)[part]
            if depth == len(parts) - 1:
                if _is_dataclass_type(tp):
                    raise ConfigError(f"{key} is a section with keys {_field_names(tp)}; set one of them")
                parsed = _load_yaml(raw, f"--set {key}") if raw else raw
                node[part] = _coerce(parsed, tp, key)
            else:
                if not _is_dataclass_type(tp):
                    raise ConfigError(
                        f"{'.'.join(parts[: depth + 1])} is a value, not a section (in {key!r})"
                    )
                node = node.setdefault(part, {})
                node_cls = tp
    return data


# --------------------------------------------------------------------------------- presets


def _preset_dir() -> Path:
    return Path(str(resources.files("ibs_study") / "presets"))


def list_presets() -> list[str]:
    """Names of the bundled presets (files starting with ``_`` are shared bases, not presets)."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml") if not p.stem.startswith("_"))


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_yaml_with_bases(path: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    data = _load_yaml(read_text(path, "config file", ConfigError), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(name, str) for name in bases):
        raise ConfigError(f"{path}: _base_ must be a preset name or a list of them, got {bases!r}")
    merged: dict[str, Any] = {}
    for base_name in bases:
        if base_name in seen:
            raise ConfigError(f"{path}: circular _base_ chain {list(seen) + [base_name]}")
        _merge(merged, _read_yaml_with_bases(_preset_path(base_name), seen + (base_name,)))
    return _merge(merged, data)


def _preset_path(name: str) -> Path:
    path = _preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; valid presets: {list_presets()}")
    return path


def load_preset(name: str, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The bundled preset ``name`` with optional ``key=value`` overrides."""
    return resolve_config(preset=name, overrides=overrides)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """A config YAML file (may use ``_base_: <preset>``) with optional overrides."""
    return resolve_config(path=path, overrides=overrides)


def resolve_config(
    preset: str | None = None, path: str | Path | None = None, overrides: Iterable[str] = ()
) -> ExperimentConfig:
    """Defaults <- preset or YAML file <- overrides, validated."""
    if preset is not None and path is not None:
        raise ConfigError("give a preset name or a config file, not both")
    data: dict[str, Any] = {}
    if preset is not None:
        data = _read_yaml_with_bases(_preset_path(preset))
        data.setdefault("name", preset)
    elif path is not None:
        data = _read_yaml_with_bases(Path(path))
    apply_overrides(data, overrides)
    return config_from_dict(data)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (loads back to an equal config), atomically."""
    from ibs_study.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
