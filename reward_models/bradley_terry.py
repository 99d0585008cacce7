"""The Bradley-Terry preference reward model: a Hugging Face backbone with a scalar head.

``r(prompt, response) = head(pool(backbone(prompt + response)))`` is trained on preference pairs
with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)`` (Ziegler et al. 2019,
"Fine-Tuning Language Models from Human Preferences"; Ouyang et al. 2022, InstructGPT, eq. 1), and
then normalised so that reference-policy samples score mean 0 and std 1 (Stiennon et al. 2020;
:mod:`reward_models.normalization`). It implements the reward protocol ``score(prompts, responses)``.

Encoders read prompt and response as a text pair and are mean-pooled (the pooling MiniLM's sentence
embeddings were trained with); causal trunks read the last real token of ``prompt + response`` (the
token that has seen the whole text, as in InstructGPT's reward model).

The model's parts live next to it, one concept each:

* :mod:`reward_models.bt_backbone`: which trunk and tokenizer a backbone name means (MiniLM by default);
* :mod:`reward_models.bt_training`: :func:`~reward_models.bt_training.train_reward_model` and
  :func:`~reward_models.bt_training.evaluate_preferences`;
* :mod:`reward_models.bt_io`: the saved folder (:meth:`BradleyTerryRewardModel.save_pretrained`);
* :mod:`reward_models.config`: :class:`RewardModelConfig` and :class:`RewardTrainingConfig` (no torch).

``from reward_models import ...`` gives every public name of these modules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reward_models.base import check_scores
from reward_models.bt_backbone import load_backbone
from reward_models.bt_io import read_reward_model, write_reward_model
from reward_models.config import RewardModelConfig, config_from_dict
from reward_models.normalization import fit_gain_bias


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Mean ``-log sigmoid(r_chosen - r_rejected - margin)`` (Ouyang et al. 2022, eq. 1).

    Equal rewards give ``ln 2``: the model says each side wins with probability 1/2.

    Args:
        chosen: rewards of the preferred responses, shape ``(batch,)``.
        rejected: rewards of the other responses, shape ``(batch,)``.
        margin: per-pair (``(batch,)``) or constant margin the chosen side must win by.

    Returns:
        The scalar mean loss.
    """
    return -F.logsigmoid(chosen - rejected - margin).mean()


