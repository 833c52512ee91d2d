"""Suite-wide settings.

The suite runs in several pytest-xdist processes on a small machine; torch's default of
one thread per core per process oversubscribes the CPU and makes every convolution many
times slower, so each process uses one thread (subprocesses inherit OMP_NUM_THREADS).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
