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
"""

from __future__ import annotations

import logging
import os
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

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "ORACLE_FILE", "oracle_confusion", "mask_overlaps", "oracle_confusion_run"]

DEFAULT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
ORACLE_FILE = "oracle_confusion.json"


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


def _oracle_masks(model: torch.nn.Module, image: np.ndarray, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H, W) bool masks of the GT things' embeddings at the last layer, and their (T,) weights."""
    device = next(model.parameters()).device
    height, width = image.shape[:2]
    images = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    output = model(images, [target.to(device)])
    layer = len(output.embeddings) - 1
    embeddings = output.thing_embeddings(layer, 0)  # (T, C)
    weights = output.thing_weights[layer][0].float()
    features = output.features[0]  # (C, h, w)
    logits = torch.einsum("nc,chw->nhw", embeddings.float(), features.float())
    h, w = features.shape[-2:]
    if h * 4 < height or w * 4 < width:
        raise ValueError(f"features {h}x{w} are not at stride 4 of the {height}x{width} image")
    logits = F.interpolate(logits[None], size=(h * 4, w * 4), mode="bilinear", align_corners=False)[0]
    return logits[:, :height, :width] > 0, weights


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
    from ibs_study.engine.evaluate import open_trained_run

    with run_lock(run_dir):
        run = open_trained_run(
            run_dir, checkpoint=checkpoint, data_root=data_root, split=split, device=device
        )
        result = oracle_confusion(
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
        path = folder / ORACLE_FILE
        write_json_atomic(path, result, indent=1)
    logger.info("oracle confusion of %s written to %s", run_dir, path)
    return result
