"""Action masks for ``MaskablePPO``: NLPO-style reference masks and fixed token subsets.

NLPO (Ramamurthy et al. 2022, "Is Reinforcement Learning (Not) for Natural Language Processing?")
restricts the policy at every step to the top-p tokens of a masking model (here the reference LM), so
RL explores only plausible continuations. sb3-contrib's MaskablePPO asks the env for
``action_masks()`` before each action and applies the mask to the policy's distribution during
sampling *and* training, so the masked distribution is exactly what is sampled, stored and optimised.

These wrappers live in ``agents`` (not ``textenv``) because they run a model: ``textenv`` never depends
on ``agents``. The final mask is always the AND of the wrapper's choice with the inner env's
``action_masks()`` (pad and ids outside the tokenizer stay forbidden) and never empty.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

from textrlhf.lm import KVCacheRunner


@functools.lru_cache(maxsize=4)
def _shared_reference(name: str, dtype: str):
    # One frozen copy per process, shared by all wrapped envs of a DummyVecEnv (a 135M-parameter
    # model is 540 MB in fp32); it is only read.
    from textrlhf.models import load_model

    model = load_model(name, dtype=getattr(torch, dtype))
    return model.requires_grad_(False).eval()


def _inner_masks(env: gym.Env) -> np.ndarray:
    return np.asarray(env.unwrapped.action_masks(), dtype=bool)


class ReferenceMaskWrapper(gym.Wrapper):
    """Expose ``action_masks()`` = top-k and/or top-p tokens of a reference LM at the current step.

    Args:
        env: a ``TextRLHF-v0`` env (or a wrapper around one).
        model_name: the masking model (default: the env's model, i.e. the initial policy weights when
            the policy starts from the same name). Must share the env's tokenizer.
        top_k: keep the ``top_k`` most likely tokens (``None``: no top-k limit).
        top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
            (NLPO default 0.9; ``None``: no nucleus limit). With both, a token must pass both.
        temperature: temperature of the masking distribution (independent of the policy's).
        allow_special: keep special tokens other than EOS (``<|im_start|>``...) eligible; by default they
            are masked out, while EOS competes like any other token, so episodes can still end.
        dtype: dtype of the masking model (``"float32"``).

    Raises:
        ValueError: neither ``top_k`` nor ``top_p`` given, or out of range.
    """

    def __init__(
        self,
        env: gym.Env,
        model_name: str | None = None,
        top_k: int | None = 50,
        top_p: float | None = None,
        temperature: float = 1.0,
        allow_special: bool = False,
        dtype: str = "float32",
    ):
        super().__init__(env)
        if top_k is None and top_p is None:
            raise ValueError("give top_k and/or top_p for the reference mask")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        base = env.unwrapped
        self.model_name = model_name or base.config.model
        self.top_k, self.top_p, self.temperature = top_k, top_p, float(temperature)
        self.model = _shared_reference(self.model_name, dtype)
        n_head = self.model.get_output_embeddings().weight.shape[0]
        if n_head != env.action_space.n:
            raise ValueError(
                f"masking model {self.model_name!r} has {n_head} outputs, the action space {env.action_space.n}"
            )
        self._base_mask = _inner_masks(env)
        tok = base.tokenizer
        if not allow_special:
            for t in tok.all_special_ids:
                if t != base.eos_token_id and t < len(self._base_mask):
                    self._base_mask[t] = False
        self._runner = KVCacheRunner(self.model.base_model)
        self._obs: dict | None = None
        self._mask: np.ndarray | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._mask = obs, None
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs, self._mask = obs, None
        return obs, reward, terminated, truncated, info

    @torch.no_grad()
    def action_masks(self) -> np.ndarray:
        """Bool ``(V,)``: the reference top-k/top-p set at the current observation, never empty."""
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before action_masks()")
        if self._mask is None:
            ids = torch.as_tensor(self._obs["input_ids"]).long()[None]  # (1, L)
            mask = torch.as_tensor(self._obs["attention_mask"]).long()[None]
            hidden = self._runner(ids, mask)  # (1, hidden), KV-cached across the episode
            logits = self.model.get_output_embeddings()(hidden)[0].float() / self.temperature  # (V,)
            self._mask = reference_mask(logits, self._base_mask, self.top_k, self.top_p)
        return self._mask.copy()


def reference_mask(
    logits: torch.Tensor, allowed: np.ndarray, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """Top-k / top-p set of a next-token distribution, restricted to ``allowed``; never empty.

    Args:
        logits: ``(V,)`` logits of the masking model.
        allowed: bool ``(V,)`` tokens that may be chosen at all.
        top_k: keep at most this many tokens.
        top_p: keep the smallest most-likely set with probability mass >= ``top_p`` (renormalised
            over ``allowed``).

    Returns:
        bool ``(V,)`` with at least one True (the most likely allowed token).
    """
    allowed_t = torch.as_tensor(allowed, dtype=torch.bool)
    if not bool(allowed_t.any()):
        raise ValueError("no token is allowed at all; check the env's action_masks()")
    logits = logits.masked_fill(~allowed_t, float("-inf"))
    order = torch.argsort(logits, descending=True, stable=True)  # (V,)
    keep_sorted = torch.isfinite(logits[order])
    if top_k is not None:
        keep_sorted[top_k:] = False
    if top_p is not None:
        probs = torch.softmax(logits[order].double(), dim=-1)
        mass_before = torch.cumsum(probs, 0) - probs  # mass of strictly more likely tokens
        keep_sorted &= mass_before < top_p
    keep_sorted[0] = True  # at least one valid action, always
    out = torch.zeros_like(allowed_t)
    out[order[keep_sorted]] = True
    return out.numpy()


class TokenSubsetMaskWrapper(gym.Wrapper):
    """Expose ``action_masks()`` allowing only a fixed set of token ids (small-vocabulary tasks).

    Args:
        env: a ``TextRLHF-v0`` env.
        token_ids: the allowed ids (intersected with the env's own mask; must leave at least one).
    """

    def __init__(self, env: gym.Env, token_ids: Sequence[int]):
        super().__init__(env)
        subset = np.zeros(env.action_space.n, dtype=bool)
        ids = np.asarray(list(token_ids), dtype=np.int64)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= env.action_space.n:
            raise ValueError(
                f"token_ids must be a non-empty list of ids in [0, {env.action_space.n}), got {token_ids!r}"
            )
        subset[ids] = True
        self._mask = subset & _inner_masks(env)
        if not self._mask.any():
            raise ValueError(f"token_ids {list(token_ids)} are all forbidden by the env's own action mask")

    def action_masks(self) -> np.ndarray:
        """Bool ``(V,)``: the fixed subset."""
        return self._mask.copy()
