"""The notebooks: .ipynb / .py pairs in sync, outputs stripped, one parameters cell, short
cells, parameters checked first; each executed end to end by papermill with ``smoke=True`` and its
default output folders in a clean clone of the repository, checking what it wrote and that no
tracked file changed (``git status``)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
import papermill
import pytest
from jupytext.config import load_jupytext_config

from ibs_study.study.notebook_parameters import CHECKED_PARAMETERS, ParameterError, check_parameters
from ibs_study.study.results import load_operating_curves, load_results
from ibs_study.study.tables import results_table

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = (
    "01_problem_analysis",
    "02_intra_batch_supervision",
    "03_train",
    "04_ablations",
    "05_confusion_explorer",
    "06_instance_segmentation",
    "07_paper_figures",
    "08_ibs_on_transformers",
)
MAX_LOGIC_LINES = 15


def _cells(notebook) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip(), list(c.metadata.get("tags", []))) for c in notebook.cells]


def _without_jupytext_version(text: str) -> str:
    """``text`` without the header line naming the jupytext release that wrote it (a fresh
    install may bring a newer release than the one that last synced the pair)."""
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not re.fullmatch(r"#\s+jupytext_version: \S+\n?", line)]
    assert len(lines) - len(kept) <= 1, "more than one jupytext_version line"
    return "".join(kept)


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(NOTEBOOKS)
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_in_sync_and_outputs_stripped(name):
    ipynb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    assert _cells(ipynb) == _cells(script), f"{name}: run `jupytext --sync notebooks/{name}.py`"
    # the pairing lives in the project's jupytext.toml, so the .py is exactly what jupytext writes
    assert load_jupytext_config(str(NOTEBOOK_DIR.resolve())).formats in (
        "ipynb,py:percent",
        ["ipynb,py:percent"],
    )
    written = jupytext.writes(ipynb, fmt="py:percent")
    assert _without_jupytext_version(written) == _without_jupytext_version(
        (NOTEBOOK_DIR / f"{name}.py").read_text()
    ), f"{name}: run `jupytext --sync notebooks/{name}.py`"
    assert ipynb.metadata["kernelspec"]["name"] == "python3"
    for cell in ipynb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_and_short_cells(name):
    notebook = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    values: dict = {}
    exec(parameters[0].source, {}, values)  # plain literals only
    assert values["smoke"] is False and "out_dir" in values
    # papermill must infer every parameter (`papermill --help-notebook`, `-p` typing)
    assert list(papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))) == list(values)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")))
        assert not any(
            isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Lambda) for node in ast.walk(tree)
        ), f"{name}: functions belong in the library"
        statements = [node for node in ast.walk(tree) if isinstance(node, ast.stmt)]
        imports = [node for node in statements if isinstance(node, ast.Import | ast.ImportFrom)]
        assert len(statements) - len(imports) <= MAX_LOGIC_LINES or cell is parameters[0], (
            f"{name}: a cell with {len(statements) - len(imports)} statements is a library function waiting"
        )


def _defaults(name: str) -> dict:
    """The notebook's parameters and their default values (plain literals)."""
    notebook = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values: dict = {}
    exec(cell.source, {}, values)
    return values


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_checks_every_parameter(name):
    """The code cell after the parameters cell passes every parameter to ``check_parameters``
    before anything else runs."""
    notebook = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    index = next(k for k, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    cell = notebook.cells[index + 1]
    tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")))
    first = next(node for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom))
    assert isinstance(first, ast.Expr) and first.value.func.id == "check_parameters", name
    names = list(_defaults(name))
    assert [k.arg for k in first.value.keywords] == names
    assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in first.value.keywords)
    assert set(names) <= CHECKED_PARAMETERS


