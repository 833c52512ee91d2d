"""transformers' Mask2Former and EoMT behind UnifiedOutput: E·F, the IBS oracle, gradients,
thing queries, configurations and the panoptic prediction."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from ibs_study.config import ConfigError, load_preset  # noqa: E402
from ibs_study.errors import CheckpointError  # noqa: E402
from ibs_study.losses import IBSConfig, ibs_loss, weighted_ibs_loss  # noqa: E402
from ibs_study.models.build import build_model  # noqa: E402
from ibs_study.models.hf import HF_MODELS, HFConfig, hf_config  # noqa: E402


def _test_module(name: str):
    """A sibling test module (tests are not a package: ``--import-mode=importlib``)."""
    path = Path(__file__).parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_reused_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ORACLE = _test_module("test_ibs_loss")  # reference_ibs: the IBS loss in explicit loops
TOY = _test_module("models/test_mask2former")  # META (label 0 is a thing), toy_crop, batch_of
META = TOY.META
NAMES = sorted(HF_MODELS)


def _model(name: str, seed: int = 0, **cfg: object):
    torch.manual_seed(seed)
    return HF_MODELS[name](HFConfig(**cfg), META)


def _batch(seeds=(0, 1)):
    return TOY.batch_of([TOY.toy_crop(seed, 64, 128) for seed in seeds])


def _criterion_inputs(model) -> list[dict]:
    """Records the keyword arguments of every call of the model's transformers loss."""
    calls: list[dict] = []
    model.hf.criterion.register_forward_pre_hook(
        lambda _m, _a, kwargs: calls.append(kwargs), with_kwargs=True
    )
    return calls


def _masks_per_prediction(calls: list[dict]) -> list[torch.Tensor]:
    """(B, Q, h, w) mask logits of every prediction, first to final, as the loss received them."""
    if len(calls) == 1:  # Mask2Former: the final prediction, the others as auxiliary predictions
        aux = [a["masks_queries_logits"] for a in calls[0]["auxiliary_predictions"]]
        return [*aux, calls[0]["masks_queries_logits"]]
    return [c["masks_queries_logits"] for c in calls]  # EoMT: one call per prediction


@pytest.mark.parametrize("name", NAMES)
def test_mask_logits_are_embeddings_times_features(name):
    """E · F of every prediction equals the mask logits the model's own loss received."""
    model = _model(name)
    calls = _criterion_inputs(model)
    out = model(*_batch())
    masks = _masks_per_prediction(calls)
    assert len(masks) == len(out.embeddings) == {"hf_mask2former": 4, "hf_eomt": 3}[name]
    assert out.ibs_layers == tuple(range(1, len(masks)))
    assert (out.layer_features is None) is (name == "hf_mask2former")
    for layer, logits in enumerate(masks):
        features = out.features_of(layer)
        for crop in range(out.batch_size):
            recomputed = torch.einsum("qc,chw->qhw", out.embeddings[layer][crop], features[crop])
            torch.testing.assert_close(recomputed, logits[crop], rtol=1e-5, atol=1e-5)
    if name == "hf_eomt":  # each block's own features, not the final ones
        assert not torch.allclose(out.layer_features[0], out.layer_features[-1])


@pytest.mark.parametrize("name", NAMES)
def test_thing_rows_are_the_queries_matched_to_things(name):
    """Per prediction and crop, one query per ground-truth thing, distinct; stuff-matched queries excluded."""
    model = _model(name)
    calls: list = []
    model.hf.criterion.matcher.register_forward_hook(lambda _m, _a, output: calls.append(output))
    images, targets = _batch()
    out = model(images, targets)
    assert len(calls) == len(out.thing_index)
    for layer in out.thing_index:
        for crop, rows in enumerate(layer):
            assert len(rows) == targets[crop].num_things > 0
            assert len(set(rows.tolist())) == len(rows)
    # the final prediction's rows are exactly the matcher's queries of thing targets
    final = calls[0] if name == "hf_mask2former" else calls[-1]
    for crop, (queries, target_index) in enumerate(final):
        things = queries[targets[crop].is_thing[target_index]]
        assert sorted(out.thing_index[-1][crop].tolist()) == sorted(things.tolist())
    assert out.stats["matched_things"] == sum(t.num_things for t in targets)


