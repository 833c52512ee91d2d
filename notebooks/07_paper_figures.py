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
# # 07 · Regenerate every paper figure and table
#
# `ibs_study.study.paper_figures.build_all` turns the study's stored results
# (`synthetic_results.json`) into the analogues of the paper's tables and figures in
# `paper_figures/`: Tables 1-4 (Markdown and CSV, the paper's numbers in separate labelled
# columns), bar charts with 95 % intervals, the Fig. 5 confusion curves with bands over
# seeds, the sweeps, and, when the run directories are given, the figures that need
# predictions (Fig. 3 from the data; Figs. 6-12: crop vs crop + IBS on the most confused
# images and instances). `provenance.json` records what it was built from.
# The same as `make figures` / `ibs-study figures`. A smoke run builds from its own tiny study in
# the git-ignored `runs/notebooks/07_paper_figures`, never in `paper_figures/`.

# %% tags=["parameters"]
smoke = False  # make a tiny results file from 2 settings x 2 seeds of 3-step runs and build from it
results_json = "paper_figures/synthetic_results.json"  # the study's results
out_dir = None  # where the figures and tables go (None: paper_figures; smoke: runs/notebooks/07_paper_figures)
runs_root = None  # folder of the study's run directories (e.g. runs/study); None: no qualitative figures
top_k = 4  # images / predictions per qualitative figure

# %%
# %matplotlib inline
import json
import os
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.paper_figures import build_all
from ibs_study.study.runs import notebook_overrides, project_root, run_study
from ibs_study.study.results import load_results, save_results
from ibs_study.study.specs import study_rows

check_parameters(
    smoke=smoke, results_json=results_json, out_dir=out_dir, runs_root=runs_root, top_k=top_k,
)  # fmt: skip
os.chdir(project_root())
out_dir = out_dir or ("runs/notebooks/07_paper_figures" if smoke else "paper_figures")
if smoke:
    torch.set_num_threads(1)
    work = Path(out_dir) / "smoke_study"
    rows = [row for row in study_rows("cpu", ["pfcn"]) if row.setting in ("crop", "crop_ibs")]
    overrides = notebook_overrides(smoke=True, out_dir=work)
    results_json, runs_root, top_k = str(work / "synthetic_results.json"), str(work / "runs"), 1
    save_results(run_study(runs_root, rows, [0, 1], overrides=overrides, scale="tiny", parallel=0), results_json)
results = load_results(results_json)
print(f"{results_json}: scale {results.scale}, device {results.device}, commit {results.commit}")
for row in results.rows:
    print(f"  {row.key}: seeds {list(row.seeds)}, {row.steps} steps, metrics {sorted(row.metrics)}")
print(f"  sweeps: {sorted(results.sweeps or {})}")

# %% [markdown]
# ## Build

# %%
provenance = build_all(results_json, out_dir, runs_root, top_k=top_k)
print(f"{len(provenance['files'])} files in {out_dir}:")
for name in provenance["files"]:
    print(f"  {name}")
for what, why in provenance["skipped"].items():
    print(f"skipped {what}: {why}")

# %% [markdown]
# Anything listed as skipped was not drawn: a table without measured rows, or a qualitative
# figure without its run directories. Nothing is drawn from anything but stored results and
# real predictions.

# %% [markdown]
# ## A look at the outputs

# %%
for name in provenance["files"]:
    if name.startswith("table") and name.endswith(".md"):
        display(Markdown((Path(out_dir) / name).read_text()))

# %%
# the top-level figures and the first image of each qualitative folder
shown = [n for n in provenance["files"] if n.endswith(".png") and ("/" not in n or Path(n).name.startswith("01_"))]
for name in shown:
    print(name)
    display(Image(filename=str(Path(out_dir) / name)))

# %% [markdown]
# ## Provenance

# %%
print(json.dumps({k: v for k, v in provenance.items() if k not in ("files", "packages")}, indent=1))
