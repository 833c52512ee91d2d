"""``build_model(cfg.model, meta)``: the model named by ``model.name``.

* ``panoptic_fcn``: :class:`~ibs_study.models.panoptic_fcn.PanopticFCN`;
* ``mask2former``: :class:`~ibs_study.models.mask2former.Mask2Former`.

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

__all__ = ["build_model", "MODELS"]

MODELS: dict[str, type[nn.Module]] = {"panoptic_fcn": PanopticFCN, "mask2former": Mask2Former}


def build_model(cfg: ModelConfig, meta: DatasetMeta) -> nn.Module:
    """The model ``cfg.name`` built from its section of ``cfg`` and the shared backbone config."""
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model.name {cfg.name!r}; valid names: {sorted(MODELS)}")
    return MODELS[cfg.name](getattr(cfg, cfg.name), cfg.backbone, meta)