@pytest.mark.parametrize("name", NAMES)
def test_ibs_loss_equals_the_loop_oracle(name):
    out = _model(name)(*_batch())
    partner = torch.tensor([1, 0])
    terms = ibs_loss(out, partner, IBSConfig(partner="pair_mate"))
    embeddings = [[e.tolist() for e in layer] for layer in out.embeddings]
    thing_index = [[i.tolist() for i in layer] for layer in out.thing_index]
    thing_weights = [[w.tolist() for w in layer] for layer in out.thing_weights]
    for layer in out.ibs_layers:
        expected = ORACLE.reference_ibs(
            out.features_of(layer).tolist(), embeddings, thing_index, thing_weights, (layer,), {layer: [1, 0]}
        )[layer]
        assert terms[f"ibs_layer{layer}"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["loss_ibs"].item() == pytest.approx(
        sum(terms[f"ibs_layer{layer}"].item() for layer in out.ibs_layers)
    )


@pytest.mark.parametrize("name", NAMES)
def test_zero_ibs_weight_gives_the_plain_models_gradients(name):
    """The adapter's losses are transformers' loss: with lambda = 0 its gradients are the plain model's."""
    model = _model(name)
    plain = copy.deepcopy(model.hf)
    images, targets = _batch()
    torch.manual_seed(5)  # the matcher's and the loss's random points
    out = model(images, targets)
    ibs = weighted_ibs_loss(
        out, torch.tensor([1, 0]), IBSConfig(enabled=True, weight=0.0, partner="pair_mate")
    )
    (sum(out.losses.values()) + ibs["loss_ibs"]).backward()

    size = model.input_size(*images.shape[-2:])
    pad = (0, size[1] - images.shape[-1], 0, size[0] - images.shape[-2])
    torch.manual_seed(5)
    loss = plain(
        pixel_values=model.normalise(images, size),
        mask_labels=[torch.nn.functional.pad(t.masks.float(), pad) for t in targets],
        class_labels=[t.labels for t in targets],
    ).loss
    loss.backward()
    assert sum(out.losses.values()).item() == pytest.approx(loss.item(), rel=1e-6)
    compared = 0
    for (key, theirs), ours in zip(plain.named_parameters(), model.hf.parameters()):
        if theirs.grad is None:
            assert ours.grad is None or not ours.grad.any(), key
            continue
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7, msg=key)
        compared += int(theirs.grad.any())
    assert compared > 10


def test_config_mapping_folder_and_pretrained_folder(tmp_path):
    """model.hf.config as overrides of the tiny configuration or as a config.json; model.hf.pretrained
    as a local folder (weights restored, class head sized to the dataset)."""
    model = _model("hf_eomt", config={"num_queries": 5})
    assert model.hf.query.weight.shape[0] == 5 and model.hf.config.num_labels == META.num_classes
    saved = tmp_path / "eomt"
    model.hf.save_pretrained(saved)
    from_file = HF_MODELS["hf_eomt"](HFConfig(config=str(saved / "config.json")), META)
    assert from_file.hf.config.num_queries == 5
    loaded = HF_MODELS["hf_eomt"](HFConfig(pretrained=str(saved)), META)
    torch.testing.assert_close(loaded.hf.query.weight, model.hf.query.weight)
    with pytest.raises(
        ConfigError, match=r"model\.hf\.config: EomtConfig has no field\(s\) \['no_such_field'\]"
    ):
        hf_config("hf_eomt", HFConfig(config={"no_such_field": 1}), META)


def test_unreadable_pretrained_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(CheckpointError, match=r"^model\.hf\.pretrained='.*missing': no Eomt\w+ there") as err:
        HF_MODELS["hf_eomt"](HFConfig(pretrained=str(tmp_path / "missing")), META)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"model\.hf\.object_mask_threshold=1.5 must lie in \[0, 1\]"):
        HFConfig(object_mask_threshold=1.5)


def test_cityscapes_preset_records_the_pretrained_model():
    cfg = load_preset("cityscapes_hf_m2f_crop_ibs")
    assert cfg.model.name == "hf_mask2former" and cfg.ibs.enabled and cfg.ibs.weight == 50.0
    assert cfg.model.hf.pretrained == "facebook/mask2former-swin-tiny-cityscapes-panoptic"
    assert (
        cfg.data.crop_size == (512, 1024) and cfg.ibs.partner == "random_per_layer" and cfg.ibs.point_sampling
    )


def test_eomt_crop_larger_than_its_input_is_a_config_error():
    model = _model("hf_eomt")
    images, targets = TOY.batch_of([TOY.toy_crop(0, 64, 160)])
    with pytest.raises(ConfigError, match=r"set data.crop_size to at most \[128, 128\]"):
        model(images, targets)


@pytest.mark.parametrize("name", NAMES)
def test_panoptic_prediction_from_the_models_post_processing(name):
    """Every query kept (thresholds 0): segments cover their pixels, carry dataset ids and
    scores, and each stuff class is one segment."""
    model = build_model(
        load_preset(f"synthetic_hf_{'m2f' if name == 'hf_mask2former' else 'eomt'}_crop").model, META
    )
    model.cfg.object_mask_threshold = 0.0
    model.cfg.overlap_threshold = 0.0
    model.cfg.mask_threshold = 0.0
    model.eval()
    image = torch.from_numpy(TOY.toy_crop(3, 72, 100).image).permute(2, 0, 1).contiguous()
    prediction = model.predict_panoptic(image, image_id=3)
    assert prediction.id_map.shape == (72, 100) and prediction.image_id == 3
    ids = sorted(s.id for s in prediction.segments)
    assert ids and ids == list(range(1, len(ids) + 1))
    assert set(np.unique(prediction.id_map).tolist()) - {0} == set(ids)
    categories = {c.id: c for c in META.categories}
    stuff = [s.category_id for s in prediction.segments if not categories[s.category_id].isthing]
    assert len(stuff) == len(set(stuff))
    for segment in prediction.segments:
        assert segment.area == int((prediction.id_map == segment.id).sum()) > 0
        assert 0.0 < segment.score <= 1.0
