"""Every figure and table of the paper, regenerated from stored results into ``paper_figures/``.

:func:`build_all` reads ``synthetic_results.json`` (:mod:`ibs_study.study` schema, optional
``sweeps``: name -> :func:`~ibs_study.study.results.collect_sweep` entries) and writes:

* ``table{1..4}.md`` / ``.csv``: the Table 1-4 analogues (:func:`~ibs_study.study.tables.results_table`,
  the paper's numbers in separate labelled columns), for every table with a measured row;
* ``bars_table{n}.png`` / ``.svg`` / ``.html``: those rows as bars with 95 % intervals;
* ``fig5_confusion_{model}.png`` / ``.svg`` / ``.html``: the confusion curves of every
  setting of a model, with 95 % bands over seeds (Fig. 5);
* ``sweep_{name}.png`` / ``.svg`` / ``.html``: each sweep of the JSON (λ_IBS, crop size), with the
  study row it is read against at the sweep's seed as dashed lines (:func:`~ibs_study.study.results.sweep_reference`);
* ``claims_{model}.md``: the paper's claims checked on seed-paired differences
  (:func:`~ibs_study.study.claims.claims_table`), for each model with the rows they need;
* ``fig5_oracle_{model}``: the oracle-embedding confusion curves, where the rows have them;
* ``operating_curve_{model}.png`` / ``.svg`` / ``.html``: Acc^th against Prec^th over an inference threshold
  (:mod:`ibs_study.study.operating`), for each ``operating_curves_{model}.json`` beside the results;
* with ``runs_root`` (the folder of the study's run directories ``<model>_<setting>_s<seed>``),
  the figures that need predictions or data, from the runs of the rows' first seed:
  ``fig3_instances_per_image_vs_crop`` (Fig. 3, from the dataset the runs used), per model
  the full colour-coded panoptic predictions crop | crop + IBS of the most confused images
  (``fig8_pfcn_panoptic/``, ``fig10_m2f_panoptic/``, ``fig12_m2f_instance_panoptic/``;
  Figs. 6, 8, 10, 12) and the individual most confused thing predictions with their
  counterpart (``fig7_pfcn_instances/``, ``fig9_m2f_instances/``,
  ``fig11_m2f_instance_instances/``: PNG + one HTML page each; Figs. 2, 7, 9, 11). Without
  runs these are left as they are (nothing is drawn from anything but real predictions);
* ``provenance.json``: results file and its SHA-256, run directories and their config
  hashes, git commit, date, device, package versions, the files written and what was skipped
  and why; ``index.md``: a list of everything written.

Fig. 1 is the bar chart of Table 1 / 2 here; Fig. 4 (the IBS diagram) is drawn with real
crops by notebook 02.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ibs_study.errors import DataError, RunDirError
from ibs_study.study.claims import claims_table, reproduction_checks
from ibs_study.study.figures import (
    MODEL_LABELS,
    confusion_chart,
    measured_tables,
    metric_bars_chart,
    operating_curve_chart,
    study_sweep_chart,
)
from ibs_study.study.results import StudyResults, load_operating_curves, load_results
from ibs_study.study.tables import TABLES, results_table
from ibs_study.viz.chart import Chart
from ibs_study.viz.figures import save_figure

logger = logging.getLogger(__name__)

__all__ = ["build_all", "QUALITATIVE_FIGURES", "PACKAGES"]

# model -> (figure of individual thing predictions, figure of full panoptic predictions)
QUALITATIVE_FIGURES: dict[str, tuple[str, str]] = {
    "pfcn": ("fig7", "fig8"),
    "m2f": ("fig9", "fig10"),
    "m2f_instance": ("fig11", "fig12"),
}
# One copy of plotly.js beside the pages (they load it relatively, so they work offline).
PLOTLY_JS = "plotly.min.js"
PACKAGES = ("ibs_study", "torch", "torchvision", "numpy", "scipy", "matplotlib", "plotly", "pycocotools")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Build:
    """What one :func:`build_all` call writes and skips (for provenance and the index)."""

    def __init__(self, out_dir: Path, plotly_js: str) -> None:
        self.out_dir = out_dir
        self.plotly_js = plotly_js  # the path the interactive figures load plotly.js from
        self.files: list[Path] = []
        self.skipped: dict[str, str] = {}

    def add(self, paths: list[Path]) -> None:
        self.files.extend(paths)

    def text(self, name: str, text: str) -> None:
        path = self.out_dir / name
        path.write_text(text)
        self.files.append(path)

    def chart(self, chart: Chart, stem: str) -> None:
        """``stem.png`` / ``.svg`` and the interactive ``stem.html`` of ``chart``."""
        self.add(save_figure(chart, self.out_dir / stem, ("png", "svg", "html"), plotlyjs=self.plotly_js))

    def skip(self, what: str, why: str) -> None:
        logger.info("paper figures: %s skipped: %s", what, why)
        self.skipped[what] = why


# ------------------------------------------------------------------------- from the JSON


def _tables_and_bars(results: StudyResults, build: _Build) -> None:
    for number in TABLES:
        if number not in measured_tables(results):
            build.skip(f"table {number}", "no row of this table in the results")
            continue
        build.text(f"table{number}.md", results_table(results, number))
        build.text(f"table{number}.csv", results_table(results, number, fmt="csv"))
        build.chart(metric_bars_chart(results, number), f"bars_table{number}")


def _write_plotly_js(build: _Build) -> None:
    from plotly.offline import get_plotlyjs

    path = build.out_dir / PLOTLY_JS
    path.write_text(get_plotlyjs())
    build.add([path])


def _claims(results: StudyResults, build: _Build) -> None:
    for model in results.models():
        if reproduction_checks(results, model):
            build.text(f"claims_{model}.md", claims_table(results, model))


def _confusion_curves(results: StudyResults, build: _Build) -> None:
    for curve, stem, why in (
        ("confusion_curve", "fig5_confusion", "no row has a confusion curve (instance rows have none)"),
        ("oracle_confusion_curve", "fig5_oracle", "no row has an oracle confusion curve (ibs-study oracle)"),
    ):
        models = dict.fromkeys(r.model for r in results.rows if getattr(r, curve) is not None)
        if not models:
            build.skip(stem.removesuffix("_confusion"), why)
        for model in models:
            build.chart(confusion_chart(results, model, curve), f"{stem}_{model}")


def _sweeps(results: StudyResults, build: _Build) -> None:
    sweeps = results.sweeps or {}
    if not sweeps:
        build.skip("sweeps", "the results hold no 'sweeps'")
    for name, entries in sweeps.items():
        if not entries:
            build.skip(f"sweep {name}", "no entries")
            continue
        build.chart(study_sweep_chart(results, name), f"sweep_{name}")


# ------------------------------------------------------------------------- from the runs


def _study_run_dirs(results: StudyResults, runs_root: Path) -> dict[str, Path]:
    """Run directories of every (row, seed) that exist under ``runs_root``."""
    out = {}
    for row in results.rows:
        for seed in row.seeds:
            name = f"{row.key}_s{seed}"
            if (runs_root / name / "config.yaml").is_file():
                out[name] = runs_root / name
    return out


def _fresh_dir(path: Path) -> Path:
    """``path`` emptied (a folder this module writes as a whole) and created."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _instance_counts_figure(run_dirs: list[Path], build: _Build) -> None:
    """Fig. 3 from the dataset and crop size of the first run that trains on crops."""
    from ibs_study.engine.data import open_split
    from ibs_study.engine.run_dir import read_run_config
    from ibs_study.study.analysis import instance_counts
    from ibs_study.viz.figures import instance_count_figure

    cfg = next((c for c in map(read_run_config, run_dirs) if c.data.crop_size is not None), None)
    if cfg is None:
        build.skip("fig3", "every run trains on full images (no crop size)")
        return
    dataset = open_split(cfg, cfg.data.val_split, prepare=False)
    counts = instance_counts(dataset, cfg.data.crop_size)
    build.add(save_figure(instance_count_figure(counts), build.out_dir / "fig3_instances_per_image_vs_crop"))


