"""Synthetic generation whose worker process dies fails with an error instead of hanging."""

from __future__ import annotations

import subprocess
import sys

# A worker rendering image 1 is killed (SIGKILL, as the kernel's out-of-memory killer does).
_KILL_ONE_WORKER = """
import os, signal, sys
import ibs_study.data.synthetic as synthetic

real = synthetic._generate_one

def killed_at_image_1(index, **kwargs):
    if index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(index, **kwargs)

synthetic._generate_one = killed_at_image_1
try:
    synthetic.generate_dataset(sys.argv[1], scale="tiny", num_train=4, num_val=0, workers=2)
except RuntimeError as err:
    print("error:", err)
"""


def test_a_dead_generation_worker_is_an_error_not_a_hang(tmp_path):
    root = tmp_path / "synthetic"
    done = subprocess.run(
        [sys.executable, "-c", _KILL_ONE_WORKER, str(root)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"error: {root}: a generation worker process died while writing the train split" in done.stdout
    assert not (root / "synthetic.json").exists()  # the incomplete generation is not marked complete
