"""The Table 1-7 analogues (ibs_study.study.tables): the committed tables are the ones the results JSON
produces, and rows without a table's metrics are left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibs_study.study.results import StudyResults, load_results
from ibs_study.study.tables import TABLES, results_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "paper_figures" / "synthetic_results.json"


@pytest.fixture(scope="module")
def results() -> dict:
    return load_results(RESULTS)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_published_tables_are_generated_from_the_json(results, table):
    expected = results_table(results, table)
    assert expected.strip() in (ROOT / "docs" / "results.md").read_text(), f"docs/results.md: table {table}"
    assert (ROOT / "paper_figures" / f"table{table}.md").read_text().strip() == expected.strip()


def test_tables_leave_out_rows_collected_before_their_metrics_existed():
    from ibs_study.study.figures import table_bar_rows

    def summary(value: float) -> dict:
        return {"mean": value, "ci95": [value - 0.01, value + 0.01], "per_seed": [value - 0.01, value + 0.01]}

    old = {"acc_th": summary(0.4), "prec_th": summary(0.5)}
    new = old | {name: summary(0.1) for name in ("gt_th_other_instance", "pred_th_other_instance")}
    new |= {"gt_th_matched": summary(0.4), "pred_th_matched": summary(0.5)}
    data = {
        "scale": "cpu",
        "rows": [
            {"model": "pfcn", "setting": "full", "seeds": [0, 1], "steps": 3, "metrics": old},
            {"model": "pfcn", "setting": "crop", "seeds": [0, 1], "steps": 3, "metrics": new},
        ],
    }
    results = StudyResults.from_json(data)
    table = results_table(results, 6)
    assert "Panoptic FCN, crop | 40.0 ± 1.0 | – | 10.0 ± 1.0 | – | – |" in table
    assert "full image" not in table  # no share of the GT thing pixels: left out, not a row of dashes
    assert [row.setting for row in table_bar_rows(results, 7)[0]] == ["crop"]
    assert "Panoptic FCN, full image | – | – | – | 40.0 ± 1.0 |" in results_table(
        results, 1
    )  # Acc^th: table 1
