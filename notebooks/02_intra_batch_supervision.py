# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Intra-Batch Supervision step by step
#
# IBS (paper Sec. 4, Fig. 4) multiplies the thing embeddings `E_i` of one crop with the
# features `F_tgt` of another crop of the same batch. The instances behind `E_i` are not in
# the other crop, so the masks `M_{i→tgt} = sigmoid(E_i · F_tgt)` should be empty; a focal
# loss against all-zero targets teaches the network exactly that. This notebook follows
# one real batch of the paired crop sampler through the steps:
#
# 1. the crops and their IBS partners;
# 2. the shapes of `E` and `F` the model returns (the `UnifiedOutput` contract);
# 3. the cross-crop masks for the pair mate (same class by construction) and for a random partner;
# 4. the IBS focal loss value, from `ibs_study.losses.ibs_loss`;
# 5. how the cross-crop masks shrink over a short training run, with and without IBS.

# %% tags=["parameters"]
smoke = False  # tiny dataset and a few steps: an end-to-end check in seconds
preset = "synthetic_pfcn_crop_ibs"  # Panoptic FCN with IBS and the paired crop sampler
data_root = None  # dataset root; None: the preset's (data/synthetic, generated when missing)
step = 0  # the training step whose batch is shown
crops_shown = 4  # source crops drawn in the mask figures
trace_steps = 60  # training steps of the with / without IBS comparison
record_every = 10  # measure the probe batch's cross-crop masks every this many steps
warmup_steps = 0  # learning-rate warm-up of the short runs (the preset warms up for longer)
out_dir = "runs/notebooks/02_intra_batch_supervision"  # figures and summary.json

# %%
# %matplotlib inline
import json
import os
from pathlib import Path

import torch

from ibs_study.config import load_preset
from ibs_study.engine.data import open_split
from ibs_study.engine.train import step_generator
from ibs_study.losses import assign_partners, ibs_loss, weighted_ibs_loss
from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.runs import notebook_overrides, project_root
from ibs_study.viz.figures import crops_figure, cross_crop_figure, ibs_trace_figure, save_figure
from ibs_study.study.walkthrough import (
    cross_crop_activation,
    cross_crop_probabilities,
    ibs_training_trace,
    initial_model,
    training_batch,
)

check_parameters(
    smoke=smoke, preset=preset, data_root=data_root, step=step, crops_shown=crops_shown,
    trace_steps=trace_steps, record_every=record_every, warmup_steps=warmup_steps, out_dir=out_dir,
)  # fmt: skip
os.chdir(project_root())
if smoke:
    torch.set_num_threads(1)
    trace_steps, record_every = 3, 1
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
overrides = notebook_overrides(smoke=smoke, out_dir=out, data_root=data_root, extra=[f"optimizer.warmup_steps={warmup_steps}"])
cfg = load_preset(preset, overrides)
dataset = open_split(cfg, cfg.data.train_split)
meta = dataset.meta
print(f"{cfg.name}: sampler {cfg.sampler.kind}, IBS partner {cfg.ibs.partner}, λ_IBS = {cfg.ibs.weight}")

# %% [markdown]
# ## 1. One training batch
#
# The paired sampler fills a batch with pairs `[A1, B1, A2, B2, ...]`: per pair a class is
# drawn, then two images holding it, and each crop is cut around one of its segments
# (things rescaled to a similar size). With `ibs.partner = pair_mate` crop `2k` meets crop
# `2k+1` and the reverse. White outlines mark the thing instances (the rows IBS uses).

# %%
batch = training_batch(cfg, step, dataset)
print(f"images {tuple(batch.images.shape)} (B, 3, H, W); partner index {batch.partner_index.tolist()}")
print("pair classes:", [meta.class_names[int(c)] for c in batch.pair_class])
figure = crops_figure(batch, meta)
save_figure(figure, out / "batch_crops")
figure

# %% [markdown]
# ## 2. Embeddings E and features F
#
# The model is freshly initialised (the start of a run with this config). In training mode
# it returns a `UnifiedOutput`: the pixel features `F` of every crop at stride 4, and per
# crop and prediction layer the embeddings `E_b`, of which the rows `thing_index` belong to
# ground-truth things (for Panoptic FCN: the kernels at the top-k centre positions of each thing).

# %%
model = initial_model(cfg, meta)
output = model(batch.images, batch.targets)
layer = output.ibs_layers[-1]
print(f"F: {tuple(output.features.shape)} (B, C, h, w); IBS layers {output.ibs_layers}")
for b in range(output.batch_size):
    print(
        f"crop {b}: E {tuple(output.embeddings[layer][b].shape)} (N_b, C), "
        f"thing rows {tuple(output.thing_embeddings(layer, b).shape)} for {batch.targets[b].num_things} GT things"
    )

