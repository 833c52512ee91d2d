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
# # 04 · Ablations: full / crop / crop + IBS (random) / crop + IBS (paired), λ and crop size
#
# The synthetic analogues of the paper's Table 1 (full-image vs crop training) and Table 3
# (the IBS components), with several seeds per row: every number is a mean with a 95 %
# confidence interval (Student t over seeds), and every difference between two settings is
# paired by seed. Then two sweeps: the IBS weight λ_IBS and the crop size.
#
# Runs are trained and evaluated by `ibs_study.study.grid.run_grid` (parallel single-thread
# subprocesses); finished runs in `root` are only read, so re-running the notebook after an
# interruption continues where it stopped. `collect_only=True` reads existing runs and trains nothing.

# %% tags=["parameters"]
smoke = False  # tiny dataset, 2 seeds, 3 steps, two settings: an end-to-end check in seconds
scale = "cpu"  # cpu: synthetic_* presets (256x512); paper: synthetic_gpu_* (1024x2048, one GPU)
models = ["pfcn"]  # pfcn (Tables 1 and 3); add m2f / m2f_instance for Tables 2 and 4
settings = None  # rows to run (None: all of the models), e.g. a list of crop and crop_ibs
seeds = [0, 1, 2]  # seeds of every row
steps = None  # training steps per run (None: the presets')
data_root = None  # dataset root (None: the presets')
overrides = []  # extra overrides of every run, rows and sweeps, as --set takes them (e.g. ibs.weight at 0.25)
lambdas = [0.25, 1.0, 4.0, 16.0]  # λ_IBS values of the sweep (crop + IBS, paired sampler; empty: none)
crop_sizes = [[64, 128], [128, 256], [192, 384]]  # (H, W) values of the crop-size sweep (crop training; empty: none)
m2f_lambdas = []  # λ_IBS values of a Mask2Former sweep (crop + IBS, paired; needs m2f in models; empty: none)
sweep_seed = 0  # seed of the sweep runs
score_thresholds = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4]  # Panoptic FCN thing score thresholds of the operating curves (empty: none)
root = "runs/study"  # folder of all run directories
collect_only = False  # only read finished runs (an error names a missing one)
parallel = 2  # runs trained side by side (0: one after the other in this process)
threads = 1  # torch threads per run
out_dir = "runs/notebooks/04_ablations"  # figures, tables and synthetic_results.json

# %%
# %matplotlib inline
import os
from pathlib import Path

import torch
from IPython.display import Markdown, display

from ibs_study.study.analysis import setting_differences
from ibs_study.study.figures import (
    confusion_chart,
    measured_tables,
    metric_bars_chart,
    operating_curve_figure,
    study_sweep_chart,
)
from ibs_study.study.notebook_parameters import check_parameters
from ibs_study.study.operating import PFCN_SCORE_THRESHOLD, collect_operating_curves
from ibs_study.study.runs import notebook_overrides, project_root, run_study
from ibs_study.study.results import (
    claims_table,
    reproduction_checks,
    results_table,
    save_results,
    study_rows,
    sweep_specs,
)
from ibs_study.viz.chart import render_matplotlib
from ibs_study.viz.figures import save_figure

check_parameters(
    smoke=smoke, scale=scale, models=models, settings=settings, seeds=seeds, steps=steps,
    data_root=data_root, overrides=overrides, lambdas=lambdas, crop_sizes=crop_sizes,
    m2f_lambdas=m2f_lambdas, sweep_seed=sweep_seed, score_thresholds=score_thresholds, root=root,
    collect_only=collect_only, parallel=parallel, threads=threads, out_dir=out_dir,
)  # fmt: skip
os.chdir(project_root())
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
if smoke:
    torch.set_num_threads(1)
    settings, seeds, lambdas, crop_sizes, parallel = ["crop", "crop_ibs"], [0, 1], [0.5, 2.0], [[32, 64], [48, 96]], 0
    root = str(out / "runs")
overrides = notebook_overrides(smoke=smoke, out_dir=out, data_root=data_root, steps=steps, extra=overrides)
rows = [row for row in study_rows(scale, models) if settings is None or row.setting in settings]
prefix = "synthetic" if scale == "cpu" else "synthetic_gpu"
sweeps = {
    "lambda": sweep_specs(f"{prefix}_pfcn_crop_ibs", "ibs.weight", lambdas, seed=sweep_seed, steps=steps, overrides=overrides),
    "crop_size": sweep_specs(f"{prefix}_pfcn_crop", "data.crop_size", crop_sizes, seed=sweep_seed, steps=steps, overrides=overrides),
}
if m2f_lambdas and "m2f" in models:
    sweeps["m2f_lambda"] = sweep_specs(f"{prefix}_m2f_crop_ibs", "ibs.weight", m2f_lambdas, seed=sweep_seed, steps=steps, overrides=overrides)

# %%
for row in rows:
    print(f"{row.key:28s} preset {row.preset}, seeds {seeds}")
print(f"sweeps: {', '.join(f'{name} ({len(specs)} runs)' for name, specs in sweeps.items())}; runs in {root}")

# %% [markdown]
# ## Run (or collect) the grid

# %%
results = run_study(
    root, rows, seeds, steps=steps, overrides=overrides, sweeps=sweeps, scale=scale,
    parallel=parallel, threads=threads, train=not collect_only,
)  # fmt: skip
save_results(results, out / "synthetic_results.json")
print(f"{len(results['rows'])} rows x {len(seeds)} seeds collected into {out / 'synthetic_results.json'}")

