"""The text-generation task both ``TextRLHF-v0`` classes run: one place for its rules.

:class:`textenv.TextRLHFEnv` (one episode at a time) and :class:`textenv.TextRLHFVectorEnv` (``N``
episodes stepped in one call) inherit :class:`TextTask`, which owns everything the two must agree on:
loading the tokenizer, prompts and reward, encoding a prompt into the window, the spaces, checking
actions and reset options, when an episode ends, and the final score and ``info`` (docs/design.md
section 3). The classes only hold state (one window or ``N``) and call these methods, so a rule
changed here changes both, and the vector env stays equivalent to ``N`` single envs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from reward_models.base import check_scores, make_reward
from textenv.config import EnvConfig
from textrlhf.models import context_length, load_tokenizer, vocab_size
from textrlhf.prompts import PromptTruncatedWarning, load_prompts

RESET_OPTIONS = ("prompt", "prompt_index")
"""``reset(options=...)`` keys that choose the prompt (the vector env adds ``reset_mask``)."""


class UnsupportedRenderModeError(ValueError, TypeError):
    """An unsupported ``render_mode``.

    Also a ``TypeError`` because SB3's ``make_vec_env`` first tries ``render_mode="rgb_array"`` and
    falls back to the caller's kwargs only on ``TypeError``.
    """


def check_action(action: Any, n_actions: int) -> int:
    """``action`` as an ``int`` token id, or the bad-input error of docs/design.md section 6.

    Accepts Python ``int``, NumPy integer scalars and 0-d integer arrays; refuses ``bool`` and
    non-integers (``TypeError``) and ids outside ``[0, n_actions)`` (``ValueError``).
    """
    if isinstance(action, np.ndarray):
        if action.shape != ():
            raise TypeError(f"action must be a single token id, got an array of shape {action.shape}")
        action = action[()]
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(f"action must be an integer token id, got {type(action).__name__} {action!r}; pass int(token)")
    token = int(action)
    if not 0 <= token < n_actions:
        raise ValueError(f"action {token} is outside the action space [0, {n_actions})")
    return token


def check_reset_keys(options: dict[str, Any] | None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """A copy of ``options`` after refusing unknown keys (``ValueError`` listing the valid ones)."""
    options = dict(options or {})
    valid = sorted({*RESET_OPTIONS, *extra})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; valid: {valid}")
    return options


class TextTask:
    """Mixin with the task's rules; see the module docstring. Subclasses set ``metadata``."""

    metadata: dict[str, Any]

    # ------------------------------------------------------------------ construction
    def _setup_task(self, config: EnvConfig | dict | None, render_mode: str | None, overrides: dict) -> None:
        """Parse the config, load tokenizer, prompts and reward; every bad value fails here, not later."""
        self.config = EnvConfig.from_kwargs(config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UnsupportedRenderModeError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        cfg = self.config
        self.tokenizer = load_tokenizer(cfg.model)
        self.vocab_size = vocab_size(cfg.model)
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        max_len = context_length(cfg.model)
        if max_len is not None and cfg.obs_len > max_len:
            raise ValueError(
                f"max_prompt_tokens + max_new_tokens = {cfg.max_prompt_tokens} + {cfg.max_new_tokens} = "
                f"{cfg.obs_len} exceeds the context of {cfg.model!r} ({max_len} tokens); lower one of them"
            )
        self.prompts = load_prompts(cfg.prompts, cfg.prompt_column, cfg.prompt_split, cfg.max_prompts)
        encoded = [self._encode_prompt(p, f"prompt {i}") for i, p in enumerate(self.prompts)]
        self._prompt_ids = [ids for ids, _ in encoded]
        n_cut = sum(dropped > 0 for _, dropped in encoded)
        if n_cut:  # one warning for the whole source, not one per prompt
            warnings.warn(
                f"{n_cut} of {len(self.prompts)} prompts were longer than max_prompt_tokens="
                f"{cfg.max_prompt_tokens} and lost their first tokens (prompt_overflow='truncate'); "
                f"raise max_prompt_tokens to keep them whole",
                PromptTruncatedWarning,
                stacklevel=3,
            )
        self._reward = None
        self._get_reward()  # fail at construction on a bad reward spec, not at the first episode end
        self._mask = self._valid_actions()

    def _valid_actions(self) -> np.ndarray:
        """Bool ``(V,)``: LM-head rows with a token behind them, minus pad and ``forbidden_tokens``."""
        mask = np.ones(self.vocab_size, dtype=bool)
        mask[len(self.tokenizer) :] = False
        mask[self.pad_token_id] = False
        for t in self.config.forbidden_tokens:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"forbidden token {t} is outside the vocabulary [0, {self.vocab_size})")
            mask[t] = False
        if not mask.any():
            raise ValueError("forbidden_tokens forbid every token; at least one action must stay valid")
        return mask

    def _share_task(self, other: TextTask) -> None:
        """Use ``other``'s config, tokenizer, prompts and reward (no copy, nothing reloaded)."""
        for name in (
            "config",
            "render_mode",
            "tokenizer",
            "vocab_size",
            "eos_token_id",
            "pad_token_id",
            "prompts",
            "_prompt_ids",
            "_reward",
            "_mask",
        ):
            setattr(self, name, getattr(other, name))

    def _single_spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        """Observation and action space of one episode (docs/design.md section 3, step 1)."""
        L = self.config.obs_len
        obs = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (L,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, (L,), dtype=np.int8),
            }
        )
        return obs, spaces.Discrete(self.vocab_size)

    # ------------------------------------------------------------------ prompts
    def _encode_prompt(self, prompt: str, label: str) -> tuple[np.ndarray, int]:
        """The prompt's ids as the observation holds them, and how many leading tokens were cut off.

        Raises ``ValueError`` (naming ``label``) for a prompt that does not fit if ``prompt_overflow="error"``.
        """
        cfg = self.config
        if cfg.chat_template:
            messages = [{"role": "user", "content": prompt}]
            if cfg.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": cfg.system_prompt})
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > cfg.max_prompt_tokens:
            if cfg.prompt_overflow == "error":
                raise ValueError(
                    f"{label} ({prompt[:60]!r}...) has {len(ids)} tokens, more than max_prompt_tokens="
                    f"{cfg.max_prompt_tokens}; raise max_prompt_tokens or set prompt_overflow='truncate'"
                )
            return ids[-cfg.max_prompt_tokens :], len(ids) - cfg.max_prompt_tokens
        return ids, 0

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """Token ids of ``prompt`` exactly as ``reset`` puts them in the observation (chat template and
        ``prompt_overflow`` applied), for code that samples outside the env (evaluation, baselines).

        Truncates without a warning: callers encode whole prompt lists, often ``env.prompts``, whose
        truncation the constructor has already reported."""
        return self._encode_prompt(prompt, "prompt")[0]

    def _choose_prompt(self, index: Any, prompt: Any, rng: np.random.Generator) -> tuple[int, np.ndarray, str | None]:
        """``(prompt_index, ids, custom_text)`` for one reset: the ``prompt`` option (index ``-1``), the
        ``prompt_index`` option, or (both ``None``) a prompt drawn uniformly with ``rng``."""
        if prompt is not None and index is not None:
            raise ValueError("give reset option 'prompt' or 'prompt_index', not both")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"reset option 'prompt' must be a non-empty string, got {prompt!r}")
            ids, dropped = self._encode_prompt(prompt, "reset option 'prompt'")
            if dropped:
                warnings.warn(
                    f"reset option 'prompt' ({prompt[:60]!r}...) was longer than max_prompt_tokens="
                    f"{self.config.max_prompt_tokens} and lost its first {dropped} tokens "
                    f"(prompt_overflow='truncate'); raise max_prompt_tokens to keep it whole",
                    PromptTruncatedWarning,
                    stacklevel=3,
                )
            return -1, ids, prompt
        if index is not None:
            if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
                raise TypeError(f"reset option 'prompt_index' must be an int, got {type(index).__name__}")
            if not 0 <= index < len(self.prompts):
                raise ValueError(f"prompt_index {index} is outside [0, {len(self.prompts)})")
            index = int(index)
        else:
            index = int(rng.integers(len(self.prompts)))
        return index, self._prompt_ids[index], None

    def _window(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reset window of a prompt: ``(input_ids, attention_mask)``, each ``(L,)``, left-padded."""
        L = self.config.obs_len
        input_ids = np.full(L, self.pad_token_id, dtype=np.int64)  # (L,)
        attention_mask = np.zeros(L, dtype=np.int8)  # (L,)
        if len(ids):
            input_ids[L - len(ids) :] = ids
            attention_mask[L - len(ids) :] = 1
        return input_ids, attention_mask

    # ------------------------------------------------------------------ episode end and reward
    def _ends(self, tokens: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
        """Whether responses of ``n_tokens`` tokens whose last ones are ``tokens`` end (EOS or horizon)."""
        return (np.asarray(tokens) == self.eos_token_id) | (np.asarray(n_tokens) >= self.config.max_new_tokens)

    def _get_reward(self):
        if self._reward is None:
            self._reward = make_reward(self.config.reward, **self.config.reward_kwargs)
        return self._reward

    @property
    def reward_fn(self):
        """The reward object (``score(prompts, responses)``) this env calls at each episode end."""
        return self._get_reward()

    def _final_infos(self, prompts: list[str], indices: list[int], responses: list[list[int]]) -> list[dict[str, Any]]:
        """The last step's ``info`` of each finished episode, all scored in ONE reward call.

        A response that ends without EOS hit ``max_new_tokens`` and gets ``no_eos_penalty``. Raises
        ``ValueError`` naming the prompt for a score, or score + penalty, outside float32.
        """
        texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        scores = check_scores(
            self._get_reward().score(list(prompts), texts), prompts, source=f"reward {self.config.reward!r}"
        )
        infos = []
        for prompt, index, tokens, text, score in zip(prompts, indices, responses, texts, scores):
            hit_max = not (tokens and tokens[-1] == self.eos_token_id)
            score = float(score)
            if hit_max:
                score += self.config.no_eos_penalty
                with np.errstate(over="ignore"):
                    overflows = not np.isfinite(np.float32(score))
                if overflows:  # each part fits float32, their sum may not (agents keep rewards in float32)
                    raise ValueError(
                        f"score + no_eos_penalty = {score!r} is outside the float32 range for prompt "
                        f"{prompt!r}; rescale the reward or no_eos_penalty"
                    )
            # response_tokens is a tuple, not an array: Gymnasium's vector envs stack same-shaped arrays
            # and fail on responses of different lengths, but keep other objects in an object array.
            infos.append(
                {
                    "score": score,
                    "response": text,
                    "response_tokens": tuple(tokens),
                    "prompt": prompt,
                    "prompt_index": index,
                    "hit_max_tokens": hit_max,
                }
            )
        return infos

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        if isinstance(self.config.reward, str):
            state["_reward"] = None  # rebuilt lazily in the new process (may hold a model)
        return state
