"""Oracle-embedding confusion against hand-computed coverages, leaks and ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import PanopticSample, segments_from_id_map
from ibs_study.data.synthetic import CAR, PERSON, ROAD, SYNTHETIC_CATEGORIES
from ibs_study.models.output import UnifiedOutput
from ibs_study.study.oracle import (
    mask_overlaps,
    nearest_same_class,
    oracle_confusion,
    oracle_logits,
    region_mean_features,
)

META = DatasetMeta.from_categories("synthetic", list(SYNTHETIC_CATEGORIES))
A, B, C, STUFF = 70001, 70002, 70003, 70004


def scene() -> PanopticSample:
    """40x16 in full-width bands (so every edge is a row edge on the stride-4 grid, which
    bilinear upsampling keeps exactly): car A rows 0-7, road 8-15, car B 16-23, person C 24-39."""
    id_map = np.full((40, 16), STUFF, dtype=np.int32)
    id_map[0:8] = A
    id_map[16:24] = B
    id_map[24:40] = C
    segments = segments_from_id_map(id_map, {A: CAR, B: CAR, C: PERSON, STUFF: ROAD})
    return PanopticSample("scene", np.zeros((40, 16, 3), np.uint8), id_map, segments)


class OneImage:
    meta = META

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> PanopticSample:
        return scene()


class BlockModel(nn.Module):
    """Features at stride 4: one indicator channel per region (A, B, C, left half of B) and a
    constant -0.5 channel; each embedding sums the regions its mask should cover, so its
    logits are +0.5 inside them and -0.5 outside (upsampling keeps the 4-aligned edges)."""

    ROWS = torch.tensor(
        [
            [1, 0, 0, 0, 1],  # A only
            [1, 1, 0, 0, 1],  # A and B
            [1, 0, 1, 0, 1],  # C and A
            [1, 0, 0, 1, 1],  # A and the left half of B
        ],
        dtype=torch.float32,
    )
    WEIGHTS = torch.tensor([0.5, 0.5, 1.0, 1.0])

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor, targets: list) -> UnifiedOutput:
        id_map = torch.from_numpy(scene().id_map)[::4, ::4]
        half_b = torch.zeros_like(id_map, dtype=torch.bool)
        half_b[4] = True  # rows 16-19: the top half of B
        channels = [id_map == A, id_map == B, id_map == C, half_b]
        features = torch.stack([c.float() for c in channels] + [torch.full(id_map.shape, -0.5)])[None]
        rows = self.ROWS.clone()
        return UnifiedOutput(
            features=features,
            embeddings=[[rows]],
            thing_index=[[torch.arange(4)]],
            thing_weights=[[self.WEIGHTS.clone()]],
            ibs_layers=(0,),
        )


def test_mask_overlaps_counts_pixels():
    masks = torch.zeros((2, 4, 4), dtype=torch.bool)
    masks[0, :2] = True  # 8 pixels
    masks[1, :, :1] = True  # 4 pixels
    gt = torch.zeros((2, 4, 4), dtype=torch.bool)
    gt[0, 0] = True  # row 0
    gt[1, :, 0] = True  # column 0
    inter, on_things = mask_overlaps(masks, gt, chunk=1)
    assert inter.tolist() == [[4.0, 2.0], [1.0, 4.0]]
    assert on_things.tolist() == [5.0, 4.0]  # row 0 and column 0 share a pixel


def test_oracle_confusion_matches_hand_computed_values():
    result = oracle_confusion(BlockModel(), OneImage(), thresholds=(0.25, 0.5, 0.75), progress=False)
    # Masks: A (128 px) | A+B (128+128) | C+A (256+128) | A + half of B (128+64); weights .5 .5 1 1.
    # Confused (>= 2 things covered by more than T): rows 1 and 2 always, row 3 while T < 0.5.
    assert result["ratio"] == pytest.approx([2.5 / 3, 1.5 / 3, 1.5 / 3])
    # Leak: 0, 128/256 (a tie: either is "own"), 128/384, 64/192.
    assert result["leak"] == pytest.approx((0.5 * 0 + 0.5 * 0.5 + 1 / 3 + 1 / 3) / 3)
    assert result["own_coverage"] == pytest.approx(1.0)
    assert result["total_weight"] == pytest.approx(3.0) and result["num_gt_things"] == 3
    assert result["num_embeddings"] == 4 and result["num_images"] == 1


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="thresholds must lie in"):
        oracle_confusion(BlockModel(), OneImage(), thresholds=(0.5, 1.0), progress=False)


@pytest.mark.parametrize("preset", ["synthetic_pfcn_crop", "synthetic_m2f_crop"])
def test_oracle_run_of_both_models_writes_its_json(tmp_path, preset):
    import json

    from ibs_study.config import resolve_config
    from ibs_study.engine.train import train
    from ibs_study.study.oracle import ORACLE_FILE, oracle_confusion_run

    overrides = [
        f"data.root={tmp_path / 'data'}",
        "data.synthetic_scale=tiny",
        "data.crop_size=[32, 64]",
        "train.batch_size=2",
        "train.max_steps=1",
        "train.device=cpu",
    ]
    train(resolve_config(preset=preset, overrides=overrides), tmp_path / "run", progress=False)
    result = oracle_confusion_run(tmp_path / "run", max_images=2, device="cpu", progress=False)
    written = json.loads((tmp_path / "run" / "eval_val" / ORACLE_FILE).read_text())
    assert written["ratio"] == result["ratio"] and written["num_images"] == 2
    assert result["num_gt_things"] > 0 and result["num_embeddings"] > 0
    assert all(0.0 <= r <= 1.0 for r in result["ratio"]) and 0.0 <= result["leak"] <= 1.0
    assert all(a >= b for a, b in zip(result["ratio"], result["ratio"][1:]))  # falls with T


# ------------------------------------------------------------------------- oracle logits

ROAD_ID = 70005


def banded_scene() -> PanopticSample:
    """64x16: car A rows 0-7, car B 16-23, person C 32-39, road 48-55, void between. Features at
    stride 4 (16x4) hold one indicator channel per region over cells 4i-1..4i+2 around region i,
    so upsampling keeps every GT pixel's features exact (blends fall on void rows)."""
    id_map = np.zeros((64, 16), dtype=np.int32)
    for i, segment in enumerate((A, B, C, ROAD_ID)):
        id_map[16 * i : 16 * i + 8] = segment
    segments = segments_from_id_map(id_map, {A: CAR, B: CAR, C: PERSON, ROAD_ID: ROAD})
    return PanopticSample("bands", np.zeros((64, 16, 3), np.uint8), id_map, segments)


