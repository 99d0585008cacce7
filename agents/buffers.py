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

The buffer needs the policy (for the reference model) and the algorithm's logger. ``agents.make_agent``
calls :meth:`bind`; with plain SB3 (``PPO(LMActorCriticPolicy, env, rollout_buffer_class=KLRolloutBuffer)``)
the buffer finds the algorithm that calls ``compute_returns_and_advantage`` on it. No module is ever
passed in ``rollout_buffer_kwargs`` (they are saved with the agent): only names and numbers.

Binding marks the policy (``policy.mark_kl_penalty``). An LM policy trained by an SB3 algorithm without
one of these buffers is never marked, and its first update warns with :class:`agents.NoKLPenaltyWarning`
instead of silently optimising the score with no KL penalty (issue 17).
"""

from __future__ import annotations

import sys
import warnings
import weakref

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer

from agents.callbacks import rollout_metrics
from agents.kl import AdaptiveKLController, FixedKLController, KLConfig, check_kl_options, kl_estimate


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
        self.controller: FixedKLController | AdaptiveKLController | None = None
        self.last_stats: dict[str, float] = {}
        self._warned_partial = False
        super().__init__(*args, **kwargs)
        self._carry_kl = np.zeros(self.n_envs)  # running summed KL of each env's open episode
        self._carry_len = np.zeros(self.n_envs, dtype=np.int64)  # its tokens so far
        self._carry_known = np.zeros(self.n_envs, dtype=bool)  # whether we saw that episode start

    # ------------------------------------------------------------------ wiring
    def bind(self, owner) -> None:
        """Attach the policy (an LM policy) and, if ``owner`` is an SB3 algorithm, its logger.

        Args:
            owner: the SB3 algorithm using this buffer, or an LM policy.
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
        beta = float(policy.kl_beta)
        init = beta if np.isfinite(beta) else self.kl_coef  # a loaded agent resumes its adapted beta
        self.controller = (
            AdaptiveKLController(init, self.kl_target, self.kl_horizon) if self.adaptive_kl else FixedKLController(init)
        )
        policy.kl_beta.fill_(init)

    def _bind_from_caller(self) -> None:
        from stable_baselines3.common.base_class import BaseAlgorithm

        frame = sys._getframe(1)
        for _ in range(6):  # compute_returns_and_advantage is called from the algorithm's collect_rollouts
            frame = frame.f_back
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            if isinstance(owner, BaseAlgorithm) and getattr(owner, "rollout_buffer", None) is self:
                self.bind(owner)
                return
        raise RuntimeError(
            f"{type(self).__name__} is not bound to a policy: call buffer.bind(model) (agents.make_agent "
            f"does), or let an SB3 algorithm call compute_returns_and_advantage"
        )

    @property
    def policy(self):
        """The bound LM policy (or ``None``)."""
        return self._policy_ref() if self._policy_ref is not None else None

    # ------------------------------------------------------------------ SB3 hook
    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        """Subtract ``beta * KL`` from the rewards, log ``rlhf/*``, then SB3's GAE."""
        if self.policy is None:
            self._bind_from_caller()
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
        """Rewrite ``self.rewards`` with the KL penalty (see module docstring); returns the stats."""
        policy = self.policy
        ids = self.observations["input_ids"]  # (T, n_envs, L)
        masks = self.observations["attention_mask"]  # (T, n_envs, L)
        actions = self.actions[..., 0].astype(np.int64)  # (T, n_envs)
        scores = self.rewards.copy()  # (T, n_envs): env rewards = score at terminal steps, 0 elsewhere
        segments = self._segments(dones)
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
        ref_logp = (
            policy.reference_logprobs(torch.as_tensor(seq_ids), torch.as_tensor(seq_mask), torch.as_tensor(resp))
            .cpu()
            .numpy()
        )  # (S, L)

        beta = float(self.controller.value)
        finished_score, finished_kl, finished_len = [], [], []
        for k, (e, s0, s1, finished) in enumerate(segments):
            n = s1 - s0 + 1
            if self.episode_starts[s0, e] > 0.5:
                self._carry_kl[e], self._carry_len[e], self._carry_known[e] = 0.0, 0, True
            elif s0 == 0 and not self._carry_known[e] and not self._warned_partial:
                self._warned_partial = True
                warnings.warn(
                    "a rollout began inside an episode this buffer never saw start; only its "
                    "visible tokens are KL-penalised",
                    stacklevel=2,
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
                finished_score.append(scores[s1, e])
                finished_kl.append(self._carry_kl[e])
                finished_len.append(self._carry_len[e])
                self._carry_kl[e], self._carry_len[e], self._carry_known[e] = 0.0, 0, True

        stats = rollout_metrics(finished_score, finished_kl, finished_len, beta)
        if finished_score:
            self.controller.update(stats["rlhf/kl"], len(finished_score))
            policy.kl_beta.fill_(self.controller.value)
        self.last_stats = stats
        algo = self._algo_ref() if self._algo_ref is not None else None
        if algo is not None and getattr(algo, "_logger", None) is not None:
            for key, value in stats.items():
                algo.logger.record(key, value)
        return stats


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
