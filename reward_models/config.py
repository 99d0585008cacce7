"""The reward model's configs: the one place their defaults are written.

:class:`RewardModelConfig` (architecture) and :class:`RewardTrainingConfig` (optimisation) configure
:class:`reward_models.bradley_terry.BradleyTerryRewardModel` and
:func:`reward_models.bt_training.train_reward_model`. ``scripts/train_reward_model.py`` and the
pipeline's ``reward_model`` section take their defaults from these fields; a default of theirs that
differs is a named override with its reason (``LIBRARY_OVERRIDES`` in those modules, checked by
``tests/scripts/test_config_defaults.py``).

This module imports neither torch nor transformers, so a command-line config can take its defaults
from it without paying for them at start-up (the ``reward_models`` package exports all of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

MINILM = "minilm"
"""Alias of the default backbone, the offline all-MiniLM-L6-v2."""
C = TypeVar("C")


def config_from_dict(cls: type[C], mapping: Mapping[str, Any] | C | None) -> C:
    """Build config dataclass ``cls`` from a mapping; unknown keys raise, listing the valid ones."""
    if mapping is None:
        return cls()
    if isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{cls.__name__} must be given as a {cls.__name__} or a dict, got {type(mapping).__name__}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {valid}")
    return cls(**mapping)


@dataclass
class RewardModelConfig:
    """Architecture of a :class:`~reward_models.bradley_terry.BradleyTerryRewardModel`."""

    backbone: str = MINILM
    """Backbone: "minilm" (offline all-MiniLM-L6-v2), "tiny", "smollm2-135m-instruct", a folder or a hub name."""
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    """Which hidden state the head reads: auto = mean for encoders, last real token for causal LMs."""
    max_length: int = 256
    """Tokens of prompt + response kept (encoders trim the longer side, causal trunks the left). 256 is
    all-MiniLM-L6-v2's own limit (max_seq_length in its sentence_bert_config.json) and leaves room for
    longer prompts (hh-rlhf dialogues); batches are padded to their longest pair, so short texts cost no
    more. The bundled review prompts (at most 23 MiniLM word pieces) with 24-token responses stay far
    below 128, so the runs measured with 128 (docs/results/) never truncated and are unchanged at 256."""
    random_init: bool = False
    """Build the backbone from its config with random weights (tests use tiny random backbones)."""
    config_overrides: dict = field(default_factory=dict)
    """Backbone config fields to override, e.g. {"num_hidden_layers": 2, "hidden_size": 32}."""
    seed: int = 0
    """Seed of the head initialisation (and of a random backbone)."""
    batch_size: int = 64
    """Pairs per forward pass when scoring."""

    def __post_init__(self):
        if self.pooling not in ("auto", "mean", "last", "cls"):
            raise ValueError(f"pooling must be one of ['auto', 'mean', 'last', 'cls'], got {self.pooling!r}")
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"max_length >= 2 and batch_size >= 1 needed, got {self.max_length}, {self.batch_size}")


@dataclass
class RewardTrainingConfig:
    """Optimisation of the Bradley-Terry loss (``transformers.Trainer`` under the hood)."""

    learning_rate: float = 1e-4
    """AdamW learning rate. Measured with the default MiniLM backbone on the pipeline's sentiment pairs of
    seeds 0-2 (docs/results/2026-12-01-reward-model-epochs.md): 2e-4 and 5e-5 did no better."""
    num_epochs: float = 3.0
    """Passes over the training pairs. InstructGPT trains its RM for 1 epoch to avoid overfitting; the
    MiniLM model on ~630 sentiment pairs gains from a third (held-out accuracy 0.885 -> 0.903, mean of 5
    seeds, higher on every seed: docs/results/2026-12-01-reward-model-epochs.md)."""
    batch_size: int = 16
    """Pairs per optimiser step (each forward sees 2 x batch_size sequences)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Share of steps with a linear learning-rate warm-up; then linear decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping."""
    margin: float = 0.0
    """Constant margin in -logsigmoid(r_c - r_r - margin), added to each pair's own margin."""
    disable_dropout: bool = True
    """Keep dropout off while training too (as TRL's RewardConfig does by default)."""
    seed: int = 0
    """Seed of data order and of the Trainer."""
    logging_steps: int = 10
    """Log the training loss every this many steps."""
    progress_bar: bool = True
    """Show the Trainer's tqdm progress bar."""


__all__ = ["MINILM", "RewardModelConfig", "RewardTrainingConfig", "config_from_dict"]
