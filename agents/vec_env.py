"""The one place where ``TextRLHF-v0``'s native vector env meets SB3's ``VecEnv`` API.

* :class:`TextRLHFVecEnv` adapts a :class:`textenv.TextRLHFVectorEnv` to SB3's ``VecEnv``, so SB3's
  generic algorithms (PPO, A2C, TRPO, MaskablePPO through :func:`agents.make_agent`) run on it: SB3's
  autoreset (an ended row is reset in the same ``step_wait``, its final observation in
  ``info["terminal_observation"]``) and SB3's ``Monitor`` statistics (``info["episode"]``), done here
  once for all rows. :func:`agents.make_vec_text_env` returns one.
* :func:`text_vector_env` gives the fast agents (:mod:`agents.rollout`) the ``TextRLHFVectorEnv`` to
  step directly, whatever ``VecEnv`` they were handed (docs/design.md section 3).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from textenv import TextRLHFVectorEnv

_PER_ROW_METHODS = ("action_masks",)
"""Vector-env methods whose result has one row per env (``env_method`` splits it); other methods and
all attributes are shared by the rows and returned once per requested env."""


def row_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's batched ``info`` (``info[key]`` with the mask ``info["_key"]``) as one dict per row."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        present = infos.get(f"_{key}", np.ones(n, dtype=bool))
        for i in np.flatnonzero(present):
            value = values[i]
            out[i][key] = value.item() if isinstance(value, np.generic) else value
    return out


def monitor_info(reward: float, length: int, t_start: float) -> dict[str, float]:
    """SB3 ``Monitor``'s ``info["episode"]`` of a finished episode (what SB3 logs as ``rollout/ep_*``)."""
    return {"r": round(float(reward), 6), "l": int(length), "t": round(time.time() - t_start, 6)}


