"""The committed study results (ibs_study.study.results): schema of paper_figures/synthetic_results.json,
the follow-up studies and operating curves beside it, and the pages that quote them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scipy import stats

from ibs_study.errors import DataError
from ibs_study.study.results import Summary, load_operating_curves, load_results, save_results
from ibs_study.study.tables import TABLES, results_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "paper_figures" / "synthetic_results.json"
METRICS = {
    "pfcn": {"pq", "pq_th", "pq_st", "acc_th", "prec_th"},
    "m2f": {"pq", "pq_th", "pq_st", "acc_th", "prec_th"},
}
METRICS["m2f_instance"] = {"ap", "ap_l", "acc_th", "prec_th"}


@pytest.fixture(scope="module")
def results() -> dict:
    """The committed results as their JSON holds them (after :func:`load_results` checked them)."""
    load_results(RESULTS)
    return json.loads(RESULTS.read_text())


RESULT_FILES = sorted((ROOT / "paper_figures").rglob("synthetic_results.json"))


@pytest.mark.parametrize("path", RESULT_FILES, ids=[str(p.relative_to(ROOT)) for p in RESULT_FILES])
def test_loading_and_saving_results_gives_the_same_bytes(path, tmp_path):
    """The typed results write back exactly the JSON they were read from (rows with and without a
    variant, with a preset, with sweeps)."""
    results = load_results(path)
    save_results(results, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert results.rows and all(isinstance(row.metrics["prec_th"], Summary) for row in results.rows)


def test_schema_seeds_and_fractions(results):
    assert {"scale", "device", "commit", "rows"} <= set(results)
    assert results["scale"] == "cpu" and results["device"] and results["commit"]
    settings = {(r["model"], r["setting"]) for r in results["rows"]}
    expected = {("pfcn", s) for s in ("full", "crop", "crop_ibs_random", "crop_ibs")}
    expected |= {(m, s) for m in ("m2f", "m2f_instance") for s in ("crop", "crop_ibs")}
    assert settings == expected
    for row in results["rows"]:
        assert len(row["seeds"]) >= 3 and row["steps"] > 0
        assert METRICS[row["model"]] <= set(row["metrics"]), row["model"]
        for name, summary in row["metrics"].items():
            values = summary["per_seed"]
            assert len(values) == len(row["seeds"]), (row["model"], row["setting"], name)
            assert all(0.0 <= v <= 1.0 for v in values), (row["model"], row["setting"], name)
            # The interval is the Student-t one of the per-seed values, recomputed independently.
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            half = stats.t.ppf(0.975, len(values) - 1) * sd / len(values) ** 0.5
            assert summary["mean"] == pytest.approx(mean)
            assert summary["ci95"] == pytest.approx([mean - half, mean + half])
    # Same step budget within each model's comparison.
    for model in ("pfcn", "m2f", "m2f_instance"):
        assert len({r["steps"] for r in results["rows"] if r["model"] == model}) == 1, model


def test_sweeps_cover_lambda_and_crop_size(results):
    sweeps = results["sweeps"]
    assert {e["key"] for e in sweeps["lambda"]} == {"ibs.weight"} and len(sweeps["lambda"]) >= 3
    assert {e["key"] for e in sweeps["crop_size"]} == {"data.crop_size"} and len(sweeps["crop_size"]) >= 3
    for entry in [*sweeps["lambda"], *sweeps["crop_size"]]:
        assert 0.0 <= entry["metrics"]["prec_th"] <= 1.0


def test_figure_provenance_names_this_json(results):
    provenance = json.loads((ROOT / "paper_figures" / "provenance.json").read_text())
    import hashlib

    assert provenance["results_sha256"] == hashlib.sha256(RESULTS.read_bytes()).hexdigest()


def test_results_page_is_short_and_states_at_most_ten_findings():
    """docs/results.md is read at once: at most 250 lines, a findings list of one to ten bullets;
    the history lives in docs/experiments.md."""
    text = (ROOT / "docs" / "results.md").read_text()
    assert len(text.splitlines()) <= 250
    findings = text.split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert 1 <= sum(line.startswith("* ") for line in findings.splitlines()) <= 10
    assert "(experiments.md)" in text and (ROOT / "docs" / "experiments.md").is_file()


FOLLOWUPS = sorted((ROOT / "paper_figures").glob("followup_*/synthetic_results.json"))
# folders that `ibs-study followup NAME` wrote (write_followup); the others `ibs-study figures`
RUN_FOLLOWUPS = [p for p in FOLLOWUPS if (p.parent / "comparisons.md").is_file()]
FIGURE_FOLLOWUPS = [p for p in FOLLOWUPS if p not in RUN_FOLLOWUPS]


@pytest.mark.parametrize("path", FIGURE_FOLLOWUPS, ids=[p.parent.name for p in FIGURE_FOLLOWUPS])
def test_followup_studies_match_their_tables_and_docs(path):
    """A follow-up study (paper_figures/followup_*/): same schema; its tables and claims are what its
    JSON produces, and the docs (results.md or experiments.md) link its ablation, oracle and claims
    tables."""
    from ibs_study.study.claims import claims_table, reproduction_checks
    from ibs_study.study.figures import table_bar_rows

    followup = load_results(path)
    assert followup.rows and followup.commit and followup.device
    for row in followup.rows:
        assert len(row.seeds) >= 3 and row.steps > 0
        for summary in row.metrics.values():
            values = summary.per_seed
            assert all(0.0 <= v <= 1.0 for v in values) and summary.mean == pytest.approx(
                sum(values) / len(values)
            )
    docs = "\n".join((ROOT / "docs" / name).read_text() for name in ("results.md", "experiments.md"))
    tables = [n for n in TABLES if table_bar_rows(followup, n)[0]]
    assert tables
    # docs link the ablation table (or, for a follow-up without its rows, Table 2) and the
    # oracle table; tables 1 and 2 are subsets of 3
    quoted = {3 if 3 in tables else 2, 5}
    for number in tables:
        expected = results_table(followup, number).strip()
        assert (path.parent / f"table{number}.md").read_text().strip() == expected
        if number in quoted:
            assert f"{path.parent.name}/table{number}.md" in docs, (
                f"docs lack table {number} of {path.parent.name}"
            )
    for model in followup.models():
        if not reproduction_checks(followup, model):
            continue
        claims = claims_table(followup, model).strip()
        assert (path.parent / f"claims_{model}.md").read_text().strip() == claims
        assert f"{path.parent.name}/claims_{model}.md" in docs, (
            f"docs lack the {model} claims of {path.parent.name}"
        )


@pytest.mark.parametrize("path", RUN_FOLLOWUPS, ids=[p.parent.name for p in RUN_FOLLOWUPS])
def test_run_followups_are_what_their_json_writes_and_the_docs_link_them(path, tmp_path):
    """A folder of ``ibs-study followup NAME`` (paper_figures/followup_NAME/): written again from
    its JSON, every table and its index are the same bytes; fractions lie in [0, 1]; the docs link
    its comparisons and claims."""
    from ibs_study.study import followups
    from ibs_study.study.oracle import LOGIT_METRICS

    name = path.parent.name.removeprefix("followup_")
    followup = load_results(path)
    assert followup.rows and followup.commit and followup.device
    for row in followup.rows:
        assert len(row.seeds) >= 3 and row.steps > 0
        for metric, summary in row.metrics.items():
            if metric not in LOGIT_METRICS:
                assert all(0.0 <= v <= 1.0 for v in summary.per_seed), (row.setting, row.variant, metric)
    written = followups.write_followup(followup, followups.FOLLOWUPS[name], tmp_path / "again")
    assert sorted(written) == sorted(p.name for p in path.parent.iterdir())
    docs = "\n".join((ROOT / "docs" / doc).read_text() for doc in ("results.md", "experiments.md"))
    for file in written:
        if file.endswith(".md"):
            assert (tmp_path / "again" / file).read_bytes() == (path.parent / file).read_bytes(), file
        if file == "comparisons.md" or file.startswith("claims_"):
            assert f"{path.parent.name}/{file}" in docs, f"docs lack {path.parent.name}/{file}"


CURVES = sorted((ROOT / "paper_figures").rglob("operating_curves_*.json"))


@pytest.mark.parametrize("path", CURVES, ids=[str(p.relative_to(ROOT / "paper_figures")) for p in CURVES])
def test_stored_operating_curves_meet_the_results_at_the_runs_own_threshold(path):
    """At the value the runs were trained and evaluated with, each curve's point is the row of the
    results file beside it (the same evaluation), seed by seed; the figure is drawn from it."""
    curves = load_operating_curves(path)
    results = load_results(path.parent / "synthetic_results.json")
    at = curves["values"].index(curves["default"])
    for row in curves["rows"]:
        stored = results.find_row(row["model"], row["setting"])
        assert tuple(curves["seeds"]) == stored.seeds
        for metric in ("acc_th", "prec_th", "pq_th"):
            assert tuple(row["points"][at]["metrics"][metric]["per_seed"]) == stored.metrics[metric].per_seed
    model = path.stem.removeprefix("operating_curves_")
    assert (path.parent / f"operating_curve_{model}.png").is_file()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["rows"][1].pop("steps"), r"rows\[1\] lacks the key\(s\) \['steps'\]"),
        (lambda d: d["rows"][2].update(seeds=[0, "1"]), r"rows\[2\]\.seeds\[1\] must be"),
        (
            lambda d: d["rows"][0]["metrics"]["pq"]["per_seed"].pop(),
            r"rows\[0\]\.metrics\.pq\.per_seed must hold one value per seed",
        ),
        (
            lambda d: d["rows"][0]["oracle_confusion_curve"]["mean"].pop(),
            r"rows\[0\]\.oracle_confusion_curve\.mean must hold one value per threshold",
        ),
        (
            lambda d: d["sweeps"]["lambda"][0]["metrics"].update(pq="high"),
            r"sweeps\.lambda\[0\]\.metrics\.pq must be",
        ),
        (lambda d: d["sweeps"]["lambda"][0].pop("key"), r"sweeps\.lambda\[0\] lacks the key\(s\) \['key'\]"),
        (lambda d: d.pop("rows"), r"not a study results JSON \(no 'rows'"),
    ],
)
def test_a_damaged_results_file_is_one_line_naming_the_key(damage, message, tmp_path):
    data = json.loads(RESULTS.read_text())
    damage(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}") as error:
        load_results(path)
    assert "\n" not in str(error.value)
