"""The paper's claims checked on seed-paired differences (ibs_study.study.claims), on hand-built rows."""

from __future__ import annotations

import pytest

from ibs_study.study.claims import claims_table, reproduction_checks
from ibs_study.study.results import Curve, ResultRow, StudyResults, Summary


def _row(setting: str, prec: list[float], curve_level: list[float]) -> ResultRow:
    summary = Summary(sum(prec) / len(prec), (0.0, 1.0), tuple(prec))
    curves = [{"thresholds": [0.1, 0.5], "ratio": [level, level / 2]} for level in curve_level]
    return ResultRow("pfcn", setting, (0, 1, 2), 3, {"prec_th": summary}, confusion_curve=Curve.of(curves))


def test_reproduction_checks_on_hand_built_rows():
    rows = (
        _row("full", [0.60, 0.58, 0.62], [0.2, 0.2, 0.2]),
        _row("crop", [0.40, 0.40, 0.44], [0.6, 0.5, 0.7]),
        _row("crop_ibs_random", [0.50, 0.45, 0.50], [0.3, 0.3, 0.3]),
        _row("crop_ibs", [0.52, 0.50, 0.56], [0.7, 0.4, 0.3]),
    )
    results = StudyResults("cpu", "cpu", None, rows)
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
