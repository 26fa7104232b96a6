# Two commands do all the set-up on a fresh machine (Python 3.11+, nothing installed):
#   make run    the main job: fused vs reference GoogLeNet on a synthetic batch
#   make test   the whole test suite (+ benchmark smoke run and the GPU check's dry mode)
# Both create .venv, install torch and the package (building the C++/CUDA extension), and can
# be run again safely.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run summary test bench report

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "torch>=2.11" numpy "triton>=3.6" ninja pytest pytest-benchmark matplotlib
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install -q --no-build-isolation -e ".[test,plot]"

run: install
	$(PY) -m googlenet_fused run $(ARGS)

summary: install
	$(PY) -m googlenet_fused summary $(ARGS)

test: install
	$(PY) -m pytest -q
	BENCH_MODULES=5b BENCH_NET_BATCHES=1 $(PY) -m pytest -q -p no:cacheprovider \
		benchmarks --benchmark-disable -k "(5b-1- and not compile) or 5b-1-fp32-nchw-compile or 5b-16-fp32-nchw-fused or network or lrn_relu_concat or max_pool3x3 or triton_kernel"
	GPU_CHECK_DRY=1 PYTHON=$(abspath $(PY)) bash benchmarks/gpu_check.sh $(VENV)/gpu_check_dry

bench: install
	$(PY) -m pytest benchmarks -p no:cacheprovider --benchmark-json=benchmarks/results/latest.json $(ARGS)

report: install
	$(PY) benchmarks/report.py benchmarks/results/latest.json --out benchmarks/results
