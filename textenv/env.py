"""``TextRLHFEnv``: one episode is one language-model response."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from textenv.config import EnvConfig
from textenv.task import TextTask, UnsupportedRenderModeError, check_action, check_reset_keys

__all__ = ["TextRLHFEnv", "UnsupportedRenderModeError"]


class TextRLHFEnv(TextTask, gym.Env):
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
    :class:`textenv.TextRLHFVectorEnv` runs ``N`` of these episodes in one ``step`` and scores the
    episodes that end together in one batched reward call, with the same rules (``textenv/task.py``).

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
        self._setup_task(config, render_mode, overrides)  # shared with TextRLHFVectorEnv (textenv/task.py)
        self.observation_space, self.action_space = self._single_spaces()
        self._input_ids, self._attention_mask = self._window(np.zeros(0, dtype=np.int64))  # (L,), (L,)
        self._prompt_index: int | None = None
        self._custom_prompt: str | None = None
        self._response: list[int] = []
        self._done: bool | None = None  # None: never reset
        self._last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = check_reset_keys(options)
        index, ids, self._custom_prompt = self._choose_prompt(
            options.get("prompt_index"), options.get("prompt"), self.np_random
        )
        self._input_ids, self._attention_mask = self._window(ids)
        self._prompt_index = index
        self._response = []
        self._done = False
        self._last_info = {"prompt": self.prompt, "prompt_index": index}
        if self.render_mode == "human":
            self.render()
        return self._obs(), dict(self._last_info)

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

        terminated = bool(self._ends(token, len(self._response)))
        reward, info = 0.0, {}
        if terminated:
            self._done = True
            info = self._final_infos([self.prompt], [self._prompt_index], [list(self._response)])[0]
            reward = info["score"]
            self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs(), float(reward), terminated, False, info

    def _check_action(self, action) -> int:
        return check_action(action, self.vocab_size)

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
