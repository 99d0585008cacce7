"""Shared test set-up: offline, seeded, tiny models."""

import os

# Tests never touch the network: hub lookups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


def _threads_per_worker() -> int:
    """torch threads of one test process: the cores shared out among pytest-xdist's workers, at most 2.

    ``make test`` runs 2 workers on 2 cores; at 2 threads each, the 4 threads oversubscribe the cores, and
    OpenMP threads that spin while they wait take the cores from each other: the TRPO update test on the tiny
    model took 50 s in the suite against 1.4 s alone (docs/development.md, "Tests")."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, cores // workers))


torch.set_num_threads(_threads_per_worker())

PROMPTS = [
    "The film opens with a long shot of",
    "I watched this movie with my family and",
    "The soundtrack of this western",
    "Halfway through the second act, the director",
]


@pytest.fixture
def prompts():
    return list(PROMPTS)


@pytest.fixture
def make_env():
    """Factory for a small TextRLHF-v0 on the tiny model (unwrapped unless wrapped=True)."""
    import gymnasium as gym

    import textenv  # noqa: F401  (registers TextRLHF-v0)

    def _make(wrapped: bool = False, **kwargs):
        kwargs.setdefault("model", "tiny")
        kwargs.setdefault("prompts", list(PROMPTS))
        kwargs.setdefault("max_new_tokens", 8)
        kwargs.setdefault("max_prompt_tokens", 16)
        env = gym.make("TextRLHF-v0", **kwargs)
        return env if wrapped else env.unwrapped

    return _make
