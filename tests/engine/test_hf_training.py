"""transformers' models through the CLI: two training steps of every synthetic HF preset, and an
evaluation of designed model outputs whose COCO-panoptic files give the designed errors and
panopticapi's PQ."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

pytest.importorskip("transformers")

from transformers.image_transforms import get_size_with_aspect_ratio  # noqa: E402

from ibs_study.cli import main  # noqa: E402
from ibs_study.data.datasets import synthetic  # noqa: E402
from ibs_study.data.panoptic import check_segments_match_png, load_panoptic_json, read_id_png  # noqa: E402

PRESETS = (
    "synthetic_hf_m2f_crop",
    "synthetic_hf_m2f_crop_ibs",
    "synthetic_hf_eomt_crop",
    "synthetic_hf_eomt_crop_ibs",
)
TINY = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.log_every=1",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic"


def _train(preset: str, data_root: Path, run: Path) -> list[dict]:
    overrides = [arg for item in [f"data.root={data_root}", *TINY] for arg in ("--set", item)]
    assert main(["train", "--preset", preset, "--out", str(run), "--no-progress", *overrides]) == 0
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", PRESETS)
def test_two_steps_are_finite_and_log_the_ibs_term(preset, data_root, tmp_path):
    records = _train(preset, data_root, tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2]
    ibs = preset.endswith("_ibs")
    for record in records:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
        assert ("loss_ibs" in record) is ibs
        assert {"loss_mask", "loss_dice", "loss_cross_entropy", "loss_mask_0"} <= set(record)
        if ibs:
            assert record["loss_ibs"] > 0 and record["matched_things"] > 0


@pytest.fixture(scope="module")
def eval_data_root(tmp_path_factory) -> Path:
    """4 validation images of 56 x 100: Mask2Former pads them (56 and 100 are not multiples of
    32), EoMT resizes them to 72 x 128 before padding."""
    root = tmp_path_factory.mktemp("eval_data") / "synthetic"
    size = ["--height", "56", "--width", "100", "--num-train", "8", "--num-val", "4", "--workers", "1"]
    assert main(["synth", "--out", str(root), "--scale", "tiny", *size]) == 0
    return root


@pytest.fixture(scope="module")
def trained_run(eval_data_root, tmp_path_factory):
    """preset -> a run of two training steps on ``eval_data_root`` (trained once per module)."""
    runs: dict[str, Path] = {}

    def run_of(preset: str) -> Path:
        if preset not in runs:
            runs[preset] = tmp_path_factory.mktemp(preset) / "run"
            _train(preset, eval_data_root, runs[preset])
        return runs[preset]

    return run_of


KINDS = ("tp", "fp", "fn")
# contiguous label of a designed query's class: logit +10 (score 0.9996), every other class 0
CLASS_LOGIT = 10.0


def _designed_queries(sample, meta) -> tuple[list[int], np.ndarray, Counter]:
    """Queries that predict ``sample``'s ground truth with four deliberate errors.

    One query per GT segment (crowds included) with its class, except: the largest thing keeps
    only its top quarter of rows, the second largest has the next thing class, the third largest
    is missing, and an extra 8 x 8 square of the first thing class lies inside the largest stuff
    segment. The pixels the cut and the missing thing lose go to the largest stuff segment,
    which comes as two queries (the left and the right half of its columns) that the
    post-processing must fuse into one segment.

    Returns:
        contiguous labels (Q,), masks (Q, H, W) bool, and the counts PQ must find: ``("tp" | "fp" |
        "fn", category id)`` -> number of segments.
    """
    isthing = {c.id: c.isthing for c in meta.categories}
    thing_ids = [c.id for c in meta.categories if c.isthing]
    queries = {s.id: [s.category_id, sample.id_map == s.id] for s in sample.segments}
    things = sorted(
        (s for s in sample.segments if isthing[s.category_id] and not s.iscrowd),
        key=lambda s: (-s.area, s.id),
    )
    stuff = max((s for s in sample.segments if not isthing[s.category_id]), key=lambda s: (s.area, -s.id))
    cut, wrong, missing = things[:3]
    expected = Counter(("tp", s.category_id) for s in sample.segments if not s.iscrowd)
    expected.subtract(("tp", s.category_id) for s in (cut, wrong, missing))
    background = queries[stuff.id][1]

    mask = queries[cut.id][1]
    rows = np.flatnonzero(mask.any(1))
    lost = mask & (np.arange(mask.shape[0])[:, None] >= rows[0] + len(rows) // 4)
    mask &= ~lost
    background |= lost
    assert mask.sum() < 0.4 * cut.area  # IoU < 0.4 before resampling
    expected.update([("fp", cut.category_id), ("fn", cut.category_id)])

    other = thing_ids[(thing_ids.index(wrong.category_id) + 1) % len(thing_ids)]
    queries[wrong.id][0] = other
    expected.update([("fp", other), ("fn", wrong.category_id)])

    background |= queries.pop(missing.id)[1]
    expected["fn", missing.category_id] += 1

    inside = sliding_window_view(sample.id_map == stuff.id, (8, 8)).all(axis=(2, 3))
    y, x = np.argwhere(inside[::4, ::4])[0] * 4  # on a 4-pixel grid, as the mask logits
    square = np.zeros_like(background)
    square[y : y + 8, x : x + 8] = True
    background &= ~square
    queries[0] = [thing_ids[0], square]  # 0: no GT segment id
    expected["fp", thing_ids[0]] += 1

    columns = np.flatnonzero(background.any(0))
    right = background & (np.arange(background.shape[1]) >= columns[len(columns) // 2])
    background &= ~right
    queries[-1] = [stuff.category_id, right]  # -1: no GT segment id

    contiguous = meta.contiguous_of
    labels = [contiguous[category] for category, _ in queries.values()]
    return labels, np.stack([mask for _, mask in queries.values()]), expected


def _designed_forward(original, dataset, name: str, resolution: str, expected: list[Counter]):
    """A forward of the transformers model that returns, for the i-th call, the real outputs with
    the class and mask logits of :func:`_designed_queries` of ``dataset[i]`` (its counts appended
    to ``expected``). Mask logits are 20 (coverage - 0.5), the GT placed where the image lies in
    the input (top-left; resized to fit ``image_size`` for EoMT), at the model's own mask
    resolution (``"model"``, stride 4) or at the input's (``"input"``, where every segment of
    the tiny images survives the resampling)."""

    def forward(self, pixel_values, **kwargs):
        outputs = original(self, pixel_values=pixel_values, **kwargs)
        sample = dataset[len(expected)]
        labels, masks, counts = _designed_queries(sample, dataset.meta)
        expected.append(counts)
        coverage = torch.from_numpy(masks).float()[None]
        height, width = masks.shape[-2:]
        if name == "hf_eomt":
            side = self.config.image_size
            height, width = get_size_with_aspect_ratio((height, width), side, side)
            coverage = F.interpolate(coverage, size=(height, width), mode="bilinear", antialias=True)
        coverage = F.pad(coverage, (0, pixel_values.shape[-1] - width, 0, pixel_values.shape[-2] - height))
        size = outputs.masks_queries_logits.shape[-2:] if resolution == "model" else pixel_values.shape[-2:]
        coverage = F.interpolate(coverage, size=size, mode="area")
        classes = torch.zeros(1, len(labels), len(dataset.meta.categories) + 1)
        classes[0, torch.arange(len(labels)), labels] = CLASS_LOGIT
        outputs.masks_queries_logits = 20.0 * (coverage - 0.5)
        outputs.class_queries_logits = classes
        return outputs

    return forward


@pytest.mark.parametrize("resolution", ["model", "input"])
@pytest.mark.parametrize(
    ("preset", "name", "architecture"),
    [
        ("synthetic_hf_m2f_crop", "hf_mask2former", "Mask2FormerForUniversalSegmentation"),
        ("synthetic_hf_eomt_crop", "hf_eomt", "EomtForUniversalSegmentation"),
    ],
)
def test_evaluation_writes_coco_panoptic_with_panopticapis_pq(
    preset, name, architecture, resolution, trained_run, eval_data_root, tmp_path, monkeypatch
):
    """``ibs-study evaluate`` of a model whose transformers forward returns designed logits (the
    GT with four errors an image, :func:`_designed_queries`): the model's own post-processing
    and the conversion write valid COCO-panoptic files with the dataset's category ids and
    panopticapi's PQ / SQ / RQ (all, things, stuff, every class). At the input's mask resolution
    the TP / FP / FN of every class are the design's; at the model's (stride 4), where small and
    thin things vanish, every stuff class keeps its matches but one and the things at least half
    of theirs."""
    import transformers
    from panopticapi.evaluation import pq_compute

    run = trained_run(preset)
    dataset = synthetic(eval_data_root, "val")
    model_class = getattr(transformers, architecture)
    expected: list[Counter] = []
    designed = _designed_forward(model_class.forward, dataset, name, resolution, expected)
    monkeypatch.setattr(model_class, "forward", designed)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--out", str(out), "--no-progress"]) == 0
    assert len(expected) == len(dataset)

    ours = json.loads((out / "metrics.json").read_text())
    categories = {c.id: c for c in dataset.meta.categories}
    predictions = load_panoptic_json(out / "predictions.json")
    assert [r.image_id for r in predictions.records] == [r.image_id for r in dataset.records]
    for record in predictions.records:
        png = out / "predictions" / record.png_name
        check_segments_match_png(read_id_png(png), record.segments, png_path=png, image_id=record.image_id)
        assert {s.category_id for s in record.segments} <= set(categories)
    total = sum(expected, Counter())
    found = {(kind, c.id): ours["per_class"][c.name][kind] for c in categories.values() for kind in KINDS}
    if resolution == "input":
        assert found == {key: total[key] for key in found}
    else:  # at stride 4 small and thin things vanish; the stuff segments stay (a thin one may go)
        for category in categories.values():
            if not category.isthing:
                assert found["tp", category.id] >= total["tp", category.id] - 1, category.name
        thing_tp = [
            (found[key], total[key]) for key in found if key[0] == "tp" and categories[key[1]].isthing
        ]
        assert sum(f for f, _ in thing_tp) >= 0.5 * sum(t for _, t in thing_tp)
    assert 0.2 < ours["all"]["pq"] < 0.99

    gt_json = eval_data_root / "annotations" / "panoptic_val.json"
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(
            str(gt_json),
            str(out / "predictions.json"),
            str(eval_data_root / "panoptic_val"),
            str(out / "predictions"),
        )
    for key, ref_key in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert ours[key]["n"] == reference[ref_key]["n"]
        for metric in ("pq", "sq", "rq"):
            assert ours[key][metric] == pytest.approx(reference[ref_key][metric], abs=1e-9), (key, metric)
    for category in categories.values():
        for metric in ("pq", "sq", "rq"):
            assert ours["per_class"][category.name][metric] == pytest.approx(
                reference["per_class"][category.id][metric], abs=1e-9
            ), (category.name, metric)
