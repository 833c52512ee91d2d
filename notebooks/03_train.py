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
# # 03 · Train a preset and evaluate it on full images
#
# Runs `ibs_study.engine` on one preset: in this process on one device (CPU or one GPU), or
# as a `torchrun` subprocess with `nproc` processes (several GPUs). The loss curves are
# redrawn from the run's `log.jsonl` while it trains (the IBS term in its own panel); the
# trained model is then evaluated on the full validation images (PQ family, Acc^th,
# Prec^th, the confusion curve; AP for instance presets).
#
# ```bash
# papermill notebooks/03_train.ipynb out.ipynb -p preset synthetic_pfcn_crop_ibs -p max_steps 200
# papermill notebooks/03_train.ipynb out.ipynb -p preset synthetic_pfcn_crop_ibs -y "overrides: [ibs.weight=2, seed=1]"
# ```
#
# `overrides` is a list of `key=value` strings, as `ibs-study train --set` takes them (a list
# needs papermill's `-y`).

# %% tags=["parameters"]
smoke = False  # tiny dataset, 3 steps, 2 evaluation images: an end-to-end check in seconds
preset = "synthetic_pfcn_crop_ibs"  # any name of `ibs-study presets`
overrides = []  # extra config overrides (a list of strings, see above)
max_steps = None  # training steps (None: the preset's)
data_root = None  # dataset root (None: the preset's)
nproc = 1  # processes: 1 trains in this process; more launch torchrun (one per GPU)
out_dir = "runs/notebooks/03_train"  # parent folder of new run directories
run_dir = None  # the run directory; None: <out_dir>/<preset>_<date-time>. Give it to resume.
resume = False  # continue the run in run_dir from its newest checkpoint
poll_s = 5.0  # seconds between redraws of the live loss curves

# %%
# %matplotlib inline
import datetime as dt
import json
import os
from pathlib import Path

import torch
import yaml
from IPython.display import display

from ibs_study.config import config_to_dict, load_preset
from ibs_study.engine.data import open_split
from ibs_study.engine.evaluate import evaluate_run, format_metrics
from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.runs import launch_training, notebook_overrides, project_root, read_log
from ibs_study.viz.figures import (
    LiveFigure,
    confusion_curve_figure,
    crops_figure,
    loss_curves_figure,
    save_figure,
    series_from_metrics,
)
from ibs_study.study.walkthrough import training_batch

check_parameters(
    smoke=smoke, preset=preset, overrides=overrides, max_steps=max_steps, data_root=data_root,
    nproc=nproc, out_dir=out_dir, run_dir=run_dir, resume=resume, poll_s=poll_s,
)  # fmt: skip
os.chdir(project_root())
if smoke:
    torch.set_num_threads(1)
out = Path(out_dir)
run_dir = Path(run_dir) if run_dir else out / f"{preset}_{dt.datetime.now():%Y%m%d-%H%M%S}"
run_overrides = notebook_overrides(smoke=smoke, out_dir=out, data_root=data_root, steps=max_steps, extra=overrides)
cfg = load_preset(preset, run_overrides)
print(f"run directory: {run_dir}\noverrides: {run_overrides}")
settings = config_to_dict(cfg)
print(yaml.safe_dump({key: settings[key] for key in ("data", "sampler", "ibs", "train")}, sort_keys=False))

# %% [markdown]
# ## A first batch
#
# The crops of step 0 exactly as the training loop will draw them (thing instances outlined).

# %%
dataset = open_split(cfg, cfg.data.train_split)
batch = training_batch(cfg, 0, dataset)
crops_figure(batch, dataset.meta)

# %% [markdown]
# ## Training
#
# The figure below is redrawn every `poll_s` seconds from `log.jsonl` (every
# `train.log_every` steps a record with every loss term).

# %%
live = LiveFigure(loss_curves_figure)
launch_training(preset, run_dir, run_overrides, nproc=nproc, resume=resume, on_log=live, poll_s=poll_s)
log = read_log(run_dir)
last = {name: float(values[-1]) for name, values in log.items() if name.startswith("loss_")}
print(f"trained to step {int(log['step'][-1])}; last logged losses: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))
save_figure(loss_curves_figure(log, title=f"Training losses of {cfg.name}"), run_dir / "loss_curves")

# %% [markdown]
# The left panel holds the total and the model's own terms (Panoptic FCN: centre heatmaps,
# dice of the masks; Mask2Former: class, mask and dice terms of every decoder layer); the right
# panel the IBS term as it enters the total (λ_IBS · L_IBS), or the learning rate for runs
# without IBS. The IBS term is a focal loss on masks that should be empty, so it is small
# next to the mask losses and falls quickly once embeddings stop firing on other crops.

# %% [markdown]
# ## Evaluation on full images
#
# Inference runs on the full validation images (not crops): this is where confusion shows.

# %%
metrics = evaluate_run(run_dir)
print(format_metrics(metrics))

# %%
if "confusion_curve" in metrics:
    figure = confusion_curve_figure(series_from_metrics({cfg.name: metrics}), title=f"Confusion of {cfg.name}")
    save_figure(figure, run_dir / "confusion_curve")
    display(figure)

# %% [markdown]
# PQ averages over classes and segments; Acc^th and Prec^th count the thing pixels of
# predictions matched to a ground-truth instance (IoU > 0.5). The confusion curve gives,
# for each overlap threshold T, the share of predicted things covering more than T of two or
# more ground-truth things; notebook 04 compares these numbers across training settings and seeds.

# %%
summary = {
    "run_dir": str(run_dir),
    "preset": preset,
    "overrides": run_overrides,
    "steps": int(log["step"][-1]),
    "loss_terms": sorted(last),
    "metrics": {k: v for k, v in metrics.items() if k in ("all", "things", "stuff", "acc_th", "prec_th", "ap", "num_images")},
}
(run_dir / "notebook_summary.json").write_text(json.dumps(summary, indent=1))
print(f"wrote {run_dir / 'notebook_summary.json'}")
