"""Follow-ups: variant rows, what they train, how their results are told apart and summarised,
and one follow-up end to end on the tiny synthetic set."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from ibs_study.cli import main
from ibs_study.config import ConfigError, resolve_config
from ibs_study.study import grid
from ibs_study.study.claims import claims_table
from ibs_study.study.figures import (
    LOGIT_PANELS,
    oracle_logits_figure,
    table_bar_rows,
    variant_color,
    variant_confusion_chart,
)
from ibs_study.study.followups import (
    FOLLOWUPS,
    SIGNED_FEATURES,
    Comparison,
    comparisons_table,
    rows_table,
    run_followup,
    scaled_warmup,
    write_followup,
)
from ibs_study.study.results import Curve, ResultRow, StudyResults, load_results, metric_summary
from ibs_study.study.runs import smoke_overrides
from ibs_study.study.specs import study_specs
from ibs_study.study.tables import results_table
from ibs_study.viz.chart import PALETTE


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_signed_features_rows_train_what_their_variant_says():
    assert scaled_warmup(1000, 65000, 2000) == 31  # 30.8 steps: the official share of the schedule
    keys = [row.key for row in SIGNED_FEATURES.rows]
    assert len(set(keys)) == len(keys) and FOLLOWUPS["signed_features"] is SIGNED_FEATURES
    assert SIGNED_FEATURES.variants() == ["signed_features", "detach_bias", "official_optimizer"]
    for row in SIGNED_FEATURES.rows:
        cfg = resolve_config(preset=row.preset, overrides=row.overrides)
        study = resolve_config(preset=row.preset)
        pfcn, optimizer = cfg.model.panoptic_fcn, cfg.optimizer
        assert pfcn.feature_activation == ("none" if row.variant == "signed_features" else "relu"), row.key
        assert cfg.ibs.detach_bias == (row.variant == "detach_bias"), row.key
        assert cfg.ibs.enabled == (row.setting == "crop_ibs") and cfg.train.max_steps == 2000
        if row.variant == "official_optimizer":
            assert (optimizer.name, optimizer.lr, optimizer.momentum, optimizer.clip) == (
                "sgd",
                0.02,
                0.9,
                "value",
            )
            assert (optimizer.clip_value, optimizer.warmup_steps, optimizer.warmup_factor) == (5.0, 31, 0.001)
        else:
            assert optimizer == study.optimizer, row.key  # AdamW 2e-3 as the study
        if not row.variant:
            assert cfg == study and row.key in ("pfcn_full", "pfcn_crop", "pfcn_crop_ibs")


def test_study_specs_name_variant_runs_and_apply_their_overrides_last():
    row = next(r for r in SIGNED_FEATURES.rows if r.key == "pfcn_crop_ibs_detach_bias")
    (spec,) = study_specs([row], [3], steps=7, overrides=["ibs.detach_bias=false", "ibs.weight=0.5"])
    assert spec.name == "pfcn_crop_ibs_detach_bias_s3" and spec.tags["row"] == "pfcn_crop_ibs_detach_bias"
    cfg = resolve_config(preset=spec.preset, overrides=list(spec.overrides))
    assert (cfg.seed, cfg.train.max_steps, cfg.ibs.weight, cfg.ibs.detach_bias) == (3, 7, 0.5, True)


def _row(setting: str, variant: str, values: dict[str, list[float]]) -> dict:
    row = {"model": "pfcn", "setting": setting, "seeds": [0, 1, 2], "steps": 2000}
    row["metrics"] = {name: metric_summary(v) for name, v in values.items()}
    return row | ({"variant": variant} if variant is not None else {})


def _data() -> dict:
    """A variant whose values differ from the study's, listed first, then the study's rows (one
    without a "variant" key, as results written before variants), as the JSON holds them."""
    return {
        "scale": "cpu",
        "rows": [
            _row("crop_ibs", "detach_bias", {"prec_th": [0.7, 0.6, 0.8], "logit_own": [3.0, 2.5, 2.0]}),
            _row("full", None, {"prec_th": [0.8, 0.7, 0.9], "logit_own": [1.0, 2.0, 3.0]}),
            _row("crop", "", {"prec_th": [0.5, 0.4, 0.6], "logit_own": [2.0, 2.0, 2.0]}),
            _row("crop_ibs", "", {"prec_th": [0.55, 0.45, 0.65], "logit_own": [1.0, 1.5, 2.0]}),
        ],
    }


def _results() -> StudyResults:
    return StudyResults.from_json(_data())


def test_comparisons_are_paired_by_seed_and_read_against_the_crop_loss():
    comparison = Comparison(
        "detached", ("crop", ""), ("crop_ibs", "detach_bias"), (("crop", ""), ("full", ""))
    )
    absent = Comparison("absent", ("crop", "signed_features"), ("crop_ibs", "signed_features"))
    table = comparisons_table(_results(), [comparison, absent], metrics=["prec_th", "logit_own", "pq"])
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, the two metrics both rows have; nothing of the absent rows
    # Prec^th: +0.2 on every seed (points: +20.00, no spread); crop loss 0.3 -> 67 %
    assert lines[2] == "| detached | Prec^th | +20.00 [+20.00, +20.00] | 3 / 3 | 67 % |"
    # logit on own thing: +1.0, +0.5, 0.0 -> mean 0.5, sd 0.5, t(0.975, 2) = 4.303: +-1.242; no share
    assert lines[3] == "| detached | logit on own thing (logit) | +0.50 [-0.74, +1.74] | 2 / 3 |  |"


def test_variant_rows_stay_out_of_the_study_tables_and_claims():
    results = _results()
    study_only = dataclasses.replace(results, rows=results.rows[1:])
    assert results_table(results, 3) == results_table(study_only, 3)
    assert claims_table(results) == claims_table(study_only)
    bars, _ = table_bar_rows(results, 3)
    assert [bar.means["prec_th"] for bar in bars] == pytest.approx([0.8, 0.5, 0.55])
    assert "| crop + IBS (paired) recovers at least half of the crop loss | Prec^th |" not in claims_table(
        results, variant="detach_bias"
    )  # the variant has no crop row of its own
    table = rows_table(results, ["prec_th", "logit_own"])
    assert "| crop_ibs | detach_bias | 3 | 70.0 ± 24.8 | 2.50 ± 1.24 |" in table
    assert "| full | (study) | 3 |" in table


def _logit_results() -> StudyResults:
    """:func:`_results` with every logit metric (the values of ``logit_own``)."""
    data = _data()
    for row in data["rows"]:
        row["metrics"] |= {m: row["metrics"]["logit_own"] for _, names in LOGIT_PANELS for m in names}
    return StudyResults.from_json(data)


def test_oracle_logits_figure_draws_every_row_with_logits():
    figure = oracle_logits_figure(_logit_results())
    axes = figure.get_axes()
    assert len(axes) == len(LOGIT_PANELS)
    for ax, (_, names) in zip(axes, LOGIT_PANELS):
        bars = [patch.get_height() for patch in ax.patches]
        assert len(bars) == 4 * len(names)  # one bar per row and metric
        assert bars[: len(names)] == pytest.approx([2.5] * len(names))  # the first row's mean
    legend = [text.get_text() for text in axes[-1].get_legend().get_texts()]
    assert legend[0] == "crop + IBS (paired sampler), detach_bias" and legend[1] == "full image"


def test_a_follow_up_runs_end_to_end_on_the_tiny_set(tmp_path, capsys, monkeypatch):
    """Two variant rows, one seed, 3 steps: runs, evaluation, oracle confusion and logits,
    results with variants, tables and figures; a second call only reads the runs; a run that
    fails as a subprocess ends the command in one line naming its log."""
    rows = ["pfcn_crop_signed_features", "pfcn_crop_ibs_detach_bias"]
    options = dict(
        root=tmp_path / "runs",
        out_dir=tmp_path / "out",
        seeds=[0],
        rows=rows,
        overrides=smoke_overrides(tmp_path / "data", 3),
        parallel=0,
        progress=False,
    )
    results = run_followup("signed_features", **options)
    out = tmp_path / "out"
    written = json.loads((out / "synthetic_results.json").read_text())
    assert written == json.loads(json.dumps(results.to_json()))
    assert [(r["setting"], r["variant"]) for r in written["rows"]] == [
        ("crop", "signed_features"),
        ("crop_ibs", "detach_bias"),
    ]
    for row in written["rows"]:
        metrics = row["metrics"]
        assert {"pq", "oracle_leak", "logit_own", "logit_bias_own", "embedding_norm"} <= set(metrics)
        assert metrics["embedding_norm"]["mean"] > 0 and np.isfinite(metrics["logit_own"]["mean"])
        assert row["steps"] == 3 and "oracle_confusion_curve" in row
    signed = resolve_config(preset="synthetic_pfcn_crop", overrides=[])  # the run's saved config differs
    saved = (tmp_path / "runs" / "pfcn_crop_signed_features_s0" / "config.yaml").read_text()
    assert "feature_activation: none" in saved and signed.model.panoptic_fcn.feature_activation == "relu"
    assert (
        "detach_bias: true"
        in (tmp_path / "runs" / "pfcn_crop_ibs_detach_bias_s0" / "config.yaml").read_text()
    )
    for name in ("rows.md", "logits.md", "comparisons.md", "fig_oracle_logits.png", "fig5_oracle_pfcn.png"):
        assert (out / name).is_file(), name
        assert f"]({name})" in (out / "index.md").read_text(), name
    # the folder is a function of its JSON: written again from it, every table is the same
    rewritten = tmp_path / "rewritten"
    names = write_followup(load_results(out / "synthetic_results.json"), SIGNED_FEATURES, rewritten)
    assert sorted(names) == sorted(p.name for p in out.iterdir())
    for name in names:
        if name.endswith((".md", ".json")):
            assert (rewritten / name).read_bytes() == (out / name).read_bytes(), name
    assert "| crop | signed_features | 1 |" in (out / "rows.md").read_text()
    # the CLI: the logit analysis of one run, and the logits compared as they are (not in percent)
    runs = tmp_path / "runs"
    capsys.readouterr()
    assert main(["oracle", str(runs / "pfcn_crop_ibs_detach_bias_s0"), "--logits", "--no-progress"]) == 0
    assert "oracle logits of " in capsys.readouterr().out
    logits = json.loads(
        (runs / "pfcn_crop_ibs_detach_bias_s0" / "eval_val" / "oracle_logits.json").read_text()
    )
    baseline, other = runs / "pfcn_crop_signed_features", runs / "pfcn_crop_ibs_detach_bias"
    assert main(["compare", str(baseline), str(other), "--seeds", "0", "--metrics", "embedding_norm"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("embedding norm ‖E‖") and f"{logits['embedding_norm']:10.1f}" in line
    # collected again without training, through the CLI
    again = tmp_path / "again"
    command = ["followup", "signed_features", "--root", str(runs), "--out", str(again), "--seeds", "0"]
    assert main([*command, "--rows", *rows, "--collect-only", "--no-progress"]) == 0
    assert f"2 rows x 1 seeds: results, tables and figures in {again}" in capsys.readouterr().out
    assert load_results(again / "synthetic_results.json").rows == results.rows
    with pytest.raises(ConfigError, match="has no rows \\['pfcn_nope'\\]"):
        run_followup("signed_features", **(options | {"rows": ["pfcn_nope"]}))
    failing = [sys.executable, "-c", "import sys; print('no space left on device'); sys.exit(3)"]
    monkeypatch.setattr(grid, "_commands", lambda *args, **kwargs: [failing])
    sets = [word for item in options["overrides"] for word in ("--set", item)]
    capsys.readouterr()
    assert main([*command, "--rows", "pfcn_crop", "--parallel", "1", "--no-progress", *sets]) == 1
    error = capsys.readouterr().err.strip()
    log = runs / "pfcn_crop_s0.log"
    assert error == f"ibs-study followup: error: runs failed: pfcn_crop_s0 (exit 3; see {log})"
    assert "no space left on device" in log.read_text()


def test_a_variant_row_is_drawn_in_its_setting_s_hue_lighter():
    def row(setting: str, variant: str = "") -> ResultRow:
        return ResultRow("pfcn", setting, (0,), 3, {}, variant=variant)

    variants = ["signed_features", "detach_bias"]
    assert variant_color(row("crop"), variants) == "#e34a33"  # the setting's own colour
    # 30 % and 50 % of the way to white: 0xe3 = 227 -> 227 + 28 * 0.3 = 235.4 -> eb
    assert variant_color(row("crop", "signed_features"), variants) == "#eb8070"
    assert (
        variant_color(row("crop", "detach_bias"), variants) == "#f1a499"
    )  # 74 + 181 * 0.5 = 164.5 rounds to even
    assert variant_color(row("crop_ibs", "signed_features"), variants) == "#6fbf87"
    assert variant_color(row("other", "x"), variants, k=1) == PALETTE[1]


def test_a_follow_up_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A figure that fails half way leaves the old folder as it was (no table of the new results,
    no temporary folder); files of other origin in the folder are kept when it is replaced."""
    from ibs_study.viz import figures

    results = _logit_results()
    out = tmp_path / "out"
    write_followup(results, SIGNED_FEATURES, out)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    changed = dataclasses.replace(results, commit="f" * 40)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "save_figure", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_followup(changed, SIGNED_FEATURES, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    write_followup(changed, SIGNED_FEATURES, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert load_results(out / "synthetic_results.json").commit == "f" * 40


def test_variant_confusion_panels_put_each_variant_over_the_study_s_rows():
    """A panel per variant on one y axis: the study's rows first, then a variant's rows (solid,
    banded) over the study's rows of its settings and crop (dotted, unbanded, not in the legend)."""

    def curve(level: float) -> Curve:
        return Curve.of(
            [{"thresholds": [0.1, 0.5], "ratio": [level + d, level / 2 + d]} for d in (0.0, 0.01)]
        )

    def row(setting: str, variant: str, level: float) -> ResultRow:
        return ResultRow("pfcn", setting, (0, 1), 3, {}, variant=variant, confusion_curve=curve(level))

    rows = (
        row("full", "", 0.2),
        row("crop", "", 0.6),
        row("crop_ibs", "", 0.4),
        row("crop_ibs", "detach_bias", 0.3),
        row("crop", "signed_features", 0.5),
    )
    chart = variant_confusion_chart(StudyResults("cpu", "cpu", None, rows), "pfcn")
    study, detach, signed = chart.panels
    assert [p.title for p in chart.panels] == [
        "the study's rows",
        "detach_bias\n(dotted: the study's rows)",
        "signed_features\n(dotted: the study's rows)",
    ]
    assert [(line.label, line.dash, line.band is None) for line in study.lines] == [
        ("full image", "-", False),
        ("crop", "-", False),
        ("crop + IBS (paired sampler)", "-", False),
    ]
    # detach_bias: the study's crop and crop + IBS dotted, then its own row (means at T = 10 %)
    assert [(line.dash, line.legend, line.band is None) for line in detach.lines] == [
        (":", False, True),
        (":", False, True),
        ("-", True, False),
    ]
    assert [line.y[0] for line in detach.lines] == pytest.approx([60.5, 40.5, 30.5])
    assert [line.y[0] for line in signed.lines] == pytest.approx([60.5, 50.5])  # the study's crop only
    # one y axis: 5 % above the highest band, the study's crop at T = 10 %: 60.5 + t(0.975, 1) x its standard error 0.5
    top = 60.5 + 12.706 * 0.5
    assert [p.ylim for p in chart.panels] == [(0, pytest.approx(1.05 * top, abs=0.01))] * 3
    assert variant_confusion_chart(StudyResults("cpu", "cpu", None, rows), "m2f") is None
