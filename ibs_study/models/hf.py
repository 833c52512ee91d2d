"""Hugging Face transformers universal-segmentation models behind the package's model interface.

:class:`HFMask2Former` wraps ``Mask2FormerForUniversalSegmentation`` and :class:`HFEomt`
wraps ``EomtForUniversalSegmentation`` (EoMT, Kerssies et al., CVPR 2025), so that the
training loop, IBS, the samplers and the evaluation use them as the package's own models:

* training (``forward(images, targets)``) returns :class:`~ibs_study.models.output.UnifiedOutput`
  with the model's own weighted losses (transformers' ``Mask2FormerLoss`` / ``EomtLoss`` on
  ``mask_labels`` / ``class_labels`` built from the crop targets, named as transformers
  names them, ``_<l>`` for every prediction l but the final one), and for IBS:
  ``embeddings[l][b]`` (Q, C), the mask embeddings E that prediction l multiplies with
  the pixel features (Mask2Former: its mask MLP on decoder layer l's queries; EoMT: its mask
  head on the query tokens of block l), ``features`` (B, C, h, w) the pixel features F of the
  final prediction (Mask2Former: ``pixel_decoder_last_hidden_state``, shared by all
  predictions; EoMT: the upscaled patch tokens, one map per prediction in
  ``layer_features``), and ``thing_index`` the queries that transformers' own Hungarian
  matcher assigned to a ground-truth thing in that prediction's loss (weight 1 each).
  Every tensor is the one the model computed (read by forward hooks), so
  ``einsum("qc,chw->qhw", E, F)`` is the model's ``masks_queries_logits``. IBS acts on
  every prediction but the first, as the official Mask2Former-IBS: the first prediction of
  both models comes from the learnable queries alone, before they have seen the image;
* inference (``predict_panoptic``) runs the model on one full image and turns the result of
  its image processor's ``post_process_panoptic_segmentation`` into a
  :class:`~ibs_study.models.postprocess.PanopticPrediction` (stuff classes fused into one
  segment per class), which the evaluation writes as COCO-panoptic files. Mask2Former sees
  the image zero-padded to a multiple of the processor's ``size_divisor`` (the padding is
  cut off the mask logits before post-processing, which resamples them through 384 x 384
  as transformers does); EoMT, whose position embeddings fix its input to
  ``image_size`` x ``image_size``, sees it resized to fit (longest side ``image_size``)
  and zero-padded, as its image processor prepares panoptic inputs.

``OneFormerForUniversalSegmentation`` is not wrapped: its forward pass needs task tokens
(and its loss text tokens) from a CLIP tokenizer whose vocabulary is downloaded from the
hub, so it cannot be built offline from a configuration alone.

Configuration (``model.hf``, :class:`HFConfig`): ``config`` is ``tiny`` (a small random-init
model that trains on a CPU), a mapping of configuration fields that override the tiny one,
or a hub id / local folder / ``config.json`` of a full configuration (random init);
``pretrained`` loads weights (and their configuration, which a ``config`` mapping then
overrides) from a hub id or a local folder. The number of classes always comes from the
dataset; a pretrained class head of another size is re-initialised.
"""

from __future__ import annotations

import abc
import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ibs_study.data.batch import CropTarget
from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import segments_from_id_map
from ibs_study.errors import CheckpointError, ConfigError
from ibs_study.models.configs import HFConfig
from ibs_study.models.output import UnifiedOutput
from ibs_study.models.postprocess import PanopticPrediction

__all__ = ["HFConfig", "HFMask2Former", "HFEomt", "HF_MODELS", "TINY_CONFIGS", "hf_config"]

