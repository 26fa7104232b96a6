#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine (an H200 for about 15 minutes in all, at
# most 10 per command, machine start included). It builds the extension, runs every GPU test,
# runs each fused path under compute-sanitizer, and benchmarks, writing into OUT_DIR as it goes
# (each step's log, one JSON per benchmark group), so a timeout still leaves everything done so
# far; the report is made from whatever JSON exists.
#
#   bash benchmarks/gpu_check.sh OUT_DIR                   GPU machine
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh OUT_DIR   no GPU: every step, tiny, on CPU
#
# Budget: the whole check ends within GPU_CHECK_BUDGET_S seconds (default 450: 7.5 minutes, which
# leaves the machine's start and the transfers inside a 10-minute command). Per step, the cap
# (the step is killed there) and what it should take on the H200, estimated from this machine:
#   step                         cap   estimate
#   1 environment, GPU probe      30     5   imports, HBM and L2 copy bandwidth
#   2 build the extension        150    40   nvcc for sm_90 + the CPU sources; 50 s on 2 cores here
#   3 GPU tests                  180   120   ~290 tests; most time is Triton compiling each
#                                            config the autotuner keeps (the least-waste BLOCK_N
#                                            and every wider one) once per dtype / specialization,
#                                            ~1 s each
#   4 memcheck (beside step 3)   150    60   benchmarks/fused_paths.py under compute-sanitizer:
#                                            ~40 small forward + backward runs, no caching allocator
#   5 benchmarks             the rest        groups in the order below, each started only when
#                                            its estimate fits in what is left (minus 20 s for
#                                            the report), each killed at what is left
#   6 report                      20     5
# Steps 3 and 4 run side by side: the tests are not timed and the sanitizer's runs are small.
# Benchmark groups (modules 3a, 4a, 5b and the network; providers eager, compile, fused-triton,
# fused-native, conv-floor): bf16 at batch 256, channels_last then NCHW; the network's training
# step in bf16 at batch 128; bf16 at batch 32; the same in fp16; then torch.compile max-autotune
# for bf16 batch 256 (its autotuning takes minutes per shape, so it comes last and is the first
# left out). Each group is ~60-120 s, most of it torch.compile; what did not fit is listed in
# OUT_DIR/left_out.txt.
#
# Variables: PYTHON (default: the project's .venv if it exists, else python3), GPU_CHECK_BUDGET_S,
# GPU_CHECK_STEPS (default build,tests,memcheck,bench: e.g. "bench" for a second run that only
# benchmarks), GPU_CHECK_GROUPS (names from the list below, comma-separated), MAX_JOBS.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute: the script changes directory
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
py=$PYTHON
export PYTHONUNBUFFERED=1
dry=${GPU_CHECK_DRY:-0}
budget=${GPU_CHECK_BUDGET_S:-450}
steps=,${GPU_CHECK_STEPS:-build,tests,memcheck,bench},
status=0
SECONDS=0
left() { echo $((budget - SECONDS)); }
step() { echo; echo "== [$SECONDS s of $budget] $* =="; }
die() { echo "gpu_check: FAILED: $*" | tee -a "$out/summary.txt" >&2; exit 1; }
wants() { [[ "$steps" == *",$1,"* ]]; }
# cap CAP CMD...: run CMD killed after min(CAP, what is left of the budget) seconds.
cap() {
  local c=$1; shift
  local l; l=$(left); [ "$l" -lt "$c" ] && c=$l
  [ "$c" -gt 0 ] || return 124
  timeout --kill-after=5 "$c" "$@"
}
: > "$out/summary.txt"
note() { echo "$*" | tee -a "$out/summary.txt"; }

step "1 environment"
"$py" - <<'PY' 2>&1 | tee "$out/environment.txt"
import platform, sys
try:
    import torch
except ImportError as exc:
    sys.exit(f"{sys.executable} has no torch ({exc}): set PYTHON to the interpreter that has it")
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except ImportError as exc:
    print("triton missing:", exc)
