"""Shared fixtures: tiny random BERT backbones with the MiniLM tokenizer, synthetic preference data."""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest

from reward_models.preferences import PreferencePair

TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
"""A 2-layer BERT with hidden size 32: trains in seconds on 2 CPU cores."""

_WORDS = (
    "the a movie film plot actor scene story was is very quite rather long short slow fast "
    "music ending cast dialogue camera"
).split()


def synthetic_pairs(n: int, seed: int = 0, word: str = "excellent") -> list[PreferencePair]:
    """Pairs where the chosen response contains ``word`` and the rejected one does not."""
    rng = random.Random(seed)

    def sentence(k: int = 8) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    pairs = []
    for i in range(n):
        base = sentence()
        other = base + " " + rng.choice(_WORDS) if i % 2 else base
        pairs.append(PreferencePair(sentence(5), f"{base} {word}", other))
    return pairs


def tiny_model(seed: int = 0):
    from reward_models.bradley_terry import BradleyTerryRewardModel

    return BradleyTerryRewardModel.build(
        backbone="minilm", random_init=True, config_overrides=TINY_BERT, seed=seed, max_length=32
    )


@pytest.fixture(scope="session")
def trained_model():
    """A tiny reward model trained on the "contains 'excellent'" task, with its data and metrics."""
    from reward_models import train_reward_model

    pairs = synthetic_pairs(200)
    model = tiny_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics = train_reward_model(
        model,
        pairs[:160],
        pairs[160:],
        {"learning_rate": 3e-3, "num_epochs": 3, "batch_size": 16, "progress_bar": False, "seed": 0},
    )
    return {"model": model, "pairs": pairs, "metrics": metrics, "before": before}