# the small random-init configurations (``model.hf.config: tiny``): width 32, 16 queries,
# 1024 points per mask; Mask2Former with a 4-stage Swin of width 16 and 4 predictions,
# EoMT a 4-block ViT (patch 16, 128 x 128 input) predicting from its last 2 blocks (3 predictions)
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "hf_mask2former": {
        "backbone_config": {
            "model_type": "swin",
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 2, 2, 4],
            "window_size": 4,
            "drop_path_rate": 0.0,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "feature_size": 32,
        "mask_feature_size": 32,
        "hidden_dim": 32,
        "encoder_feedforward_dim": 64,
        "encoder_layers": 1,
        "decoder_layers": 4,
        "num_attention_heads": 4,
        "dim_feedforward": 64,
        "num_queries": 16,
        "train_num_points": 1024,
    },
    "hf_eomt": {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "image_size": 128,
        "patch_size": 16,
        "num_blocks": 2,
        "num_queries": 16,
        "num_register_tokens": 1,
        "train_num_points": 1024,
    },
}


def _architecture(name: str) -> tuple[type, type, type]:
    """(config class, model class, image-processor class) of model name ``name``."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"model.name={name!r} needs the transformers package: pip install -e '.[hf]'"
        ) from None
    prefix = {"hf_mask2former": "Mask2Former", "hf_eomt": "Eomt"}[name]
    return (
        getattr(transformers, f"{prefix}Config"),
        getattr(transformers, f"{prefix}ForUniversalSegmentation"),
        getattr(transformers, f"{prefix}ImageProcessor"),
    )


def _labels(meta: DatasetMeta) -> dict[str, Any]:
    """Configuration fields naming the dataset's classes (class k = contiguous label k)."""
    id2label = {k: c.name for k, c in enumerate(meta.categories)}
    return {
        "num_labels": meta.num_classes,
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }


def _checked_overrides(config_class: type, spec: Any) -> dict[str, Any]:
    """The configuration fields of a ``model.hf.config`` mapping ({} for a name).

    Raises:
        ConfigError: a field ``config_class`` does not have (transformers would keep it unused).
    """
    if not isinstance(spec, Mapping):
        return {}
    known = set(config_class().to_dict())
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(
            f"model.hf.config: {config_class.__name__} has no field(s) {unknown}; valid fields: {sorted(known)}"
        )
    return dict(spec)


def hf_config(name: str, cfg: HFConfig, meta: DatasetMeta):
    """The transformers configuration of a random-init model ``name`` (``model.hf.config``),
    with the dataset's classes.

    Raises:
        ConfigError: a configuration that cannot be read or has unknown fields.
    """
    config_class, _, _ = _architecture(name)
    spec = cfg.config
    if isinstance(spec, str) and spec != "tiny":
        path = Path(spec)
        try:
            if path.is_file():
                values = json.loads(path.read_text())
            else:
                values = config_class.from_pretrained(spec).to_dict()
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"model.hf.config={spec!r}: cannot read a {config_class.__name__} there "
                f"({str(err).splitlines()[0]}); give a local folder or config.json, or 'tiny'"
            ) from None
        values = {k: v for k, v in values.items() if k not in ("architectures", "transformers_version")}
    else:
        values = dict(TINY_CONFIGS[name])
        values.update(_checked_overrides(config_class, spec))
    values.update(_labels(meta))
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.hf.config: {config_class.__name__} rejects it ({err})") from None


def _from_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """``loader(source)`` from a local folder or the Hugging Face cache, else from the hub.

    Raises:
        CheckpointError: a folder-like ``source`` that holds no model, or a hub id that
            neither the cache nor the hub (e.g. offline) can give.
    """
    try:
        return loader(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        if source.startswith(("/", ".", "~")) or Path(source).exists():
            raise CheckpointError(
                f"model.hf.pretrained={source!r}: no {loader.__self__.__name__} there "
                f"({str(err).splitlines()[0]}); point it at a folder written by save_pretrained"
            ) from None
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"model.hf.pretrained={source!r}: cannot load {loader.__self__.__name__} "
            f"({str(err).splitlines()[0]}); without network, download it first or give a local folder"
        ) from None


