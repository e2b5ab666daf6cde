# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# A CPU build of torch; an already importable torch (any >=2.4) is kept as it is.
TORCH_SPEC ?= torch==2.13.0
# make test runs the suite in this many processes, whole test files per process so that module fixtures are
# built once; torch gets one thread in each. Three on the 2-core reference box: the sweep tests spend much of
# their time waiting on the agent process over HTTP, and a third worker fills those waits (pytest 566 s with
# 2 workers, 395 s with 3, same VM, 2026-12-03; with today's larger suite 599 s with 3, 626 s with 4, on the
# AVX-512 EPYC VM, 2026-12-07). From a clean checkout on that VM, 2026-12-07 (late evening, bytecode written
# at first import, the export cache): 576 tests, pytest 502 s, 9 min 3 s with the uv install; identical runs
# of the suite there vary by +-15%.
TEST_WORKERS ?= 3

.PHONY: venv install install-dev demo test lint clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# torch first: anything that depends on torch would otherwise pull a multi-GB CUDA build.
$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null && echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')" \
	  || $(PIP) install --quiet "$(TORCH_SPEC)"
	@touch $@

# The rest through uv (from PyPI, into the venv): it resolves and installs the same versions as pip ~8x faster
# (9.6 s vs 82 s for the dev install on the 2-core EPYC VM, 2026-12-07) and keeps the installed torch; pip
# when uv cannot be installed or fails. uv writes no bytecode at install (pip does): Python writes it at the
# first import, except where PYTHONDONTWRITEBYTECODE is set (as on CI), so make test unsets it: otherwise every
# process of the suite compiles torch, MLflow, Ray... from source at each import (the controller's imports:
# 15.7 s instead of 8.4 s, per process; the suite 662 s instead of 541 s). Compiling all of site-packages at
# install instead (uv --compile-bytecode) costs 32 s; the suite imports a quarter of it.
INSTALL = inst() { $(PIP) install --quiet uv && $(PY) -m uv pip install --python $(PY) --quiet "$$@" \
	  || { echo "uv failed: installing with pip"; $(PIP) install --quiet "$$@"; }; }; inst

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	@$(INSTALL) -e ".[controller]"
	@touch $@

# The yolo extra (Ultralytics, for its tests) with torch pinned to the installed build: otherwise the
# installer would replace a CPU torch by the CUDA build its newest torchvision asks for.
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	@$(INSTALL) -e ".[controller,dev,yolo]" "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/edgetune demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check edgetune tests benchmarks

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check edgetune tests benchmarks
	PYTHONDONTWRITEBYTECODE= MLFLOW_DISABLE_TELEMETRY=true RAY_AUTH_MODE=disabled OMP_NUM_THREADS=1 \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

# The MLflow review test (tests/search/test_sweep_e2e.py) opens the sweep's link in headless Chromium; without
# one it is skipped. This installs Playwright (dev extra) and Debian's chromium (needs root or sudo).
browser: $(VENV)/.installed-dev
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y --no-install-recommends chromium; \
	    else sudo apt-get install -y --no-install-recommends chromium; fi; }
	@echo "chromium: $$(command -v chromium || command -v chromium-browser)"

clean:
	rm -rf $(VENV) .edgetune-cache build *.egg-info
