# gdcode: `make demo` runs a real comparison, `make test` runs the tests,
# `make experiment NAME=erasurehead|tandon|coded_vs_async|compare_async [ARGS=--quick]` reproduces a published comparison.
# Both install what they need into .venv first (pip, PyPI only; the MPI comes from the mpich wheel).

VENV     ?= .venv
PYTHON   ?= python3
VENV_BIN := $(abspath $(VENV))/bin
PY       := $(VENV_BIN)/python
STAMP    := $(VENV)/.installed
# the editable build re-runs meson/ninja/cython on import; they must be found from any shell
export PATH := $(VENV_BIN):$(PATH)

.PHONY: install demo test bench lint clean experiment overhead-floor

# Bytecode for gdcode's modules, brought up to date on every make: with PYTHONDONTWRITEBYTECODE set
# (as on some CI machines) Python never writes it, and every rank of every run compiled gdcode's
# sources again (gdcode bench startup, a one-iteration run on a 2 GHz 2-core VM: 3.3 s, 2.0-2.1 s with it).
install: $(STAMP)
	@$(PY) -m compileall -q gdcode

$(STAMP): pyproject.toml meson.build meson.options kernels/meson.build
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check meson-python meson ninja cython numpy scipy
	CYTHON=$(VENV_BIN)/cython $(PY) -m pip install -q --disable-pip-version-check \
		--no-build-isolation --editable '.[test,plot,analysis,notebook,ec2,dev]'
# then the kernels' prefetch distances for this machine, measured once and cached (gdcode/kernels/tuning.py)
	$(PY) -m gdcode.kernels.calibrate || echo "kernel calibration failed: the built-in prefetch distances serve"
	touch $@

demo: install
	$(PY) experiments/demo.py --out demo-results

test: install
	$(PY) -m pytest -q tests

EXPERIMENTS := $(filter-out run-example,$(basename $(notdir $(wildcard experiments/*.toml))))

experiment: install
	@if [ -z "$(NAME)" ] || [ ! -f experiments/$(NAME).py ]; then \
		echo "make experiment: give NAME=one of: $(EXPERIMENTS) (e.g. make experiment NAME=erasurehead ARGS=--quick)" >&2; \
		exit 2; fi
	$(PY) experiments/$(NAME).py --out experiment-results/$(NAME) $(ARGS)

bench: install
	$(VENV_BIN)/gdcode bench kernels
	$(VENV_BIN)/gdcode bench engine

# the leanest synchronous loop, in Python and in C, at gdcode bench engine's W = 4 without delays:
# the coordinator overhead this machine allows (README, "Coordinator overhead")
overhead-floor: install
	mkdir -p build
	$(VENV_BIN)/mpicc -O3 -march=native -ffast-math -o build/overhead_floor tools/overhead_floor.c -lm
	for wait in "sleep" "sleep --yield-us 300" "yield"; do \
		$(VENV_BIN)/mpiexec -n 5 $(PY) -m gdcode.runtime.floor --wait $$wait && \
		$(VENV_BIN)/mpiexec -n 5 build/overhead_floor --wait $$wait || exit 1; done

lint: install
	$(VENV_BIN)/ruff check gdcode tests experiments data_prepare tools
	$(VENV_BIN)/mypy

clean:
	rm -rf build .venv demo-results results experiment-results .pytest_cache
