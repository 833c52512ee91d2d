"""Oracle-embedding confusion against hand-computed coverages, leaks and ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import PanopticSample, segments_from_id_map
from ibs_study.data.synthetic import CAR, PERSON, ROAD, SYNTHETIC_CATEGORIES
from ibs_study.engine.oracle import mask_overlaps, oracle_confusion
from ibs_study.models.output import UnifiedOutput

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
    from ibs_study.engine.oracle import ORACLE_FILE, oracle_confusion_run
    from ibs_study.engine.train import train

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
