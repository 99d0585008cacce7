"""Shared test set-up: offline, seeded, tiny models."""

import os

# Tests never touch the network: hub lookups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

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