class TextRLHFVecEnv(VecEnv):
    """SB3 ``VecEnv`` over one :class:`textenv.TextRLHFVectorEnv` (its ``vector_env``).

    ``step_wait`` steps every row in one call; rows that end are reset at once (SB3's convention) with
    ``info["terminal_observation"]``, ``info["TimeLimit.truncated"]`` (always ``False``, the horizon is
    part of the task) and ``info["episode"]`` as SB3's ``Monitor`` writes it. ``seed``/``set_options``
    apply at the next ``reset`` as in ``DummyVecEnv``. The rows share one tokenizer, prompt list and
    reward: ``get_attr(name)`` returns the vector env's attribute once per env, ``env_method`` calls
    the vector env's method (``action_masks`` gives each env its row).
    """

    def __init__(self, vector_env: TextRLHFVectorEnv):
        if not isinstance(vector_env.unwrapped, TextRLHFVectorEnv):
            raise TypeError(f"TextRLHFVecEnv adapts a textenv.TextRLHFVectorEnv, got {type(vector_env).__name__}")
        self.vector_env = vector_env
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs)  # (n,) reward so far of each row's episode
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)  # (n,)
        self._t_start = time.time()

    def reset(self):
        """Reset every row with the pending ``seed``/``set_options`` values (used once, as SB3 does)."""
        options = merge_row_options(self._options) if any(self._options) else None
        obs, infos = self.vector_env.reset(seed=list(self._seeds), options=options)
        self.reset_infos = row_infos(infos, self.num_envs)
        self._returns[:], self._lengths[:] = 0.0, 0
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep ``actions`` (one token id per row) for ``step_wait``."""
        self._actions = np.asarray(actions)

    def step_wait(self):
        """Step every row in one vector-env call; reset the rows that ended (SB3's autoreset)."""
        obs, rewards, terminated, truncated, infos = self.vector_env.step(self._actions)
        dones = terminated | truncated  # (n,)
        out = row_infos(infos, self.num_envs)
        self._returns += rewards
        self._lengths += 1
        for i, info in enumerate(out):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if dones[i]:
                info["terminal_observation"] = {k: v[i] for k, v in obs.items()}
                info["episode"] = monitor_info(self._returns[i], self._lengths[i], self._t_start)
        if dones.any():  # SB3's autoreset, in one call for every row that ended
            obs, reset_infos = self.vector_env.reset(options={"reset_mask": dones})
            fresh = row_infos(reset_infos, self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = fresh[i]
            self._returns[dones], self._lengths[dones] = 0.0, 0
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        """Close the vector env."""
        self.vector_env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """``None`` per row: a text env renders text (``vector_env.render()``), not images."""
        return [None] * self.num_envs  # text env: no images

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute ``attr_name``, once per requested env (the rows share it)."""
        return [getattr(self.vector_env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a shared attribute; only for all rows at once (``ValueError`` otherwise)."""
        if len(list(self._get_indices(indices))) != self.num_envs:
            raise ValueError(f"the rows of a TextRLHFVecEnv share their attributes: set {attr_name!r} on all of them")
        setattr(self.vector_env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the vector env's method once; per-row results (``action_masks``) are split by row.

        ``reset``/``step`` are refused (``TypeError``): they move every row, not the requested ones.
        """
        if method_name in ("reset", "step"):
            raise TypeError(
                f"env_method({method_name!r}) would move every row; call {method_name}() on the "
                f"VecEnv, or step its vector_env directly"
            )
        result = getattr(self.vector_env, method_name)(*method_args, **method_kwargs)
        rows = list(self._get_indices(indices))
        return [result[i] for i in rows] if method_name in _PER_ROW_METHODS else [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """``True`` for SB3's ``Monitor`` only, whose episode statistics the adapter writes."""
        # The adapter writes Monitor's info["episode"] itself, so SB3 may count on Monitor's statistics.
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]


def merge_row_options(options: Sequence[dict[str, Any] | None]) -> dict[str, list[Any]]:
    """Per-row ``reset`` options (``[{"prompt_index": 3}, None, ...]``) as the vector env's per-row
    option sequences (``{"prompt_index": [3, None, ...]}``); unknown keys reach the env's own check."""
    keys = sorted({k for o in options if o for k in o})
    return {k: [(o or {}).get(k) for o in options] for k in keys}


# Wrappers that change no observation, reward or episode end: a fast agent may step the base env
# without them (Monitor's statistics are written by the rollout, masks are not used by the fast agents).
_TRANSPARENT_WRAPPERS: tuple[type, ...] = (Monitor, OrderEnforcing, PassiveEnvChecker)


def text_vector_env(env: Any) -> TextRLHFVectorEnv:
    """The :class:`textenv.TextRLHFVectorEnv` a fast agent steps for ``env``.

    ``env`` may be that vector env, a :class:`TextRLHFVecEnv` (:func:`agents.make_vec_text_env`), or
    SB3's ``DummyVecEnv`` of single ``TextRLHF-v0`` envs of one config (how SB3 wraps a single env),
    whose rows then continue the envs' random streams (:meth:`textenv.TextRLHFVectorEnv.from_envs`).

    Raises:
        TypeError: anything else, e.g. a ``VecEnvWrapper`` or env wrappers that the vector env would
            bypass, or a ``SubprocVecEnv``.
    """
    from agents.masking import ReferenceMaskWrapper, TokenSubsetMaskWrapper

    if isinstance(env, TextRLHFVectorEnv):
        return env
    if isinstance(env, TextRLHFVecEnv):
        return env.vector_env
    if isinstance(env, VecEnvWrapper):
        raise TypeError(
            f"fast agents step the rows directly, so VecEnv wrappers ({type(env).__name__}) would be "
            f"bypassed; pass agents.make_vec_text_env(...) unwrapped"
        )
    if isinstance(env, DummyVecEnv):
        allowed = (*_TRANSPARENT_WRAPPERS, ReferenceMaskWrapper, TokenSubsetMaskWrapper)
        for sub in env.envs:
            layer = sub
            while isinstance(layer, gym.Wrapper):
                if not isinstance(layer, allowed):
                    raise TypeError(
                        f"fast agents step TextRLHF-v0 rows directly and would bypass the env wrapper "
                        f"{type(layer).__name__}; pass agents.make_vec_text_env(...) or unwrapped envs"
                    )
                layer = layer.env
        return TextRLHFVectorEnv.from_envs(env.envs)
    raise TypeError(
        f"fast agents need a VecEnv of TextRLHF-v0 envs (agents.make_vec_text_env), got {type(env).__name__}"
    )
