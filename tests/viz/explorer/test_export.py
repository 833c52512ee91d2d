"""The static export (ibs_study.viz.explorer.export): PNG + HTML of the most confused predictions of the
hand-built runs, written atomically, without ipywidgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ibs_study.atomic import TEMP_SUFFIX
from ibs_study.viz.explorer.export import export_static
from ibs_study.viz.explorer.images import OUTLINE_COLORS

REPO = Path(__file__).resolve().parents[3]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "RGB"
        return np.asarray(png)


def test_export_writes_a_png_per_prediction_and_one_page(data, tmp_path):
    paths = export_static(data, tmp_path / "static", top_k=2, include_plotlyjs="cdn")
    # most confused first, then larger first: image b's car (400 px) before image a's person (70 px)
    assert [p.name for p in paths] == [
        "01_crop_a_pred1.png",
        "02_crop_b_pred1.png",
        "confusion_views_crop.html",
    ]
    first = _pixels(paths[0])
    # margins and gaps of 10 px around the panoptic images of GT | crop | crop + IBS, 480 px each
    assert first.shape[1] == 10 + 3 * 480 + 2 * 10 + 10
    # the instance views are the 49 x 29 px region enlarged 480 / 49 times: car 11's 2-pixel outline (104 px,
    # some under its label) becomes thousands of pixels of its colour in each of the two views
    for color in OUTLINE_COLORS[:2]:
        assert (first == color).all(axis=2).sum() > 2 * 0.5 * 104 * (480 / 49) ** 2
    assert not (_pixels(paths[1]) == OUTLINE_COLORS[1]).all(axis=2).any()  # image b: one car, one outline
    page = paths[2].read_text()
    # per prediction the widget's figures (two instance views, the bars), its status line and table
    assert page.count("plotly-graph-div") == 2 * 3 and page.count("cdn.plot.ly") == 1
    assert "car 2: 87%" in page and "<td>car 2</td><td>86.7</td>" in page
    assert "<b>crop</b> · image a · car 1 (L) · covers 2 GT things &gt; T=0.50" in page
    assert "<a href='01_crop_a_pred1.png'>PNG</a>" in page
    assert sorted(p.name for p in (tmp_path / "static").iterdir()) == sorted(p.name for p in paths)


def test_export_refuses_to_overwrite_and_leaves_no_partial_file(data, tmp_path, monkeypatch):
    out = tmp_path / "static"
    out.mkdir()
    (out / "02_crop_b_pred1.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="02_crop_b_pred1.png exists; export_static does not overwrite"):
        export_static(data, out, top_k=2)
    assert [p.name for p in out.iterdir()] == ["02_crop_b_pred1.png"]  # nothing written
    assert (out / "02_crop_b_pred1.png").read_bytes() == b"mine"

    save = Image.Image.save
    calls = []

    def fail_on_second(image, fp, *args, **kwargs):
        """The second PNG file stops half-written, as on a full disk (in-memory PNGs are left alone)."""
        calls.append(hasattr(fp, "name"))
        if sum(calls) == 2 and calls[-1]:
            fp.write(b"\x89PNG partial")
            raise OSError("No space left on device")
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fail_on_second)
    with pytest.raises(OSError, match="No space left"):
        export_static(data, tmp_path / "faulty", top_k=2)
    # the first PNG is complete; of the second nothing is left, not even a temporary file; no page
    assert [p.name for p in (tmp_path / "faulty").iterdir()] == ["01_crop_a_pred1.png"]
    assert _pixels(tmp_path / "faulty" / "01_crop_a_pred1.png").shape[1] == 1480
    assert not list((tmp_path / "faulty").glob(f"*{TEMP_SUFFIX}"))


def test_export_runs_without_the_widget_stack(hand_runs, tmp_path):
    """In a fresh process the export writes its files and imports neither ipywidgets nor a browser exporter."""
    script = f"""
import json, sys
from ibs_study.viz.explorer import export_static, ExplorerData
from ibs_study.data.datasets import synthetic
dataset = synthetic({str(hand_runs.root / "data")!r}, "val")
data = ExplorerData.from_paths({[str(d) for d in hand_runs.eval_dirs]!r}, dataset, ["crop", "crop + IBS"])
paths = export_static(data, {str(tmp_path / "out")!r}, top_k=1)
print(json.dumps({{"files": [p.name for p in paths], "loaded": sorted(m for m in ("ipywidgets", "anywidget",
    "kaleido", "matplotlib.pyplot") if m in sys.modules)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"files": ["01_crop_a_pred1.png", "confusion_views_crop.html"], "loaded": []}
    assert (
        "Plotly.newPlot" in (tmp_path / "out" / "confusion_views_crop.html").read_text()
    )  # plotly.js embedded