import numpy; print("numpy", numpy.__version__)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
if torch.cuda.is_available():  # the bandwidths benchmarks/roofline.py assumes (read + write)
    def copy_rate(nbytes, reps):
        a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
        b = torch.empty_like(a)
        b.copy_(a)
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        for _ in range(reps):
            b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        return nbytes * reps / (start.elapsed_time(end) / 1e3) / 1e12
    print(f"copy bandwidth: HBM {copy_rate(2 << 30, 20):.2f} TB/s (2 GiB), "
          f"L2 {copy_rate(24 << 20, 2000):.2f} TB/s (24 MiB: roofline.py L2_BYTES_PER_S)")
PY
[ "${PIPESTATUS[0]}" = 0 ] || die "no usable Python (see $out/environment.txt)"
if [ "$dry" != "1" ] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  die "$py's torch sees no GPU (set GPU_CHECK_DRY=1 for the dry run)"
fi

if wants build; then
  step "2 build the extension from source (log: build.log)"
  MAX_JOBS=${MAX_JOBS:-16} cap 150 "$py" -m pip install --no-build-isolation --no-deps -q -e . \
    > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; die "the extension did not build"; }
fi
"$py" - <<'PY' 2>&1 | tee -a "$out/environment.txt"
import sys, torch
from googlenet_fused import backends, ops
if not ops.extension_available():
    sys.exit(f"the extension does not import: {ops.EXTENSION_ERROR}")
print("extension ok; CUDA kernels:", ops.has_cuda_kernels(), "; triton:",
      backends.TRITON_ERROR or "ok")
if torch.cuda.is_available() and not ops.has_cuda_kernels():
    sys.exit("the extension was built without its CUDA kernels")
PY
[ "${PIPESTATUS[0]}" = 0 ] || die "extension import (see $out/environment.txt)"

memcheck_pid=
if wants memcheck; then
  step "4 memcheck of every fused path, beside the tests (log: memcheck.log)"
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  if [ "$dry" = "1" ] || [ -z "$sanitizer" ]; then
    # No GPU (or no sanitizer): still run the paths, so the script itself is tested.
    [ "$dry" = "1" ] || note "memcheck: compute-sanitizer not found; fused paths run without it"
    cap 150 "$py" benchmarks/fused_paths.py --device cpu > "$out/memcheck.log" 2>&1 &
  else
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 cap 150 "$sanitizer" --tool memcheck --error-exitcode 3 \
      --print-limit 20 "$py" benchmarks/fused_paths.py > "$out/memcheck.log" 2>&1 &
  fi
  memcheck_pid=$!
fi

if wants tests; then
  step "3 GPU tests (log: gpu_tests.log)"
  cap 180 "$py" -m pytest tests -m gpu -q -p no:cacheprovider --maxfail=20 \
    --junitxml="$out/gpu_tests.xml" > "$out/gpu_tests.log" 2>&1
  rc=$?
  tail -25 "$out/gpu_tests.log"
  case $rc in
    0) note "GPU tests: passed ($(tail -1 "$out/gpu_tests.log"))" ;;
    124|137) note "GPU tests: TIMED OUT (cap or budget); results so far in gpu_tests.log"; status=1 ;;
    *) note "GPU tests: FAILED (exit $rc): $(tail -1 "$out/gpu_tests.log")"; status=1 ;;
  esac
fi

if [ -n "$memcheck_pid" ]; then
  wait "$memcheck_pid"
  rc=$?
  tail -5 "$out/memcheck.log"
  case $rc in
    0) note "memcheck: $(grep -h 'ERROR SUMMARY' "$out/memcheck.log" || echo 'no sanitizer'); $(grep -h '^fused_paths:' "$out/memcheck.log")" ;;
    124|137) note "memcheck: TIMED OUT"; status=1 ;;
    *) note "memcheck: FAILED (exit $rc; 3 = sanitizer errors), see memcheck.log"; status=1 ;;
  esac
fi