class BradleyTerryRewardModel(nn.Module):
    """Backbone + linear scalar head; scores are ``gain * raw + bias`` (see :meth:`fit_normalization`).

    Build one with :meth:`build` (new) or :meth:`from_pretrained` (saved); train it with
    :func:`reward_models.bt_training.train_reward_model`; use it anywhere a reward is expected (``score``).

    Args:
        backbone: a ``transformers`` base model returning ``last_hidden_state``.
        tokenizer: its tokenizer (right padding for encoders, left for causal trunks).
        config: the :class:`RewardModelConfig`.
        causal: whether the backbone is a causal (decoder-only) LM.
    """

    def __init__(self, backbone: nn.Module, tokenizer, config: RewardModelConfig, causal: bool):
        super().__init__()
        self.backbone, self.tokenizer, self.config, self.causal = backbone, tokenizer, config, causal
        self.pooling = config.pooling if config.pooling != "auto" else ("last" if causal else "mean")
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            # lm-human-preferences initialises the reward head with std 1/sqrt(d_model + 1), bias 0.
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.head.bias)
        self.gain, self.bias = 1.0, 0.0
        self.dropout_enabled = False  # dropout off everywhere by default (docs/design.md section 5)
        self.metadata: dict[str, Any] = {}
        self.eval()

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls, config: RewardModelConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> BradleyTerryRewardModel:
        """A new reward model (pretrained backbone, fresh head) from a config or its fields as kwargs.

        Args:
            config: a :class:`RewardModelConfig`, a dict of its fields, or None for the defaults.
            **kwargs: fields that override ``config``'s.

        Returns:
            The model, in eval mode, with gain 1 and bias 0.

        Raises:
            ValueError: an unknown config key, or a tokenizer without a pad token.
            ImportError: the default MiniLM backbone's package is missing (the message says how to install it).
        """
        config = config_from_dict(RewardModelConfig, {**asdict(config_from_dict(RewardModelConfig, config)), **kwargs})
        backbone, tokenizer, causal = load_backbone(config)
        return cls(backbone, tokenizer, config, causal=causal)

    # ----------------------------------------------------------------- forward and scoring
    def train(self, mode: bool = True) -> BradleyTerryRewardModel:
        """Set training mode; unless ``dropout_enabled``, the backbone stays in eval mode (dropout off)."""
        super().train(mode)
        if mode and not self.dropout_enabled:
            self.backbone.eval()  # no batch-norm in transformers: eval mode == dropout off; grads still flow
        return self

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize pairs into padded tensors on the model's device."""
        tok, n = self.tokenizer, self.config.max_length
        if self.causal:
            tok.truncation_side = "left"  # keep the response's end: its last token is what the head reads
            enc = tok(
                [p + r for p, r in zip(prompts, responses)],
                padding=True,
                truncation=True,
                max_length=n,
                return_tensors="pt",
            )
        else:
            enc = tok(
                list(prompts),
                list(responses),
                padding=True,
                truncation="longest_first",
                max_length=n,
                return_tensors="pt",
            )
        device = self.head.weight.device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw (unnormalised) rewards, shape ``(batch,)``."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.causal:  # left padding: positions count real tokens only (docs/design.md section 5)
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["use_cache"] = False
        hidden = self.backbone(**kwargs).last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # index of the last real token, whatever the padding side
            length = attention_mask.shape[1]
            last = length - 1 - attention_mask.long().flip(-1).argmax(-1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled.float()).squeeze(-1)

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unnormalised rewards in eval mode without gradients, batched (longest texts first)."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        was_training = self.training
        self.eval()
        bs = batch_size or self.config.batch_size
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]) - len(responses[i]))
        out = np.empty(len(prompts), dtype=np.float64)
        try:
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                enc = self.tokenize([prompts[i] for i in idx], [responses[i] for i in idx])
                out[idx] = self(**enc).double().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward protocol: normalised scores ``gain * raw + bias``, float32, shape ``(n,)``."""
        prompts, responses = list(prompts), list(responses)
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        raw = self.raw_scores(prompts, responses)
        return check_scores(self.gain * raw + self.bias, prompts, "bradley-terry reward model")

    def fit_normalization(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[float, float]:
        """Fit gain/bias so these (reference-policy) samples score mean 0, std 1 (Stiennon et al. 2020).

        Returns:
            ``(gain, bias)``, also stored on the model and saved by :meth:`save_pretrained`.
        """
        self.gain, self.bias = fit_gain_bias(self.raw_scores(list(prompts), list(responses)))
        self.metadata["normalization_samples"] = len(prompts)
        return self.gain, self.bias

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write backbone, head, tokenizer and ``reward_model.json`` (gain, bias, config, metadata).

        The folder is written atomically (:func:`reward_models.bt_io.write_reward_model`).

        Args:
            path: the folder (replaced if it exists).
            metadata: extra metadata, merged over :attr:`metadata`.
        """
        meta = {
            "gain": self.gain,
            "bias": self.bias,
            "causal": self.causal,
            "pooling": self.pooling,
            "padding_side": self.tokenizer.padding_side,
            "config": asdict(self.config),
            "metadata": {**self.metadata, **(metadata or {})},
        }
        write_reward_model(path, self.backbone, self.tokenizer, self.head, meta)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, batch_size: int | None = None, device: str | torch.device | None = None
    ) -> BradleyTerryRewardModel:
        """Load a folder written by :meth:`save_pretrained`, in eval mode.

        Args:
            path: the folder.
            batch_size: pairs per forward when scoring (default: the saved config's).
            device: where to put the model (default CPU).

        Returns:
            The model with its saved head, normalisation and metadata.

        Raises:
            FileNotFoundError: the folder lacks ``reward_model.json``.
        """
        saved = read_reward_model(path, batch_size)
        model = cls(saved.backbone, saved.tokenizer, saved.config, causal=saved.causal)
        model.head.load_state_dict(saved.head_state)
        model.gain, model.bias = saved.gain, saved.bias
        model.metadata = saved.metadata
        if device is not None:
            model.to(device)
        return model.eval()

    def __repr__(self) -> str:
        return (
            f"BradleyTerryRewardModel(backbone={self.config.backbone!r}, pooling={self.pooling!r}, "
            f"gain={self.gain:.4g}, bias={self.bias:.4g})"
        )


__all__ = ["BradleyTerryRewardModel", "bradley_terry_loss"]
