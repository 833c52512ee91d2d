"""Oracle-embedding confusion: the full-image masks of the embeddings a model gives the
ground-truth things, measured apart from whether its detector finds those things.

End-to-end metrics (PQ, Acc^th, Prec^th, the confusion curve) mix two failures: things the
model does not detect, and detected things whose mask spreads over other instances. Crop
training causes the second, and IBS targets it; a weak detector (a small model, a short
schedule) can hide it behind the first. Here each full validation image goes through the
model's *training* forward with its ground truth, which yields the embeddings the model
assigns to every GT thing (Panoptic FCN: the kernels around the thing's centre; Mask2Former:
the queries Hungarian-matched to it), read from :class:`~ibs_study.models.output.UnifiedOutput`
exactly as the IBS loss reads them, so any unified model works. Their masks
``sigmoid(E·F) > 0.5`` (last prediction layer, features upsampled bilinearly from stride 4
to the image) are compared with all GT things of the image:

* coverage of GT thing g by mask m: ``|m ∩ g| / |g|``;
* confused at T: the mask covers at least two GT things by more than T each (the rule of
  the Fig. 5 confusion curve, on oracle masks instead of predicted segments);
* leak: pixels on GT things other than the one it has most pixels on, over its pixels on GT
  things (0: the mask stays on one instance; 0.5: half of it lies on other instances);
* own coverage: the coverage of the GT thing the mask has most pixels on.

Every embedding counts with its ``thing_weights`` weight, as in the IBS loss (these sum to 1
per GT thing and Panoptic FCN feature level), so a thing weighs the same whatever the number
of kernels or queries it gets; a GT thing that gets none (Mask2Former with more segments than
queries) is not measured. Crowd regions are not things here (as in training); void pixels are
in no GT thing.

:func:`oracle_logits` reads the same embeddings as logits rather than masks: for each, the
mean logit ``E·F`` over the pixels of its own GT thing, of the nearest other GT thing of the
same class (its *look-alike*, by the distance between mass centres) and of the background
(pixels on no GT thing, void excluded); the part the embedding projection's bias ``b``
contributes (``b·F`` on the same pixels); and the norm ``|E|``. Whether a training change
lowers the own and look-alike logits alike (magnitude) or separates them (direction) shows in
``logit_gap`` (own − look-alike) and ``logit_gap_per_norm`` (the same divided by ``|E|``).
This needs a model that records which GT thing each embedding stands for
(``UnifiedOutput.thing_segments``: Panoptic FCN).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ibs_study.atomic import write_json_atomic
from ibs_study.data.batch import target_from_sample
from ibs_study.data.datasets import PanopticDataset
from ibs_study.engine.run_dir import run_lock
from ibs_study.metrics.panoptic import DEFAULT_THRESHOLDS
from ibs_study.models.output import UnifiedOutput

logger = logging.getLogger(__name__)

__all__ = [
    "ORACLE_FILE",
    "ORACLE_LOGITS_FILE",
    "LOGIT_METRICS",
    "oracle_confusion",
    "mask_overlaps",
    "oracle_confusion_run",
    "region_mean_features",
    "nearest_same_class",
    "oracle_logits",
    "oracle_logits_run",
]

ORACLE_FILE = "oracle_confusion.json"
ORACLE_LOGITS_FILE = "oracle_logits.json"
# weighted means over the GT things' embeddings (logits, not fractions); the look-alike ones
# over the embeddings whose thing has a look-alike
LOGIT_METRICS = (
    "logit_own",
    "logit_lookalike",
    "logit_background",
    "logit_gap",
    "logit_gap_per_norm",
    "logit_bias_own",
    "logit_bias_lookalike",
    "logit_bias_background",
    "embedding_norm",
)


def mask_overlaps(
    masks: torch.Tensor, gt_things: torch.Tensor, chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel overlaps of masks with GT things.

    Args:
        masks: (T, H, W) bool, one mask per thing embedding.
        gt_things: (G, H, W) bool GT thing masks.
        chunk: masks intersected at once (bounds memory at full resolution).

    Returns:
        ``(intersections, on_things)``: (T, G) float ``|mask_t ∩ gt_g|`` and (T,) float
        pixels of each mask that lie on any GT thing.
    """
    gt_flat = gt_things.flatten(1).float()  # (G, P)
    on_any = gt_flat.amax(0) if len(gt_flat) else gt_flat.new_zeros(gt_flat.shape[1])
    inter, on_things = [], []
    for start in range(0, masks.shape[0], chunk):
        part = masks[start : start + chunk].flatten(1).float()  # (t, P)
        inter.append(part @ gt_flat.T)
        on_things.append(part @ on_any)
    if not inter:
        return gt_flat.new_zeros((0, gt_flat.shape[0])), gt_flat.new_zeros(0)
    return torch.cat(inter), torch.cat(on_things)


