"""The committed study results: schema of paper_figures/synthetic_results.json, and the tables in
docs/results.md and paper_figures/ are the ones the JSON produces (no hand-edited number)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from ibs_study.study import TABLES, load_results, results_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "paper_figures" / "synthetic_results.json"
METRICS = {
    "pfcn": {"pq", "pq_th", "pq_st", "acc_th", "prec_th"},
    "m2f": {"pq", "pq_th", "pq_st", "acc_th", "prec_th"},
}
METRICS["m2f_instance"] = {"ap", "ap_l", "acc_th", "prec_th"}


@pytest.fixture(scope="module")
def results() -> dict:
    return load_results(RESULTS)


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


@pytest.mark.parametrize("table", sorted(TABLES))
def test_published_tables_are_generated_from_the_json(results, table):
    expected = results_table(results, table)
    assert expected.strip() in (ROOT / "docs" / "results.md").read_text(), f"docs/results.md: table {table}"
    assert (ROOT / "paper_figures" / f"table{table}.md").read_text().strip() == expected.strip()


def test_figure_provenance_names_this_json(results):
    provenance = json.loads((ROOT / "paper_figures" / "provenance.json").read_text())
    import hashlib

    assert provenance["results_sha256"] == hashlib.sha256(RESULTS.read_bytes()).hexdigest()
