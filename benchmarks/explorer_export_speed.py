"""Speed of the confusion explorer's static export (PNG + HTML of a run's most confused predictions).

Each repeat starts a fresh Python process that reads two evaluated runs (``ExplorerData.from_runs``)
and exports the ``--top-k`` most confused predictions of the first; the process's wall clock is what
a user of ``ibs-study figures`` or a headless notebook waits for, the export alone (timed inside) is
the inner loop. With ``--peer-src``, a folder holding an older ``ibs_study`` (e.g. ``git archive REV
ibs_study | tar -x -C DIR``) is timed the same way, interleaved: before the explorer package its
export built the ipywidgets explorer and drew the PNG with matplotlib.

    .venv/bin/python benchmarks/explorer_export_speed.py --runs runs/demo/crop runs/demo/crop_ibs \
        --peer-src /tmp/ibs_before --repeats 3

Results go to docs/benchmarks.md ("Confusion explorer: static export").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the fresh process: argv = out_dir, top_k, data_root ("" for the configs' own), run dirs...
EXPORT = """
import json, sys, time
out, top_k, data_root, run_dirs = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4:]
try:
    from ibs_study.viz.explorer.data import ExplorerData
    from ibs_study.viz.explorer.export import export_static

    def export(data):
        return export_static(data, out, top_k, run=0)
except ImportError:  # an ibs_study before the explorer package: the widget's export
    from ibs_study.viz.explorer import ConfusionExplorer
    from ibs_study.viz.explorer_data import ExplorerData

    def export(data):
        return ConfusionExplorer(data).export_static(out, top_k, run=0)
data = ExplorerData.from_runs(run_dirs, data_root=data_root)
start = time.perf_counter()
files = export(data)
print(json.dumps({"export_s": time.perf_counter() - start, "files": len(files),
                  "ipywidgets": "ipywidgets" in sys.modules}))
"""


def time_once(python_path: str | None, out_dir: Path, args: argparse.Namespace) -> dict:
    """One fresh process: its wall clock and what it printed."""
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    data_root = str(Path(args.data_root).resolve()) if args.data_root else ""
    runs = [str(Path(run).resolve()) for run in args.runs]
    command = [sys.executable, "-c", EXPORT, str(out_dir), str(args.top_k), data_root, *runs]
    start = time.perf_counter()
    # run outside any checkout: `python -c` puts the working folder first on sys.path
    done = subprocess.run(command, env=env, cwd=out_dir.parent, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return {"wall_s": wall, **json.loads(done.stdout.splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs=2, default=["runs/demo/crop", "runs/demo/crop_ibs"])
    parser.add_argument("--data-root", default=None, help="where the runs' dataset lies now")
    parser.add_argument("--top-k", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-src", default=None, help="folder with an older ibs_study to compare with")
    args = parser.parse_args()
    sides = {"this tree": None}
    if args.peer_src is not None:
        sides = {"peer": str(Path(args.peer_src).resolve()), **sides}
    results: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, python_path in sides.items():
                out_dir = Path(tmp) / f"{name.replace(' ', '_')}_{repeat}"
                results[name].append(time_once(python_path, out_dir, args))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"runs {args.runs}, top {args.top_k}, {args.repeats} repeats (median [min-max])")
    for name, rows in results.items():
        walls, exports = [r["wall_s"] for r in rows], [r["export_s"] for r in rows]
        print(
            f"{name}: fresh process {statistics.median(walls):.2f} s [{min(walls):.2f}-{max(walls):.2f}], "
            f"export {statistics.median(exports):.2f} s [{min(exports):.2f}-{max(exports):.2f}], "
            f"{rows[0]['files']} files, ipywidgets imported: {rows[0]['ipywidgets']}"
        )


if __name__ == "__main__":
    main()
