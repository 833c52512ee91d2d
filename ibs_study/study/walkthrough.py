"""Intra-Batch Supervision step by step (paper Sec. 4, Fig. 4) on real training batches.

* :func:`training_batch`: the batch training step ``s`` sees, with its IBS partners;
* :func:`initial_model`: the model a run of the config starts from;
* :func:`cross_crop_probabilities`: the masks ``M_{i -> tgt} = sigmoid(E_i^th · F_tgt)`` of
  every crop's thing embeddings on another crop's features (what IBS pushes to zero), or on
  the crop's own features;
* :func:`ibs_training_trace`: a short in-process training run that measures, on one fixed
  probe batch, how strongly the cross-crop masks fire after every few steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ibs_study.config import ExperimentConfig
from ibs_study.data.batch import Batch
from ibs_study.data.datasets import DatasetMeta, PanopticDataset
from ibs_study.losses import assign_partners
from ibs_study.models.build import build_model
from ibs_study.models.mask_ops import mask_logits
from ibs_study.models.output import UnifiedOutput

logger = logging.getLogger(__name__)

__all__ = [
    "training_batch",
    "initial_model",
    "cross_crop_probabilities",
    "cross_crop_activation",
    "IBSTrace",
    "ibs_training_trace",
]


def _open_train_split(cfg: ExperimentConfig, dataset: PanopticDataset | None) -> PanopticDataset:
    from ibs_study.engine.data import open_split

    return dataset if dataset is not None else open_split(cfg, cfg.data.train_split)


def _partner_rule(cfg: ExperimentConfig) -> str:
    """``random_per_layer`` draws per layer inside the loss; one draw per batch shows the same idea."""
    return "random" if cfg.ibs.partner == "random_per_layer" else cfg.ibs.partner


def training_batch(cfg: ExperimentConfig, step: int = 0, dataset: PanopticDataset | None = None) -> Batch:
    """The batch of training step ``step`` (rank 0) of ``cfg``, ``partner_index`` set by ``cfg.ibs.partner``.

    Crops and partners are those the training loop draws at that step (same plans, same
    generator).

    Returns:
        A :class:`Batch`: ``images`` (B, 3, H, W) uint8, B targets, ``partner_index`` (B,).
    """
    from ibs_study.engine.train import step_generator, train_loader

    batch = next(iter(train_loader(cfg, _open_train_split(cfg, dataset), start_step=step)))
    batch.partner_index = assign_partners(len(batch), _partner_rule(cfg), step_generator(cfg.seed, 0, step))
    return batch


def initial_model(cfg: ExperimentConfig, meta: DatasetMeta) -> nn.Module:
    """The freshly initialised model of ``cfg`` (same seed as a training run), in training mode."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, meta).train()


def _last_ibs_layer(output: UnifiedOutput, layer: int | None) -> int:
    if layer is not None:
        if layer not in output.ibs_layers:
            raise ValueError(f"layer {layer} is not an IBS layer of this model ({output.ibs_layers})")
        return layer
    return output.ibs_layers[-1]


def cross_crop_probabilities(
    output: UnifiedOutput, feature_index: torch.Tensor | Sequence[int], layer: int | None = None
) -> list[torch.Tensor]:
    """``sigmoid(E_b^th · F[feature_index[b]])`` for every crop b.

    With ``feature_index = partner_index`` these are the intra-batch masks ``M_{b -> tgt}``
    that IBS supervises towards zero; with ``feature_index = range(B)`` the crops' own
    thing masks.

    Args:
        output: a training-mode model output.
        feature_index: (B,) which crop's features each crop's thing embeddings meet.
        layer: prediction layer (default: the last IBS layer, the final prediction).

    Returns:
        B tensors (T_b, h, w) of probabilities in [0, 1] (T_b = 0 for a crop without things),
        detached.
    """
    feature_index = torch.as_tensor(feature_index)
    if feature_index.shape != (output.batch_size,):
        raise ValueError(
            f"feature_index must have shape ({output.batch_size},), got {tuple(feature_index.shape)}"
        )
    layer = _last_ibs_layer(output, layer)
    with torch.no_grad():
        return [
            mask_logits(output.thing_embeddings(layer, b), output.features[int(feature_index[b])]).sigmoid()
            for b in range(output.batch_size)
        ]


