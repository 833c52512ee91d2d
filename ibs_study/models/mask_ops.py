"""Mask operations shared by both unified models and the IBS loss.

* :func:`mask_logits`: the unified product ``E · F`` (optionally chunked for memory);
* :func:`point_sample`: bilinear sampling of maps at normalised point coordinates;
* :func:`uncertain_point_coords`: PointRend importance sampling (Mask2Former's losses
  and its IBS term evaluate masks at such points instead of at every pixel).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["mask_logits", "point_sample", "uncertain_point_coords", "logit_uncertainty"]


def mask_logits(
    embeddings: torch.Tensor, features: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Mask logits of N embeddings over one feature map.

    Args:
        embeddings: (N, C).
        features: (C, h, w).
        chunk_size: compute at most this many masks at once (bounds the peak memory of
            inference on full high-resolution images); None: all at once.

    Returns:
        (N, h, w) logits.
    """
    c, h, w = features.shape
    flat = features.reshape(c, h * w)
    if chunk_size is None or embeddings.shape[0] <= chunk_size:
        return (embeddings @ flat).reshape(-1, h, w)
    chunks = [embeddings[i : i + chunk_size] @ flat for i in range(0, embeddings.shape[0], chunk_size)]
    return torch.cat(chunks).reshape(-1, h, w)


def point_sample(maps: torch.Tensor, coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly sample ``maps`` at ``coords``.

    Args:
        maps: (N, C, H, W).
        coords: (N, P, 2) point coordinates (x, y) in [0, 1] relative to the map.

    Returns:
        (N, C, P) sampled values.
    """
    grid = 2.0 * coords.unsqueeze(2) - 1.0  # (N, P, 1, 2) in [-1, 1]
    sampled = F.grid_sample(maps, grid.to(maps.dtype), align_corners=align_corners)  # (N, C, P, 1)
    return sampled.squeeze(3)


def logit_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary)."""
    return -torch.abs(logits)


@torch.no_grad()
def uncertain_point_coords(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    uncertainty: Callable[[torch.Tensor], torch.Tensor] = logit_uncertainty,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PointRend importance sampling of points on mask logits.

    Draws ``oversample_ratio * num_points`` uniform candidates, keeps the
    ``importance_sample_ratio * num_points`` most uncertain ones and fills the rest with
    fresh uniform points.

    Args:
        logits: (N, 1, H, W) mask logits.
        num_points: P, points per mask.
        generator: source of randomness (None: torch's global generator).

    Returns:
        (N, P, 2) coordinates (x, y) in [0, 1].
    """
    n = logits.shape[0]
    device = logits.device
    num_sampled = int(num_points * oversample_ratio)
    # draw where the generator lives (e.g. a CPU generator for CUDA logits), then move
    draw_device = generator.device if generator is not None else device
    candidates = torch.rand(n, num_sampled, 2, device=draw_device, generator=generator).to(device)
    scores = uncertainty(point_sample(logits, candidates))  # (N, 1, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    # unsorted: the same set of points, in unspecified order (every use averages over points), 2-3x faster
    top = torch.topk(scores[:, 0, :], k=num_uncertain, dim=1, sorted=False).indices  # (N, num_uncertain)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        fresh = torch.rand(n, num_random, 2, device=draw_device, generator=generator).to(device)
        chosen = torch.cat([chosen, fresh], dim=1)
    return chosen
