# Two commands do all the set-up on a fresh machine (Python 3.11+, a C++ compiler, make):
#   make run    the main job: fused vs reference GoogLeNet on a synthetic batch
#   make test   the whole test suite (+ benchmark smoke run and the GPU check's dry mode), on
#               the newest torch / triton the registry gives and on the oldest we claim, the two
#               side by side (each target's output printed when it ends)
#   make quick  the contributors' loop: the suite on the newest versions, without the sm_90
#               codegen test and the benchmarks
# Both create their virtual environments, install torch and the package (building the C++/CUDA
# extension) only when something they depend on changed, and can be run again safely.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
RESULTS ?= benchmarks/results/latest
TITLE ?= googlenet-fused benchmarks

# torch's CUDA wheels and their nvidia-* libraries are ~5 GB per environment; --no-cache-dir keeps
# pip from also storing the downloaded wheels (another ~3.5 GB) once they are installed.
# What CI tests: the newest releases, and the oldest ones setup.py admits (torch 2.11 / triton
# 3.6, the GPU machine's). triton 3.6's interpreter needs numpy < 2.4.
# torchvision is optional for users (its GoogLeNet goes through fuse()), needed by the tests.
NEWEST := "torch>=2.11" "triton>=3.6" numpy torchvision
OLDEST := torch==2.11.0 triton==3.6.0 "numpy<2.4" torchvision==0.26.0
# The CPU runtimes the benchmarks compare with (benchmarks/peers.py), and their graph's tests.
PEERS := onnx onnxruntime openvino
TOOLS := ninja pytest pytest-benchmark pytest-xdist matplotlib $(PEERS)
# Test files spread over one pytest-xdist worker per core; a file stays on one worker, so the
# codegen module compiles its Triton variants once (with a compiler process per core).
PYTEST := -q -p no:cacheprovider -n auto --dist loadfile
# An editable install builds _C inside the source tree, so the oldest versions get a copy of it.
OLDEST_VENV ?= .venv-oldest
OLDEST_SRC := $(OLDEST_VENV)/src
OLDEST_PY := $(abspath $(OLDEST_VENV))/bin/python
BUILD_INPUTS := setup.py $(wildcard csrc/*) Makefile

.PHONY: install run summary test test-newest test-oldest quick bench report

$(VENV)/.installed: $(BUILD_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q --no-cache-dir --no-compile $(NEWEST) $(TOOLS)
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install -q --no-build-isolation -e ".[test,plot]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m googlenet_fused run $(ARGS)

summary: install
	$(PY) -m googlenet_fused summary $(ARGS)

# The version sets side by side: one's installs and single-threaded stretches overlap the
# other's work, which keeps both cores busy (cold, on 2 cores: see docs/contributing.md).
test:
	$(MAKE) -j2 --output-sync=target test-newest test-oldest

# In the tests OpenMP's idle threads sleep instead of spinning: with a pytest worker per core (and
# the other version set beside them) spinning threads took a third of the suite's CPU time.
# (Not for benchmarks, whose timings are a user's.)
test-newest test-oldest quick: export OMP_WAIT_POLICY := PASSIVE

test-newest: install
	$(PY) -m pytest $(PYTEST)
	BENCH_MODULES=5b BENCH_TV_MODULES=5b BENCH_DTYPES=fp32 BENCH_NET_BATCHES=1 \
		BENCH_TRAIN_BATCHES=2 BENCH_TRAIN_MODULES=5b BENCH_TRAIN_MODULE_BATCHES=2 \
		$(PY) -m pytest -q -p no:cacheprovider benchmarks --benchmark-disable -k "(5b-1- and not compile) or 5b-1-fp32-nchw-compile or 5b-16-fp32-nchw-fused or (test_network and nchw and not freeze) or (test_torchvision_network and (eager or fused)) or (training and not compile) or lrn_relu_concat or max_pool3x3 or triton_kernel or gemm"
	GPU_CHECK_DRY=1 GPU_CHECK_STEPS=tests,memcheck,bench PYTHON=$(abspath $(PY)) \
		bash benchmarks/gpu_check.sh $(VENV)/gpu_check_dry

# The copy is refreshed on every run (the built extension is kept), so it tests this tree.
define sync_oldest_src
	mkdir -p $(OLDEST_SRC)
	find $(OLDEST_SRC) -mindepth 1 -maxdepth 1 ! -name googlenet_fused -exec rm -rf {} +
	find $(OLDEST_SRC)/googlenet_fused -mindepth 1 ! -name '_C*.so' -exec rm -rf {} + 2>/dev/null || true
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(OLDEST_SRC)
endef

$(OLDEST_VENV)/.installed: $(BUILD_INPUTS)
	test -x $(OLDEST_PY) || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install -q --upgrade pip setuptools wheel
	$(OLDEST_PY) -m pip install -q --no-cache-dir --no-compile $(OLDEST) $(TOOLS)
	$(sync_oldest_src)
	cd $(OLDEST_SRC) && MAX_JOBS=$${MAX_JOBS:-2} $(OLDEST_PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(sync_oldest_src)
	cd $(OLDEST_SRC) && $(OLDEST_PY) -m pytest $(PYTEST)
	cd $(OLDEST_SRC) && GPU_CHECK_DRY=1 GPU_CHECK_STEPS=tests,memcheck,bench PYTHON=$(OLDEST_PY) \
		bash benchmarks/gpu_check.sh gpu_check_dry

quick: install
	$(PY) -m pytest $(PYTEST) --ignore=tests/test_codegen.py -m "not slow"

# Benchmarks: RESULTS is a folder (default benchmarks/results/latest, not committed); `make bench
# report RESULTS=benchmarks/results/cpu_2core TITLE="..."` regenerates a committed one.
bench: install
	mkdir -p $(RESULTS)
	$(PY) -m pytest benchmarks/test_bench_inception.py -p no:cacheprovider \
		--benchmark-json=$(RESULTS)/modules.json $(ARGS)
	$(PY) -m pytest benchmarks/test_bench_ops.py -p no:cacheprovider \
		--benchmark-json=$(RESULTS)/ops.json $(ARGS)

report: install
	@ls $(RESULTS)/*.json > /dev/null 2>&1 || { echo "no benchmark JSON in $(RESULTS): run 'make bench' first"; exit 2; }
	$(PY) benchmarks/report.py $(RESULTS)/*.json --out $(RESULTS) --title "$(TITLE)"
