"""``EnvConfig``: every option of ``TextRLHF-v0``, with its default and meaning."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from textrlhf.models import OFFLINE_MODEL

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_penalty(value: Any) -> float:
    """``no_eos_penalty`` as a float; refuses what would make a reward NaN or inf."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"no_eos_penalty must be a number (e.g. -1.0), got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"no_eos_penalty must be a finite number (e.g. -1.0), got {value!r}")
    if abs(value) > _FLOAT32_MAX:
        raise ValueError(f"no_eos_penalty must be within the float32 range of rewards (|x| <= 3.4e38), got {value!r}")
    return value


def _check_token_ids(tokens: Any) -> tuple[int, ...]:
    """``forbidden_tokens`` as a tuple of ints; ``int(1.7)`` would silently forbid token 1."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Iterable):
        raise TypeError(f"forbidden_tokens must be a sequence of int token ids such as ({tokens!r},), got {tokens!r}")
    tokens = tuple(tokens)
    for t in tokens:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TypeError(
                f"forbidden_tokens must be int token ids (e.g. tokenizer.convert_tokens_to_ids(...)), "
                f"got {type(t).__name__} {t!r}"
            )
    return tuple(int(t) for t in tokens)


@dataclass
class EnvConfig:
    """Configuration of :class:`textenv.TextRLHFEnv`. ``gym.make`` keyword arguments override fields."""

    model: str = OFFLINE_MODEL
    """Model whose tokenizer and LM-head size define the observation and action spaces:
    ``"smollm2-135m-instruct"`` (bundled, offline), ``"tiny"`` (test model, same tokenizer),
    a local folder or a hub name. The env never runs this model; agents do."""

    prompts: Any = "bundled:reviews"
    """Prompt source: ``"bundled:reviews"`` (movie-review openings, the sentiment task),
    ``"bundled:instructions"``, ``"bundled:all"``; a local ``.json``/``.jsonl``/``.csv``/``.txt`` file;
    a hub dataset name (needs internet); or a Python list of strings."""

    prompt_column: str = "prompt"
    """Column holding the prompt text in a file or hub dataset (``.txt`` files use one prompt a line)."""

    prompt_split: str = "train"
    """Split to read: for the bundled set and files with a ``split`` column, ``"train"``, ``"test"`` or
    ``"all"``; for hub datasets, the dataset split name."""

    max_prompts: int | None = None
    """Keep only the first ``max_prompts`` prompts (``None``: all)."""

    chat_template: bool = False
    """Wrap each prompt in the tokenizer's chat template as a user turn, with the generation prompt,
    so instruct models answer it (then ``max_prompt_tokens`` must also hold the template's tokens).
    A bool: a string such as ``"no"`` is refused."""

    system_prompt: str | None = None
    """System message for ``chat_template=True`` (``None``: the template's default); an error without it."""

    max_prompt_tokens: int = 32
    """Prompt length budget in tokens; the observation holds ``max_prompt_tokens + max_new_tokens``."""

    prompt_overflow: str = "truncate"
    """What to do with a longer prompt: ``"truncate"`` (keep its last tokens, warn once) or ``"error"``."""

    max_new_tokens: int = 24
    """Episode horizon: the response ends after this many tokens if no EOS came first."""

    reward: Any = "sentiment"
    """Reward: a registered name (``"sentiment"``, ``"length"``, ``"keywords"``, ...), the folder of a
    trained reward model, a callable ``fn(prompt, response) -> float``, or an object with
    ``score(prompts, responses)``."""

    reward_kwargs: dict = field(default_factory=dict)
    """Options of a named reward, e.g. ``{"target": 10}`` for ``"length"``."""

    no_eos_penalty: float = 0.0
    """Added to the score when a response reaches ``max_new_tokens`` without EOS (use a negative value
    to discourage rambling; Huang et al. 2024, "The N Implementation Details of RLHF with PPO", #4).
    A finite number within float32's range."""

    forbidden_tokens: tuple = ()
    """Extra token ids (ints) that ``action_masks()`` forbids (pad and ids outside the tokenizer always are)."""

    def __post_init__(self) -> None:
        for name in ("max_prompt_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_prompts is not None and (
            isinstance(self.max_prompts, bool) or not isinstance(self.max_prompts, int) or self.max_prompts < 1
        ):
            raise ValueError(f"max_prompts must be a positive int or None, got {self.max_prompts!r}")
        if self.prompt_overflow not in ("truncate", "error"):
            raise ValueError(f"prompt_overflow must be 'truncate' or 'error', got {self.prompt_overflow!r}")
        if not isinstance(self.reward_kwargs, dict):
            raise TypeError(f"reward_kwargs must be a dict, got {type(self.reward_kwargs).__name__}")
        self._check_chat_options()
        self.no_eos_penalty = _check_penalty(self.no_eos_penalty)
        self.forbidden_tokens = _check_token_ids(self.forbidden_tokens)

    def _check_chat_options(self) -> None:
        # A string such as "no" is truthy: only real booleans may switch the template on.
        if not isinstance(self.chat_template, (bool, np.bool_)):
            raise TypeError(f"chat_template must be True or False, got {self.chat_template!r}")
        self.chat_template = bool(self.chat_template)
        if self.system_prompt is None:
            return
        if not isinstance(self.system_prompt, str):
            raise TypeError(f"system_prompt must be a string or None, got {type(self.system_prompt).__name__}")
        if not self.chat_template:
            # Plain prompts have no place for a system message; ignoring it would train on a task other
            # than the one asked for, so refuse rather than warn.
            raise ValueError(
                "system_prompt is only used with the chat template; set chat_template=True to use it, "
                "or drop system_prompt"
            )

    @property
    def obs_len(self) -> int:
        """Length ``L`` of the observation: prompt budget plus response budget."""
        return self.max_prompt_tokens + self.max_new_tokens

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields (the valid keyword arguments of ``gym.make``)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, config: EnvConfig | dict | None = None, **overrides: Any) -> EnvConfig:
        """Build a config from a base (config, dict or ``None``) plus keyword overrides.

        Raises:
            TypeError: an unknown key, listing the valid ones.
        """
        base: dict[str, Any] = {}
        if isinstance(config, EnvConfig):
            base = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        elif isinstance(config, dict):
            base = dict(config)
        elif config is not None:
            raise TypeError(f"config must be an EnvConfig, a dict or None, got {type(config).__name__}")
        base.update(overrides)
        unknown = sorted(set(base) - set(cls.field_names()))
        if unknown:
            raise TypeError(
                f"unknown TextRLHF-v0 option(s) {unknown}; valid options: {cls.field_names()} (and render_mode)"
            )
        return cls(**base)
