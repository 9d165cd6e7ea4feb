#!/bin/sh
# Every device check in one call, for a GPU machine with torch, numba, scipy and lightning but without this
# package installed: the tests marked `cuda`, then benchmarks/gpu.py. Wheels of what that machine lacks
# (soundfile, soxr, jsonschema, auraloss, ...) may lie in .whl/. Logs go to $OUT (default: the current folder).
set -e
out=${OUT:-.}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$out/cuda-tests.log"
python3 benchmarks/gpu.py --markdown --out "$out/gpu.json" 2>&1 | tee "$out/gpu.md"