if wants bench; then
  step "5 benchmarks (one JSON per group)"
  all="eager,compile,fused-triton,fused-native,conv-floor"
  if [ "$dry" = "1" ]; then
    # name dtype layout batch providers estimate_s
    groups=("dry-fp32-nchw-1 fp32 nchw 1 eager,fused-native,conv-floor 20"
            "dry-fp32-cl-1 fp32 channels_last 1 eager,fused-native 150"
            "train-dry-fp32-2 fp32 nchw 2 eager,fused-native 60")
    export BENCH_ROUNDS=1 BENCH_MODULES=5b BENCH_TV_MODULES=5b TRITON_INTERPRET=0
  else
    groups=()
    for dtype in bf16 fp16; do
      for batch in 256 32; do
        groups+=("$dtype-cl-$batch $dtype channels_last $batch $all 75"
                 "$dtype-nchw-$batch $dtype nchw $batch $all 75")
      done
    done
    groups=("${groups[@]:0:2}"  # bf16 batch 256, both layouts, then the training step
            "train-bf16-128 bf16 nchw 128 eager,compile,fused-triton,fused-native 120"
            "${groups[@]:2}"
            "bf16-cl-256-max-autotune bf16 channels_last 256 compile-max-autotune 240")
    export BENCH_MODULES=3a,4a,5b BENCH_TV_MODULES=3a,4a,5b
  fi
  : > "$out/left_out.txt"
  for g in "${groups[@]}"; do
    read -r name dtype layout batch providers estimate <<< "$g"
    if [ -n "${GPU_CHECK_GROUPS:-}" ] && [[ ",$GPU_CHECK_GROUPS," != *",$name,"* ]]; then
      continue
    fi
    if [ $(( $(left) - 20 )) -lt "$estimate" ]; then
      echo "$name: left out, ${estimate} s estimated and $(( $(left) - 20 )) s left" \
        | tee -a "$out/left_out.txt"
      continue
    fi
    echo "-- $name ($dtype, $layout, batch $batch: $providers)"
    rows=(BENCH_MODULES="$BENCH_MODULES" BENCH_TV_MODULES="$BENCH_TV_MODULES"
          BENCH_NET_BATCHES="$batch" BENCH_TRAIN_BATCHES= BENCH_TRAIN_MODULES=)
    [[ "$name" == train-* ]] && rows=(BENCH_MODULES= BENCH_TV_MODULES= BENCH_NET_BATCHES=
                                      BENCH_TRAIN_BATCHES="$batch" BENCH_TRAIN_MODULES=)
    (export "${rows[@]}" BENCH_DTYPES=$dtype BENCH_LAYOUTS=$layout BENCH_BATCHES=$batch \
       BENCH_PROVIDERS=$providers
     cap $(( $(left) - 20 )) "$py" -m pytest benchmarks/test_bench_inception.py -q \
       -p no:cacheprovider --benchmark-json="$out/bench_$name.json" \
       --benchmark-columns=median,iqr,rounds > "$out/bench_$name.log" 2>&1)
    rc=$?
    tail -1 "$out/bench_$name.log"
    [ $rc = 0 ] || { note "benchmarks $name: exit $rc (log bench_$name.log)"; status=1; }
  done
  [ -s "$out/left_out.txt" ] && note "benchmark groups left out: $(cut -d: -f1 "$out/left_out.txt" | paste -sd, -)"
fi

step "6 report (from whatever benchmark JSON exists) and the roofline model"
"$py" benchmarks/roofline.py --out "$out" > /dev/null || status=1
shopt -s nullglob
jsons=("$out"/bench_*.json)
if [ ${#jsons[@]} -gt 0 ]; then
  timeout 60 "$py" benchmarks/report.py "${jsons[@]}" --out "$out" \
    --title "googlenet-fused, GPU check" > "$out/report.log" 2>&1 || status=1
  tail -40 "$out/report.md" 2>/dev/null
else
  note "no benchmark JSON written"
  wants bench && status=1
fi
note "gpu_check: done in $SECONDS s (budget $budget s), status $status"
exit $status