@pytest.fixture(scope="session")
def clone(tmp_path_factory) -> Path:
    """A clone of this checkout (its tracked files as they are now, uncommitted changes included)
    whose notebooks run with their default output folders and the clone's own package."""
    path = tmp_path_factory.mktemp("clone") / "ibs_study"
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "--quiet", "--shared", str(REPO), str(path)], check=True)
    snapshot = subprocess.run(
        ["git", "stash", "create"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([*git, "checkout", "--quiet", "--detach", snapshot or "HEAD"], cwd=path, check=True)
    return path


def _tracked_changes(clone: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, check=True, capture_output=True, text=True
    ).stdout


def _run(name: str, clone: Path, output: Path, parameters: dict) -> None:
    with mock.patch.dict(os.environ, {"PYTHONPATH": str(clone)}):  # the kernel imports the clone's package
        papermill.execute_notebook(
            str(clone / "notebooks" / f"{name}.ipynb"),
            str(output),
            parameters=parameters,
            cwd=str(clone / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=600,
        )


def _execute(name: str, clone: Path, tmp_path: Path, **parameters) -> Path:
    """Run the notebook in smoke mode in ``clone``; returns its default output folder. Fails when the
    run changed or added a file git does not ignore."""
    output = tmp_path / f"{name}.executed.ipynb"
    _run(name, clone, output, {"smoke": True, **parameters})
    assert _tracked_changes(clone) == "", f"{name} wrote outside git-ignored folders"
    executed = nbformat.read(output, as_version=4)
    images = [
        o
        for cell in executed.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images, f"{name}: no figure was displayed"
    return clone / "runs" / "notebooks" / name


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, parameters, expected",
    [
        (
            "03_train",
            {"overrides": "train.max_steps=10"},
            "notebook parameter overrides='train.max_steps=10': must be a list, not a string; pass it "
            'with papermill\'s -y: -y "overrides: [train.max_steps=10]"',
        ),
        (
            "03_train",
            {"max_steps": -3},
            "notebook parameter max_steps=-3: train.max_steps",  # then the config's own words
        ),
        (
            "05_confusion_explorer",
            {"threshold": 1.5},
            "notebook parameter threshold=1.5: must be a number in [0, 1)",
        ),
    ],
)
def test_bad_parameter_stops_the_first_cell(name, parameters, expected, clone, tmp_path):
    """One line naming the parameter, from the cell after the parameters, before anything is written."""
    output = tmp_path / "failed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        _run(name, clone, output, parameters)
    with pytest.raises(ParameterError) as in_process:  # the same line as the library gives
        check_parameters(**{**_defaults(name), **parameters})
    assert failure.value.ename == "ParameterError" and failure.value.evalue == str(in_process.value)
    message = failure.value.evalue
    assert message.startswith(expected) and "\n" not in message
    assert failure.value.traceback == [f"ParameterError: {message}"]
    executed = nbformat.read(output, as_version=4)
    cells = [c for c in executed.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    failed = next(
        k for k, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))
    )
    assert "injected-parameters" in cells[failed - 1].metadata.get("tags", [])
    assert _tracked_changes(clone) == ""


@pytest.mark.slow
def test_01_problem_analysis(clone, tmp_path):
    out = _execute("01_problem_analysis", clone, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["things_per_image_mean"] > summary["things_per_crop_mean"] > 0
    assert summary["image_to_crop_ratio"] > 1
    assert set(summary["size_shares"]) == {"S", "M", "L"}
    assert sum(s["pixels"] for s in summary["size_shares"].values()) == pytest.approx(1.0)
    assert set(summary["shared_thing_class"]) == {"random crops, random partner", "paired sampler, pair mate"}
    merge = summary["merge_example"]
    assert [r["num_merged"] for r in merge] == [1, 2, 3]
    assert merge[0]["pq"] == 1.0 and merge[0]["acc_th"] == 1.0
    assert 1 - merge[-1]["pq"] < 1 - merge[-1]["acc_th"]  # PQ moves less than Acc^th
    for stem in (
        "fig3_instances_per_image_vs_crop",
        "segment_sizes",
        "sampler_shared_class",
        "merge_worked_example",
    ):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.svg").is_file()


@pytest.mark.slow
def test_02_intra_batch_supervision(clone, tmp_path):
    out = _execute("02_intra_batch_supervision", clone, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch_size"] == 4 and len(summary["thing_rows"]) == 4
    assert summary["features_shape"][0] == 4
    assert set(summary["loss_ibs"]) == {"pair mate", "random partner"}
    assert all(v > 0 for v in summary["loss_ibs"].values())
    for label in ("with IBS", "without IBS"):
        records = summary["traces"][label]
        assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert (
        "loss_ibs" in summary["traces"]["with IBS"][-1]
        and "loss_ibs" not in summary["traces"]["without IBS"][-1]
    )
    for stem in ("batch_crops", "cross_crop_masks_initial", "ibs_trace", "cross_crop_masks_trained"):
        assert (out / f"{stem}.png").is_file()


@pytest.mark.slow
def test_03_train(clone, tmp_path):
    out = _execute("03_train", clone, tmp_path, poll_s=0.5)
    (run_dir,) = out.glob("synthetic_pfcn_crop_ibs_*")
    summary = json.loads((run_dir / "notebook_summary.json").read_text())
    assert summary["steps"] == 3 and summary["preset"] == "synthetic_pfcn_crop_ibs"
    assert {"loss_total", "loss_ibs"} <= set(summary["loss_terms"])
    assert {"all", "things", "stuff", "acc_th", "prec_th"} <= set(summary["metrics"])
    assert summary["metrics"]["num_images"] == 2
    assert (run_dir / "checkpoints" / "step_00000003.pt").is_file()
    assert (run_dir / "eval_val" / "metrics.json").is_file()
    assert (run_dir / "loss_curves.png").is_file() and (run_dir / "confusion_curve.png").is_file()


@pytest.mark.slow
def test_04_ablations(clone, tmp_path):
    out = _execute("04_ablations", clone, tmp_path)
    results = load_results(out / "synthetic_results.json")
    assert [(r.setting, r.seeds) for r in results.rows] == [("crop", (0, 1)), ("crop_ibs", (0, 1))]
    assert set(results.sweeps) == {"lambda", "crop_size"}
    assert [e.value for e in results.sweeps["crop_size"]] == [[32, 64], [48, 96]]
    for number in (1, 2, 3):
        assert (out / f"table{number}.md").read_text() == results_table(results, number)
        assert (out / f"bars_table{number}.png").is_file()
    for stem in ("fig5_confusion_pfcn", "sweep_lambda", "sweep_crop_size", "operating_curve_pfcn"):
        assert (out / f"{stem}.png").is_file()
    curves = load_operating_curves(out / "operating_curves_pfcn.json")
    assert [p["value"] for p in curves["rows"][0]["points"]] == [0.05, 0.1, 0.15, 0.2, 0.3, 0.4]
    # at the presets' threshold the curve's point is the run's own evaluation
    at_default = curves["rows"][1]["points"][3]["metrics"]["prec_th"]["per_seed"]
    assert tuple(at_default) == results.find_row("pfcn", "crop_ibs").metrics["prec_th"].per_seed


@pytest.mark.slow
def test_05_confusion_explorer(clone, tmp_path):
    state_path = tmp_path / "explorer_state.json"
    out = _execute("05_confusion_explorer", clone, tmp_path, state_path=str(state_path))
    state = json.loads(state_path.read_text())
    assert state["run"] == "crop" and state["threshold"] == 0.5
    assert state["segment_id"] is not None and len(state["view_titles"]) == 2
    assert state["other"]["run"] == "crop + IBS"
    (static,) = out.glob("static_*")
    assert sorted(p.name for p in static.glob("*.html")) == [
        "confusion_views_crop-IBS.html",
        "confusion_views_crop.html",
    ]
    assert any(static.glob("01_crop_*.png"))


@pytest.mark.slow
def test_06_instance_segmentation(clone, tmp_path):
    out = _execute("06_instance_segmentation", clone, tmp_path)
    results = load_results(out / "instance_results.json")
    assert [(r.model, r.setting) for r in results.rows] == [
        ("m2f_instance", "crop"),
        ("m2f_instance", "crop_ibs"),
    ]
    assert {"ap", "acc_th", "prec_th"} <= set(results.rows[0].metrics)
    assert (out / "table4.md").read_text() == results_table(results, 4)
    assert (out / "bars_table4.png").is_file()
    (maps,) = (out).glob("instance_maps_*")
    for name in ("m2f_instance_crop_s0", "m2f_instance_crop_ibs_s0"):
        assert (maps / name / "predictions.json").is_file() and (
            maps / name / "confusion_records.jsonl"
        ).is_file()
    (views,) = out.glob("views_*")
    assert len(list(views.glob("*.html"))) == 2


@pytest.mark.slow
def test_07_paper_figures(clone, tmp_path):
    out = _execute("07_paper_figures", clone, tmp_path)
    provenance = json.loads((out / "provenance.json").read_text())
    results = load_results(out / "smoke_study" / "synthetic_results.json")
    for number in (1, 2, 3):
        assert (out / f"table{number}.md").read_text() == results_table(results, number)
    for name in provenance["files"]:
        assert (out / name).is_file(), name
    assert any(name.startswith("fig8_pfcn_panoptic/") for name in provenance["files"])
    assert len(provenance["config_hashes"]) == 4


@pytest.mark.slow
def test_08_ibs_on_transformers(clone, tmp_path):
    pytest.importorskip("transformers")
    out = _execute("08_ibs_on_transformers", clone, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == [3, 3] and summary["explorer_runs"] == ["crop", "crop + IBS"]
    assert {"loss_ibs", "loss_cross_entropy", "loss_mask_0"} <= set(summary["loss_terms"])
    for name in ("crop", "crop_ibs"):
        assert (out / "runs" / name / "eval_val" / "confusion_records.jsonl").is_file()
        assert (out / f"loss_curves_{name}.png").is_file()
    assert (out / "confusion_curve.png").is_file()