def cross_crop_activation(probabilities: Sequence[torch.Tensor], threshold: float = 0.5) -> dict[str, float]:
    """Summary of masks from :func:`cross_crop_probabilities` over every thing and pixel.

    Returns:
        ``{"mean": mean probability, "fired": fraction of pixels above threshold, "things": T}``;
        mean and fired are NaN when no crop has a thing.
    """
    things = sum(int(p.shape[0]) for p in probabilities)
    if things == 0:
        return {"mean": float("nan"), "fired": float("nan"), "things": 0}
    flat = torch.cat([p.reshape(-1) for p in probabilities if p.numel()])
    return {"mean": float(flat.mean()), "fired": float((flat > threshold).float().mean()), "things": things}


@dataclass
class IBSTrace:
    """What :func:`ibs_training_trace` measured.

    Attributes:
        probe: the fixed batch the masks are measured on (``partner_index`` set).
        records: one dict per measurement: ``step``, and per partner rule ``r`` the keys
            ``cross_mean_<r>`` / ``cross_fired_<r>`` (:func:`cross_crop_activation`), plus the
            loss terms of the training step just taken (none at step 0).
        maps: partner rule -> step -> B tensors (T_b, h, w), the probe's cross-crop masks.
        partners: partner rule -> (B,) the probe's partner index under that rule.
    """

    probe: Batch
    records: list[dict] = field(default_factory=list)
    maps: dict[str, dict[int, list[torch.Tensor]]] = field(default_factory=dict)
    partners: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.records]


def _measure(model: nn.Module, trace: IBSTrace, step: int, losses: dict[str, float]) -> None:
    with torch.no_grad():
        output = model(trace.probe.images, trace.probe.targets)
    record: dict = {"step": step, **losses}
    for rule, partners in trace.partners.items():
        probs = cross_crop_probabilities(output, partners)
        summary = cross_crop_activation(probs)
        record[f"cross_mean_{rule}"] = summary["mean"]
        record[f"cross_fired_{rule}"] = summary["fired"]
        trace.maps.setdefault(rule, {})[step] = probs
    trace.records.append(record)


def ibs_training_trace(
    cfg: ExperimentConfig,
    steps: int,
    *,
    record_every: int = 1,
    probe_step: int = 0,
    partner_rules: Sequence[str] = ("pair_mate", "random"),
    dataset: PanopticDataset | None = None,
    progress: bool = True,
) -> IBSTrace:
    """Train ``cfg`` in process for ``steps`` steps (CPU) and measure the cross-crop masks.

    The loop is the engine's :func:`~ibs_study.engine.train.train_step` on the batches of
    steps 0, 1, ...; the schedule runs over ``steps``. Before the first step and after every
    ``record_every`` steps (and the last), the model (training mode, no gradient) predicts
    the probe batch (that of training step ``probe_step``), and the probe's thing embeddings
    meet its other crops' features under each rule of ``partner_rules`` (``pair_mate``:
    crop 2k <-> 2k+1; ``random``: one draw from the probe step's generator).

    Returns:
        An :class:`IBSTrace`.
    """
    from ibs_study.engine.optim import build_optimizer, build_scheduler
    from ibs_study.engine.train import step_generator, train_loader, train_step

    if steps < 1 or record_every < 1:
        raise ValueError(f"steps and record_every must be >= 1, got {steps} and {record_every}")
    dataset = _open_train_split(cfg, dataset)
    probe = training_batch(cfg, probe_step, dataset)
    trace = IBSTrace(
        probe=probe,
        partners={
            rule: assign_partners(len(probe), rule, step_generator(cfg.seed, 0, probe_step))
            for rule in partner_rules
        },
    )
    model = initial_model(cfg, dataset.meta)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, steps)
    _measure(model, trace, 0, {})
    loader = train_loader(cfg, dataset)
    for step, batch in tqdm(zip(range(steps), loader), total=steps, desc="IBS trace", disable=not progress):
        losses = train_step(model, batch, cfg, optimizer, None, step, step_generator(cfg.seed, 0, step))
        scheduler.step()
        if (step + 1) % record_every == 0 or step + 1 == steps:
            _measure(model, trace, step + 1, losses)
    return trace
