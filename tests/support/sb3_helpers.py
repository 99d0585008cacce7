"""Helpers for the SB3-path agents tests (tiny model, offline, small envs); import, not a conftest."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

import textenv  # noqa: F401  (registers TextRLHF-v0)

WORDS = [" yes", " no", " cat", " dog"]
TARGET = " yes"
PROMPTS = ["The movie was", "I think that", "Tell me about the weather", "A short story:", "Hello"]


@pytest.fixture(scope="session")
def word_ids() -> list[int]:
    """Token ids of WORDS (each a single token of the SmolLM2 tokenizer)."""
    from textrlhf.models import load_tokenizer

    tok = load_tokenizer("tiny")
    ids = [tok(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    assert all(len(i) == 1 for i in ids)
    return [i[0] for i in ids]


def target_fraction(prompt: str, response: str) -> float:
    """Rule reward for the learning tests: fraction of the 8 response tokens that are ' yes'."""
    return response.count(TARGET) / 8.0


class ScoreRecorder:
    """SB3 callback keeping the KL buffer's ``rlhf/*`` stats of every rollout."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Rec(BaseCallback):
            def __init__(self):
                super().__init__()
                self.history: list[dict] = []

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                self.history.append(dict(self.model.rollout_buffer.last_stats))

        return _Rec()


def small_env_kwargs(**overrides):
    kwargs = dict(model="tiny", prompts=PROMPTS, reward="sentiment", max_new_tokens=6, max_prompt_tokens=8)
    kwargs.update(overrides)
    return kwargs


def mean_score(stats_history: list[dict]) -> float:
    return float(np.mean([s["rlhf/score"] for s in stats_history if "rlhf/score" in s]))


class BatchScoreRecorder:
    """SB3 callback keeping the mean score of every rollout of the sequence-level agents (``model._batch``)."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Rec(BaseCallback):
            def __init__(self):
                super().__init__()
                self.history: list[float] = []

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                self.history.append(float(self.model._batch.scores.mean()))

        return _Rec()
