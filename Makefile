# The two commands of README.md, and the set-up they share.
#   make sweep   set up .venv, then run the flagship sweep (locally at smoke scale without a cluster)
#   make test    set up .venv, then run every test (make test-quick skips the slow end-to-end ones)
# Set-up installs the pinned torch first so pip never pulls a CUDA build on a CPU machine; outside
# an environment that serves it, point TORCH_INDEX at https://download.pytorch.org/whl/cpu.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.golf-installed

.PHONY: setup sweep test test-quick clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "golf sweeps needs Python >= 3.10; run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

sweep: setup
	$(BIN)/python sweeps/qat_vs_lawa.py $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

test-quick: setup
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

clean-venv:
	rm -rf $(VENV)