def _qualitative(results: StudyResults, runs_root: Path, build: _Build, top_k: int, threshold: float) -> None:
    from ibs_study.engine.data import open_split
    from ibs_study.engine.run_dir import read_run_config
    from ibs_study.study.instance_maps import instance_eval_to_panoptic
    from ibs_study.viz.explorer.data import ExplorerData
    from ibs_study.viz.explorer.export import export_static
    from ibs_study.viz.panoptic import PanopticView, side_by_side

    for model, (instances_fig, panoptic_fig) in QUALITATIVE_FIGURES.items():
        crop, ibs = results.find_row(model, "crop"), results.find_row(model, "crop_ibs")
        if crop is None or ibs is None:
            build.skip(
                f"{instances_fig}/{panoptic_fig} ({model})", "the results lack its crop or crop_ibs row"
            )
            continue
        seed = crop.seeds[0]
        run_dirs = [runs_root / f"{model}_{setting}_s{seed}" for setting in ("crop", "crop_ibs")]
        missing = [str(d) for d in run_dirs if not (d / "config.yaml").is_file()]
        if missing:
            build.skip(f"{instances_fig}/{panoptic_fig} ({model})", f"run directories not found: {missing}")
            continue
        labels = [f"{MODEL_LABELS[model]}, crop", f"{MODEL_LABELS[model]}, crop + IBS"]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = read_run_config(run_dirs[0])
            if cfg.eval.task == "instance":
                eval_dirs = [instance_eval_to_panoptic(d, Path(tmp) / d.name) for d in run_dirs]
                data = ExplorerData.from_paths(
                    eval_dirs, open_split(cfg, cfg.data.val_split, prepare=False), labels
                )
            else:
                data = ExplorerData.from_runs(run_dirs, labels)
            folder = _fresh_dir(build.out_dir / f"{panoptic_fig}_{model}_panoptic")
            for rank, entry in enumerate(data.ranked_images(0, threshold)[:top_k], 1):
                sample = data.gt(entry["image_id"])
                views = [PanopticView("ground truth", sample.id_map, sample.segments)]
                views += [
                    PanopticView(run.label, *data.prediction(k, sample.image_id))
                    for k, run in enumerate(data.runs)
                ]
                figure = side_by_side(sample.image, views, data.categories)
                build.add(save_figure(figure, folder / f"{rank:02d}_{sample.image_id}", formats=("png",)))
            build.add(
                export_static(
                    data,
                    _fresh_dir(build.out_dir / f"{instances_fig}_{model}_instances"),
                    top_k,
                    run=0,
                    threshold=threshold,
                    include_plotlyjs=f"../{build.plotly_js}",
                )
            )