class BandedImage(OneImage):
    def __getitem__(self, index: int) -> PanopticSample:
        return banded_scene()


class LogitModel(nn.Module):
    """Channels (A, B, C, road, 1); two embeddings for A (weights .5, .5), one for B and for C."""

    ROWS = torch.tensor(
        [[3, 1, 0, -2, -1], [1, 1, 0, 0, -1], [0, 2, 0, -1, -1], [0, 0, 4, 0, -1]], dtype=torch.float32
    )
    WEIGHTS = torch.tensor([0.5, 0.5, 1.0, 1.0])

    def __init__(self, record_segments: bool = True) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.thing_embedding_bias = torch.tensor([0.0, 0.0, 0.0, 0.5, -1.0])
        self.record_segments = record_segments

    def forward(self, images: torch.Tensor, targets: list) -> UnifiedOutput:
        cells = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3])  # region of each cell row
        features = torch.zeros((1, 5, 16, 4))
        features[0, cells, torch.arange(16)] = 1.0
        features[0, 4] = 1.0
        segment_of = {int(s): k for k, s in enumerate(targets[0].segment_ids)}
        segments = torch.tensor([segment_of[A], segment_of[A], segment_of[B], segment_of[C]])
        return UnifiedOutput(
            features=features,
            embeddings=[[self.ROWS.clone()]],
            thing_index=[[torch.arange(4)]],
            thing_weights=[[self.WEIGHTS.clone()]],
            ibs_layers=(0,),
            thing_segments=[[segments]] if self.record_segments else None,
        )


def test_oracle_logits_match_hand_computed_values():
    result = oracle_logits(LogitModel(), BandedImage(), progress=False)
    # own: A rows 3-1=2 and 1-1=0, B 2-1=1, C 4-1=3; look-alikes: A <-> B (cars), C has none
    assert result["logit_own"] == pytest.approx((0.5 * 2 + 0.5 * 0 + 1 + 3) / 3)
    assert result["logit_lookalike"] == pytest.approx((0.5 * 0 + 0.5 * 0 + 1 * -1) / 2)
    assert result["logit_background"] == pytest.approx((0.5 * -3 + 0.5 * -1 - 2 - 1) / 3)
    assert result["logit_gap"] == pytest.approx((0.5 * 2 + 0.5 * 0 + 2) / 2)
    norms = [math.sqrt(15), math.sqrt(3), math.sqrt(6), math.sqrt(17)]
    assert result["embedding_norm"] == pytest.approx(
        (0.5 * norms[0] + 0.5 * norms[1] + norms[2] + norms[3]) / 3
    )
    assert result["logit_gap_per_norm"] == pytest.approx((0.5 * 2 / norms[0] + 2 / norms[2]) / 2)
    assert result["logit_bias_own"] == pytest.approx(-1.0)
    assert result["logit_bias_lookalike"] == pytest.approx(-1.0)
    assert result["logit_bias_background"] == pytest.approx(-0.5)
    assert result["lookalike_share"] == pytest.approx(2 / 3) and result["total_weight"] == pytest.approx(3.0)
    assert result["num_gt_things"] == 3 and result["num_with_lookalike"] == 2 and result["num_images"] == 1


def test_oracle_logits_need_the_thing_segments():
    with pytest.raises(ValueError, match="thing_segments"):
        oracle_logits(LogitModel(record_segments=False), BandedImage(), progress=False)


def test_region_mean_features_equal_the_mean_of_the_upsampled_features():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 5, 7, generator=generator)
    masks = torch.rand(4, 18, 26, generator=generator) > 0.6
    masks[3] = False  # an empty mask gives zeros
    upsampled = torch.nn.functional.interpolate(features[None], size=(20, 28), mode="bilinear")[
        0, :, :18, :26
    ]
    expected = (masks[:, None] * upsampled[None]).sum((2, 3)) / masks.sum((1, 2)).clamp(min=1)[:, None]
    torch.testing.assert_close(region_mean_features(features, masks), expected, rtol=1e-5, atol=1e-6)


def test_nearest_same_class_by_mass_centre():
    masks = torch.zeros((4, 10, 10), dtype=torch.bool)
    masks[0, 0:2, 0:2] = True  # centre (0.5, 0.5), class 1
    masks[1, 0:2, 8:10] = True  # (0.5, 8.5), class 1
    masks[2, 4:6, 0:2] = True  # (4.5, 0.5), class 1
    masks[3, 8:10, 8:10] = True  # class 2: alone
    labels = torch.tensor([1, 1, 1, 2])
    assert nearest_same_class(masks, labels).tolist() == [2, 0, 0, -1]  # 1: 8.0 to mask 0, 8.9 to mask 2
