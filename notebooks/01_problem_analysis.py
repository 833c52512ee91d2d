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
# # 01 · Problem analysis: why crop-based training confuses instances
#
# Unified panoptic networks predict every mask as the product of a per-segment embedding
# `E` and per-pixel features `F` (paper Sec. 3.1). Trained on crops, they only learn to
# tell apart the instances that share a crop, but at test time they see full images with
# many more (Fig. 3). This notebook measures that gap on the synthetic street scenes and
# shows why the Panoptic Quality hardly notices the resulting confusion while the thing
# pixel accuracy and precision do (Sec. 3.3):
#
# 1. a look at one image and its ground truth;
# 2. thing instances per full image vs per training crop (Fig. 3 as histograms);
# 3. segment sizes: how thing segments and thing pixels split over S / M / L;
# 4. how often an IBS pair of crops shares a thing class, random vs paired crops (Sec. 4.2);
# 5. a worked example built from the ground truth: one prediction that merges the largest
#    instances of a class, scored with the real evaluator.

# %% tags=["parameters"]
smoke = False  # tiny dataset, few images and batches: an end-to-end check in seconds
preset = "synthetic_pfcn_crop_ibs"  # the training settings whose crops and sampler are analysed
data_root = None  # dataset root; None: the preset's (data/synthetic, generated when missing)
split = "val"  # split for the counts, sizes and the worked example
crops_per_image = 8  # random crops drawn per image
max_images = None  # only the first N images (None: all)
sampler_batches = 40  # training batches drawn per sampler for the shared-class statistic
example_index = 0  # image of the worked example
merge_counts = [1, 2, 3, 4, 5, 6]  # instances merged into one predicted segment
out_dir = "runs/notebooks/01_problem_analysis"  # figures and summary.json (relative: to the repository root)

# %%
# %matplotlib inline
import json
import os
from pathlib import Path

import torch

from ibs_study.study.analysis import (
    instance_counts,
    merge_instances,
    merge_sweep,
    segment_sizes,
    shared_class_fractions,
    size_shares,
)
from ibs_study.config import load_preset
from ibs_study.engine.data import open_split
from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.figures import shared_class_figure
from ibs_study.study.runs import notebook_overrides, project_root
from ibs_study.viz.figures import instance_count_figure, merge_sweep_figure, save_figure, segment_size_figure
from ibs_study.viz.panoptic import PanopticView, side_by_side

check_parameters(
    smoke=smoke, preset=preset, data_root=data_root, split=split, crops_per_image=crops_per_image,
    max_images=max_images, sampler_batches=sampler_batches, example_index=example_index,
    merge_counts=merge_counts, out_dir=out_dir,
)  # fmt: skip
os.chdir(project_root())
if smoke:
    torch.set_num_threads(1)
    max_images, sampler_batches, merge_counts = 4, 4, [1, 2, 3]
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
cfg = load_preset(preset, notebook_overrides(smoke=smoke, out_dir=out, data_root=data_root))
dataset = open_split(cfg, split)
categories = dataset.meta.by_id()
print(f"{dataset}: {len(dataset)} images; training crops {cfg.data.crop_size} (H, W)")

# %% [markdown]
# ## 1. One image and its ground truth
#
# Every segment has its own colour and label; thing instances of one class share a shape
# and a colour in the image, so only their position and context tell them apart.

# %%
sample = dataset[example_index]
side_by_side(sample.image, [PanopticView("ground truth", sample.id_map, sample.segments)], categories)

# %% [markdown]
# ## 2. Instances per full image vs per training crop (Fig. 3)
#
# A thing counts for a crop when one of its pixels lies in it; crowd regions are not instances.

# %%
counts = instance_counts(dataset, cfg.data.crop_size, crops_per_image=crops_per_image, max_images=max_images)
print(
    f"thing instances: {counts.per_image.mean():.1f} per full image, {counts.per_crop.mean():.1f} per "
    f"{counts.crop_size[0]}x{counts.crop_size[1]} crop ({counts.ratio:.2f}x fewer); of the most frequent "
    f"class {counts.per_image_one_class.mean():.1f} per image, {counts.per_crop_one_class.mean():.1f} per crop"
)
figure = instance_count_figure(counts)
save_figure(figure, out / "fig3_instances_per_image_vs_crop")
figure

