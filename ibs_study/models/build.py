"""``build_model(cfg.model, meta)``: the model named by ``model.name``.

* ``panoptic_fcn``: :class:`~ibs_study.models.panoptic_fcn.PanopticFCN`;
* ``mask2former``: :class:`~ibs_study.models.mask2former.Mask2Former`;
* ``hf_mask2former`` / ``hf_eomt``: transformers' models (:mod:`ibs_study.models.hf`), built
  from ``model.hf``.

Both return :class:`~ibs_study.models.output.UnifiedOutput` in training and implement
``predict_panoptic`` (Mask2Former also ``predict_instances``) for full images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ibs_study.data.datasets import DatasetMeta
from ibs_study.models.mask2former import Mask2Former
from ibs_study.models.panoptic_fcn import PanopticFCN

if TYPE_CHECKING:
    from ibs_study.config import ModelConfig

__all__ = ["build_model", "MODELS", "HF_MODEL_NAMES"]

# transformers' models (ibs_study.models.hf), imported only when one is built
HF_MODEL_NAMES = ("hf_mask2former", "hf_eomt")

MODELS: dict[str, type[nn.Module]] = {"panoptic_fcn": PanopticFCN, "mask2former": Mask2Former}


def build_model(cfg: ModelConfig, meta: DatasetMeta) -> nn.Module:
    """The model ``cfg.name`` built from its section of ``cfg`` and the shared backbone config."""
    if cfg.name not in MODELS and cfg.name not in HF_MODEL_NAMES:
        raise ValueError(
            f"unknown model.name {cfg.name!r}; valid names: {sorted(MODELS) + list(HF_MODEL_NAMES)}"
        )
    if cfg.name in HF_MODEL_NAMES:
        from ibs_study.models.hf import HF_MODELS  # imports transformers

        return HF_MODELS[cfg.name](cfg.hf, meta)
    return MODELS[cfg.name](getattr(cfg, cfg.name), cfg.backbone, meta)
