"""paper_figures.build_all on a small real results file (tiny runs: 2 settings x 2 seeds + a λ sweep),
the figures command, and the figure helpers it relies on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from ibs_study.cli import main
from ibs_study.config import config_hash
from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import DataError, RunDirError
from ibs_study.study.figures import sweep_chart, sweep_figure, sweep_points, table_bar_rows
from ibs_study.study.paper_figures import build_all
from ibs_study.study.results import (
    ORACLE_METRICS,
    THING_PIXEL_METRICS,
    ResultRow,
    StudyResults,
    Summary,
    SweepRun,
    load_results,
    read_oracle,
    save_operating_curves,
    save_results,
    sweep_reference,
)
from ibs_study.study.runs import run_study, smoke_overrides
from ibs_study.study.specs import study_rows, sweep_specs
from ibs_study.study.tables import results_table
from ibs_study.viz.chart import render_plotly

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(results JSON path, runs root): pfcn crop and crop_ibs, seeds 0 and 1, λ in {0.5, 2}; 3 steps each."""
    root = tmp_path_factory.mktemp("study")
    overrides = smoke_overrides(root / "data")
    rows = [row for row in study_rows("cpu", ["pfcn"]) if row.setting in ("crop", "crop_ibs")]
    sweeps = {"lambda": sweep_specs("synthetic_pfcn_crop_ibs", "ibs.weight", [0.5, 2.0], overrides=overrides)}
    results = run_study(
        root / "runs", rows, SEEDS, overrides=overrides, sweeps=sweeps, scale="tiny", parallel=0
    )
    path = root / "synthetic_results.json"
    save_results(results, path)
    return path, root / "runs"


def test_run_study_writes_the_results_schema_with_sweeps(study):
    results = json.loads(study[0].read_text())  # the schema as written
    assert [(r["model"], r["setting"]) for r in results["rows"]] == [("pfcn", "crop"), ("pfcn", "crop_ibs")]
    for row in results["rows"]:
        assert row["seeds"] == SEEDS and row["steps"] == 3
        assert set(row["metrics"]) == {
            "pq", "pq_th", "pq_st", "acc_th", "prec_th", *ORACLE_METRICS, *THING_PIXEL_METRICS,
        }  # fmt: skip
        # the shares of the GT (predicted) thing pixels sum to 1 on every seed; matched = Acc^th (Prec^th)
        for side, matched in (("gt_th_", "acc_th"), ("pred_th_", "prec_th")):
            assert row["metrics"][f"{side}matched"] == row["metrics"][matched]
            for seed in range(len(SEEDS)):
                shares = [
                    row["metrics"][m]["per_seed"][seed] for m in THING_PIXEL_METRICS if m.startswith(side)
                ]
                assert sum(shares) == pytest.approx(1.0, abs=1e-9) or not any(shares)
        assert len(row["metrics"]["pq"]["per_seed"]) == 2 and len(row["confusion_curve"]["per_seed"]) == 2
        # oracle metrics come from each run's oracle_confusion.json
        oracle = read_oracle(study[1] / f"pfcn_{row['setting']}_s1")
        assert row["metrics"]["oracle_leak"]["per_seed"][1] == oracle["leak"]
        assert row["oracle_confusion_curve"]["per_seed"][1] == oracle["ratio"]
    assert results["scale"] == "tiny" and results["device"] == "cpu"
    # The crop_ibs row at seed 0 is the sweep's point at the preset's own λ (1.0): not rerun.
    lambdas = results["sweeps"]["lambda"]
    assert [(e["key"], e["value"]) for e in lambdas] == [
        ("ibs.weight", 0.5),
        ("ibs.weight", 2.0),
        ("ibs.weight", 1.0),
    ]
    row = next(r for r in results["rows"] if r["setting"] == "crop_ibs")
    assert lambdas[2]["metrics"]["pq"] == row["metrics"]["pq"]["per_seed"][0]
    assert {e["seed"] for e in lambdas} == {0}
    # the λ sweep is drawn against crop training without IBS at the sweep's seed
    label, reference = sweep_reference(load_results(study[0]), load_results(study[0]).sweeps["lambda"])
    crop = next(r for r in results["rows"] if r["setting"] == "crop")
    assert label == "crop, no IBS (seed 0)"
    assert reference["prec_th"] == crop["metrics"]["prec_th"]["per_seed"][0]
    assert reference["pq"] == crop["metrics"]["pq"]["per_seed"][0]


