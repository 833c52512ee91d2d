"""The committed study results: schema of paper_figures/synthetic_results.json, and the tables in
docs/results.md and paper_figures/ are the ones the JSON produces (no hand-edited number)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from ibs_study.study.results import TABLES, load_operating_curves, load_results, results_table

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


def test_results_page_is_short_and_states_at_most_ten_findings():
    """docs/results.md is read at once: at most 250 lines, a findings list of one to ten bullets;
    the history lives in docs/experiments.md."""
    text = (ROOT / "docs" / "results.md").read_text()
    assert len(text.splitlines()) <= 250
    findings = text.split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert 1 <= sum(line.startswith("* ") for line in findings.splitlines()) <= 10
    assert "(experiments.md)" in text and (ROOT / "docs" / "experiments.md").is_file()


def _row(setting: str, prec: list[float], curve_level: list[float]) -> dict:
    summary = {"mean": sum(prec) / len(prec), "ci95": [0, 1], "per_seed": prec}
    curves = [[level, level / 2] for level in curve_level]
    return {
        "model": "pfcn",
        "setting": setting,
        "seeds": [0, 1, 2],
        "metrics": {"prec_th": summary},
        "confusion_curve": {"thresholds": [0.1, 0.5], "per_seed": curves},
    }


def test_reproduction_checks_on_hand_built_rows():
    from ibs_study.study.results import claims_table, reproduction_checks

    results = {
        "rows": [
            _row("full", [0.60, 0.58, 0.62], [0.2, 0.2, 0.2]),
            _row("crop", [0.40, 0.40, 0.44], [0.6, 0.5, 0.7]),
            _row("crop_ibs_random", [0.50, 0.45, 0.50], [0.3, 0.3, 0.3]),
            _row("crop_ibs", [0.52, 0.50, 0.56], [0.7, 0.4, 0.3]),
        ]
    }
    short = {"crop training": "loss", "crop + IBS (p": "recovery", "paired sample": "paired"}
    checks = {(short[c.claim[:13]], c.measure): c for c in reproduction_checks(results)}
    loss = checks[("loss", "Prec^th")]
    assert loss.difference["per_seed"] == pytest.approx([0.20, 0.18, 0.18]) and loss.verdict == "yes"
    recovery = checks[("recovery", "Prec^th")]
    # gains 0.12, 0.10, 0.12 over a loss of 0.18667: 60 % recovered, every seed gains.
    assert recovery.recovered == pytest.approx((0.34 / 3) / (0.56 / 3)) and recovery.verdict == "yes"
    paired = checks[("paired", "Prec^th")]
    # mean +4.3 points, but t(2) = 4.30 widens the interval to [-0.8, +9.5]: not established.
    assert (
        paired.difference["per_seed"] == pytest.approx([0.02, 0.05, 0.06])
        and paired.verdict == "direction only"
    )
    # Confusion curve means per seed: full .15; crop .45 .375 .525; IBS .525 .3 .225 (lower is better).
    curve = checks[("recovery", "confusion curve (mean over T)")]
    assert curve.difference["per_seed"] == pytest.approx([-0.075, 0.075, 0.3])
    assert curve.recovered == pytest.approx(0.1 / 0.3) and curve.verdict == "no"  # a third recovered
    assert checks[("paired", "confusion curve (mean over T)")].verdict == "no"  # random is lower
    table = claims_table(results)
    assert "| crop training is worse than full-image training | Prec^th | +18.7 [" in table
    assert "| 3 / 3 | 61 % | yes |" in table  # every seed gains; 61 % recovered
    # the curve's recovery: IBS lower than crop on 2 of 3 seeds (-0.075 is against)
    assert "| confusion curve (mean over T) | +10.0 [" in table and "| 2 / 3 | 33 % | no |" in table


FOLLOWUPS = sorted((ROOT / "paper_figures").glob("followup_*/synthetic_results.json"))


@pytest.mark.parametrize("path", FOLLOWUPS, ids=[p.parent.name for p in FOLLOWUPS])
def test_followup_studies_match_their_tables_and_docs(path):
    """A follow-up study (paper_figures/followup_*/): same schema; its tables and claims, and the
    ablation, oracle and claims tables the docs (results.md or experiments.md) quote from it, are
    what its JSON produces."""
    from ibs_study.study.figures import table_bar_rows
    from ibs_study.study.results import claims_table, reproduction_checks

    followup = load_results(path)
    assert followup["rows"] and followup["commit"] and followup["device"]
    for row in followup["rows"]:
        assert len(row["seeds"]) >= 3 and row["steps"] > 0
        for summary in row["metrics"].values():
            values = summary["per_seed"]
            assert all(0.0 <= v <= 1.0 for v in values) and summary["mean"] == pytest.approx(
                sum(values) / len(values)
            )
    docs = "\n".join((ROOT / "docs" / name).read_text() for name in ("results.md", "experiments.md"))
    tables = [n for n in TABLES if table_bar_rows(followup, n)[0]]
    assert tables
    # docs quote the ablation table (or, for a follow-up without its rows, Table 2) and the
    # oracle table; tables 1 and 2 are subsets of 3
    quoted = {3 if 3 in tables else 2, 5}
    for number in tables:
        expected = results_table(followup, number).strip()
        assert (path.parent / f"table{number}.md").read_text().strip() == expected
        if number in quoted:
            assert expected in docs, f"docs lack table {number} of {path.parent.name}"
    for model in dict.fromkeys(row["model"] for row in followup["rows"]):
        if not reproduction_checks(followup, model):
            continue
        claims = claims_table(followup, model).strip()
        assert (path.parent / f"claims_{model}.md").read_text().strip() == claims
        assert claims in docs, f"docs lack the {model} claims table of {path.parent.name}"


def test_tables_leave_out_rows_collected_before_their_metrics_existed():
    from ibs_study.study.figures import table_bar_rows

    def summary(value: float) -> dict:
        return {"mean": value, "ci95": [value - 0.01, value + 0.01], "per_seed": [value - 0.01, value + 0.01]}

    old = {"acc_th": summary(0.4), "prec_th": summary(0.5)}
    new = old | {name: summary(0.1) for name in ("gt_th_other_instance", "pred_th_other_instance")}
    new |= {"gt_th_matched": summary(0.4), "pred_th_matched": summary(0.5)}
    results = {
        "scale": "cpu",
        "rows": [
            {"model": "pfcn", "setting": "full", "seeds": [0, 1], "metrics": old},
            {"model": "pfcn", "setting": "crop", "seeds": [0, 1], "metrics": new},
        ],
    }
    table = results_table(results, 6)
    assert "Panoptic FCN, crop | 40.0 ± 1.0 | – | 10.0 ± 1.0 | – | – |" in table
    assert "full image" not in table  # no share of the GT thing pixels: left out, not a row of dashes
    assert [row.setting for row in table_bar_rows(results, 7)[0]] == ["crop"]
    assert "Panoptic FCN, full image | – | – | – | 40.0 ± 1.0 |" in results_table(
        results, 1
    )  # Acc^th: table 1


CURVES = sorted((ROOT / "paper_figures").rglob("operating_curves_*.json"))


@pytest.mark.parametrize("path", CURVES, ids=[str(p.relative_to(ROOT / "paper_figures")) for p in CURVES])
def test_stored_operating_curves_meet_the_results_at_the_runs_own_threshold(path):
    """At the value the runs were trained and evaluated with, each curve's point is the row of the
    results file beside it (the same evaluation), seed by seed; the figure is drawn from it."""
    curves = load_operating_curves(path)
    results = load_results(path.parent / "synthetic_results.json")
    at = curves["values"].index(curves["default"])
    for row in curves["rows"]:
        stored = next(
            r for r in results["rows"] if (r["model"], r["setting"]) == (row["model"], row["setting"])
        )
        assert curves["seeds"] == stored["seeds"]
        for metric in ("acc_th", "prec_th", "pq_th"):
            assert row["points"][at]["metrics"][metric]["per_seed"] == stored["metrics"][metric]["per_seed"]
    model = path.stem.removeprefix("operating_curves_")
    assert (path.parent / f"operating_curve_{model}.png").is_file()
