#!/usr/bin/env bash
# Everything the issues ask of a GPU, in one call on the device machine (made ready by
# scripts/device_pack.sh): the CUDA tests, the GPU-fitted fixture, the fit-time targets
# and the streamed 10M x 64 fit. Results land under $OUT; the fixture in
# $OUT/cuda_fitted/ is to be committed as tests/data/cuda_fitted/.
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.device/site${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "exit $? after ${SECONDS}s in all" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt"
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
step cuda_tests 150 $PY -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu or device" \
    tests/test_cuda.py tests/test_kmeans.py tests/test_autoencoder.py \
    tests/test_validation.py tests/test_backend.py tests/test_methods.py
step cuda_fixture 60 $PY benchmarks/cuda_pickle_check.py dump
cp -r tests/data/cuda_fitted "$OUT/" 2>/dev/null
step gpu_targets 200 $PY benchmarks/bench_gpu_targets.py --device cuda \
    --table .device/smollm2.npy --weight .device/smollm2_counts.npy --repeats 2
step bench_scale 120 $PY benchmarks/bench_scale.py --device cuda --rows 10000000 --dir /tmp