EXPECTED_TOP_LEVEL = {
    *(f"table{n}.{ext}" for n in (1, 2, 3, 5, 6, 7) for ext in ("md", "csv")),
    *(f"{stem}.{ext}" for stem in ("bars_table1", "bars_table2", "bars_table3", "bars_table5", "bars_table6",
                                   "bars_table7", "fig5_confusion_pfcn",
                                   "fig5_oracle_pfcn", "sweep_lambda")
      for ext in ("png", "svg", "html")),
    "fig3_instances_per_image_vs_crop.png",
    "fig3_instances_per_image_vs_crop.svg",
    "index.md",
    "plotly.min.js",
}  # fmt: skip


def _check_file(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    if path.suffix == ".png":
        with Image.open(path) as image:
            assert image.width > 100 and image.height > 100
    elif path.suffix == ".svg":
        assert path.read_text().startswith("<?xml")
    elif path.suffix == ".html":  # pages load the one shared copy of plotly.js, relatively
        text = path.read_text()
        assert "Plotly.newPlot" in text and len(text) < 1_000_000, path
        assert 'src="plotly.min.js"' in text or 'src="../plotly.min.js"' in text, path
    elif path.suffix == ".js":
        assert path.stat().st_size > 1_000_000  # plotly.js itself


@pytest.mark.slow
def test_build_all_writes_every_expected_file(study, tmp_path):
    results_path, runs_root = study
    out = tmp_path / "figures"
    provenance = build_all(results_path, out, runs_root, top_k=2)
    files = set(provenance["files"])
    assert EXPECTED_TOP_LEVEL <= files
    assert {f for f in files if "/" not in f} == EXPECTED_TOP_LEVEL
    panoptic = sorted(f for f in files if f.startswith("fig8_pfcn_panoptic/"))
    instances = sorted(f for f in files if f.startswith("fig7_pfcn_instances/"))
    assert [Path(f).name[:3] for f in panoptic] == ["01_", "02_"]  # both evaluated images
    assert (
        len([f for f in instances if f.endswith(".png")]) == 2
        and sum(f.endswith(".html") for f in instances) == 1
    )
    for name in files:
        _check_file(out / name)
    assert sorted(files) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "provenance.json"
    )
    # tables are exactly results_table's output
    results = load_results(results_path)
    for number in (1, 2, 3, 5, 6, 7):
        assert (out / f"table{number}.md").read_text() == results_table(results, number)
        assert (out / f"table{number}.csv").read_text() == results_table(results, number, fmt="csv")
    # provenance: the results file, the runs and their config hashes, what was skipped
    stored = json.loads((out / "provenance.json").read_text())
    assert stored == json.loads(json.dumps(provenance))
    assert stored["results_sha256"] == hashlib.sha256(results_path.read_bytes()).hexdigest()
    runs = {f"pfcn_{s}_s{seed}" for s in ("crop", "crop_ibs") for seed in SEEDS}
    assert set(stored["run_dirs"]) == runs
    for name, path in stored["run_dirs"].items():
        assert stored["config_hashes"][name] == config_hash(read_run_config(path))
    assert set(stored["skipped"]) == {
        "table 4",
        "fig9/fig10 (m2f)",
        "fig11/fig12 (m2f_instance)",
        "operating curves",
    }
    assert stored["packages"]["torch"] and stored["date"] and "git_commit" in stored
    assert stored["results"] == {"scale": "tiny", "device": "cpu", "commit": results.commit}