def _oracle_forward(model: torch.nn.Module, image: np.ndarray, target) -> tuple[UnifiedOutput, int]:
    """The training forward of one (H, W, 3) image with its target, and the last layer's index."""
    device = next(model.parameters()).device
    height, width = image.shape[:2]
    images = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    output = model(images, [target.to(device)])
    h, w = output.features.shape[-2:]
    if h * 4 < height or w * 4 < width:
        raise ValueError(f"features {h}x{w} are not at stride 4 of the {height}x{width} image")
    return output, len(output.embeddings) - 1


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) stride-4 maps -> (N, C, H, W): bilinear to (4h, 4w), cut to ``size``."""
    h, w = maps.shape[-2:]
    up = F.interpolate(maps, size=(h * 4, w * 4), mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]]


def _oracle_masks(model: torch.nn.Module, image: np.ndarray, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H, W) bool masks of the GT things' embeddings at the last layer, and their (T,) weights."""
    output, layer = _oracle_forward(model, image, target)
    embeddings = output.thing_embeddings(layer, 0)  # (T, C)
    weights = output.thing_weights[layer][0].float()
    logits = torch.einsum("nc,chw->nhw", embeddings.float(), output.features[0].float())
    return _upsample(logits[None], image.shape[:2])[0] > 0, weights


