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
# # 05 · Confusion explorer: look at individual predicted things
#
# Metrics say how much confusion there is; this notebook shows where. For one or two
# evaluated runs (by default crop training and crop + IBS, seed 0, as notebook 04 trains
# them; without those, the crop and crop + IBS runs of `make demo`), the `ConfusionExplorer` lets you pick a predicted thing segment (ranked by how
# confused it is, by clicking the panoptic image, or with the slider) and shows the ground-truth
# instances it covers with the covered fractions, and the other run's prediction on the same
# object side by side (the paper's Figs. 7, 9, 11), above the colour-coded panoptic images
# (Figs. 8, 10, 12).
#
# Widgets need a live kernel (JupyterLab, or `make explore` for a Voila app). So that an
# executed notebook (papermill) still carries its results, the most confused predictions are
# also written as static views: PNG files and one standalone HTML page.

# %% tags=["parameters"]
smoke = False  # make two tiny runs (crop, crop + IBS) and explore them: an end-to-end check
run_dirs = ["runs/study/pfcn_crop_s0", "runs/study/pfcn_crop_ibs_s0"]  # one or two evaluated runs (these absent: make demo's runs/demo/crop, runs/demo/crop_ibs)
labels = None  # their names in the explorer (None: the folder names)
split = "val"  # the evaluated split (RUN_DIR/eval_<split>)
threshold = 0.5  # initial confusion threshold T
top_k = 6  # predictions in the ranked lists and in the static export
state_path = None  # JSON file the explorer's first selection (explorer.state) is written to
out_dir = "runs/notebooks/05_confusion_explorer"  # static views (PNG + HTML)

# %%
# %matplotlib inline
import datetime as dt
import os
from pathlib import Path

import torch
from IPython.display import Image, display

from ibs_study.atomic import write_json_atomic
from ibs_study.study.grid import RunSpec, run_grid
from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.runs import project_root, smoke_overrides
from ibs_study.viz.explorer import ConfusionExplorer, explorer_run_dirs

check_parameters(
    smoke=smoke, run_dirs=run_dirs, labels=labels, split=split, threshold=threshold, top_k=top_k,
    state_path=state_path, out_dir=out_dir,
)  # fmt: skip
os.chdir(project_root())
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
if smoke:
    torch.set_num_threads(1)
    tiny = smoke_overrides(out / "data_tiny")
    specs = [RunSpec(name, f"synthetic_pfcn_{name}", tuple(tiny)) for name in ("crop", "crop_ibs")]
    run_grid(specs, out / "runs", parallel=0)
    run_dirs, labels, top_k = [str(out / "runs" / spec.name) for spec in specs], ["crop", "crop + IBS"], 2
run_dirs = explorer_run_dirs(run_dirs, split)
print(f"exploring {', '.join(str(d) for d in run_dirs)}")

# %% [markdown]
# ## The explorer
#
# Controls: the run, the threshold T, filters by class and size; the instance drop-down and
# slider go through the selected image's predicted things from most to least confused; the
# ranked lists jump to the most confused predictions and images of the whole split.

# %%
explorer = ConfusionExplorer.from_runs(run_dirs, labels, split=split, threshold=threshold, top_k=top_k)
explorer

# %%
state = explorer.state
if state_path is not None:
    write_json_atomic(state_path, state)
print(f"selected: {state['title']}")
if state["segment_id"] is not None:
    print(
        f"{state['category']} ({state['size']}): covers {len(state['covered_gt_ids'])} GT things by more than "
        f"T = {state['threshold']:.2f}: "
        + ", ".join(f"{label} ({100 * f:.0f}%)" for label, f in zip(state["covered_gt_labels"], state["covered_fractions"]))
    )

# %% [markdown]
# ## Most confused images of each run

# %%
for index, run in enumerate(explorer.data.runs):
    ranked = explorer.data.ranked_images(index, threshold)[:top_k]
    print(f"{run.label}:")
    for entry in ranked:
        print(
            f"  {entry['image_id']}: {entry['num_confused']} of {entry['num_predictions']} predicted things "
            f"confused at T = {threshold:.2f}, {entry['confused_area']} px"
        )

# %% [markdown]
# ## Static views of the most confused predictions
#
# Written for every run: per prediction a PNG (instance view with the covered GT outlines and
# fractions, the other run's counterpart, and the panoptic images), and one HTML page with the
# explorer's figures of each (instance views, covered-fraction bars) and its table.

# %%
static_dir = out / f"static_{dt.datetime.now():%Y%m%d-%H%M%S}"
written = [path for run in range(len(explorer.data.runs)) for path in explorer.export_static(static_dir, top_k, run=run)]
for path in written:
    print(path)
pngs = [path for path in written if path.suffix == ".png"]
if pngs:
    display(Image(filename=str(pngs[0])))

# %% [markdown]
# In a confused prediction one segment (one colour, one label in the panoptic image) spreads
# over several instances of its class, and the bars show two or more covered fractions above
# T. Where the other run's counterpart covers a single instance, that run separated what this
# one merged: compare the crop run with the crop + IBS run on the same images.
