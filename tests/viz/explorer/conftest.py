"""The hand-built runs of tests/viz/conftest.py read as ExplorerData."""

from __future__ import annotations

import pytest

from ibs_study.viz.explorer.data import ExplorerData


@pytest.fixture(scope="module")
def data(hand_runs) -> ExplorerData:
    return ExplorerData.from_paths(hand_runs.eval_dirs, hand_runs.dataset, hand_runs.labels)
