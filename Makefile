# masklab: `make repro` runs the pipeline, `make test` the tests. Both create .venv on first use only.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := repro,test
DATASETS ?= fashion_mnist
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export DVC_NO_ANALYTICS := 1

.PHONY: help install repro repro-full sweep test lab bench clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# Reinstalls only when pyproject.toml or the lock file changed since the last install.
$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements-lock.txt --editable ".[$(EXTRAS)]"
	$(BIN)/python -m masklab install-jupyter >/dev/null  # kernel "masklab" + JupyterLab opens notebooks/*.py as notebooks
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install masklab with pinned dependencies (once)

repro: install  ## run the whole DVC pipeline on params.yaml (embedded mnist_5k, offline)
	$(BIN)/dvc repro

repro-full: install  ## the pipeline on full datasets too: make repro-full DATASETS="fashion_mnist mnist cifar10"
	$(BIN)/dvc exp run --set-param 'datasets=[mnist_5k,$(shell echo $(DATASETS) | tr ' ' ',')]'

STAGE ?= baseline@mnist_5k
SET ?= baseline.seed=0,1,2
JOBS ?= 2
sweep: install  ## queued DVC experiments of one stage: make sweep STAGE=baseline@mnist_5k SET="baseline.seed=0,1,2" JOBS=2
	$(BIN)/python -m masklab.sweep $(STAGE) $(foreach assignment,$(SET),--set '$(assignment)') --jobs $(JOBS)

# The suite runs under both Keras backends side by side (2 cores): the library's tests under TensorFlow and under
# JAX, the notebooks under TensorFlow, and the tests that compute nothing with Keras once, in the JAX process
# (which has less to do; see tests/conftest.py). The JAX log is printed after TensorFlow's.
PYTEST_ARGS ?=
test: install  ## run the test suite under TensorFlow and under JAX (KERAS_BACKEND), side by side
	@jax_log=$$(mktemp); \
	KERAS_BACKEND=jax $(BIN)/python -m pytest -p no:cacheprovider --backend-independent=run $(PYTEST_ARGS) \
		> $$jax_log 2>&1 & jax_pid=$$!; \
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest --backend-independent=skip $(PYTEST_ARGS); tf_status=$$?; \
	wait $$jax_pid; jax_status=$$?; \
	echo; echo "======================== the same suite on the JAX backend ========================"; \
	cat $$jax_log; rm -f $$jax_log; \
	echo "make test: TensorFlow exit $$tf_status, JAX exit $$jax_status"; \
	test $$tf_status -eq 0 && test $$jax_status -eq 0

lab: install  ## JupyterLab on notebooks/: NN-topic.py open as notebooks in the project kernel, writing scratch/
	$(BIN)/jupyter lab notebooks/

bench: install  ## run the benchmarks (write results/benchmarks/*.json)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean-venv:  ## remove .venv (the next target reinstalls)
	rm -rf $(VENV)
