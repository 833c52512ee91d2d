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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ibs_study.data.batch import CropTarget
from ibs_study.data.datasets import DatasetMeta
from ibs_study.errors import DataError
from ibs_study.models.backbone import build_backbone
from ibs_study.models.configs import TASKS, BackboneConfig, Mask2FormerConfig
from ibs_study.models.mask2former_criterion import SetCriterion
from ibs_study.models.matcher import HungarianMatcher
from ibs_study.models.output import UnifiedOutput
from ibs_study.models.pixel_decoder import MSDeformAttnPixelDecoder
from ibs_study.models.postprocess import InstancePrediction, MaskLogits, PanopticPrediction, argmax_merge
from ibs_study.models.transformer_decoder import DecoderOutput, MaskedAttentionDecoder

logger = logging.getLogger(__name__)

__all__ = ["Mask2FormerConfig", "Mask2Former", "TASKS", "binary_masks"]


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