# %% [markdown]
# ## Table 1 and Table 3 analogues
#
# Measured: mean ± half-width of the 95 % interval over the seeds, in percent. The columns
# headed "paper" are the published numbers on real data (Cityscapes / Mapillary Vistas,
# ResNet-50 on GPUs), shown for orientation only: the synthetic benchmark is smaller and
# easier, so only the direction of the differences is comparable, not the values.

# %%
tables = measured_tables(results)  # the tables with a measured row
for number in tables:
    (out / f"table{number}.md").write_text(results_table(results, number))
    display(Markdown(results_table(results, number)))

# %%
for number in tables:
    figure = render_matplotlib(metric_bars_chart(results, number))
    save_figure(figure, out / f"bars_table{number}")
    display(figure)

# %% [markdown]
# Bars are means, whiskers the 95 % intervals, dots the single seeds. With three seeds an
# interval is wide (the t quantile is 4.3): differences smaller than the whiskers are not
# established by this grid, whatever the means say.

# %% [markdown]
# ## Differences paired by seed
#
# `other − baseline` for each seed, then mean and 95 % interval over seeds. An interval that
# excludes 0 means every seed pair points the same way, strongly enough.

# %%
comparisons = [("full", "crop"), ("crop", "crop_ibs_random"), ("crop", "crop_ibs"), ("crop_ibs_random", "crop_ibs")]
present = {(r.model, r.setting) for r in rows}
for model in models:
    for baseline, other in comparisons:
        if {(model, baseline), (model, other)} <= present:
            diff = setting_differences(results, model, baseline, other)
            cells = [f"{name} {100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" for name, d in diff.items()]
            print(f"{model}: {other} − {baseline}: " + "; ".join(cells))

# %%
for model in models:
    if reproduction_checks(results, model):
        display(Markdown(f"**The paper's claims on {model}**\n\n" + claims_table(results, model)))

# %% [markdown]
# The paper's pattern is: crop training raises PQ but lowers Prec^th against full-image
# training (Table 1); IBS raises Acc^th and Prec^th against crop training, more with the
# paired sampler (Table 3). Compare the printed intervals with it row by row; a sign that
# differs or an interval across 0 is a result of this benchmark too.

# %% [markdown]
# ## Confusion curves (Fig. 5 analogue)

# %%
for model in models:
    chart = confusion_chart(results, model)  # None: the model's rows have no curve (instance rows)
    if chart is not None:
        figure = render_matplotlib(chart)
        save_figure(figure, out / f"fig5_confusion_{model}")
        display(figure)

# %% [markdown]
# Each curve gives, for an overlap threshold T, the share of predicted thing segments that
# cover more than T of the area of two or more ground-truth things; lower is better. Bands
# are the 95 % intervals over seeds at each T. Confusion of large segments shows at high T.
#
# These curves count the segments the model *predicts*, so they also move with how many
# things its detector finds and how large it draws them. Table 5 and the oracle curves below
# leave detection out: every ground-truth thing gets the mask of its own embeddings (the
# kernels at its centre, or the queries matched to it), and we measure how much of that mask
# lies on other instances (leak) and how often it covers two of them (`ibs_study.study.oracle`).

# %%
for model in models:
    chart = confusion_chart(results, model, "oracle_confusion_curve")
    if chart is not None:
        figure = render_matplotlib(chart)
        save_figure(figure, out / f"fig5_oracle_{model}")
        display(figure)

# %% [markdown]
# ## Operating curves: is a change in Acc^th / Prec^th only a change of scores?
#
# Panoptic FCN pastes a thing only if its score reaches a threshold (0.2, the official value).
# A training change that merely lowers the scores trades Acc^th for Prec^th along the same
# curve; one that separates instances better lifts the curve. Each trained run is evaluated
# again at every threshold below (`ibs_study.study.operating`; each point a full evaluation in
# `RUN_DIR/eval_val_operating/`, reused when present), and the curves are averaged over seeds.

# %%
pfcn_rows = [row for row in rows if row.model == "pfcn"]
if score_thresholds and pfcn_rows:
    curves = collect_operating_curves(root, pfcn_rows, seeds, PFCN_SCORE_THRESHOLD, score_thresholds)
    save_results(curves, out / "operating_curves_pfcn.json")
    figure = operating_curve_figure(curves)
    save_figure(figure, out / "operating_curve_pfcn")
    display(figure)

# %% [markdown]
# Read the curves at equal Acc^th: a row whose curve lies above another's gives more precise
# thing pixels for the same share of thing pixels found, whatever threshold it was evaluated at.

# %% [markdown]
# ## Sweeps: λ_IBS and the crop size

# %%
for name, entries in results["sweeps"].items():
    if not entries:  # a sweep given no values
        continue
    # dashed: the crop row (λ) or the full-image row (crop size) at the sweep's seed
    figure = render_matplotlib(study_sweep_chart(results, name))
    save_figure(figure, out / f"sweep_{name}")
    display(figure)
    for entry in entries:
        print(f"{name}={entry['value']}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in entry["metrics"].items()))

# %% [markdown]
# The sweeps use one seed per value, so read them against the seed spread of the tables
# above. The paper reports Panoptic FCN robust to λ_IBS in [0.5, 5]; a smaller crop (a
# smaller share of the image) means fewer instances per crop and, by the analysis of
# notebook 01, more confusion at full-image inference.