# %% [markdown]
# During training the mask product only has to separate the instances of one crop: the red
# histogram. At test time it must separate those of a whole image: the blue one. The printed
# ratio is the factor between the two means. The right panel counts the most frequent class
# only, which is where confusion happens (same class, same look). The ratio depends on the
# share of the image a crop covers (an eighth at the CPU scale, a quarter at the paper scale, as
# 512x1024 crops of 1024x2048 Cityscapes images); notebook 04's crop-size sweep varies it.

# %% [markdown]
# ## 3. Segment sizes: what PQ counts and what Acc^th counts

# %%
sizes = segment_sizes(dataset, max_images=max_images)
shares = size_shares(sizes)
for name, share in shares.items():
    print(
        f"{name}: {share['count']:4d} thing segments = {100 * share['segments']:5.1f}% of the segments, "
        f"{100 * share['pixels']:5.1f}% of the thing pixels"
    )
figure = segment_size_figure(sizes, shares)
save_figure(figure, out / "segment_sizes")
figure

# %% [markdown]
# PQ averages over classes and counts every segment once, whatever its size; the pixel
# accuracy and precision count pixels. The printed shares show the imbalance: a small share
# of the thing segments (the large, near ones) holds a large share of the thing pixels. These
# large instances are also the ones a crop holds whole least often (Sec. 3.2), so confusion
# hits them most, and PQ weighs them least.

# %% [markdown]
# ## 4. Do the two crops of an IBS pair share a thing class? (Sec. 4.2)
#
# IBS only teaches something when the embeddings of one crop could fire on the other crop,
# which mostly happens for instances of the same class. Random crops with a random partner
# (Table 3, "IBS, random") against the class-aware paired sampler with its pair mate.

# %%
fractions = shared_class_fractions(cfg, batches=sampler_batches)
for label, values in fractions.items():
    print(f"{label}: {100 * values.mean():.1f}% of the pairs share a thing class ({len(values)} batches)")
figure = shared_class_figure(fractions)
save_figure(figure, out / "sampler_shared_class")
figure

# %% [markdown]
# The paired sampler draws a class first and builds both crops around a segment of it, so a
# pair shares a thing class by construction whenever that class is a thing class (stuff-class
# pairs share one only by chance). With random crops the printed share depends on how many
# thing classes a crop holds: in dense synthetic scenes most crops hold cars, so the gap
# between the two samplers is smaller than on Cityscapes or Vistas with many more classes.

# %% [markdown]
# ## 5. Worked example: why PQ barely moves while Acc^th / Prec^th drop
#
# Start from a perfect prediction (the ground truth itself) and let one predicted segment
# cover the `k` largest instances of one thing class, the failure of Fig. 2. Each
# prediction is scored with the evaluator used for every run.

# %%
outcomes = merge_sweep(sample, categories, merge_counts)
for outcome in outcomes:
    row = outcome.row()
    print(
        f"k={row['num_merged']} {row['category']} instances merged ({row['merged_area']:5d} px): "
        f"PQ {100 * row['pq']:5.1f}  PQ^th {100 * row['pq_th']:5.1f}  "
        f"Acc^th {100 * row['acc_th']:5.1f}  Prec^th {100 * row['prec_th']:5.1f}"
    )
figure = merge_sweep_figure(outcomes)
save_figure(figure, out / "merge_worked_example")
figure

# %%
prediction, predicted_segments, merged_ids = merge_instances(sample, categories, max(merge_counts))
side_by_side(
    sample.image,
    [
        PanopticView("ground truth", sample.id_map, sample.segments),
        PanopticView(f"{len(merged_ids)} instances merged into one prediction", prediction, predicted_segments),
    ],
    categories,
)

# %% [markdown]
# The merged segment keeps at most one true positive (when it overlaps its largest
# instance by IoU > 0.5); the other instances become false negatives. PQ changes by a few
# matches among the many segments and classes it averages over, so it drops only a little;
# Acc^th and Prec^th lose every pixel of the missed instances, which are the largest ones,
# so they drop much more. That is the pattern of Table 1: crop training can raise PQ while
# lowering Acc^th and Prec^th.

# %%
summary = {
    "dataset": str(dataset),
    "crop_size": list(counts.crop_size),
    "things_per_image_mean": float(counts.per_image.mean()),
    "things_per_crop_mean": float(counts.per_crop.mean()),
    "image_to_crop_ratio": counts.ratio,
    "size_shares": shares,
    "shared_thing_class": {label: float(values.mean()) for label, values in fractions.items()},
    "merge_example": [outcome.row() for outcome in outcomes],
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"wrote {out / 'summary.json'} and the figures in {out}")
