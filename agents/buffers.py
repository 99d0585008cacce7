"""Rollout buffers that add the RLHF KL penalty before GAE, through SB3's ``rollout_buffer_class``.

PPO, A2C, TRPO (sb3-contrib) and MaskablePPO all accept ``rollout_buffer_class`` and
``rollout_buffer_kwargs`` and call ``buffer.compute_returns_and_advantage(last_values, dones)`` once
per rollout, after the last step and before ``train()``. That is where :class:`KLRolloutBuffer`
(and :class:`MaskableKLRolloutBuffer`) rewrite the rewards:

1. split every env's column of the buffer into episode segments (``episode_starts`` and ``dones``);
2. rebuild each segment's full token sequence from the buffer alone: an observation holds the whole
   context (``L = max_prompt_tokens + max_new_tokens``), so ``obs[last][1:] + [action[last]]`` is
   prompt + response; score all segments with the frozen reference model in batched teacher-forced
   forwards (``policy.reference_logprobs``, same temperature as the rollout);
3. ``KL_t = estimator(log pi, log pi_ref)`` with ``log pi`` the log-probs stored during the rollout
   (exactly what was sampled, masked distribution included for MaskablePPO);
4. subtract ``beta * KL``: summed at the episode's terminal step (``kl_mode="terminal"``, default),
   or at each token (``"per_token"``);
5. update the KL controller, log the ``rlhf/*`` metrics (:data:`agents.callbacks.RLHF_METRICS`), and run
   SB3's own GAE.

Episodes that span rollouts. Every token's KL is computed in the rollout where the token was taken.
In ``"per_token"`` mode it is subtracted right there. In ``"terminal"`` mode the running sum is carried
per env across rollouts and the whole episode's ``beta * KL`` is subtracted at its terminal step, in
whichever rollout it ends; the earlier rollout's advantages for that episode's first tokens are
bootstrapped from the critic, which estimates the shaped return (score minus the KL still to come),
as SB3 always does for episodes cut by a rollout boundary. ``rlhf/*`` episode metrics count each
episode once, in the rollout where it ends. A buffer that starts in the middle of an episode it never
saw the start of (a freshly loaded agent continuing with ``reset_num_timesteps=False``) penalises only
the tokens it saw.

The buffer needs the policy (for the reference model and the KL coefficient) and the algorithm's logger,
and SB3 builds it (``rollout_buffer_class(n_steps, ..., **rollout_buffer_kwargs)``, before the policy)
without either; no module may travel in ``rollout_buffer_kwargs`` either, since they are saved with the
agent: only names and numbers. So the algorithm is handed over explicitly, once, with :meth:`bind`:
``agents.make_agent`` does it; with plain SB3 (``PPO(LMActorCriticPolicy, env,
rollout_buffer_class=KLRolloutBuffer)``) call ``agent.rollout_buffer.bind(agent)``, or pass
``callback=agents.BindKLBuffer()`` to ``learn`` (rl-baselines3-zoo: ``callback="agents.BindKLBuffer"`` in
the hyperparameters). An unbound buffer raises :class:`KLBufferNotBoundError`, with those fixes, at its
first ``compute_returns_and_advantage``: before any update, so no step is taken without the penalty.

The KL coefficient lives in one place: the controller built by :meth:`bind` keeps ``beta`` in the
policy's ``kl_beta`` buffer (:meth:`agents.kl.KLController.store_in`), which SB3's ``save`` writes and
``load`` restores; ``kl_coef`` is only its starting value.

Binding marks the policy (``policy.mark_kl_penalty``). An LM policy trained by an SB3 algorithm without
one of these buffers is never marked, and its first update warns with :class:`agents.NoKLPenaltyWarning`
instead of silently optimising the score with no KL penalty (issue 17).
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback

from agents.callbacks import rollout_metrics
from agents.kl import KLConfig, KLController, check_kl_options, kl_estimate, make_kl_controller


class KLBufferNotBoundError(RuntimeError):
    """A KL rollout buffer was used before ``bind`` gave it its algorithm; the message names the fixes."""


class _KLShapingMixin:
    """KL shaping in ``compute_returns_and_advantage``; see the module docstring."""

    def __init__(
        self,
        *args,
        kl_coef: float = KLConfig.kl_coef,
        adaptive_kl: bool = KLConfig.adaptive_kl,
        kl_target: float = KLConfig.kl_target,
        kl_horizon: float = KLConfig.kl_horizon,
        kl_estimator: str = KLConfig.kl_estimator,
        kl_mode: str = KLConfig.kl_mode,
        **kwargs,
    ):
        check_kl_options(kl_coef, kl_estimator, kl_mode)
        self.kl_coef = float(kl_coef)
        self.adaptive_kl = bool(adaptive_kl)
        self.kl_target = float(kl_target)
        self.kl_horizon = float(kl_horizon)
        self.kl_estimator = kl_estimator
        self.kl_mode = kl_mode
        self._policy_ref = None
        self._algo_ref = None
        self.controller: KLController | None = None
        self.last_stats: dict[str, float] = {}
        self._warned_partial = False
        super().__init__(*args, **kwargs)
        self._carry_kl = np.zeros(self.n_envs)  # running summed KL of each env's open episode
        self._carry_len = np.zeros(self.n_envs, dtype=np.int64)  # its tokens so far
        self._carry_known = np.zeros(self.n_envs, dtype=bool)  # whether we saw that episode start

    # ------------------------------------------------------------------ wiring
    def bind(self, owner) -> None:
        """Attach the policy (an LM policy) and, if ``owner`` is an SB3 algorithm, its logger.

        Builds the KL controller and keeps its ``beta`` in the policy's ``kl_beta`` buffer; a finite
        ``beta`` already there (a loaded agent's adapted one) is kept, else ``kl_coef`` starts it.
        Marks the policy as KL-penalised (no :class:`agents.NoKLPenaltyWarning`).

        Args:
            owner: the SB3 algorithm using this buffer, or an LM policy.

        Raises:
            TypeError: ``owner`` is not (and holds no) LM policy.
        """
        policy = getattr(owner, "policy", owner)
        if not hasattr(policy, "reference_logprobs"):
            raise TypeError(
                f"KL rollout buffers need an LM policy (agents.LMActorCriticPolicy or "
                f"MaskableLMActorCriticPolicy), got {type(policy).__name__}"
            )
        self._policy_ref = weakref.ref(policy)
        self._algo_ref = weakref.ref(owner) if owner is not policy else None
        # The policy warns on its first update unless something adds the KL (NoKLPenaltyWarning).
        policy.mark_kl_penalty(type(self).__name__)
        controller = make_kl_controller(self.kl_coef, self.adaptive_kl, self.kl_target, self.kl_horizon)
        self.controller = controller.store_in(policy)

    def _check_bound(self) -> None:
        """Raise :class:`KLBufferNotBoundError` with the fixes unless :meth:`bind` was called."""
        if self.policy is not None:
            return
        raise KLBufferNotBoundError(
            f"{type(self).__name__} is not bound to its algorithm, so it cannot add the KL penalty: build the "
            f"agent with agents.make_agent(...), or call model.rollout_buffer.bind(model) once after "
            f"PPO(..., rollout_buffer_class={type(self).__name__}) or PPO.load(...) (which builds a new buffer), "
            f"or pass callback=agents.BindKLBuffer() to "
            f"model.learn (rl-baselines3-zoo: callback='agents.BindKLBuffer' in the hyperparameters)"
        )

    @property
    def policy(self):
        """The bound LM policy (or ``None``)."""
        return self._policy_ref() if self._policy_ref is not None else None

    # ------------------------------------------------------------------ SB3 hook
    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        """Subtract ``beta * KL`` from the rewards, log ``rlhf/*``, then SB3's GAE."""
        self._check_bound()
        self.shape_kl(np.asarray(dones))
        super().compute_returns_and_advantage(last_values, dones)

    def _segments(self, dones: np.ndarray) -> list[tuple[int, int, int, bool]]:
        """``(env, first_step, last_step, finished)`` for every episode piece in the buffer."""
        T = self.buffer_size
        ends = np.zeros((T, self.n_envs), dtype=bool)  # (T, n_envs): step t ends an episode
        ends[:-1] = self.episode_starts[1:] > 0.5
        ends[-1] = dones.astype(bool)
        segments = []
        for e in range(self.n_envs):
            start = 0
            for t in range(T):
                if ends[t, e] or t == T - 1:
                    segments.append((e, start, t, bool(ends[t, e])))
                    start = t + 1
        return segments

    @torch.no_grad()
    def shape_kl(self, dones: np.ndarray) -> dict[str, float]:
        """Rewrite ``self.rewards`` with the KL penalty (see module docstring); returns the ``rlhf/*`` stats.

        Args:
            dones: ``(n_envs,)`` whether each env's last stored step ended its episode.

        Returns:
            :func:`agents.callbacks.rollout_metrics` of the episodes that ended in this rollout.
        """
        scores = self.rewards.copy()  # (T, n_envs): env rewards = score at terminal steps, 0 elsewhere
        segments = self._segments(dones)
        ref_logp = self._reference_logprobs(segments)  # (S, L)
        beta = float(self.controller.value)
        finished = self._penalise(segments, ref_logp, beta)  # (env, last step, summed KL, length) per ended episode
        stats = rollout_metrics(
            [scores[s1, e] for e, s1, _, _ in finished], [kl for *_, kl, _ in finished], [n for *_, n in finished], beta
        )
        if finished:
            self.controller.update(stats["rlhf/kl"], len(finished))  # writes policy.kl_beta (one home of beta)
        self.last_stats = stats
        algo = self._algo_ref() if self._algo_ref is not None else None
        if algo is not None and getattr(algo, "_logger", None) is not None:
            for key, value in stats.items():
                algo.logger.record(key, value)
        return stats

    def _reference_logprobs(self, segments: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """``(S, L)`` reference log-probs of every segment's tokens, each segment's full sequence rebuilt.

        An observation holds the whole context, so ``obs[last][1:] + [action[last]]`` is prompt + response.

        Raises:
            ValueError: a window with no padding slot left (the context cannot be rebuilt).
        """
        ids = self.observations["input_ids"]  # (T, n_envs, L)
        masks = self.observations["attention_mask"]  # (T, n_envs, L)
        actions = self.actions[..., 0].astype(np.int64)  # (T, n_envs)
        L = ids.shape[-1]
        seq_ids = np.empty((len(segments), L), dtype=np.int64)  # (S, L): prompt + response piece
        seq_mask = np.empty((len(segments), L), dtype=np.int64)
        resp = np.zeros((len(segments), L), dtype=bool)
        for k, (e, s0, s1, _) in enumerate(segments):
            if masks[s1, e, 0]:
                raise ValueError(
                    f"observation of env {e} at step {s1} has no padding slot left; TextRLHF-v0 windows hold "
                    f"max_prompt_tokens + max_new_tokens tokens, so the context cannot be rebuilt"
                )
            seq_ids[k, :-1], seq_ids[k, -1] = ids[s1, e, 1:], actions[s1, e]
            seq_mask[k, :-1], seq_mask[k, -1] = masks[s1, e, 1:], 1
            resp[k, L - (s1 - s0 + 1) :] = True
        ref = self.policy.reference_logprobs(torch.as_tensor(seq_ids), torch.as_tensor(seq_mask), torch.as_tensor(resp))
        return ref.cpu().numpy()

    def _penalise(
        self, segments: list[tuple[int, int, int, bool]], ref_logp: np.ndarray, beta: float
    ) -> list[tuple[int, int, float, int]]:
        """Subtract ``beta * KL`` from ``self.rewards`` segment by segment, carrying open episodes' sums.

        Returns:
            ``(env, last_step, summed_kl, length)`` of every episode that ended in this rollout.
        """
        L = ref_logp.shape[-1]
        finished_episodes = []
        for k, (e, s0, s1, finished) in enumerate(segments):
            n = s1 - s0 + 1
            if self.episode_starts[s0, e] > 0.5:
                self._carry_kl[e], self._carry_len[e], self._carry_known[e] = 0.0, 0, True
            elif s0 == 0 and not self._carry_known[e] and not self._warned_partial:
                self._warned_partial = True
                warnings.warn(
                    "a rollout began inside an episode this buffer never saw start; only its "
                    "visible tokens are KL-penalised",
                    stacklevel=4,
                )
            logp = torch.as_tensor(self.log_probs[s0 : s1 + 1, e], dtype=torch.float64)
            kl = kl_estimate(logp, torch.as_tensor(ref_logp[k, L - n :], dtype=torch.float64), self.kl_estimator)
            kl = kl.numpy()  # (n,)
            if self.kl_mode == "per_token":
                self.rewards[s0 : s1 + 1, e] -= beta * kl
            self._carry_kl[e] += kl.sum()
            self._carry_len[e] += n
            if finished:
                if self.kl_mode == "terminal":
                    self.rewards[s1, e] -= beta * self._carry_kl[e]
                finished_episodes.append((e, s1, self._carry_kl[e], self._carry_len[e]))
                self._carry_kl[e], self._carry_len[e], self._carry_known[e] = 0.0, 0, True
        return finished_episodes


class KLRolloutBuffer(_KLShapingMixin, DictRolloutBuffer):
    """``DictRolloutBuffer`` + RLHF KL shaping, for PPO, A2C and TRPO.

    Args (``rollout_buffer_kwargs``, names and numbers only): the fields of :class:`agents.kl.KLConfig`,
    whose defaults (and their reasons) are written there only:
        kl_coef: initial ``beta``.
        adaptive_kl: Ziegler et al. (2019) adaptive ``beta`` or a fixed one.
        kl_target: target summed KL per episode in nats.
        kl_horizon: controller horizon in episodes.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman 2020).
        kl_mode: ``"terminal"`` (summed at the last token) or ``"per_token"``.
    """


class MaskableKLRolloutBuffer(_KLShapingMixin, MaskableDictRolloutBuffer):
    """``MaskableDictRolloutBuffer`` + RLHF KL shaping, for MaskablePPO; options as :class:`KLRolloutBuffer`.

    Note: it stores float32 masks of ``n_steps x n_envs x V`` (V = 49152: ~200 KB per transition).
    """


class BindKLBuffer(BaseCallback):
    """Bind the algorithm's KL rollout buffer to it when training starts: ``model.rollout_buffer.bind(model)``.

    For a plain SB3 algorithm built with ``rollout_buffer_class=agents.KLRolloutBuffer`` by code you do not
    control, as rl-baselines3-zoo does (its hyperparameters take ``callback="agents.BindKLBuffer"``).
    Elsewhere call ``bind`` yourself, or build the agent with :func:`agents.make_agent`, which does.

    Raises:
        TypeError: at ``learn``, if the algorithm's rollout buffer is not a KL rollout buffer.
    """

    def _init_callback(self) -> None:
        # Runs in learn()'s setup, before the first rollout: the buffer is bound before it is ever used.
        buffer = self.model.rollout_buffer
        if not isinstance(buffer, _KLShapingMixin):
            raise TypeError(
                f"BindKLBuffer binds a KL rollout buffer, but {type(self.model).__name__} uses "
                f"{type(buffer).__name__}; pass rollout_buffer_class=agents.KLRolloutBuffer "
                f"(MaskablePPO: agents.MaskableKLRolloutBuffer)"
            )
        buffer.bind(self.model)

    def _on_step(self) -> bool:
        return True
