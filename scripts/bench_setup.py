"""What every benchmarked method shares (``scripts/benchmark.py``): prompts, the reward module, the env.

Same work for every trainer: the prompts are encoded once (:func:`encode_prompts`, left-padded or
truncated to ``max_prompt_tokens`` like the env) and decoded back (:func:`window_texts`) into the texts
every trainer gets, and the reward is the same for all: an ``AutoModelForSequenceClassification``
(num_labels=1, the policy's weights, a seeded score head; :func:`build_score_model`) behind
:class:`SequenceClassifierReward` (text -> policy tokenizer -> score at the last token), which the env
calls as its reward and TRL as its reward function, on the same prompt and response texts.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config


def log(msg: str) -> None:
    """One timestamped progress line on stderr (stdout is kept for the results table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def encode_prompts(tokenizer, prompts: list[str], length: int) -> torch.Tensor:
    """``(N, length)`` ids: each prompt's last ``length`` tokens, left-padded with the pad id (as the env)."""
    rows = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"][-length:]
        rows.append([tokenizer.pad_token_id] * (length - len(ids)) + ids)
    return torch.tensor(rows, dtype=torch.long)


def window_texts(tokenizer, prompt_ids: torch.Tensor) -> list[str]:
    """The prompt text every method gets: each encoded window ``(N, length)`` decoded without its padding.

    The env keeps a prompt's last ``max_prompt_tokens`` tokens and TRL tokenizes whole prompts; handing
    both these decoded windows gives everyone the same prompts of (about) ``length`` tokens.
    """
    pad = tokenizer.pad_token_id
    return [tokenizer.decode([t for t in row.tolist() if t != pad]) for row in prompt_ids]


def build_score_model(name: str, seed: int, device: str):
    """``AutoModelForSequenceClassification`` (num_labels=1) with the policy's weights, seeded score head.

    Args:
        name: the policy model's name (``textenv.load_model``).
        seed: seed of the score head's initialisation (the global RNG is left as it was).
        device: where the model goes.

    Returns:
        The score model in eval mode.

    Raises:
        RuntimeError: a weight of the policy's trunk did not load into the score model.
    """
    from transformers import AutoModelForSequenceClassification

    from textenv import load_model

    lm = load_model(name)
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    missing, _ = model.load_state_dict(lm.state_dict(), strict=False)
    if [k for k in missing if not k.startswith("score.")]:
        raise RuntimeError(f"weights missing from the score model: {missing}")
    return model.eval().to(device)


class SequenceClassifierReward:
    """A sequence-classification module as a text reward: ``score(prompts, responses)``.

    Tokenizes prompt (its last ``max_prompt_tokens`` tokens, like the env) + response with the policy
    tokenizer, left-pads, forwards, and returns the score at the last token.
    """

    def __init__(self, module, tokenizer, max_prompt_tokens: int, max_new_tokens: int):
        self.module, self.tok = module, tokenizer
        self.P, self.T = max_prompt_tokens, max_new_tokens

    @torch.no_grad()
    def score(self, prompts, responses) -> np.ndarray:
        """The reward protocol: one float32 score per (prompt, response), shape ``(n,)``."""
        rows = [
            self.tok(p, add_special_tokens=False)["input_ids"][-self.P :]
            + (self.tok(r, add_special_tokens=False)["input_ids"][: self.T] if r else [])
            for p, r in zip(prompts, responses)
        ]
        L = max(len(r) for r in rows)
        dev = next(self.module.parameters()).device
        ids = torch.tensor([[self.tok.pad_token_id] * (L - len(r)) + r for r in rows], device=dev)
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.module(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (n, 1)
        return logits[:, 0].float().cpu().numpy()


def make_env(cfg: Config, n_envs: int, seed: int, prompts: list[str], reward):
    """The SB3 vector env of ``n_envs`` rows over ``prompts``, every row scoring with the one ``reward``.

    Args:
        cfg: the benchmark config (model, prompt and response lengths).
        n_envs: rows of the vector env.
        seed: the env's seed.
        prompts: the prompt texts.
        reward: the shared reward object (a :class:`SequenceClassifierReward`).

    Returns:
        ``agents.make_vec_text_env``'s vector env.
    """
    import agents

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*longer than max_prompt_tokens.*")
        env = agents.make_vec_text_env(
            n_envs=n_envs,
            seed=seed,
            model=cfg.model,
            prompts=prompts,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_new_tokens=cfg.max_new_tokens,
            reward=reward,
        )
    shared = {id(f) for f in env.get_attr("reward_fn")}  # one reward object for every row of the vector env
    assert shared == {id(reward)}, "the envs must use the shared reward module"
    return env