@torch.no_grad()
def oracle_confusion(
    model: torch.nn.Module,
    dataset: PanopticDataset,
    *,
    min_pixels: int = 1,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The oracle-embedding confusion of ``model`` over ``dataset`` (module docstring).

    Args:
        model: a unified model (``model(images, targets) -> UnifiedOutput``), any mode.
        dataset: the split, at the resolution the model is evaluated at.
        min_pixels: a segment needs this many pixels to become a target (the config's
            ``data.min_pixels``).
        thresholds: coverage thresholds T of the confusion ratio.
        max_images: evaluate only the first images.

    Returns:
        ``{"thresholds", "ratio"}`` (weighted share of thing embeddings confused at each T),
        ``"leak"``, ``"own_coverage"`` (weighted means), ``"total_weight"`` (the GT things,
        counted as often as the model gathers embeddings for them: Panoptic FCN once per
        feature level a thing is assigned to), ``"num_gt_things"``, ``"num_embeddings"``,
        ``"num_images"``.
    """
    if not thresholds or any(not 0 < t < 1 for t in thresholds):
        raise ValueError(f"thresholds must lie in (0, 1), got {thresholds}")
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    confused = np.zeros(len(thresholds))
    total = leak = own = 0.0
    embeddings = images = gt_count = 0
    limits = torch.tensor(thresholds)
    for index in tqdm(range(count), desc="oracle confusion", unit="img", disable=not progress):
        sample = dataset[index]
        target = target_from_sample(sample, dataset.meta, min_pixels=min_pixels)
        images += 1
        if target.num_things == 0:
            continue
        masks, weights = _oracle_masks(model, sample.image, target)
        gt_things = target.masks[target.is_thing].to(masks.device)
        inter, on_things = (t.cpu() for t in mask_overlaps(masks, gt_things))
        weights = weights.cpu()
        coverage = inter / gt_things.flatten(1).sum(1).cpu().float().clamp(min=1)  # (T, G)
        best = inter.argmax(1, keepdim=True)  # the GT thing the mask lies most on
        mask_leak = 1 - inter.gather(1, best)[:, 0] / on_things.clamp(min=1)
        mask_leak[on_things == 0] = 0.0
        covered = (coverage[:, :, None] > limits[None, None, :]).sum(1)  # (T, thresholds)
        confused += (weights[:, None] * (covered >= 2).float()).sum(0).numpy()
        total += float(weights.sum())
        leak += float((weights * mask_leak).sum())
        own += float((weights * coverage.gather(1, best)[:, 0]).sum())
        embeddings += int(masks.shape[0])
        gt_count += int(gt_things.shape[0])
    denominator = max(total, 1e-12)
    return {
        "thresholds": list(thresholds),
        "ratio": (confused / denominator).tolist() if total else [0.0] * len(thresholds),
        "leak": leak / denominator if total else 0.0,
        "own_coverage": own / denominator if total else 0.0,
        "total_weight": total,
        "num_gt_things": gt_count,
        "num_embeddings": embeddings,
        "num_images": images,
    }


def region_mean_features(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of the upsampled features over each mask, without upsampling the features.

    Upsampling is linear, so the mean of ``E·up(F)`` over a mask is ``E`` times the mask's
    mean of ``up(F)``; that mean is the features weighted by the mask pulled back to the
    stride-4 grid (the adjoint of the upsampling), which costs one map per mask instead of
    ``C`` full-resolution maps.

    Args:
        features: (C, h, w) at stride 4.
        masks: (G, H, W) bool, H <= 4h and W <= 4w; an empty mask gives zeros.

    Returns:
        (G, C) float32.
    """
    size = tuple(masks.shape[-2:])
    region = masks.float()
    grid = torch.zeros((1, len(masks), *features.shape[-2:]), device=features.device)
    _, pullback = torch.func.vjp(lambda maps: _upsample(maps, size), grid)
    (weights,) = pullback(region[None])  # (1, G, h, w)
    weights = weights[0].flatten(1) / region.flatten(1).sum(1, keepdim=True).clamp(min=1)
    return weights @ features.float().flatten(1).T


def nearest_same_class(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each mask, the nearest other mask of the same label (distance between mass centres).

    Args:
        masks: (G, H, W) bool, none empty. labels: (G,) int64.

    Returns:
        (G,) int64 index of that mask; -1 where no other mask has the label.
    """
    if len(masks) == 0:
        return torch.zeros(0, dtype=torch.int64)
    rows = torch.arange(masks.shape[1], dtype=torch.float64)
    cols = torch.arange(masks.shape[2], dtype=torch.float64)
    area = masks.flatten(1).sum(1).double()
    centres = torch.stack(
        [(masks.sum(2).double() @ rows) / area, (masks.sum(1).double() @ cols) / area], dim=1
    )  # (G, 2) (y, x)
    distance = torch.cdist(centres, centres)
    distance[labels[:, None] != labels[None, :]] = math.inf
    distance.fill_diagonal_(math.inf)
    nearest = distance.argmin(1)
    return torch.where(torch.isfinite(distance.min(1).values), nearest, -1)


@torch.no_grad()
def oracle_logits(
    model: torch.nn.Module,
    dataset: PanopticDataset,
    *,
    min_pixels: int = 1,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean logits of the GT things' embeddings on their own thing, their look-alike and the
    background, the bias part of each and the embedding norm (module docstring).

    Args:
        model: a unified model whose output has ``thing_segments``; its embedding bias is its
            ``thing_embedding_bias`` attribute (Panoptic FCN: the thing projection's), without
            one the ``logit_bias_*`` values are absent.
        dataset: the split, at the resolution the model is evaluated at.
        min_pixels: a segment needs this many pixels to become a target (``data.min_pixels``).
        max_images: evaluate only the first images.

    Returns:
        :data:`LOGIT_METRICS` (weighted means over the embeddings, each counting with its
        ``thing_weights`` weight; look-alike ones over those whose thing has a look-alike),
        ``"lookalike_share"`` (the weight share of those), ``"total_weight"``,
        ``"num_gt_things"``, ``"num_with_lookalike"``, ``"num_images"``.

    Raises:
        ValueError: the model does not record ``thing_segments``.
    """
    bias = getattr(model, "thing_embedding_bias", None)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    sums = dict.fromkeys(LOGIT_METRICS, 0.0)
    total = lookalike_total = 0.0
    images = gt_count = lookalike_count = 0
    for index in tqdm(range(count), desc="oracle logits", unit="img", disable=not progress):
        sample = dataset[index]
        target = target_from_sample(sample, dataset.meta, min_pixels=min_pixels)
        images += 1
        if target.num_things == 0:
            continue
        output, layer = _oracle_forward(model, sample.image, target)
        if output.thing_segments is None:
            raise ValueError(
                f"{type(model).__name__} does not record which GT thing each embedding stands for "
                "(UnifiedOutput.thing_segments): the oracle logit analysis needs it (Panoptic FCN)"
            )
        things = torch.nonzero(target.is_thing).flatten()  # segment index of each GT thing
        masks = target.masks[things]
        lookalike = nearest_same_class(masks, target.labels[things])  # (G,)
        background = ~target.masks[target.is_thing].any(0) & ~target.ignore
        device = output.features.device
        regions = torch.cat([masks, background[None]]).to(device)  # (G + 1, H, W)
        means = region_mean_features(output.features[0], regions)  # (G + 1, C)
        embeddings = output.thing_embeddings(layer, 0).float()  # (T, C)
        weights = output.thing_weights[layer][0].float().cpu()
        position = torch.full((len(target.masks),), -1, dtype=torch.int64)
        position[things] = torch.arange(len(things))
        own = position[output.thing_segments[layer][0].cpu()]  # (T,) index among the GT things
        look = lookalike[own]
        has_look = look >= 0
        logits = (embeddings @ means.T).cpu()  # (T, G + 1)
        rows = torch.arange(len(own))
        values = {
            "logit_own": logits[rows, own],
            "logit_background": logits[:, -1],
            "embedding_norm": embeddings.norm(dim=1).cpu(),
        }
        look_values = {"logit_lookalike": logits[rows, look.clamp(min=0)]}
        look_values["logit_gap"] = values["logit_own"] - look_values["logit_lookalike"]
        look_values["logit_gap_per_norm"] = look_values["logit_gap"] / values["embedding_norm"].clamp(
            min=1e-12
        )
        if bias is not None:
            bias_logits = (means @ bias.detach().float()).cpu()  # (G + 1,)
            values["logit_bias_own"] = bias_logits[own]
            values["logit_bias_background"] = bias_logits[-1].expand(len(own))
            look_values["logit_bias_lookalike"] = bias_logits[look.clamp(min=0)]
        for name, value in values.items():
            sums[name] += float((weights * value).sum())
        for name, value in look_values.items():
            sums[name] += float((weights * value)[has_look].sum())
        total += float(weights.sum())
        lookalike_total += float(weights[has_look].sum())
        gt_count += len(things)
        lookalike_count += int((lookalike >= 0).sum())
    look_names = {"logit_lookalike", "logit_gap", "logit_gap_per_norm", "logit_bias_lookalike"}
    result: dict[str, Any] = {
        name: value / (lookalike_total if name in look_names else total)
        for name, value in sums.items()
        if (bias is not None or "bias" not in name) and (lookalike_total if name in look_names else total) > 0
    }
    return result | {
        "lookalike_share": lookalike_total / total if total else 0.0,
        "total_weight": total,
        "num_gt_things": gt_count,
        "num_with_lookalike": lookalike_count,
        "num_images": images,
    }


def _measure_run(
    measure: Callable[..., dict[str, Any]],
    file_name: str,
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None,
    data_root: str | os.PathLike | None,
    split: str | None,
    out_dir: str | os.PathLike | None,
    max_images: int | None,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """``measure(model, dataset, ...)`` of a trained run (``checkpoint``, default the newest) on
    ``split`` (default ``data.val_split``) of ``data_root`` (default ``data.root``), under the
    run's lock, written atomically to ``OUT_DIR/file_name`` (default ``RUN_DIR/eval_<split>``);
    ``max_images`` defaults to the config's ``eval.max_images``, as ``ibs-study evaluate``."""
    from ibs_study.engine.evaluate import open_trained_run

    with run_lock(run_dir):
        run = open_trained_run(
            run_dir, checkpoint=checkpoint, data_root=data_root, split=split, device=device
        )
        result = measure(
            run.model,
            run.dataset,
            min_pixels=run.cfg.data.min_pixels,
            max_images=max_images if max_images is not None else run.cfg.eval.max_images,
            progress=progress,
        )
        result["checkpoint"] = str(run.checkpoint)
        result["split"] = run.split
        folder = Path(out_dir) if out_dir is not None else run.default_out
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name
        write_json_atomic(path, result, indent=1)
    logger.info("%s of %s written to %s", file_name, run_dir, path)
    return result


def oracle_confusion_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    out_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`oracle_confusion` of a trained run (``checkpoint``, default the newest) on
    ``split`` (default ``data.val_split``) of ``data_root`` (default ``data.root``), written to
    ``OUT_DIR/oracle_confusion.json`` (default ``RUN_DIR/eval_<split>``); ``max_images`` defaults
    to the config's ``eval.max_images``, as ``ibs-study evaluate``."""
    return _measure_run(
        oracle_confusion, ORACLE_FILE, run_dir, checkpoint=checkpoint, data_root=data_root, split=split,
        out_dir=out_dir, max_images=max_images, device=device, progress=progress,
    )  # fmt: skip


def oracle_logits_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    out_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`oracle_logits` of a trained run, written to ``OUT_DIR/oracle_logits.json``; the
    arguments as :func:`oracle_confusion_run`."""
    return _measure_run(
        oracle_logits, ORACLE_LOGITS_FILE, run_dir, checkpoint=checkpoint, data_root=data_root, split=split,
        out_dir=out_dir, max_images=max_images, device=device, progress=progress,
    )  # fmt: skip