# ---------------------------------------------------------------------------- provenance


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _provenance(
    results_path: Path, results: StudyResults, build: _Build, runs: dict[str, Path]
) -> dict[str, Any]:
    from ibs_study.config import config_hash
    from ibs_study.engine.run_dir import git_commit, read_run_config

    return {
        "results_file": str(results_path),
        "results_sha256": _sha256(results_path),
        "results": {"scale": results.scale, "device": results.device, "commit": results.commit},
        "rows": [f"{r.key} (seeds {list(r.seeds)}, {r.steps} steps)" for r in results.rows],
        "run_dirs": {name: str(path) for name, path in sorted(runs.items())},
        "config_hashes": {name: config_hash(read_run_config(path)) for name, path in sorted(runs.items())},
        "git_commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": {
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "python": platform.python_version(),
        "packages": _versions(),
        "files": sorted(str(p.relative_to(build.out_dir)) for p in build.files),
        "skipped": build.skipped,
    }


def _index(build: _Build) -> str:
    lines = ["# Paper figures and tables (regenerated by `ibs-study figures`)", ""]
    lines += [
        f"- [{name}]({name})" for name in sorted(str(p.relative_to(build.out_dir)) for p in build.files)
    ]
    if build.skipped:
        lines += ["", "Not generated:", ""] + [f"- {what}: {why}" for what, why in build.skipped.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- entry


def _operating_curves(folder: Path, build: _Build) -> None:
    paths = sorted(folder.glob("operating_curves_*.json"))
    if not paths:
        build.skip("operating curves", f"no operating_curves_<model>.json beside the results in {folder}")
    for path in paths:
        model = path.stem.removeprefix("operating_curves_")
        build.chart(operating_curve_chart(load_operating_curves(path)), f"operating_curve_{model}")


def build_all(
    results_json: str | os.PathLike = "paper_figures/synthetic_results.json",
    out_dir: str | os.PathLike = "paper_figures",
    runs_root: str | os.PathLike | None = None,
    *,
    top_k: int = 4,
    threshold: float = 0.5,
    shared_plotly_js: str | None = None,
) -> dict[str, Any]:
    """Regenerate every figure and table from ``results_json`` into ``out_dir`` (module docstring).

    Args:
        results_json: the study's results (``synthetic_results.json`` schema).
        out_dir: output folder (created; files of the same names are replaced).
        runs_root: folder of the study's run directories, for the figures that need
            predictions; None leaves those figures as they are.
        top_k: images / predictions per qualitative figure.
        threshold: confusion threshold T that ranks the qualitative examples.
        shared_plotly_js: path, relative to ``out_dir``, of a plotly.min.js the interactive
            figures load instead of one written into ``out_dir`` (e.g. ``"../plotly.min.js"``
            for a follow-up study in a subfolder of paper_figures/: saves ~5 MB).

    Returns:
        The provenance record (also written to ``out_dir/provenance.json``).

    Raises:
        DataError: ``results_json`` does not exist, cannot be read or is not a results JSON, or
            ``shared_plotly_js`` does not exist (names the file).
        RunDirError: ``runs_root`` is not a folder.
    """
    results_path = Path(results_json)
    if not results_path.is_file():
        raise DataError(
            f"{results_path}: results not found; run the study first (notebook 04_ablations writes "
            "synthetic_results.json, or ibs_study.study.runs.run_study + ibs_study.study.results.save_results)"
        )
    results = load_results(results_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give an output folder")
    out.mkdir(parents=True, exist_ok=True)
    build = _Build(out, shared_plotly_js or PLOTLY_JS)
    if shared_plotly_js is None:
        _write_plotly_js(build)
    elif not (out / shared_plotly_js).is_file():
        raise DataError(f"shared_plotly_js {shared_plotly_js!r}: no such file relative to {out}")
    _tables_and_bars(results, build)
    _claims(results, build)
    _confusion_curves(results, build)
    _sweeps(results, build)
    _operating_curves(results_path.parent, build)
    runs: dict[str, Path] = {}
    if runs_root is None:
        build.skip("qualitative figures (fig3, fig7-fig12)", "no runs_root given")
    else:
        root = Path(runs_root)
        if not root.is_dir():
            raise RunDirError(f"runs_root {root} is not a folder; give the folder of the study's runs")
        runs = _study_run_dirs(results, root)
        if runs:
            _instance_counts_figure(list(runs.values()), build)
        else:
            build.skip("fig3", f"no run directory of the results' rows under {root}")
        _qualitative(results, root, build, top_k, threshold)
    provenance = _provenance(results_path, results, build, runs)
    build.text("index.md", _index(build))
    provenance["files"].append("index.md")
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    logger.info("paper figures: %d files in %s", len(build.files) + 1, out)
    return provenance
