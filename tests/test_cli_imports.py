"""The data commands of the CLI (synth, stats, score) never import torch: it costs ~3 s per call
on a 2-core machine, more than generating the CPU-scale dataset or scoring a few images takes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    segments_from_id_map,
    write_id_png,
    write_panoptic_json,
)

SCRIPT = """
import json
import pathlib
import sys
from ibs_study.cli import main
out = sys.argv[1]
assert main(["synth", "--out", out, "--scale", "tiny", "--num-train", "2", "--num-val", "1",
             "--height", "64", "--width", "128", "--workers", "1", "--colour-jitter", "12"]) == 0
info = json.loads((pathlib.Path(out) / "synthetic.json").read_text())
assert info["colour_jitter"] == 12.0 and info["colour_classes"] is False
assert main(["synth", "--out", out + "_classes", "--scale", "tiny", "--num-train", "1", "--num-val", "1",
             "--workers", "1", "--colour-classes"]) == 0
classes = json.loads((pathlib.Path(out + "_classes") / "annotations" / "panoptic_val.json").read_text())
assert sum(c["isthing"] for c in classes["categories"]) == 24
assert main(["stats", out, "--split", "val"]) == 0
try:
    main(["score", "--help"])
except SystemExit as done:  # argparse's --help
    assert done.code == 0
print("torch imported:", "torch" in sys.modules)
"""


def test_data_commands_do_not_import_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "synth")], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(result.stderr)
    assert "torch imported: False" in result.stdout, result.stdout + result.stderr


SCORE_SCRIPT = """
import sys
from ibs_study.cli import main
folder = sys.argv[1]
code = main(["score", "--gt-json", folder + "/gt.json", "--gt-dir", folder + "/gt",
             "--pred-json", folder + "/pred.json", "--pred-dir", folder + "/pred", "--workers", "2"])
print("exit", code, "torch", "torch" in sys.modules, "torchvision", "torchvision" in sys.modules)
# the parser adds only the running command's arguments: the other commands' modules stay unloaded
print("synthetic", "ibs_study.data.synthetic" in sys.modules, "datasets", "ibs_study.data.datasets" in sys.modules)
"""


def test_score_imports_neither_torch_nor_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    categories = [CategoryInfo(7, "road", False, (128, 64, 128)), CategoryInfo(26, "car", True, (0, 0, 142))]
    for side in ("gt", "pred"):
        id_map = np.full((32, 48), 7000, dtype=np.int64)
        id_map[8 : 16 + int(rng.integers(0, 8)), 10:30] = 26001
        (tmp_path / side).mkdir()
        write_id_png(tmp_path / side / "0.png", id_map)
        segments = segments_from_id_map(id_map, {7000: 7, 26001: 26})
        record = ImageRecord(0, "0.jpg", 48, 32, "0.png", segments)
        write_panoptic_json(tmp_path / f"{side}.json", [record], categories)
    result = subprocess.run(
        [sys.executable, "-c", SCORE_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "exit 0 torch False torchvision False" in result.stdout, result.stdout + result.stderr
    assert "synthetic False datasets False" in result.stdout, result.stdout
    assert "All" in result.stdout  # it did score


LISTING_SCRIPT = """
import contextlib
import io
import sys
from ibs_study.cli import COMMANDS, main
with contextlib.redirect_stdout(io.StringIO()) as listing:
    assert main(["presets"]) == 0
    assert main(["presets", "synthetic_pfcn_crop_ibs"]) == 0
    for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
        try:
            main(argv)
        except SystemExit as done:  # argparse's --help
            assert done.code == 0, argv
assert "synthetic_pfcn_crop_ibs" in listing.getvalue()
print("torch imported:", "torch" in sys.modules)
"""


def test_presets_and_help_do_not_import_torch():
    """``ibs-study presets`` (listing and one preset) and every ``--help`` answer without torch."""
    result = subprocess.run(
        [sys.executable, "-c", LISTING_SCRIPT], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(result.stderr)
    assert "torch imported: False" in result.stdout, result.stdout + result.stderr
