"""The config sections of the models (``model.backbone``, ``model.panoptic_fcn``,
``model.mask2former``, ``model.hf``), importable without torch: :mod:`ibs_study.config` and ``ibs-study
presets`` read them without building a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ibs_study.errors import ConfigError

__all__ = [
    "BACKBONE_NAMES",
    "NORMS",
    "BackboneConfig",
    "TASKS",
    "Mask2FormerConfig",
    "HEAD_LEVELS",
    "FEATURE_ACTIVATIONS",
    "PanopticFCNConfig",
    "HFConfig",
]

BACKBONE_NAMES = ("tiny", "resnet18", "resnet50")
NORMS = ("frozen_bn", "bn", "sync_bn", "gn")


@dataclass
class BackboneConfig:
    """Which backbone to build.

    Args:
        name: "tiny" (small CNN for CPU tests and demos), "resnet18" or "resnet50".
        weights: torchvision weight name for the ResNets, e.g. "IMAGENET1K_V1" (downloaded
            by torchvision on first use); None: random initialisation (works offline).
        norm: "frozen_bn" (detectron2's default with pretrained weights), "bn", "sync_bn"
            (batch statistics synchronised across processes under DDP) or "gn" (group norm;
            suits the randomly initialised tiny backbone).
        freeze_at: detectron2's FREEZE_AT: 0 trains everything, 1 freezes the stem,
            k >= 2 also freezes res2..res{k}; 5 freezes the whole backbone.
        tiny_width: channels of the tiny backbone's res2 (res3..res5: x2, x4, x8).
    """

    name: str = "resnet50"
    weights: str | None = None
    norm: str = "frozen_bn"
    freeze_at: int = 2
    tiny_width: int = 16

    @classmethod
    def tiny(cls) -> BackboneConfig:
        """The CPU variant: tiny CNN, group norm, nothing frozen (it starts from random weights)."""
        return cls(name="tiny", weights=None, norm="gn", freeze_at=0)

    def __post_init__(self) -> None:
        if self.name not in BACKBONE_NAMES:
            raise ValueError(f"BackboneConfig.name must be one of {BACKBONE_NAMES}, got {self.name!r}")
        if self.norm not in NORMS:
            raise ValueError(f"BackboneConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if not 0 <= self.freeze_at <= 5:
            raise ValueError(f"BackboneConfig.freeze_at must lie in 0..5, got {self.freeze_at}")
        if self.name == "tiny" and self.weights is not None:
            raise ValueError(
                f"BackboneConfig: the tiny backbone has no pretrained weights, got {self.weights!r}"
            )
        if self.tiny_width < 1:
            raise ValueError(f"BackboneConfig.tiny_width must be >= 1, got {self.tiny_width}")


TASKS = ("panoptic", "instance")


@dataclass
class Mask2FormerConfig:
    """Mask2Former hyper-parameters; defaults = the official Cityscapes panoptic R50 config.

    Args:
        task: "panoptic" (all classes) or "instance" (thing classes only).
        num_queries: learnable queries (NUM_OBJECT_QUERIES 100).
        dec_layers: number of predictions, official DEC_LAYERS meaning: the query-only
            prediction plus ``dec_layers - 1`` decoder layers (10: 9 layers).
        hidden_dim: query width (HIDDEN_DIM 256).
        num_heads: attention heads of the decoder and the pixel decoder (NHEADS 8).
        dim_feedforward: decoder FFN width (DIM_FEEDFORWARD 2048).
        dropout: decoder and encoder dropout (DROPOUT 0.0).
        enforce_input_proj: 1x1 projection of the multi-scale maps even if widths agree.
        conv_dim: pixel-decoder width (CONVS_DIM 256).
        mask_dim: channels C of F and E (MASK_DIM 256).
        enc_layers: deformable encoder layers (TRANSFORMER_ENC_LAYERS 6).
        enc_dim_feedforward: encoder FFN width (hard-coded 1024 in the official code).
        enc_num_points: sampling points per head and level (4).
        norm_groups: GroupNorm groups of the pixel decoder (32).
        class_weight / mask_weight / dice_weight: loss and matching-cost weights (2 / 5 / 5).
        no_object_weight: cross-entropy weight of "no object" (NO_OBJECT_WEIGHT 0.1).
        train_num_points: points per mask in matching and losses (TRAIN_NUM_POINTS 12544).
        oversample_ratio / importance_sample_ratio: PointRend sampling (3.0 / 0.75).
        object_mask_threshold: panoptic inference keeps queries with class score above it (0.8).
        overlap_threshold: panoptic merge overlap ratio (0.8).
        test_topk_per_image: instance inference keeps this many (query, class) pairs (100).
        size_divisibility: inputs are zero-padded (after normalisation) to a multiple of it (32).
        pixel_mean / pixel_std: RGB normalisation on the 0-255 scale.
        inference_chunk_size: full-resolution masks computed at once at inference.
    """

    task: str = "panoptic"
    num_queries: int = 100
    dec_layers: int = 10
    hidden_dim: int = 256
    num_heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.0
    enforce_input_proj: bool = False
    conv_dim: int = 256
    mask_dim: int = 256
    enc_layers: int = 6
    enc_dim_feedforward: int = 1024
    enc_num_points: int = 4
    norm_groups: int = 32
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    test_topk_per_image: int = 100
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    inference_chunk_size: int = 16

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"Mask2FormerConfig.task must be one of {TASKS}, got {self.task!r}")
        for name in (
            "num_queries",
            "dec_layers",
            "train_num_points",
            "test_topk_per_image",
            "inference_chunk_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Mask2FormerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.size_divisibility < 1:
            raise ValueError(
                f"Mask2FormerConfig.size_divisibility must be >= 1, got {self.size_divisibility}"
            )
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("Mask2FormerConfig.pixel_mean and pixel_std need 3 values (RGB)")
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)

    @classmethod
    def tiny(cls, **overrides: object) -> Mask2FormerConfig:
        """The CPU variant: width 32, 16 queries, 4 predictions (3 decoder layers), 1 encoder layer,
        1024 points; every other value as the official config unless overridden."""
        values: dict[str, object] = dict(
            num_queries=16,
            dec_layers=4,
            hidden_dim=32,
            num_heads=4,
            dim_feedforward=64,
            conv_dim=32,
            mask_dim=32,
            enc_layers=1,
            enc_dim_feedforward=64,
            norm_groups=8,
            train_num_points=1024,
        )
        values.update(overrides)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Mask2FormerConfig.tiny: unknown fields {sorted(unknown)}")
        return cls(**values)  # type: ignore[arg-type]


HEAD_LEVELS = ("p3", "p4", "p5", "p6", "p7")
FEATURE_ACTIVATIONS = ("relu", "none")


@dataclass
class PanopticFCNConfig:
    """Every hyper-parameter of Panoptic FCN (config keys ``model.panoptic_fcn.<field>``).

    Defaults follow the official Cityscapes config (``PanopticFCN-R50-cityscapes*.yaml`` on
    top of ``panopticfcn/config.py``) except the pixel statistics, which are torchvision's
    (the backbone weights are torchvision's, not detectron2's MSRA ones).

    Args:
        pixel_mean: RGB mean subtracted from uint8 images.
        pixel_std: RGB standard deviation images are divided by.
        size_divisibility: images are zero-padded (after normalisation) to a multiple of this.
        fpn_channels: FPN output channels (MODEL.FPN.OUT_CHANNELS).
        semantic_fpn_channels: semantic FPN channels (SEMANTIC_FPN.CONVS_DIM).
        encoder_channels: C, channels of the features F and of the embeddings
            (FEATURE_ENCODER.CONVS_DIM; 256 in the IBS paper, 64 in the original Panoptic FCN).
        encoder_num_convs: feature-encoder convs (FEATURE_ENCODER.NUM_CONVS).
        feature_activation: what follows the feature encoder's last conv: ``relu`` (official:
            ``F >= 0``) or ``none`` (signed features ``F``; the earlier convs keep their ReLU).
        position_channels: position-head channels (POSITION_HEAD.CONVS_DIM).
        position_num_convs: position-head convs (POSITION_HEAD.NUM_CONVS).
        position_deform: modulated deformable convs in the position head (POSITION_HEAD.DEFORM).
        center_bias: initial bias of the centre and region outputs (THING.BIAS_VALUE).
        kernel_channels: kernel-head channels C_k (KERNEL_HEAD.CONVS_DIM).
        kernel_num_convs: kernel-head convs (KERNEL_HEAD.NUM_CONVS).
        instance_scale_low: per head level P3..P7, the smallest ``sqrt(box area)`` (input
            pixels) of the things assigned to it (KERNEL_HEAD.INSTANCE_SCALES, first values).
        instance_scale_high: the largest (INSTANCE_SCALES, second values).
        pos_num: kernels gathered per ground-truth thing and level (THING.POS_NUM).
        tensor_dim: the most things per crop and level (MODEL.TENSOR_DIM); more is an error.
        min_overlap: CornerNet Gaussian-radius overlap (THING.MIN_OVERLAP).
        gaussian_sigma: Gaussian sigma = diameter / gaussian_sigma (THING.GAUSSIAN_SIGMA).
        stuff_all_classes: the region branch predicts every class, things included, as a
            semantic map (STUFF.ALL_CLASSES); False: stuff classes only.
        position_weight: weight of both position losses (LOSS_WEIGHT.POSITION).
        segment_weight: weight of both dice losses (LOSS_WEIGHT.SEGMENT); also the factor
            the official code applies to the IBS term.
        focal_alpha: focal-loss alpha (LOSS_WEIGHT.FOCAL_LOSS_ALPHA).
        focal_gamma: focal-loss gamma (LOSS_WEIGHT.FOCAL_LOSS_GAMMA).
        center_threshold: a centre peak needs a higher score (THING.THRES).
        center_top_num: at most this many things per image; half of it per level is the
            top-k of peaks (THING.TOP_NUM).
        center_pool_sizes: per head level, the window of the local mean averaged with the
            centre heatmap before NMS (official, hard-coded 3, 3, 3, 5, 5).
        stuff_threshold: a stuff region needs a higher mean probability (STUFF.THRES).
        mask_threshold: a mask pixel needs a higher probability (INFERENCE.INST_THRES).
        similarity_threshold: thing kernels with at least this cosine similarity are fused
            (INFERENCE.SIMILAR_THRES).
        class_specific_fusion: fuse only kernels of one class (INFERENCE.CLASS_SPECIFIC).
        rescored_score_threshold: things whose rescored score is lower are dropped (official,
            hard-coded 0.05).
        thing_score_threshold: things below it are not pasted (COMBINE.INST_THRESH).
        overlap_threshold: a thing whose mask is covered by more than this fraction is
            dropped (COMBINE.OVERLAP_THRESH).
        stuff_area_limit: a stuff segment needs at least this many pixels (COMBINE.STUFF_AREA_LIMIT).
        inference_chunk_size: masks computed and upsampled at once during inference.
    """

    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32
    fpn_channels: int = 256
    semantic_fpn_channels: int = 256
    encoder_channels: int = 256
    encoder_num_convs: int = 3
    feature_activation: str = "relu"
    position_channels: int = 256
    position_num_convs: int = 3
    position_deform: bool = True
    center_bias: float = -2.19
    kernel_channels: int = 256
    kernel_num_convs: int = 3
    instance_scale_low: tuple[float, ...] = (1, 64, 128, 256, 512)
    instance_scale_high: tuple[float, ...] = (128, 256, 512, 1024, 2048)
    pos_num: int = 7
    tensor_dim: int = 150
    min_overlap: float = 0.7
    gaussian_sigma: float = 3.0
    stuff_all_classes: bool = True
    position_weight: float = 1.0
    segment_weight: float = 4.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    center_threshold: float = 0.01
    center_top_num: int = 200
    center_pool_sizes: tuple[int, ...] = (3, 3, 3, 5, 5)
    stuff_threshold: float = 0.1
    mask_threshold: float = 0.5
    similarity_threshold: float = 0.97
    class_specific_fusion: bool = True
    rescored_score_threshold: float = 0.05
    thing_score_threshold: float = 0.2
    overlap_threshold: float = 0.5
    stuff_area_limit: int = 2048
    inference_chunk_size: int = 16

    @classmethod
    def tiny(cls) -> PanopticFCNConfig:
        """The CPU variant: 32 channels everywhere, 2 convs per head, no deformable convs.

        Every other value (targets, losses, inference thresholds) is the official one.
        """
        return cls(
            fpn_channels=32,
            semantic_fpn_channels=32,
            encoder_channels=32,
            encoder_num_convs=2,
            position_channels=32,
            position_num_convs=2,
            position_deform=False,
            kernel_channels=32,
            kernel_num_convs=2,
        )

    def __post_init__(self) -> None:
        levels = len(HEAD_LEVELS)
        for name in ("instance_scale_low", "instance_scale_high", "center_pool_sizes"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"panoptic_fcn.{name} needs one value per head level {HEAD_LEVELS}, got {getattr(self, name)}"
                )
        if any(
            low > high for low, high in zip(self.instance_scale_low, self.instance_scale_high, strict=True)
        ):
            raise ValueError(
                f"panoptic_fcn.instance_scale_low {self.instance_scale_low} exceeds instance_scale_high "
                f"{self.instance_scale_high} on some level"
            )
        if any(size < 1 or size % 2 == 0 for size in self.center_pool_sizes):
            raise ValueError(
                f"panoptic_fcn.center_pool_sizes must be odd and >= 1, got {self.center_pool_sizes}"
            )
        for name in ("pos_num", "tensor_dim", "center_top_num", "size_divisibility", "inference_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"panoptic_fcn.{name} must be >= 1, got {getattr(self, name)}")
        if self.feature_activation not in FEATURE_ACTIVATIONS:
            raise ValueError(
                f"panoptic_fcn.feature_activation must be one of {list(FEATURE_ACTIVATIONS)}, "
                f"got {self.feature_activation!r}"
            )
        if self.size_divisibility % 32:
            raise ValueError(
                f"panoptic_fcn.size_divisibility must be a multiple of 32, got {self.size_divisibility}"
            )


@dataclass
class HFConfig:
    """A transformers universal-segmentation model (config keys ``model.hf.*``).

    Args:
        config: ``tiny`` (the small random-init configuration of :data:`TINY_CONFIGS`), a
            mapping of configuration fields overriding it (or overriding the pretrained
            configuration when ``pretrained`` is set), or a hub id, local folder or
            ``config.json`` path of a full configuration (random init).
        pretrained: hub id or local folder of trained weights ("" for none).
        object_mask_threshold: post-processing keeps queries whose class score exceeds it
            (``threshold`` of ``post_process_panoptic_segmentation``).
        mask_threshold: probability above which a pixel belongs to a query's mask.
        overlap_threshold: a query keeps its segment only if this fraction of its mask won the
            per-pixel argmax (``overlap_mask_area_threshold``).
    """

    config: Any = "tiny"
    pretrained: str = ""
    object_mask_threshold: float = 0.8
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.config, str | Mapping):
            raise ConfigError(
                f"model.hf.config={self.config!r} must be 'tiny', a hub id / folder / config.json, "
                "or a mapping of configuration fields"
            )
        if isinstance(self.config, Mapping):
            self.config = dict(self.config)
        if isinstance(self.config, str) and self.config != "tiny" and self.pretrained:
            raise ConfigError(
                f"model.hf.config={self.config!r} and model.hf.pretrained={self.pretrained!r}: the pretrained "
                "model brings its configuration; give model.hf.config as a mapping of overrides or 'tiny'"
            )
        for name in ("object_mask_threshold", "mask_threshold", "overlap_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.hf.{name}={getattr(self, name)} must lie in [0, 1]")
