"""IBS walkthrough helpers: the training batch, cross-crop masks, the short training trace."""

from __future__ import annotations

import math

import pytest
import torch

from ibs_study.config import load_preset
from ibs_study.engine.data import open_split
from ibs_study.engine.train import step_generator, train_augmentation
from ibs_study.losses import assign_partners
from ibs_study.sampling import build_train_loader
from ibs_study.study.runs import smoke_overrides
from ibs_study.study.walkthrough import (
    cross_crop_activation,
    cross_crop_probabilities,
    ibs_training_trace,
    initial_model,
    training_batch,
)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("walk") / "data"
    return load_preset("synthetic_pfcn_crop_ibs", smoke_overrides(root))


def test_training_batch_is_the_loop_batch_with_its_partners(cfg):
    dataset = open_split(cfg, "train")
    batch = training_batch(cfg, step=2, dataset=dataset)
    loader = build_train_loader(
        dataset, dataset.meta, cfg.sampler, train_augmentation(cfg), batch_size=4, seed=cfg.seed, start_step=2
    )
    expected = next(iter(loader))
    assert torch.equal(batch.images, expected.images)
    assert batch.partner_index.tolist() == [1, 0, 3, 2]  # pair mates of the paired sampler
    random_cfg = load_preset("synthetic_pfcn_crop_ibs_random", smoke_overrides(cfg.data.root))
    random_batch = training_batch(random_cfg, step=2, dataset=dataset)
    assert (
        random_batch.partner_index.tolist()
        == assign_partners(4, "random", step_generator(cfg.seed, 0, 2)).tolist()
    )


def test_cross_crop_probabilities_are_sigmoid_of_embeddings_times_partner_features(cfg):
    dataset = open_split(cfg, "train")
    batch = training_batch(cfg, 0, dataset)
    model = initial_model(cfg, dataset.meta)
    with torch.no_grad():
        output = model(batch.images, batch.targets)
    probs = cross_crop_probabilities(output, batch.partner_index)
    layer = output.ibs_layers[-1]
    for b, p in enumerate(probs):
        e = output.thing_embeddings(layer, b)  # (T, C)
        f = output.features[int(batch.partner_index[b])]  # (C, h, w)
        assert p.shape == (e.shape[0], *f.shape[1:])
        manual = torch.sigmoid(torch.einsum("tc,chw->thw", e, f))
        torch.testing.assert_close(p, manual, rtol=1e-5, atol=1e-6)
    own = cross_crop_probabilities(output, torch.arange(len(batch)))
    e, f = output.thing_embeddings(layer, 3), output.features[3]
    torch.testing.assert_close(own[3], torch.sigmoid(torch.einsum("tc,chw->thw", e, f)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="feature_index must have shape \\(4,\\)"):
        cross_crop_probabilities(output, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="not an IBS layer"):
        cross_crop_probabilities(output, batch.partner_index, layer=5)


def test_cross_crop_activation_summary_by_hand():
    probs = [torch.tensor([[[0.2, 0.9]]]), torch.zeros((0, 1, 2)), torch.tensor([[[0.6, 0.1]], [[0.5, 0.7]]])]
    summary = cross_crop_activation(probs)
    assert summary["things"] == 3
    assert summary["mean"] == pytest.approx((0.2 + 0.9 + 0.6 + 0.1 + 0.5 + 0.7) / 6)
    assert summary["fired"] == pytest.approx(3 / 6)  # 0.9, 0.6, 0.7 (0.5 is not above)
    empty = cross_crop_activation([torch.zeros((0, 1, 2))])
    assert empty["things"] == 0 and math.isnan(empty["mean"])


def test_ibs_training_trace_records_probe_masks_before_and_after_steps(cfg):
    trace = ibs_training_trace(cfg, 3, record_every=2, progress=False)
    assert trace.steps == [0, 2, 3]
    assert set(trace.maps) == {"pair_mate", "random"} and set(trace.maps["pair_mate"]) == {0, 2, 3}
    assert trace.partners["pair_mate"].tolist() == [1, 0, 3, 2]
    assert "loss_ibs" not in trace.records[0] and "loss_ibs" in trace.records[1]
    for record in trace.records:
        assert 0.0 <= record["cross_mean_pair_mate"] <= 1.0
        assert 0.0 <= record["cross_fired_random"] <= 1.0
    # the initial model: E . F is close to 0, every mask near probability 0.5
    assert trace.records[0]["cross_mean_pair_mate"] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="steps and record_every must be >= 1"):
        ibs_training_trace(cfg, 0)
