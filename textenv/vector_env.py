"""``TextRLHFVectorEnv``: ``N`` language-model responses stepped in one call (``TextRLHF-v0``'s vector entry point)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv.config import EnvConfig
from textenv.task import TextTask, check_reset_keys


class TextRLHFVectorEnv(TextTask, VectorEnv):
    """``N`` independent :class:`textenv.TextRLHFEnv` episodes as one Gymnasium ``VectorEnv``.

    ## Description
    ``gym.make_vec("TextRLHF-v0", num_envs=N, vectorization_mode="vector_entry_point", **kwargs)``.
    Row ``i`` is the single env's task (prompt, token-by-token response, reward at the end), but the
    ``N`` rows share one tokenizer, one prompt encoding and one reward object, every ``step`` moves all
    rows at once, and the episodes that end at the same step are scored in ONE reward call (a reward
    model at batch 32 costs about what it costs at batch 1 on this CPU; docs/design.md section 4).
    Every rule (prompt sampling and encoding, episode end, score, ``info``, bad inputs) is the single
    env's own code (``textenv/task.py``): with the same seeds both give the same observations,
    rewards, terminations and ``info``.

    ## Action Space
    ``MultiDiscrete([V] * N)``: one token id per row (``single_action_space`` is ``Discrete(V)``). An
    integer array (or sequence) of shape ``(N,)``; a wrong shape, a non-integer or ``bool`` dtype
    raises ``TypeError``, an id outside ``[0, V)`` ``ValueError`` naming the row, before anything moves.

    ## Observation Space
    The single env's ``Dict(input_ids, attention_mask)`` batched: ``input_ids`` ``(N, L)`` int64,
    ``attention_mask`` ``(N, L)`` int8, each row left-padded and right-aligned, shifting left by one
    token per step.

    ## Rewards
    ``(N,)`` float64: 0, except on the step at which a row's episode ends: its score (plus
    ``no_eos_penalty`` without EOS). One ``reward.score(prompts, responses)`` call per step at which
    episodes end, holding exactly those episodes. A bad score raises ``ValueError`` naming the prompt,
    before the step changes any row.

    ## Starting State
    ``reset(seed=s)`` seeds row ``i`` with ``s + i`` (what ``SyncVectorEnv`` does with ``N`` single
    envs); ``seed`` may also be a list of ``N`` ints or ``None``. Each row draws its prompt with its own
    generator. ``options``: ``prompt_index`` or ``prompt`` (one value for every row, or a sequence of
    ``N`` values, ``None`` meaning "draw"), and ``reset_mask``, a bool ``(N,)`` array of the rows to
    reset (default: all). The returned observation holds every row; ``info`` (``prompt``,
    ``prompt_index``) the rows reset, in Gymnasium's ``info[key]`` / ``info["_key"]`` arrays.

    ## Episode End
    As in the single env: ``terminated`` at EOS or at ``max_new_tokens``, ``truncated`` always
    ``False``; ``info`` of an ending row holds ``score``, ``response``, ``response_tokens`` (tuples, in
    an object array), ``prompt``, ``prompt_index``, ``hit_max_tokens``.
    ``metadata["autoreset_mode"]`` is ``AutoresetMode.DISABLED``: an ended row is never reset behind the
    caller's back (a rollout that runs one episode per row needs its early finishers to stay finished).
    Until it is reset (``reset(options={"reset_mask": ...})``) an ended row is *idle*: ``step`` ignores
    its action, leaves its observation as the final one and reports reward 0, ``terminated=False`` and
    no ``info``, so each episode end is reported exactly once. ``step`` before any ``reset``, or when
    every row has ended, raises ``gymnasium.error.ResetNeeded``, as the single env does.

    ## Arguments
    ``num_envs`` and the single env's: every :class:`textenv.EnvConfig` field, ``config=`` and
    ``render_mode`` (``"ansi"`` returns one text per row, ``"human"`` prints them), with the same
    errors at construction.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4, "autoreset_mode": AutoresetMode.DISABLED}

    def __init__(
        self,
        num_envs: int = 1,
        config: EnvConfig | dict | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        if isinstance(num_envs, (bool, np.bool_)) or not isinstance(num_envs, (int, np.integer)):
            raise TypeError(f"num_envs must be an int, got {type(num_envs).__name__} {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._setup_task(config, render_mode, overrides)  # shared with TextRLHFEnv (textenv/task.py)
        self._setup_rows(int(num_envs), [None] * int(num_envs))

    @classmethod
    def from_envs(cls, envs: Sequence[gym.Env]) -> TextRLHFVectorEnv:
        """A vector env whose rows continue ``envs``' random streams and share their first env's
        tokenizer, prompts and reward (nothing is reloaded); for code handed separate single envs.

        Raises:
            TypeError: an env that is not a ``TextRLHF-v0`` env, or envs with different configs.
        """
        bases = [e.unwrapped for e in envs]
        if not bases or not all(isinstance(b, TextTask) for b in bases):
            raise TypeError(f"from_envs needs TextRLHF-v0 envs, got {[type(b).__name__ for b in bases]}")
        if any(b.config != bases[0].config for b in bases):
            raise TypeError("from_envs needs envs of one config (the rows share one tokenizer, prompt list and reward)")
        self = cls.__new__(cls)
        self._share_task(bases[0])
        self._setup_rows(len(bases), [b.np_random for b in bases])
        return self

    def _setup_rows(self, n: int, rngs: list[np.random.Generator | None]) -> None:
        """Spaces and the per-row state of ``n`` rows, all ended until the first ``reset``."""
        self.num_envs = n
        self.single_observation_space, self.single_action_space = self._single_spaces()
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        window = self._window(np.zeros(0, dtype=np.int64))
        self._input_ids = np.tile(window[0], (n, 1))  # (n, L)
        self._attention_mask = np.tile(window[1], (n, 1))  # (n, L)
        self._prompt_index = np.full(n, -1, dtype=np.int64)  # (n,)
        self._custom_prompts: list[str | None] = [None] * n
        self._responses: list[list[int]] = [[] for _ in range(n)]
        self._done = np.ones(n, dtype=bool)  # (n,): ended (or never reset) rows are idle
        self._started = False
        self._rngs = list(rngs)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset the rows of ``options["reset_mask"]`` (default all); see the class docstring."""
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) or seed is None else None)
        options = check_reset_keys(options, extra=("reset_mask",))
        rows = self._reset_rows(options.get("reset_mask"))
        if isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]  # SyncVectorEnv's convention
        else:
            seeds = self._row_values(seed, "seed", ())
        indices = self._row_values(options.get("prompt_index"), "prompt_index", (int, np.integer))
        texts = self._row_values(options.get("prompt"), "prompt", (str,))
        for i in rows:
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(int(seeds[i]))[0]
        chosen = [self._choose_prompt(indices[i], texts[i], self._rng(i)) for i in rows]  # all checked first
        infos: dict[str, Any] = {}
        for i, (index, ids, custom) in zip(rows, chosen):
            self._input_ids[i], self._attention_mask[i] = self._window(ids)
            self._prompt_index[i], self._custom_prompts[i] = index, custom
            self._responses[i] = []
            self._done[i] = False
            infos = self._add_info(infos, {"prompt": self._prompt_text(i), "prompt_index": index}, i)
        self._started = True
        if self.render_mode == "human":
            self.render()
        return self._obs(), infos

    def _reset_rows(self, reset_mask: Any) -> np.ndarray:
        """Row indices to reset, from Gymnasium's ``reset_mask`` option (``None``: every row)."""
        if reset_mask is None:
            return np.arange(self.num_envs)
        mask = np.asarray(reset_mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"reset option 'reset_mask' must be a bool array, got dtype {mask.dtype}")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset option 'reset_mask' must have shape ({self.num_envs},), got {mask.shape}")
        if not mask.any():
            raise ValueError("reset option 'reset_mask' selects no row; set at least one True")
        return np.flatnonzero(mask)

    def _row_values(self, value: Any, name: str, scalar: tuple[type, ...]) -> list[Any]:
        """One value of option ``name`` per row: ``None``, one scalar for all rows, or ``N`` values."""
        if value is None or isinstance(value, scalar) or (isinstance(value, np.ndarray) and value.ndim == 0):
            return [value] * self.num_envs
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise TypeError(
                f"{name} must be one value or a sequence of num_envs={self.num_envs} values, got {type(value).__name__}"
            )
        values = list(value)
        if len(values) != self.num_envs:
            raise ValueError(f"{name} has {len(values)} values for num_envs={self.num_envs} rows; give one per row")
        return values

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:  # never seeded: an unpredictable seed, as a single env's np_random
            self._rngs[i] = seeding.np_random()[0]
        return self._rngs[i]

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Append one token to every active row; see the class docstring."""
        if not self._started:
            raise ResetNeeded("call reset() before step()")
        if self._done.all():
            raise ResetNeeded(
                "every episode has ended (terminated=True); call reset() (or reset with "
                "options={'reset_mask': ...}) before step()"
            )
        tokens = self._check_actions(actions)  # (n,)
        rows = np.flatnonzero(~self._done)
        ids, mask = self._input_ids.copy(), self._attention_mask.copy()  # (n, L): committed after scoring
        ids[rows, :-1], mask[rows, :-1] = ids[rows, 1:], mask[rows, 1:]  # shift left: the oldest slot is padding
        ids[rows, -1], mask[rows, -1] = tokens[rows], 1
        n_tokens = np.array([len(self._responses[i]) + 1 for i in rows])
        ending = rows[self._ends(tokens[rows], n_tokens)]
        # One reward call for every episode ending now; it may raise, so nothing is committed before it.
        finals = (
            self._final_infos(
                [self._prompt_text(i) for i in ending],
                [int(self._prompt_index[i]) for i in ending],
                [[*self._responses[i], int(tokens[i])] for i in ending],
            )
            if len(ending)
            else []
        )
        self._input_ids, self._attention_mask = ids, mask
        for i in rows:
            self._responses[i].append(int(tokens[i]))
        rewards = np.zeros(self.num_envs, dtype=np.float64)  # (n,)
        terminated = np.zeros(self.num_envs, dtype=bool)  # (n,)
        infos: dict[str, Any] = {}
        for i, info in zip(ending, finals):
            rewards[i], terminated[i], self._done[i] = info["score"], True, True
            infos = self._add_info(infos, info, i)
        if self.render_mode == "human":
            self.render()
        return self._obs(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def _check_actions(self, actions) -> np.ndarray:
        """``actions`` as an int64 ``(n,)`` array, or the single env's ``TypeError``/``ValueError``."""
        try:
            arr = np.asarray(actions)
        except ValueError as exc:  # ragged nested sequences
            raise TypeError(f"actions must be an integer array of shape ({self.num_envs},), got {actions!r}") from exc
        if arr.shape != (self.num_envs,):
            raise TypeError(
                f"actions must be one token id per env, an array of shape ({self.num_envs},), "
                f"got {type(actions).__name__} of shape {arr.shape}"
            )
        if isinstance(actions, (list, tuple)) and any(isinstance(a, (bool, np.bool_)) for a in actions):
            arr = np.asarray(actions, dtype=object)  # NumPy would turn [5, True] into ints
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions must be integer token ids, got dtype {arr.dtype}; pass actions.astype(np.int64)")
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if len(bad):
            raise ValueError(f"action {arr[bad[0]]} of env {bad[0]} is outside the action space [0, {self.vocab_size})")
        return arr.astype(np.int64)

    # ------------------------------------------------------------------ views
    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def _prompt_text(self, i: int) -> str:
        index = int(self._prompt_index[i])
        return self._custom_prompts[i] if index < 0 else self.prompts[index]

    def action_masks(self) -> np.ndarray:
        """Valid actions of every row, for ``MaskablePPO``: bool ``(N, V)``, the single env's mask per row."""
        return np.tile(self._mask, (self.num_envs, 1))

    def render(self) -> tuple[str, ...] | None:
        """One ``Prompt: ... Response: ...`` text per row (``"ansi"``), or print them (``"human"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        texts = tuple(
            "(not reset yet)"
            if not self._started
            else f"Prompt: {self._prompt_text(i)}\n"
            f"Response: {self.tokenizer.decode(self._responses[i], skip_special_tokens=True)}"
            for i in range(self.num_envs)
        )
        if self.render_mode == "ansi":
            return texts
        print("\n\n".join(texts))
        return None