# %% [markdown]
# ## 3. Cross-crop masks M_{i→tgt}
#
# Each source crop's thing embeddings meet three feature maps: their own crop (the normal
# masks, where they should fire on their instance), the pair mate, and a random other crop.
# Shown is the strongest mask over the crop's things, upsampled to the crop.

# %%
random_partner = assign_partners(len(batch), "random", step_generator(cfg.seed, 0, step))
partners = {"own crop": torch.arange(len(batch)), "pair mate": batch.partner_index, "random partner": random_partner}
maps = {title: cross_crop_probabilities(output, index) for title, index in partners.items()}
for title, probs in maps.items():
    summary = cross_crop_activation(probs)
    print(f"{title}: mean probability {summary['mean']:.3f}, {100 * summary['fired']:.1f}% of pixels above 0.5")
crops = list(range(min(crops_shown, len(batch))))
figure = cross_crop_figure(batch, maps, partners, crops)
save_figure(figure, out / "cross_crop_masks_initial")
figure

# %% [markdown]
# At initialisation `E · F` is close to 0 everywhere, so every mask sits near probability
# 0.5: the untrained network "confuses" everything. Training with the model's own losses
# teaches the masks on the crop's own features; IBS adds the other crops as negatives.

# %% [markdown]
# ## 4. The IBS focal loss
#
# `ibs_loss` computes, per IBS layer, the sigmoid focal loss (α = 0.25, γ = 2) of
# `E_i^th · F_tgt` against zeros, averaged over the partner's pixels, weighted per thing row
# (the weights of one thing sum to 1) and divided by the number of ground-truth things.
# `weighted_ibs_loss` multiplies by λ_IBS, as the training loop adds it to the total.

# %%
losses = {
    "pair mate": ibs_loss(output, batch.partner_index, cfg.ibs),
    "random partner": ibs_loss(output, random_partner, cfg.ibs),
}
for title, terms in losses.items():
    print(f"L_IBS with the {title}: {float(terms['loss_ibs']):.4f}")
added = weighted_ibs_loss(output, batch.partner_index, cfg.ibs)["loss_ibs"]
print(f"term added to the training loss (λ_IBS = {cfg.ibs.weight}): {float(added):.4f}")

# %% [markdown]
# ## 5. Training: do the cross-crop masks shrink?
#
# Two short in-process runs from the same initialisation on the same batches, one with IBS
# (the preset) and one without (`ibs.enabled=false`). After every few steps both predict a
# fixed probe batch and we measure how strongly the probe's thing embeddings fire on the
# features of the pair mate and of a random partner.

# %%
configs = {"with IBS": cfg, "without IBS": load_preset(preset, [*overrides, "ibs.enabled=false"])}
traces = {
    label: ibs_training_trace(c, trace_steps, record_every=record_every, dataset=dataset)
    for label, c in configs.items()
}
for label, trace in traces.items():
    first, last = trace.records[0], trace.records[-1]
    print(
        f"{label}: mean M (pair mate) {first['cross_mean_pair_mate']:.3f} at step 0 -> "
        f"{last['cross_mean_pair_mate']:.3f} at step {last['step']}; pixels above 0.5: "
        f"{100 * first['cross_fired_pair_mate']:.1f}% -> {100 * last['cross_fired_pair_mate']:.1f}%"
    )
figure = ibs_trace_figure(traces)
save_figure(figure, out / "ibs_trace")
figure

# %%
probe, partner = traces["with IBS"].probe, traces["with IBS"].partners["pair_mate"]
last_step = traces["with IBS"].steps[-1]
snapshots = {"step 0": traces["with IBS"].maps["pair_mate"][0]}
snapshots.update({f"{label}, step {last_step}": t.maps["pair_mate"][last_step] for label, t in traces.items()})
figure = cross_crop_figure(probe, snapshots, dict.fromkeys(snapshots, partner), crops)
save_figure(figure, out / "cross_crop_masks_trained")
figure

# %% [markdown]
# Read the printed lines and the curves together: both runs start from the same masks, and
# the model's own losses alone first push every mask down (most pixels of a crop are outside
# any one instance). As training teaches embeddings to fire on their instances, they start to
# fire on look-alike instances of other crops too, unless IBS supervises exactly those pixels,
# which the crop-only loss never sees. Over a few dozen CPU steps the difference is small and
# noisy; notebook 04 measures what IBS does to the confusion of fully trained models.

# %%
summary = {
    "config": cfg.name,
    "batch_size": len(batch),
    "features_shape": list(output.features.shape),
    "thing_rows": [int(output.thing_embeddings(layer, b).shape[0]) for b in range(len(batch))],
    "loss_ibs": {title: float(terms["loss_ibs"]) for title, terms in losses.items()},
    "traces": {label: trace.records for label, trace in traces.items()},
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"wrote {out / 'summary.json'} and the figures in {out}")