@pytest.mark.slow
def test_rebuild_without_runs_keeps_the_qualitative_figures_and_with_runs_replaces_them(study, tmp_path):
    results_path, runs_root = study
    out = tmp_path / "figures"
    build_all(results_path, out, runs_root, top_k=1)
    first = sorted(p for p in (out / "fig8_pfcn_panoptic").iterdir())
    stamps = [p.stat().st_mtime_ns for p in first]
    provenance = build_all(results_path, out)  # no runs: qualitative figures are left as they are
    assert [p.stat().st_mtime_ns for p in first] == stamps
    assert "qualitative figures (fig3, fig7-fig12)" in provenance["skipped"]
    assert not any(name.startswith("fig8") for name in provenance["files"])
    (out / "fig8_pfcn_panoptic" / "99_stale.png").write_bytes(b"old")
    build_all(results_path, out, runs_root, top_k=1)
    assert [p.name for p in sorted((out / "fig8_pfcn_panoptic").iterdir())] == [p.name for p in first]


def test_missing_inputs_are_named(tmp_path, capsys):
    with pytest.raises(DataError, match="nope.json: results not found; run the study first"):
        build_all(tmp_path / "nope.json", tmp_path / "out")
    assert main(["figures", "--results", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")]) == 2
    assert "results not found" in capsys.readouterr().err
    (tmp_path / "r.json").write_text(
        json.dumps({"scale": "tiny", "device": "cpu", "commit": None, "rows": []})
    )
    with pytest.raises(RunDirError, match="runs_root .*absent is not a folder"):
        build_all(tmp_path / "r.json", tmp_path / "out", tmp_path / "absent")


def test_figures_command_builds_from_the_results(study, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["figures", "--results", str(study[0]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}/table3.md" in printed and f"{out}/fig5_confusion_pfcn.png" in printed
    assert "skipped qualitative figures (fig3, fig7-fig12): no runs_root given" in printed
    assert (out / "provenance.json").is_file()


def test_a_follow_up_in_a_subfolder_loads_the_shared_plotly_js(study, tmp_path, capsys):
    build_all(study[0], tmp_path)  # writes tmp_path/plotly.min.js
    out = tmp_path / "followup"
    args = [
        "figures",
        "--results",
        str(study[0]),
        "--out",
        str(out),
        "--shared-plotly-js",
        "../plotly.min.js",
    ]
    assert main(args) == 0
    assert not (out / "plotly.min.js").exists()
    for page in ("bars_table3.html", "fig5_confusion_pfcn.html"):
        assert 'src="../plotly.min.js"' in (out / page).read_text()
    with pytest.raises(DataError, match="shared_plotly_js 'none.js': no such file relative to"):
        build_all(study[0], tmp_path / "other", shared_plotly_js="none.js")


# ------------------------------------------------------------------------- figure helpers


def _run(value: object, metrics: dict[str, float]) -> SweepRun:
    return SweepRun("synthetic_pfcn_crop_ibs", "ibs.weight", value, 0, metrics)


def test_sweep_points_group_values_and_summarise_repeats():
    entries = [
        _run(4.0, {"pq": 0.3}),
        _run(1.0, {"pq": 0.2, "acc_th": 0.5}),
        _run(1.0, {"pq": 0.4, "acc_th": 0.7}),
    ]
    points = sweep_points(entries)
    assert [(p.label, p.position) for p in points] == [("1", 1.0), ("4", 4.0)]
    assert points[0].metrics["pq"]["mean"] == pytest.approx(0.3)
    assert points[0].metrics["pq"]["per_seed"] == [0.2, 0.4]
    assert points[0].metrics["acc_th"]["ci95"][0] < 0.6 < points[0].metrics["acc_th"]["ci95"][1]
    assert set(points[1].metrics) == {"pq"}  # sorted by position, not in first-seen order
    crops = sweep_points([_run([32, 64], {"pq": 0.1})])
    assert (crops[0].label, crops[0].position) == ("32x64", 2048.0)


def test_sweep_reference_picks_the_row_and_seed_of_the_sweep():
    def row(model: str, setting: str, seeds: tuple[int, ...], pq: list[float]) -> ResultRow:
        return ResultRow(model, setting, seeds, 3, {"pq": Summary.of(pq)})

    rows = (
        row("pfcn", "full", (0, 3), [0.5, 0.6]),
        row("pfcn", "crop", (0, 3), [0.3, 0.4]),
        row("m2f", "crop", (3,), [0.7]),
    )
    results = StudyResults("cpu", "cpu", None, rows)

    def entries(preset, key, seed):
        return [SweepRun(preset, key, 1.0, seed, {"pq": 0.2})]

    assert sweep_reference(results, entries("synthetic_pfcn_crop_ibs", "ibs.weight", 3)) == (
        "crop, no IBS (seed 3)",
        {"pq": 0.4},
    )
    assert sweep_reference(results, entries("synthetic_gpu_m2f_crop_ibs", "ibs.weight", 3)) == (
        "crop, no IBS (seed 3)",
        {"pq": 0.7},
    )
    assert sweep_reference(results, entries("synthetic_pfcn_crop", "data.crop_size", 0)) == (
        "full image (seed 0)",
        {"pq": 0.5},
    )
    assert sweep_reference(results, entries("synthetic_m2f_crop_ibs", "ibs.weight", 0)) is None  # no seed 0
    assert sweep_reference(results, entries("synthetic_pfcn_crop_ibs", "train.lr", 0)) is None  # no reference
    assert sweep_reference(results, entries("synthetic_pfcn_crop_ibs", "ibs.weight", None)) is None


def test_sweep_figures_draw_the_reference_as_dashed_lines():
    entries = [_run(v, {"pq": 0.2 + v / 10, "prec_th": 0.5}) for v in (0.5, 1.0, 4.0)]
    reference = ("crop, no IBS (seed 0)", {"pq": 0.25, "prec_th": 0.4, "pq_st": 0.9})
    ax = sweep_figure(entries, metrics=("pq", "prec_th"), reference=reference).axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_ydata()) == 2]
    assert sorted(line.get_ydata()[0] for line in dashed) == pytest.approx([25.0, 40.0])  # percent
    assert "crop, no IBS (seed 0)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(sweep_figure(entries, metrics=("pq", "prec_th")).axes[0].lines) < len(ax.lines)
    traces = render_plotly(sweep_chart(entries, metrics=("pq", "prec_th"), reference=reference)).data
    dashed_traces = [t for t in traces if t.line.dash == "dash" and t.x]
    assert [t.y[0] for t in dashed_traces] == pytest.approx([25.0, 40.0])
    assert list(dashed_traces[0].x) == [0.5, 4.0]


def test_table_bar_rows_follow_the_table_and_skip_absent_rows():
    summary = Summary(0.5, (0.4, 0.6), (0.45, 0.55))
    rows = (
        ResultRow("pfcn", "crop_ibs", (0, 1), 3, {"pq": summary}),
        ResultRow("pfcn", "full", (0, 1), 3, {"pq": summary, "acc_th": summary}),
    )
    results = StudyResults("cpu", "cpu", None, rows)
    rows, metrics = table_bar_rows(results, 3)
    assert metrics == ("pq", "pq_th", "pq_st", "acc_th", "prec_th")
    assert [r.setting for r in rows] == ["full", "crop_ibs"]  # table order, crop rows absent
    assert set(rows[0].means) == {"pq", "acc_th"} and rows[1].ci95["pq"] == (0.4, 0.6)
    assert table_bar_rows(results, 4)[0] == []


def test_operating_curves_of_study_rows_summarise_each_seeds_curve(study, tmp_path):
    from ibs_study.study.figures import operating_curve_figure
    from ibs_study.study.operating import collect_operating_curves, operating_curve

    _, runs_root = study
    rows = [row for row in study_rows("cpu", ["pfcn"]) if row.setting in ("crop", "crop_ibs")]
    key, values = "model.panoptic_fcn.thing_score_threshold", [0.1, 0.3]
    curves = collect_operating_curves(runs_root, rows, SEEDS, key, values, device="cpu", progress=False)
    assert curves["key"] == key and curves["values"] == values and curves["seeds"] == SEEDS
    assert [(r["model"], r["setting"]) for r in curves["rows"]] == [("pfcn", "crop"), ("pfcn", "crop_ibs")]
    for row in curves["rows"]:
        seeds = [operating_curve(runs_root / f"pfcn_{row['setting']}_s{s}", key, values) for s in SEEDS]
        for k, point in enumerate(row["points"]):
            per_seed = [curve["points"][k]["metrics"]["prec_th"] for curve in seeds]
            assert point["value"] == values[k] and point["metrics"]["prec_th"]["per_seed"] == per_seed
            assert point["metrics"]["prec_th"]["mean"] == pytest.approx(sum(per_seed) / len(per_seed))
    trained = read_run_config(runs_root / "pfcn_crop_s0").model.panoptic_fcn.thing_score_threshold
    assert curves["default"] == trained  # the value the runs were trained and evaluated with
    fig = operating_curve_figure(curves)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Acc^th (%)" and ax.get_ylabel() == "Prec^th (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["crop", "crop + IBS (paired sampler)"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.1", "0.1", "0.3", "0.3"]  # both ends of each curve
    # build_all redraws it from operating_curves_<model>.json beside the results
    folder = tmp_path / "stored"
    folder.mkdir()
    (folder / "synthetic_results.json").write_bytes(study[0].read_bytes())
    save_operating_curves(curves, folder / "operating_curves_pfcn.json")
    provenance = build_all(folder / "synthetic_results.json", folder / "figures")
    assert {"operating_curve_pfcn.png", "operating_curve_pfcn.svg"} <= set(provenance["files"])
    assert "operating curves" not in provenance["skipped"]


def test_run_differences_across_folders_equal_the_results_rows(study, capsys):
    """Two sets of runs compared by folder prefix give the seed-paired differences the study's
    results give for the same two rows; the compare command prints them."""
    from ibs_study.study.analysis import run_differences, setting_differences

    results_path, runs_root = study
    differences = run_differences(runs_root / "pfcn_crop", runs_root / "pfcn_crop_ibs", SEEDS)
    expected = setting_differences(
        load_results(results_path),
        "pfcn",
        "crop",
        "crop_ibs",
        metrics=("pq", "acc_th", "prec_th", "oracle_leak"),
    )
    for metric, d in expected.items():
        assert differences[metric]["per_seed"] == d["per_seed"] and differences[metric]["seeds"] == SEEDS
    assert "confusion_auc" in differences and "pred_th_other_instance" in differences
    row = load_results(results_path).find_row("pfcn", "crop")
    assert differences["prec_th"]["baseline"] == row.metrics["prec_th"].mean
    args = ["compare", str(runs_root / "pfcn_crop"), str(runs_root / "pfcn_crop_ibs"), "--seeds", "0", "1"]
    assert main([*args, "--metrics", "prec_th", "acc_th"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("Prec^th") and lines[2].rstrip().endswith("/ 2")
    assert (
        main(["compare", str(runs_root / "pfcn_crop"), str(runs_root / "pfcn_nothing"), "--seeds", "0"]) == 2
    )
    assert "pfcn_nothing_s0/eval_val/metrics.json not found: no such run directory" in capsys.readouterr().err


def test_make_figures_writes_the_committed_tables(tmp_path, capsys):
    """`make figures` (``ibs-study figures``) from the committed results writes every committed
    table (.md / .csv: tables, claims, sweeps) byte for byte; index.md lists the qualitative
    figures, which need the study's runs, so it is left out."""
    committed = Path(__file__).resolve().parents[2] / "paper_figures"
    assert main(["figures", "--out", str(tmp_path / "out")]) == 0
    written = sorted(
        p.relative_to(tmp_path / "out")
        for p in (tmp_path / "out").rglob("*")
        if p.suffix in (".md", ".csv") and p.name != "index.md"
    )
    assert len(written) >= 15 and any(p.name == "claims_pfcn.md" for p in written)
    differing = [
        str(p) for p in written if (tmp_path / "out" / p).read_bytes() != (committed / p).read_bytes()
    ]
    assert not differing, f"make figures no longer writes the committed {differing}"
