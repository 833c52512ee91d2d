"""Mask2Former-style unified model (pure PyTorch), for panoptic or instance segmentation.

Pipeline: backbone (res2..res5) -> :class:`~ibs_study.models.pixel_decoder.MSDeformAttnPixelDecoder`
(stride-4 ``mask_features`` F and three multi-scale maps) ->
:class:`~ibs_study.models.transformer_decoder.MaskedAttentionDecoder` (class logits and mask
embeddings E per stage; masks = E · F) -> :class:`~ibs_study.models.mask2former_criterion.SetCriterion`.

For Intra-Batch Supervision the training output (:class:`UnifiedOutput`) exposes, for every
prediction stage l (0 = the learnable-query prediction, last = final), the mask embeddings
``embeddings[l][b]`` (Q, C), the queries that stage's Hungarian matching assigned to a
ground-truth *thing* (``thing_index``, any thing class including contiguous label 0, unlike
the official code which skips label 0), weight 1 each, and ``ibs_layers`` = every stage but
the query-only one, as the official IBS code. ``mask_loss_weight`` is 1: the official
Mask2Former does not scale the IBS term by its mask weight.

Tasks: "panoptic" classifies all K classes of the dataset; "instance" only its thing
classes (stuff targets are dropped), as Mask2Former's instance models.

Ground truth as the official code uses it: non-crowd segments (the data side drops those
with fewer than 2 pixels in the crop), padded with zeros to the padded input; void and
crowd pixels are negatives of every mask (``CropTarget.ignore`` is not used, as in the
official criterion).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ibs_study.data.batch import CropTarget
from ibs_study.data.datasets import DatasetMeta
from ibs_study.errors import DataError
from ibs_study.models.backbone import BackboneConfig, build_backbone
from ibs_study.models.mask2former_criterion import SetCriterion
from ibs_study.models.matcher import HungarianMatcher
from ibs_study.models.output import UnifiedOutput
from ibs_study.models.pixel_decoder import MSDeformAttnPixelDecoder
from ibs_study.models.postprocess import InstancePrediction, MaskLogits, PanopticPrediction, argmax_merge
from ibs_study.models.transformer_decoder import DecoderOutput, MaskedAttentionDecoder

logger = logging.getLogger(__name__)

__all__ = ["Mask2FormerConfig", "Mask2Former", "TASKS", "binary_masks"]

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


def binary_masks(masks: MaskLogits, chunk_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """Binary masks ``logit > 0`` at the output size and the mean probability inside each.

    Args:
        masks: N low-resolution mask logits.
        chunk_size: masks upsampled at once.

    Returns:
        (N, H, W) bool numpy masks and (N,) float32 CPU mean probabilities inside them
        (0 for an empty mask).
    """
    height, width = masks.size
    binary = np.zeros((len(masks), height, width), dtype=bool)
    mean_prob = torch.zeros(len(masks))
    for start in range(0, len(masks), chunk_size):
        prob = masks.probs(start, min(start + chunk_size, len(masks)))  # (n, H, W)
        inside = prob > 0.5  # logit > 0
        area = inside.flatten(1).sum(1)
        mean_prob[start : start + len(prob)] = ((prob * inside).flatten(1).sum(1) / (area + 1e-6)).cpu()
        binary[start : start + len(prob)] = inside.cpu().numpy()
    return binary, mean_prob


class Mask2Former(nn.Module):
    """Mask2Former with the unified-model interface of ibs_study.

    Args:
        cfg: model hyper-parameters.
        backbone: which backbone to build (its res2..res5 feed the pixel decoder).
        meta: dataset categories; contiguous labels index ``meta.categories``.
    """

    # the config key a thing prediction must pass (its threshold), named when none does
    THING_THRESHOLD_KEYS = ("model.mask2former.object_mask_threshold",)

    def __init__(self, cfg: Mask2FormerConfig, backbone: BackboneConfig, meta: DatasetMeta) -> None:
        super().__init__()
        self.cfg = cfg
        self.meta = meta
        is_thing = torch.as_tensor(meta.is_thing, dtype=torch.bool)
        if cfg.task == "panoptic":
            class_labels = torch.arange(meta.num_classes)
        else:
            class_labels = torch.as_tensor(meta.thing_labels, dtype=torch.int64)
            if class_labels.numel() == 0:
                raise DataError(
                    f"Mask2Former: model.mask2former.task='instance' needs thing classes; the dataset "
                    f"{meta.name} has none"
                )
        model_label_of = torch.full((meta.num_classes,), -1, dtype=torch.int64)
        model_label_of[class_labels] = torch.arange(len(class_labels))
        self.num_classes = len(class_labels)
        # model class k <-> dataset contiguous label class_labels[k]
        self.register_buffer("class_labels", class_labels, persistent=False)
        self.register_buffer("model_label_of", model_label_of, persistent=False)
        self.register_buffer("class_is_thing", is_thing[class_labels], persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

        self.backbone = build_backbone(backbone)
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            self.backbone.out_channels,
            self.backbone.strides,
            conv_dim=cfg.conv_dim,
            mask_dim=cfg.mask_dim,
            num_layers=cfg.enc_layers,
            num_heads=cfg.num_heads,
            num_points=cfg.enc_num_points,
            dim_feedforward=cfg.enc_dim_feedforward,
            dropout=cfg.dropout,
            num_groups=cfg.norm_groups,
        )
        self.decoder = MaskedAttentionDecoder(
            cfg.conv_dim,
            self.num_classes,
            hidden_dim=cfg.hidden_dim,
            num_queries=cfg.num_queries,
            num_heads=cfg.num_heads,
            dim_feedforward=cfg.dim_feedforward,
            num_predictions=cfg.dec_layers,
            mask_dim=cfg.mask_dim,
            dropout=cfg.dropout,
            enforce_input_proj=cfg.enforce_input_proj,
        )
        matcher = HungarianMatcher(cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.train_num_points)
        self.criterion = SetCriterion(
            self.num_classes,
            matcher,
            class_weight=cfg.class_weight,
            mask_weight=cfg.mask_weight,
            dice_weight=cfg.dice_weight,
            no_object_weight=cfg.no_object_weight,
            num_points=cfg.train_num_points,
            oversample_ratio=cfg.oversample_ratio,
            importance_sample_ratio=cfg.importance_sample_ratio,
        )

    # ------------------------------------------------------------------ shared forward

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H_pad, W_pad) normalised, zero-padded bottom/right."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Mask2Former: images must be (B, 3, H, W) uint8 RGB, got {tuple(images.shape)} {images.dtype}"
            )
        x = (images.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        d = self.cfg.size_divisibility
        h, w = x.shape[-2:]
        return F.pad(x, (0, math.ceil(w / d) * d - w, 0, math.ceil(h / d) * d - h))

    def forward_features(self, images: torch.Tensor) -> tuple[DecoderOutput, torch.Tensor]:
        """
        Args:
            images: (B, 3, H, W) uint8.

        Returns:
            the decoder's predictions of all stages, and ``mask_features`` (B, C, H_pad/4, W_pad/4).
        """
        features = self.backbone(self.preprocess(images))
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.decoder(multi_scale, mask_features), mask_features

    # ------------------------------------------------------------------------ training

    def prepare_targets(
        self, targets: list[CropTarget], padded_size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Model-space labels (N_b,) and bool masks (N_b, H_pad, W_pad), zero-padded.

        In the instance task, stuff targets are dropped and thing labels renumbered.
        """
        labels, masks = [], []
        device = self.class_labels.device
        for target in targets:
            model_labels = self.model_label_of[target.labels.to(device)]
            keep = model_labels >= 0
            crop_masks = target.masks.to(device)[keep]
            h, w = crop_masks.shape[-2:]
            labels.append(model_labels[keep])
            masks.append(F.pad(crop_masks, (0, padded_size[1] - w, 0, padded_size[0] - h)))
        return labels, masks

    def forward(self, images: torch.Tensor, targets: list[CropTarget]) -> UnifiedOutput:
        """Training forward pass: losses of every stage and the IBS view of the predictions.

        Args:
            images: (B, 3, H, W) uint8 RGB crops.
            targets: B crop targets with masks (N_b, H, W).

        Returns:
            :class:`UnifiedOutput` with ``features`` = mask_features (B, C, H_pad/4, W_pad/4),
            ``embeddings[l][b]`` (Q, C) per stage, thing-matched queries per stage and the
            weighted losses ``loss_ce``/``loss_mask``/``loss_dice`` (final stage) plus
            ``_0``.. suffixed copies for the other stages.
        """
        batch, _, height, width = images.shape
        if len(targets) != batch:
            raise ValueError(f"Mask2Former: {batch} images but {len(targets)} targets")
        for b, target in enumerate(targets):
            if tuple(target.masks.shape[-2:]) != (height, width):
                raise ValueError(
                    f"Mask2Former: target {b} masks are {tuple(target.masks.shape[-2:])}, images {(height, width)}"
                )
        decoded, mask_features = self.forward_features(images)
        stride = self.backbone.strides["res2"]
        padded_size = (mask_features.shape[-2] * stride, mask_features.shape[-1] * stride)
        labels, masks = self.prepare_targets(targets, padded_size)
        result = self.criterion(decoded.class_logits, decoded.mask_logits, labels, masks)

        embeddings, thing_index, thing_weights = [], [], []
        for layer, matches in enumerate(result.matches):
            layer_embeddings = list(decoded.mask_embeddings[layer].unbind(0))
            layer_index = []
            for b, (queries, target_index) in enumerate(matches):
                is_thing = self.class_is_thing[labels[b][target_index.to(labels[b].device)]]
                layer_index.append(queries.to(mask_features.device)[is_thing.to(mask_features.device)])
            embeddings.append(layer_embeddings)
            thing_index.append(layer_index)
            thing_weights.append(
                [torch.ones(len(i), dtype=mask_features.dtype, device=i.device) for i in layer_index]
            )
        return UnifiedOutput(
            features=mask_features,
            embeddings=embeddings,
            thing_index=thing_index,
            thing_weights=thing_weights,
            ibs_layers=tuple(range(1, decoded.num_predictions)),
            mask_loss_weight=1.0,
            losses=result.losses,
            stats={
                "num_masks": result.num_masks,
                "matched_things": float(sum(len(i) for i in thing_index[-1])),
            },
        )

    # ----------------------------------------------------------------------- inference

    def _final_prediction(self, image: torch.Tensor) -> tuple[torch.Tensor, MaskLogits]:
        """Class logits (Q, K + 1) and the final stage's mask logits of one (3, H, W) uint8 image."""
        if image.dim() != 3:
            raise ValueError(f"Mask2Former: expected one (3, H, W) image, got shape {tuple(image.shape)}")
        decoded, mask_features = self.forward_features(image[None])
        stride = self.backbone.strides["res2"]
        padded_size = (mask_features.shape[-2] * stride, mask_features.shape[-1] * stride)
        image_size = (int(image.shape[-2]), int(image.shape[-1]))
        masks = MaskLogits(decoded.mask_logits[-1][0].float(), padded_size, image_size)
        return decoded.class_logits[-1][0].float(), masks

    @torch.inference_mode()
    def predict_panoptic(self, image: torch.Tensor, image_id: str | int = "") -> PanopticPrediction:
        """Panoptic prediction of one full image (call ``eval()`` first).

        Queries whose best class is not "no object" and scores above
        ``object_mask_threshold`` are merged by :func:`argmax_merge` (overlap threshold
        ``overlap_threshold``), chunk-wise at the input resolution. In the instance task
        the result holds thing segments only.

        Args:
            image: (3, H, W) uint8 RGB.
            image_id: stored in the prediction.

        Returns:
            the prediction at (H, W), with dataset category ids.
        """
        class_logits, masks = self._final_prediction(image)
        scores, labels = class_logits.softmax(-1).max(-1)
        keep = (labels != self.num_classes) & (scores > self.cfg.object_mask_threshold)
        return argmax_merge(
            masks.subset(keep.nonzero().flatten()),
            scores[keep],
            self.class_labels[labels[keep]],
            self.meta,
            overlap_threshold=self.cfg.overlap_threshold,
            chunk_size=self.cfg.inference_chunk_size,
            image_id=image_id,
        )

    @torch.inference_mode()
    def predict_instances(self, image: torch.Tensor, image_id: str | int = "") -> InstancePrediction:
        """Instance prediction of one full image, as Mask2Former's ``instance_inference`` (call ``eval()``).

        The ``test_topk_per_image`` best (query, class) pairs by class probability are kept
        (in the panoptic task only thing classes are then kept); each mask is
        ``logit > 0`` at the input resolution and its score is the class probability times
        the mean mask probability inside the mask.

        Args:
            image: (3, H, W) uint8 RGB.
            image_id: stored in the prediction.

        Returns:
            N <= ``test_topk_per_image`` masks (N, H, W) bool, scores and dataset category ids.
        """
        class_logits, masks = self._final_prediction(image)
        probs = class_logits.softmax(-1)[:, :-1]  # (Q, K)
        k = min(self.cfg.test_topk_per_image, probs.numel())
        class_scores, flat_index = probs.flatten().topk(k)
        queries = torch.div(flat_index, self.num_classes, rounding_mode="floor")
        labels = flat_index % self.num_classes
        thing = self.class_is_thing[labels]
        class_scores, queries, labels = class_scores[thing], queries[thing], labels[thing]

        unique_queries, slot = torch.unique(queries, return_inverse=True)
        binary, mean_prob = binary_masks(masks.subset(unique_queries), self.cfg.inference_chunk_size)
        scores = class_scores.cpu() * mean_prob[slot.cpu()]
        category_ids = [self.meta.categories[label].id for label in self.class_labels[labels].tolist()]
        return InstancePrediction(
            masks=binary[slot.cpu().numpy()],
            scores=scores.numpy().astype(np.float32),
            category_ids=np.array(category_ids, dtype=np.int64),
            image_id=image_id,
        )