def _load_pretrained(name: str, cfg: HFConfig, meta: DatasetMeta) -> tuple[nn.Module, Any]:
    """Model and image processor from ``model.hf.pretrained`` (weights; class head resized to
    the dataset; the processor's defaults where the source has none)."""
    config_class, model_class, processor_class = _architecture(name)
    overrides = _checked_overrides(config_class, cfg.config)
    model = _from_pretrained(
        model_class.from_pretrained,
        cfg.pretrained,
        ignore_mismatched_sizes=True,
        **_labels(meta),
        **overrides,
    )
    try:
        processor = processor_class.from_pretrained(cfg.pretrained, local_files_only=True)
    except (OSError, ValueError):
        processor = processor_class()
    return model, processor


@contextlib.contextmanager
def _recorded_outputs(*modules: nn.Module) -> Iterator[list[list[Any]]]:
    """Within the block, every output of ``modules[i]`` is appended to ``recorded[i]``."""
    recorded: list[list[Any]] = [[] for _ in modules]
    handles = [
        module.register_forward_hook(lambda _module, _inputs, output, store=store: store.append(output))
        for module, store in zip(modules, recorded)
    ]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class _HFUniversalSegmentation(nn.Module, abc.ABC):
    """What both wrappers share: targets, matching, the UnifiedOutput and the panoptic prediction.
    A subclass names its ``model.name`` in ``name``.

    Args:
        cfg: the ``model.hf`` section.
        meta: dataset categories; class k of the model is contiguous label k.
    """

    name: str

    def __init__(self, cfg: HFConfig, meta: DatasetMeta) -> None:
        super().__init__()
        self.cfg = cfg
        self.meta = meta
        _, model_class, processor_class = _architecture(self.name)
        if cfg.pretrained:
            self.hf, self.processor = _load_pretrained(self.name, cfg, meta)
        else:
            self.hf, self.processor = model_class(hf_config(self.name, cfg, meta)), processor_class()
        self.register_buffer(
            "class_is_thing", torch.as_tensor(meta.is_thing, dtype=torch.bool), persistent=False
        )
        mean = torch.tensor(self.processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.processor.image_std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.stuff_labels = {k for k, thing in enumerate(meta.is_thing.tolist()) if not thing}

    # ------------------------------------------------------------------ model specifics

    @abc.abstractmethod
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H_in, W_in) the model's input for a (height, width) image (zero-padded bottom/right)."""

    @abc.abstractmethod
    def predictions(
        self, pixel_values: torch.Tensor, mask_labels: list[torch.Tensor], class_labels: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list, list[torch.Tensor], list[torch.Tensor]]:
        """Run the model and its loss.

        Returns:
            the weighted losses, transformers' matches of every prediction l (first to final),
            the mask embeddings (B, Q, C) and pixel features (B, C, h, w) of every prediction.
        """

    # ------------------------------------------------------------------------ training

    def normalise(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, *size) normalised as the image processor does,
        zero-padded bottom/right."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be (B, 3, H, W) uint8 RGB, got {tuple(images.shape)}")
        x = (images.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        height, width = x.shape[-2:]
        return F.pad(x, (0, size[1] - width, 0, size[0] - height))

    def forward(self, images: torch.Tensor, targets: list[CropTarget]) -> UnifiedOutput:
        """Training forward pass: the model's own losses and the IBS view of its predictions.

        Args:
            images: (B, 3, H, W) uint8 RGB crops.
            targets: B crop targets with masks (N_b, H, W).

        Returns:
            :class:`UnifiedOutput` (see the module docstring).
        """
        batch, _, height, width = images.shape
        if len(targets) != batch:
            raise ValueError(f"{self.name}: {batch} images but {len(targets)} targets")
        size = self.input_size(height, width)
        device = self.pixel_mean.device
        mask_labels = [
            F.pad(t.masks.to(device).float(), (0, size[1] - width, 0, size[0] - height)) for t in targets
        ]
        class_labels = [t.labels.to(device) for t in targets]
        losses, matches, embeddings, features = self.predictions(
            self.normalise(images, size), mask_labels, class_labels
        )
        thing_index = [
            [
                queries.to(device)[self.class_is_thing[class_labels[b][target.to(device)]]]
                for b, (queries, target) in enumerate(layer)
            ]
            for layer in matches
        ]
        thing_weights = [
            [torch.ones(len(i), dtype=features[-1].dtype, device=device) for i in layer]
            for layer in thing_index
        ]
        shared = all(f is features[-1] for f in features)
        return UnifiedOutput(
            features=features[-1],
            embeddings=[list(e.unbind(0)) for e in embeddings],
            thing_index=thing_index,
            thing_weights=thing_weights,
            ibs_layers=tuple(range(1, len(embeddings))),
            layer_features=None if shared else features,
            losses=losses,
            stats={
                "num_masks": float(sum(len(c) for c in class_labels)),
                "matched_things": float(sum(len(i) for i in thing_index[-1])),
            },
        )

    # ----------------------------------------------------------------------- inference

    @abc.abstractmethod
    def post_process(self, outputs: Any, image_size: tuple[int, int], input_size: tuple[int, int]) -> dict:
        """The image processor's ``post_process_panoptic_segmentation`` of one image."""

    def inference_input(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(1, 3, H_in, W_in) model input of one (3, H, W) uint8 image and its (H_in, W_in)."""
        size = self.input_size(*image.shape[-2:])
        return self.normalise(image[None], size), size

    @torch.inference_mode()
    def predict_panoptic(self, image: torch.Tensor, image_id: str | int = "") -> PanopticPrediction:
        """Panoptic prediction of one full image by the model's own post-processing (call ``eval()``).

        Args:
            image: (3, H, W) uint8 RGB.
            image_id: stored in the prediction.

        Returns:
            the prediction at (H, W) with dataset category ids; stuff classes are one segment each.
        """
        if image.dim() != 3:
            raise ValueError(f"{self.name}: expected one (3, H, W) image, got shape {tuple(image.shape)}")
        image_size = (int(image.shape[-2]), int(image.shape[-1]))
        pixel_values, input_size = self.inference_input(image)
        result = self.post_process(self.hf(pixel_values=pixel_values), image_size, input_size)
        return self.to_prediction(result, image_id)

    def to_prediction(self, result: dict, image_id: str | int) -> PanopticPrediction:
        """A :class:`PanopticPrediction` from one result of ``post_process_panoptic_segmentation``
        (``segmentation`` (H, W) ids, ``segments_info`` with ``id``, ``label_id``, ``score``;
        pixels of no listed id are void)."""
        segmentation = result["segmentation"].cpu().numpy().astype(np.int64)
        id_map = np.zeros(segmentation.shape, dtype=np.int32)
        new_ids: dict[int, int] = {}
        category_id: dict[int, int] = {}
        score_of: dict[int, float] = {}
        for info in result["segments_info"]:  # a fused stuff class is listed once per query
            hf_id = int(info["id"])
            if hf_id not in new_ids:
                new_ids[hf_id] = len(new_ids) + 1
                id_map[segmentation == hf_id] = new_ids[hf_id]
            new_id = new_ids[hf_id]
            category_id[new_id] = self.meta.categories[int(info["label_id"])].id
            score_of[new_id] = max(score_of.get(new_id, 0.0), float(info["score"]))
        segments = segments_from_id_map(id_map, category_id, score_of=score_of)
        return PanopticPrediction(id_map=id_map, segments=segments, image_id=image_id)

    def predict_instances(self, image: torch.Tensor, image_id: str | int = ""):
        """Not available: the transformers models are evaluated on the panoptic task."""
        raise ConfigError(
            f"eval.task='instance' is not available for model.name={self.name!r}; use eval.task=panoptic"
        )


class HFMask2Former(_HFUniversalSegmentation):
    """transformers' ``Mask2FormerForUniversalSegmentation`` with the package's model interface."""

    name = "hf_mask2former"

    @property
    def backbone(self) -> nn.Module:
        """The Swin (or other) encoder: ``optimizer.backbone_lr_multiplier`` applies to it."""
        return self.hf.model.pixel_level_module.encoder

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        d = int(getattr(self.processor, "size_divisor", 32) or 32)
        return math.ceil(height / d) * d, math.ceil(width / d) * d

    def predictions(self, pixel_values, mask_labels, class_labels):
        hf = self.hf
        mask_embedder = hf.model.transformer_module.decoder.mask_predictor.mask_embedder
        with _recorded_outputs(mask_embedder, hf.criterion.matcher, hf.criterion) as recorded:
            outputs = hf(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        embeddings, matches, (losses,) = recorded
        # transformers matches the final prediction first, then the auxiliary ones in order
        matches = [*matches[1:], matches[0]]
        return losses, matches, embeddings, [outputs.pixel_decoder_last_hidden_state] * len(embeddings)

    def post_process(self, outputs, image_size, input_size):
        stride = input_size[0] // outputs.masks_queries_logits.shape[-2]
        valid = (math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride))
        outputs.masks_queries_logits = outputs.masks_queries_logits[..., : valid[0], : valid[1]]
        return self.processor.post_process_panoptic_segmentation(
            outputs,
            threshold=self.cfg.object_mask_threshold,
            mask_threshold=self.cfg.mask_threshold,
            overlap_mask_area_threshold=self.cfg.overlap_threshold,
            label_ids_to_fuse=self.stuff_labels,
            target_sizes=[image_size],
        )[0]


class HFEomt(_HFUniversalSegmentation):
    """transformers' ``EomtForUniversalSegmentation`` with the package's model interface.

    Training crops must fit in ``image_size`` x ``image_size`` (they are zero-padded to it).
    """

    name = "hf_eomt"

    @property
    def backbone(self) -> nn.Module:
        """The ViT (patch embeddings and blocks): ``optimizer.backbone_lr_multiplier`` applies to it."""
        return nn.ModuleList([self.hf.embeddings, self.hf.layers])

    @property
    def side(self) -> int:
        return int(self.hf.config.image_size)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.side, self.side

    def forward(self, images: torch.Tensor, targets: list[CropTarget]) -> UnifiedOutput:
        if max(images.shape[-2:]) > self.side:
            raise ConfigError(
                f"hf_eomt trains on inputs up to its image_size {self.side} x {self.side} (model.hf.config), "
                f"got {tuple(images.shape[-2:])}: set data.crop_size to at most [{self.side}, {self.side}] "
                "or a larger image_size"
            )
        return super().forward(images, targets)

    def predictions(self, pixel_values, mask_labels, class_labels):
        hf = self.hf
        with _recorded_outputs(
            hf.mask_head, hf.upscale_block, hf.criterion.matcher, hf.criterion
        ) as recorded:
            hf(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        embeddings, features, matches, per_prediction = recorded
        # transformers computes the (weighted) loss of every prediction on its own, first to final
        losses = {
            f"{key}{'' if layer == len(per_prediction) - 1 else f'_{layer}'}": value
            for layer, terms in enumerate(per_prediction)
            for key, value in terms.items()
        }
        return losses, matches, embeddings, features

    def inference_input(self, image):
        from transformers.image_transforms import get_size_with_aspect_ratio

        height, width = get_size_with_aspect_ratio(tuple(image.shape[-2:]), self.side, self.side)
        resized = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True)
        resized = resized.round().clamp(0, 255).to(torch.uint8)
        return self.normalise(resized, (self.side, self.side)), (self.side, self.side)

    def post_process(self, outputs, image_size, input_size):
        return self.processor.post_process_panoptic_segmentation(
            outputs,
            target_sizes=[image_size],
            threshold=self.cfg.object_mask_threshold,
            mask_threshold=self.cfg.mask_threshold,
            overlap_mask_area_threshold=self.cfg.overlap_threshold,
            stuff_classes=sorted(self.stuff_labels),
            size={"shortest_edge": self.side, "longest_edge": self.side},
        )[0]


HF_MODELS: dict[str, type[_HFUniversalSegmentation]] = {"hf_mask2former": HFMask2Former, "hf_eomt": HFEomt}
