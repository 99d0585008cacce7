"""The reward protocol: anything that scores (prompt, response) text pairs in batches.

A reward is any object with ``score(prompts, responses) -> np.ndarray`` returning one finite
float32 per pair (docs/design.md section 2). Text goes in, so a reward model may use its own tokenizer.
:func:`make_reward` turns a spec (a registered name, a folder with a trained reward model, a
callable, or an object that already follows the protocol) into such an object.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RewardFunction(Protocol):
    """Batched text reward: ``score(prompts, responses)`` -> ``np.ndarray`` of shape ``(n,)``."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray: ...


def check_scores(scores: Any, prompts: Sequence[str], source: str = "reward") -> np.ndarray:
    """Validate a reward's output: one finite number per prompt, returned as float32.

    Raises:
        TypeError: non-numeric output.
        ValueError: wrong shape, NaN, inf, or a value beyond float32's range (which would become inf);
            the message names the first offending prompt.
    """
    try:
        arr = np.asarray(scores)
    except Exception as exc:  # noqa: BLE001 - ragged or exotic outputs
        raise TypeError(f"{source} returned {type(scores).__name__}, not an array of numbers") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(
            f"{source} must return numbers, got dtype {arr.dtype} ({type(scores).__name__}) for prompt {prompts[0]!r}"
        )
    if arr.dtype == np.bool_ or np.iscomplexobj(arr):
        raise TypeError(f"{source} must return real numbers, got dtype {arr.dtype} for prompt {prompts[0]!r}")
    n = len(prompts)
    if arr.shape != (n,):
        if arr.size == n and arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(n)  # (n, 1) heads are common; accept them
        else:
            raise ValueError(
                f"{source} must return one score per prompt, shape ({n},), got shape {arr.shape} "
                f"for prompt {prompts[0]!r}"
            )
    # Check the float32 scores, not the input: a value finite in float64 beyond float32's range
    # (|x| > 3.4e38) would otherwise pass here and become inf in the returned array.
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if np.isfinite(arr[i].astype(np.float64)):
            raise ValueError(
                f"{source} returned {arr[i]!r}, outside the float32 range (|score| <= "
                f"{float(np.finfo(np.float32).max):.4g}), for prompt {prompts[i]!r}; rescale the reward"
            )
        raise ValueError(f"{source} returned {arr[i]!r} (not finite) for prompt {prompts[i]!r}")
    return out


class CallableReward:
    """Wrap a plain Python function as a batched reward.

    Args:
        fn: ``fn(prompt, response) -> float`` (default), or ``fn(prompts, responses) -> sequence``
            when ``batched=True``.
        batched: whether ``fn`` takes whole batches.
        name: shown in error messages and logs.
    """

    def __init__(self, fn: Callable, batched: bool = False, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"reward function must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if self.batched:
            out = self.fn(list(prompts), list(responses))
        else:
            out = []
            for p, r in zip(prompts, responses):
                value = self.fn(p, r)
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                    arr = np.asarray(value)
                    if arr.shape != () or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
                        raise TypeError(
                            f"reward {self.name!r} must return one real number, got "
                            f"{type(value).__name__} {value!r} for prompt {p!r}"
                        )
                out.append(float(value))
        return check_scores(out, prompts, source=f"reward {self.name!r}")

    def __repr__(self) -> str:
        return f"CallableReward({self.name!r}, batched={self.batched})"


_REGISTRY: dict[str, Callable[..., RewardFunction]] = {}


def register_reward(name: str, factory: Callable[..., RewardFunction]) -> None:
    """Make ``make_reward(name, **kwargs)`` build ``factory(**kwargs)``."""
    _REGISTRY[name] = factory


def available_rewards() -> list[str]:
    """Names accepted by :func:`make_reward`."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def _ensure_builtins() -> None:
    from reward_models import rules  # noqa: F401  (registers the rule rewards on import)


def make_reward(spec: Any, **kwargs: Any) -> RewardFunction:
    """Build a reward from a spec.

    Args:
        spec: a registered name (:func:`available_rewards`, e.g. ``"sentiment"``), the path of a
            folder holding a trained reward model (``save_pretrained`` of
            :class:`reward_models.BradleyTerryRewardModel`), an object with ``score``, or a callable
            ``fn(prompt, response) -> float``.
        **kwargs: options of the named reward (e.g. ``target`` for ``"length"``).

    Raises:
        ValueError: unknown name, listing the valid ones.
        TypeError: a spec of the wrong type, or options given with a ready-made object.
    """
    if isinstance(spec, RewardFunction) and not isinstance(spec, type):
        if kwargs:
            raise TypeError(f"reward options {sorted(kwargs)} given with a ready-made reward object {spec!r}")
        return spec
    if isinstance(spec, (str, os.PathLike)):
        name = os.fspath(spec)
        _ensure_builtins()
        if name in _REGISTRY:
            factory = _REGISTRY[name]
            _check_kwargs(name, factory, kwargs)
            return factory(**kwargs)
        if os.path.isdir(name):
            from reward_models.bradley_terry import BradleyTerryRewardModel

            return BradleyTerryRewardModel.from_pretrained(name, **kwargs)
        raise ValueError(
            f"unknown reward {name!r}: use one of {available_rewards()}, the folder of a trained "
            f"reward model, or a callable fn(prompt, response) -> float"
        )
    if callable(spec):
        return CallableReward(spec, **kwargs)
    raise TypeError(
        f"reward must be a name, a folder, a callable or an object with score(prompts, responses); "
        f"got {type(spec).__name__}"
    )


def _check_kwargs(name: str, factory: Callable, kwargs: dict) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"reward {name!r} has no option(s) {unknown}; valid options: {sorted(params)}")
