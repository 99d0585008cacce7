"""``TextRLHFEnv``: one episode is one language-model response."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from reward_models.base import check_scores, make_reward
from textenv.config import EnvConfig
from textenv.models import context_length, load_tokenizer, vocab_size
from textenv.prompts import PromptTruncatedWarning, load_prompts


class UnsupportedRenderModeError(ValueError, TypeError):
    """An unsupported ``render_mode``.

    Also a ``TypeError`` because SB3's ``make_vec_env`` first tries ``render_mode="rgb_array"`` and
    falls back to the caller's kwargs only on ``TypeError``.
    """


class TextRLHFEnv(gym.Env):
    """Token-by-token text generation as a Gymnasium environment, for RLHF.

    ## Description
    ``reset()`` samples a prompt; every ``step(token_id)`` appends one token of the response; the
    episode ends at EOS or after ``max_new_tokens``, when the reward function scores the
    (prompt, response) text. An agent's policy is a language model; the RLHF KL penalty against the
    reference model is added on the agent side, where the policy's log-probabilities are known
    (see ``agents``). Default task: continue movie-review openings (the bundled prompt set) so that
    VADER rates the continuation positive, the offline "mock sentiment" task of Ziegler et al. (2019).

    ## Action Space
    ``Discrete(V)``: a token id, ``V`` the size of the model's LM head (49152 for SmolLM2-135M).
    Python ``int``, NumPy integer scalars and 0-d integer arrays are accepted; ``bool`` is not.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))`` with
    ``L = max_prompt_tokens + max_new_tokens``: prompt + response so far, left-padded with the pad
    token (distinct from EOS) and right-aligned, so each step shifts the window left by one and puts
    the new token last (``obs[t+1][:-1] == obs[t][1:]``, which lets a policy keep a KV cache).

    ## Rewards
    0 on every step but the last; on the last, ``score(prompt, response)`` of the reward function
    (plus ``no_eos_penalty`` if the response hit ``max_new_tokens`` without EOS). A score or sum that is
    NaN, inf or beyond float32's range raises ``ValueError`` naming the prompt. The response text is
    decoded without special tokens. Default reward ``"sentiment"``: VADER compound score in [-1, 1].
    ``preview_end(action)`` returns the (prompt, response) that ``step(action)`` would score, changing
    nothing, so a lock-step rollout over many envs can score their episode ends in one batch first
    (:class:`reward_models.PrefetchReward`); the env still computes its own reward.

    ## Starting State
    A prompt drawn uniformly from the prompt source with ``self.np_random``, or the one chosen by
    ``reset(options={"prompt_index": i})`` or ``reset(options={"prompt": "text"})`` (for sampling
    several responses to the same prompt). A prompt longer than ``max_prompt_tokens`` keeps its last
    tokens with a :class:`textenv.PromptTruncatedWarning` (once for the whole prompt source at
    construction, at each ``reset`` for an option prompt), or raises ``ValueError`` if
    ``prompt_overflow="error"``.

    ## Episode End
    ``terminated=True`` when the action is EOS, and also when the response reaches
    ``max_new_tokens``: the horizon is part of the task, and ``truncated`` would make agents bootstrap
    a value on top of the final score. ``truncated`` is always ``False``. ``info`` of the last step
    holds ``score`` (float), ``response`` (text), ``response_tokens`` (tuple of int token ids, EOS
    included if emitted; ``np.asarray`` it for an array), ``prompt``, ``prompt_index`` (``-1`` for a
    ``reset`` option prompt) and ``hit_max_tokens``; other steps' ``info`` is empty (keep
    vocabulary-sized arrays out of ``info``: SB3's ``DummyVecEnv`` copies it every step). Every value
    is a scalar or a plain object, never a variable-length array, so Gymnasium's vector envs can merge
    the infos of envs whose responses differ in length (``response_tokens`` becomes an object array of
    tuples, one per env).

    ## Arguments
    ``gym.make("TextRLHF-v0", **kwargs)``: every field of :class:`textenv.EnvConfig` (``model``,
    ``prompts``, ``reward``, ``max_new_tokens``, ...) and ``render_mode`` (``"ansi"`` returns the
    text, ``"human"`` prints it). ``config=EnvConfig(...)`` passes a whole config. Unknown keys raise
    ``TypeError``; values of the wrong type (``chat_template="yes"``, ``forbidden_tokens=[1.7]``) raise
    ``TypeError``, bad values (``no_eos_penalty=nan``, ``system_prompt`` without ``chat_template=True``)
    ``ValueError``, and a model name that is neither offline, a folder nor loadable from the hub
    :class:`textenv.ModelNotFoundError`, all at construction.

    ## Version History
    * v0: initial version. ``info["response_tokens"]`` became a tuple (from an int64 array) so that
      Gymnasium's vector envs can merge episode ends of different lengths; rewards are unchanged.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(self, config: EnvConfig | dict | None = None, render_mode: str | None = None, **overrides: Any):
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
                stacklevel=2,
            )
        self._reward = None
        self._get_reward()  # fail at construction on a bad reward spec, not at the first episode end

        self._mask = np.ones(self.vocab_size, dtype=bool)
        self._mask[len(self.tokenizer):] = False  # LM-head rows with no token behind them
        self._mask[self.pad_token_id] = False
        for t in cfg.forbidden_tokens:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"forbidden token {t} is outside the vocabulary [0, {self.vocab_size})")
            self._mask[t] = False
        if not self._mask.any():
            raise ValueError("forbidden_tokens forbid every token; at least one action must stay valid")

        L = cfg.obs_len
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (L,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, (L,), dtype=np.int8),
            }
        )
        self._input_ids = np.full(L, self.pad_token_id, dtype=np.int64)  # (L,)
        self._attention_mask = np.zeros(L, dtype=np.int8)  # (L,)
        self._prompt_index: int | None = None
        self._response: list[int] = []
        self._done: bool | None = None  # None: never reset
        self._last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ prompts and reward
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
            return ids[-cfg.max_prompt_tokens:], len(ids) - cfg.max_prompt_tokens
        return ids, 0

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """Token ids of ``prompt`` exactly as ``reset`` puts them in the observation (chat template and
        ``prompt_overflow`` applied), for code that samples outside the env (evaluation, baselines).

        Truncates without a warning: callers encode whole prompt lists, often ``env.prompts``, whose
        truncation the constructor has already reported."""
        return self._encode_prompt(prompt, "prompt")[0]

    def _get_reward(self):
        if self._reward is None:
            self._reward = make_reward(self.config.reward, **self.config.reward_kwargs)
        return self._reward

    @property
    def reward_fn(self):
        """The reward object (``score(prompts, responses)``) this env calls at each episode end."""
        return self._get_reward()

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"prompt_index", "prompt"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; valid: ['prompt', 'prompt_index']")
        if "prompt" in options and "prompt_index" in options:
            raise ValueError("give reset option 'prompt' or 'prompt_index', not both")
        if "prompt" in options:
            prompt = options["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"reset option 'prompt' must be a non-empty string, got {prompt!r}")
            index, ids = -1, self._encode_custom_prompt(prompt)
            self._custom_prompt = prompt
        else:
            if "prompt_index" in options:
                index = options["prompt_index"]
                if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
                    raise TypeError(f"reset option 'prompt_index' must be an int, got {type(index).__name__}")
                if not 0 <= index < len(self.prompts):
                    raise ValueError(f"prompt_index {index} is outside [0, {len(self.prompts)})")
                index = int(index)
            else:
                index = int(self.np_random.integers(len(self.prompts)))
            ids = self._prompt_ids[index]
            self._custom_prompt = None
        L = self.config.obs_len
        self._input_ids = np.full(L, self.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(L, dtype=np.int8)
        if len(ids):
            self._input_ids[L - len(ids):] = ids
            self._attention_mask[L - len(ids):] = 1
        self._prompt_index = index
        self._response = []
        self._done = False
        self._last_info = {"prompt": self.prompt, "prompt_index": index}
        if self.render_mode == "human":
            self.render()
        return self._obs(), dict(self._last_info)

    def _encode_custom_prompt(self, prompt: str) -> np.ndarray:
        """Ids of a ``reset(options={"prompt": ...})`` prompt; warns like the constructor does for the
        prompt source when it has to cut the prompt."""
        ids, dropped = self._encode_prompt(prompt, "reset option 'prompt'")
        if dropped:
            warnings.warn(
                f"reset option 'prompt' ({prompt[:60]!r}...) was longer than max_prompt_tokens="
                f"{self.config.max_prompt_tokens} and lost its first {dropped} tokens (prompt_overflow='truncate'); "
                f"raise max_prompt_tokens to keep it whole",
                PromptTruncatedWarning,
                stacklevel=3,
            )
        return ids

    def step(self, action):
        if self._done is None:
            raise ResetNeeded("call reset() before step()")
        if self._done:
            raise ResetNeeded("the episode has ended (terminated=True); call reset() before step()")
        token = self._check_action(action)
        self._input_ids[:-1] = self._input_ids[1:]  # shift left: the oldest slot is always padding
        self._attention_mask[:-1] = self._attention_mask[1:]
        self._input_ids[-1] = token
        self._attention_mask[-1] = 1
        self._response.append(token)

        hit_eos = token == self.eos_token_id
        terminated = self._ends(token, len(self._response))
        reward, info = 0.0, {}
        if terminated:
            self._done = True
            info = self._final_info(hit_eos)
            reward = info["score"]
            self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs(), float(reward), bool(terminated), False, info

    def _final_info(self, hit_eos: bool) -> dict[str, Any]:
        """Score the finished response; the last step's ``info``."""
        response = self.response_text
        score = float(check_scores(
            self._get_reward().score([self.prompt], [response]), [self.prompt],
            source=f"reward {self.config.reward!r}",
        )[0])
        if not hit_eos:
            score += self.config.no_eos_penalty
            with np.errstate(over="ignore"):
                overflows = not np.isfinite(np.float32(score))
            if overflows:  # each part fits float32, their sum may not (agents keep rewards in float32)
                raise ValueError(
                    f"score + no_eos_penalty = {score!r} is outside the float32 range for prompt "
                    f"{self.prompt!r}; rescale the reward or no_eos_penalty"
                )
        return {
            "score": score,
            "response": response,
            # A tuple, not an array: Gymnasium's vector envs stack same-shaped arrays of all envs and
            # fail on responses of different lengths, but keep other objects in an object array.
            "response_tokens": tuple(self._response),
            "prompt": self.prompt,
            "prompt_index": self._prompt_index,
            "hit_max_tokens": not hit_eos,
        }

    def _ends(self, token: int, n_tokens: int) -> bool:
        """Whether a response of ``n_tokens`` tokens whose last one is ``token`` ends the episode."""
        return token == self.eos_token_id or n_tokens >= self.config.max_new_tokens

    def preview_end(self, action) -> tuple[str, str] | None:
        """The ``(prompt, response)`` that ``step(action)`` would score, or ``None`` if it would not end
        the episode. Changes nothing: lock-step rollouts use it to score many envs' episode ends in one
        batch ahead of their ``step`` calls (:class:`reward_models.PrefetchReward`)."""
        if self._done is not False:  # not reset yet, or the episode is over
            return None
        token = self._check_action(action)
        if not self._ends(token, len(self._response) + 1):
            return None
        return self.prompt, self.tokenizer.decode([*self._response, token], skip_special_tokens=True)

    def _check_action(self, action) -> int:
        if isinstance(action, np.ndarray):
            if action.shape != ():
                raise TypeError(f"action must be a single token id, got an array of shape {action.shape}")
            action = action[()]
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(
                f"action must be an integer token id, got {type(action).__name__} {action!r}; "
                f"pass int(token)"
            )
        token = int(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"action {token} is outside the action space [0, {self.vocab_size})")
        return token

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def action_masks(self) -> np.ndarray:
        """Valid actions, for sb3-contrib's ``MaskablePPO``: bool ``(V,)``, never all False.

        Forbids the pad token, LM-head rows beyond the tokenizer and ``forbidden_tokens``.
        """
        return self._mask.copy()

    # ------------------------------------------------------------------ text views
    @property
    def prompt(self) -> str | None:
        """Text of the current prompt (``None`` before the first reset)."""
        if self._prompt_index is None:
            return None
        if self._prompt_index < 0:
            return self._custom_prompt
        return self.prompts[self._prompt_index]

    @property
    def response_text(self) -> str:
        """The response so far, decoded without special tokens."""
        return self.tokenizer.decode(self._response, skip_special_tokens=True)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        if self._prompt_index is None:
            text = "(not reset yet)"
        else:
            text = f"Prompt: {self.prompt}\nResponse: {self.response_text}"
            if self._done and "score" in self._last_info:
                text += f"\nScore: {self._last_info['score']:.4f}"
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        if isinstance(self.config.reward, str):
            state["_reward"] = None  # rebuilt lazily in the new process (may hold a model)
        return state
