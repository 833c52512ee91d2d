#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one run, for a machine lent for a few minutes:
# the device; the IBS overhead of both paper-scale presets with float32 matrix products at
# PyTorch's default precision and with TF32, each with the IBS term's 15 costliest kernels; a
# short `ibs-study train` of the tiny Mask2Former with IBS and AMP on the device; the CUDA-only
# tests. Each part's output goes to a file in $OUT (default /tmp/gpu_checks) and to the terminal.
#
#     bash benchmarks/gpu_checks.sh                           # on the GPU machine
#     DEVICE=cpu SCALE=cpu STEPS=4 WARMUP=1 bash benchmarks/gpu_checks.sh   # the same steps on a CPU
#
# Needs the packages the training code imports; ibs_study itself is found through PYTHONPATH
# (no install). On a machine that cannot download packages and lacks some
# of them, put their wheels into .whl/ first (the command is in docs/benchmarks.md, "IBS
# overhead"): if a package is missing they are installed into /tmp/site, and a package still
# missing then stops the run.
set -euo pipefail

OUT=${OUT:-/tmp/gpu_checks}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-paper}
DATA=${DATA:-/tmp/synth_${SCALE}}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-3}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"

missing_packages() {
    "$PYTHON" -c "
import importlib.util
needed = ['torch', 'torchvision', 'numpy', 'scipy', 'PIL', 'yaml', 'tqdm', 'numba', 'deflate', 'pycocotools', 'tensorboard']
print(' '.join(name for name in needed if importlib.util.find_spec(name) is None))"
}
missing=$(missing_packages)
if [ -n "$missing" ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
    missing=$(missing_packages)
fi
if [ -n "$missing" ]; then
    echo "gpu_checks.sh: Python packages missing: $missing (put their wheels into .whl/, see docs/benchmarks.md)" >&2
    exit 2
fi

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'threads', torch.get_num_threads())"
} 2>&1 | tee "$OUT/device.txt"

for precision in highest high; do
    "$PYTHON" benchmarks/ibs_overhead.py --scale "$SCALE" --device "$DEVICE" --data "$DATA" --num-train 16 \
        --steps "$STEPS" --warmup "$WARMUP" --set "train.float32_matmul_precision=$precision" --profile 15 \
        2>&1 | tee "$OUT/ibs_overhead_matmul_${precision}.txt"
done

run=$(mktemp -d)/m2f_crop_ibs
amp=$([ "$DEVICE" = cuda ] && echo true || echo false)
"$PYTHON" -m ibs_study train --preset synthetic_m2f_crop_ibs --out "$run" --no-progress \
    --set "data.root=${DATA}_cpu_scale" --set "train.device=$DEVICE" --set "train.amp=$amp" \
    --set train.max_steps=40 --set train.checkpoint_every=20 2>&1 | tee "$OUT/train_m2f_crop_ibs.txt"
tail -n 1 "$run/log.jsonl" | tee -a "$OUT/train_m2f_crop_ibs.txt"

if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/metrics/test_panoptic_hand.py \
        2>&1 | tee "$OUT/cuda_tests.txt"
fi
