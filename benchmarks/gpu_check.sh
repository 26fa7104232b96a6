#!/usr/bin/env bash
# One command for a GPU machine: build the extension from source, run the GPU tests, run a
# benchmark subset, write JSON + report + chart into the folder given as argument.
#   bash benchmarks/gpu_check.sh OUT_DIR          (GPU; about 6-8 minutes on an H200)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh OUT_DIR   (no GPU: everything but the GPU parts)
# No network needed: uses the machine's own python3, torch and triton.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
dry=${GPU_CHECK_DRY:-0}
status=0
step() { echo; echo "== $* =="; }

step "environment"
$py - <<'PY' | tee "$out/environment.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except ImportError as e:
    print("triton missing", e)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
PY
if [ "$dry" != "1" ] && ! $py -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no GPU visible: set GPU_CHECK_DRY=1 for the dry run"; exit 2
fi

step "build the extension from source"
MAX_JOBS=${MAX_JOBS:-8} $py -m pip install --no-build-isolation --no-deps -q -e . \
  > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
$py -c "from googlenet_fused import ops; assert ops.extension_available(), ops.EXTENSION_ERROR; print('extension ok, CUDA kernels:', ops.has_cuda_kernels())"

step "GPU tests"
timeout ${GPU_TEST_TIMEOUT:-300} $py -m pytest tests -m gpu -q -p no:cacheprovider --maxfail=15 \
  --junitxml="$out/gpu_tests.xml" 2>&1 | tail -25 | tee "$out/gpu_tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "benchmark subset"
if [ "$dry" = "1" ]; then
  bench_args=(-k "5b-1-fp32-nchw-eager or 5b-1-fp32-nchw-fused-native or network")
  export BENCH_ROUNDS=1 BENCH_NET_BATCHES=1 BENCH_MODULES=5b TRITON_INTERPRET=0
else
  # sized to a few minutes: each torch.compile provider compiles per shape
  bench_args=(-k "${BENCH_SELECT:-(fp16 or bf16) and not -1- and not channels_last and not (network and bf16)}")
  export BENCH_MODULES=${BENCH_MODULES:-4a,5b} BENCH_NET_BATCHES=${BENCH_NET_BATCHES:-32}
  export BENCH_MAX_AUTOTUNE=${BENCH_MAX_AUTOTUNE:-0}
fi
(timeout ${GPU_BENCH_TIMEOUT:-330} $py -m pytest benchmarks/test_bench_inception.py -q \
  -p no:cacheprovider "${bench_args[@]}" --benchmark-json="$out/benchmarks.json" \
  --benchmark-columns=median,iqr,rounds 2>&1 | tail -5) | tee "$out/bench_log.txt"
if [ -s "$out/benchmarks.json" ]; then
  $py benchmarks/report.py "$out/benchmarks.json" --out "$out" \
    --title "googlenet-fused, GPU check" | tail -60
else
  echo "no benchmark JSON written"; status=1
fi
exit $status
