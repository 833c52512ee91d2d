"""The demo: findings follow the numbers, and a quick end-to-end run prints what its runs measured."""

from __future__ import annotations

import json

import pytest

from ibs_study.engine.run_dir import RunDirError
from ibs_study.study.demo import (
    demo_findings,
    demo_table,
    explore_command,
    reproduction_lines,
    run_demo,
    setting_labels,
    stored_run,
)
from ibs_study.study.results import StudyResults
from ibs_study.study.runs import project_root


def _metrics(prec: float, acc: float = 0.5) -> dict:
    curve = {"thresholds": [0.05, 0.1, 0.5], "ratio": [0.5, 0.4, 0.1]}
    return {
        "all": {"pq": 0.5},
        "things": {"pq": 0.3},
        "stuff": {"pq": 0.7},
        "acc_th": acc,
        "prec_th": prec,
        "confusion_curve": curve,
    }


def test_findings_state_what_the_numbers_show():
    metrics = {"full": _metrics(0.60), "crop": _metrics(0.45), "crop_ibs": _metrics(0.55, acc=0.4)}
    oracles = {"full": {"leak": 0.30}, "crop": {"leak": 0.40}, "crop_ibs": {"leak": 0.32}}
    text = "\n".join(demo_findings(metrics, oracles))
    assert "crop training lowered Prec^th by 15.0 points" in text
    assert "changed Prec^th by +10.0 and Acc^th by -10.0 points" in text
    assert "full image 30.0%, crop 40.0%, crop + IBS (paired) 32.0%" in text
    assert "crop training leaks more than full-image training, IBS leaks less than crop training." in text
    reversed_ = {"full": _metrics(0.40), "crop": _metrics(0.45), "crop_ibs": _metrics(0.45)}
    worse = {"full": {"leak": 0.5}, "crop": {"leak": 0.4}, "crop_ibs": {"leak": 0.45}}
    text = "\n".join(demo_findings(reversed_, worse))
    assert (
        "did NOT lower Prec^th" in text and "does NOT leak more" in text and "IBS does NOT leak less" in text
    )
    table = demo_table(metrics, oracles).splitlines()
    assert table[1].split()[-2:] == ["60.0", "30.0"] and table[3].split()[-2:] == ["55.0", "32.0"]


def test_explore_command_opens_the_demo_runs(tmp_path, monkeypatch):
    """The default folder opens with `make explore` (notebook 05 falls back to it); another folder
    is named as notebook 05's run_dirs."""
    monkeypatch.chdir(project_root())
    assert explore_command("runs/demo") == "make explore"
    assert explore_command(project_root() / "runs" / "demo") == "make explore"
    assert explore_command(tmp_path / "d") == (
        f"notebooks/05_confusion_explorer.ipynb with run_dirs = {[str(tmp_path / 'd' / 'crop'), str(tmp_path / 'd' / 'crop_ibs')]}"
    )


@pytest.mark.slow
def test_quick_demo_reports_the_measured_numbers(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, tmp_path / "data", steps=2, parallel=2, progress=False, scale="tiny")
    for setting, label in (("full", "full image"), ("crop", "crop"), ("crop_ibs", "crop + IBS (paired)")):
        metrics = json.loads((out / setting / "eval_val" / "metrics.json").read_text())
        oracle = json.loads((out / setting / "eval_val" / "oracle_confusion.json").read_text())
        line = next(x for x in report.splitlines() if x.startswith(f"{label:22s}"))
        assert line.split()[-2:] == [f"{100 * metrics['prec_th']:.1f}", f"{100 * oracle['leak']:.1f}"]
    assert (out / "confusion_curve.png").stat().st_size > 1000
    assert f"confusion curve: {out / 'confusion_curve.png'}" in report
    assert report.splitlines()[-1].endswith(explore_command(out))
    assert "2 training steps per run" in report  # read back from the runs' configs
    # run again with another budget: the folder's runs are refused, not reported as 3-step runs
    with pytest.raises(RunDirError, match=r"train\.max_steps: 2 -> 3"):
        run_demo(out, tmp_path / "data", steps=3, parallel=2, progress=False, scale="tiny")


def _results(steps: int = 2000) -> StudyResults:
    """A results JSON with a pfcn full row of seeds 0 and 3 (values chosen per seed)."""

    def summary(values):
        return {"mean": sum(values) / len(values), "ci95": [0.0, 1.0], "per_seed": values}

    metrics = {
        "pq": summary([0.61, 0.71]),
        "pq_th": summary([0.42, 0.52]),
        "pq_st": summary([0.83, 0.93]),
        "acc_th": summary([0.55, 0.65]),
        "prec_th": summary([0.75, 0.85]),
        "oracle_leak": summary([0.22, 0.32]),
    }
    curve = {
        "thresholds": [0.05, 0.1],
        "mean": [0.45, 0.35],
        "ci95": [[0, 1], [0, 1]],
        "per_seed": [[0.5, 0.4], [0.4, 0.3]],
    }
    row = {
        "model": "pfcn",
        "setting": "full",
        "preset": "synthetic_pfcn_full",
        "seeds": [0, 3],
        "steps": steps,
    }
    return StudyResults.from_json({"rows": [{**row, "metrics": metrics, "confusion_curve": curve}]})


def test_stored_run_is_the_study_row_at_that_seed_and_budget():
    metrics, oracle = stored_run(_results(), "full", 3, 2000)
    assert metrics["all"]["pq"] == 0.71 and metrics["things"]["pq"] == 0.52 and metrics["stuff"]["pq"] == 0.93
    assert (metrics["acc_th"], metrics["prec_th"], oracle["leak"]) == (0.65, 0.85, 0.32)
    assert metrics["confusion_curve"] == {"thresholds": [0.05, 0.1], "ratio": [0.4, 0.3]}
    assert stored_run(_results(), "full", 1, 2000) is None  # a seed the study did not run
    assert stored_run(_results(), "crop", 0, 2000) is None  # a setting it lacks
    assert stored_run(_results(steps=800), "full", 0, 2000) is None  # another budget


def test_reproduction_lines_name_each_differing_metric_with_both_values():
    same = stored_run(_results(), "full", 0, 2000)[0]
    line = reproduction_lines({"full": same}, _results(), 0, 2000, "r.json")
    assert line == [
        "full image: the same PQ, PQ^th, PQ^st, Acc^th and Prec^th as the study's seed-0 run (r.json)"
    ]
    other = {**same, "prec_th": 0.7}
    (line,) = reproduction_lines({"full": other}, _results(), 0, 2000, "r.json")
    assert line == "full image: differs from the study's seed-0 run (r.json): prec_th 70.00 (study 75.00)"
    assert reproduction_lines({"full": same}, _results(), 0, 100, "r.json") == []  # not comparable


def test_a_row_read_from_the_study_is_labelled_so():
    metrics = {"full": stored_run(_results(), "full", 0, 2000)[0], "crop": _metrics(0.45)}
    labels = setting_labels(["full"])
    table = demo_table(metrics, {"full": {"leak": 0.22}}, labels).splitlines()
    assert table[1].startswith("full image (study)") and table[1].split()[-2:] == ["75.0", "22.0"]
    assert table[2].startswith("crop ")
