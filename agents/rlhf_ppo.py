"""``RLHFPPO``: PPO for ``TextRLHF-v0`` with lock-step KV-cached rollouts and sequence-level updates.

The fast path (issue 8). It keeps SB3 PPO's hyperparameter names, logger, callbacks and
``save``/``load`` (it *is* a ``PPO`` subclass, driving :class:`agents.LMActorCriticPolicy`), but
replaces the two loops that make the generic path slow on text:

* **rollouts** (:func:`agents.rollout.collect_round`): every env runs one episode per round, in
  lock-step, with one batched KV-cached forward per token — what ``generate`` costs — while every
  token still goes through ``env.step``;
* **updates** (:func:`agents.rollout.sequence_forward`): one teacher-forced forward per minibatch of
  whole episodes gives every token's log-prob and value, instead of one forward of the whole window
  per stored transition (``T`` times less work; docs/design.md section 4).

Less work than TRL's PPO trainer on the same task: the value head shares the policy trunk (no second
135M network in every forward and backward), the rollout's log-probs and values are used as the
"old" ones (TRL recomputes both in extra forwards), and the reference model scores all episodes of a
rollout in batched teacher-forced forwards.

The rollout, the update loop, the KL controller and the load checks are the base's,
:class:`agents.sequence_agent.SequenceAgent` (shared with :class:`agents.critic_free.CriticFreePG`); this
module supplies PPO's advantage estimator (KL-shaped rewards, GAE over the value head) and loss.

The objective and its details follow docs/design.md section 5: ``score - beta * KL`` with KL to the frozen
reference (terminal or per-token shaping, estimators k1/k2/k3, fixed or adaptive ``beta``, Ziegler
et al. 2019), gamma 1, GAE, per-minibatch advantage whitening, optional value clipping, dropout off.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.utils import explained_variance

from agents.kl import shape_rewards
from agents.losses import gae, masked_mean, masked_whiten, ppo_policy_loss, value_loss
from agents.rollout import EpisodeBatch
from agents.saved_agent import AgentClassMismatchError, check_saved_class, class_path
from agents.sequence_agent import SequenceAgent

__all__ = ["RLHFPPO", "AgentClassMismatchError", "check_saved_class", "class_path"]


class RLHFPPO(SequenceAgent):
    """Sequence-level PPO on ``TextRLHF-v0`` (see the module docstring).

    Args:
        policy: :class:`agents.LMActorCriticPolicy` (or its name ``"LMActorCriticPolicy"``).
        env: a VecEnv of ``TextRLHF-v0`` (:func:`agents.make_vec_text_env`); ``n_envs`` episodes run in
            lock-step per round.
        learning_rate: Adam learning rate (or schedule).
        n_steps: token budget per env per rollout; a rollout runs ``ceil(n_steps / max_new_tokens)``
            rounds of one episode per env (default ``max_new_tokens``: one round).
        batch_size: minibatch size in **episodes** (default ``None``: all episodes of the rollout, one
            minibatch, as TRL's default ``num_mini_batches=1``).
        n_epochs: passes over the rollout per update.
        gamma, gae_lambda: GAE over each episode's tokens (gamma 1: the score comes once, at the end).
        clip_range, clip_range_vf: PPO ratio clip and optional value clip (``None``: plain MSE).
        normalize_advantage: whiten advantages per minibatch over real tokens.
        ent_coef, vf_coef, max_grad_norm, target_kl: as SB3's PPO (``target_kl`` stops an update early
            when the approximate KL between old and new policy exceeds ``1.5 * target_kl``).
        kl_coef: initial ``beta`` of the KL penalty to the reference model.
        adaptive_kl: adapt ``beta`` towards ``kl_target`` (Ziegler et al. 2019) or keep it fixed.
        kl_target, kl_horizon: the adaptive controller's target summed KL (nats) and horizon (episodes).
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman 2020) for the penalty.
        kl_mode: ``"terminal"`` (the summed penalty at the last token) or ``"per_token"``.
            The six KL options' defaults are :class:`agents.kl.KLConfig`'s.
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device: as SB3.

    ``env=None`` is accepted only with ``_init_setup_model=False``: that is how SB3's ``load`` builds an
    agent for prediction, before restoring every attribute from the file.

    The constructor, rollouts, update loop, KL controller and ``load`` are :class:`SequenceAgent`'s; this
    class supplies the advantage estimator (KL-shaped rewards, then GAE over the value head) and the loss
    (clipped surrogate + entropy + value loss).

    Attributes:
        agent_class: ``module.QualName`` of the class, saved in the zip so ``load`` can check it.
        kl_controller: the :class:`agents.kl.KLController` holding ``beta`` (see :class:`SequenceAgent`).
    """

    @torch.no_grad()
    def compute_advantages(self, batch: EpisodeBatch, beta: float) -> None:
        """KL-shaped rewards (``score - beta * KL``, terminal or per token), then GAE over the rollout's values."""
        batch.rewards = shape_rewards(
            batch.scores, batch.logp, batch.ref_logp, beta, self.kl_mode, self.kl_estimator, batch.mask.bool()
        )
        batch.advantages, batch.returns = gae(batch.rewards, batch.values, batch.mask, self.gamma, self.gae_lambda)

    def minibatch_loss(
        self, batch: EpisodeBatch, idx: torch.Tensor, clip_range: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO's clipped surrogate + ``ent_coef`` x entropy loss + ``vf_coef`` x (optionally clipped) value loss."""
        dev = self.device
        mask, logp, values, entropy = self.minibatch_forward(batch, idx)
        adv = batch.advantages[idx].to(dev)
        if self.normalize_advantage:
            # Over every data-parallel rank's minibatch tokens (this minibatch's alone in one process).
            dp = self._dp if self._dp.distributed else None
            n_tokens = dp.sum(mask.sum()) if dp else mask.sum()
            if n_tokens > 1:
                adv = masked_whiten(adv, mask, sum_over=dp and dp.sum)
        pg_loss, stats = ppo_policy_loss(logp, batch.logp[idx].to(dev), adv, mask, clip_range)
        clip_range_vf = self.clip_range_vf(self._current_progress_remaining) if self.clip_range_vf is not None else None
        vf_loss = value_loss(values, batch.values[idx].to(dev), batch.returns[idx].to(dev), mask, clip_range_vf)
        ent_loss = -masked_mean(entropy, mask)
        loss = pg_loss + self.ent_coef * ent_loss + self.vf_coef * vf_loss
        return loss, {
            "policy_gradient_loss": float(pg_loss.detach()),
            "value_loss": float(vf_loss.detach()),
            "entropy_loss": float(ent_loss.detach()),
            "clip_fraction": float(stats["clip_fraction"]),
            "approx_kl": float(stats["approx_kl"]),
        }

    def record_train(self, logs: dict[str, list[float]], clip_range: float) -> None:
        """SB3 PPO's ``train/*`` names: means over minibatches (``train/loss``: the last), explained variance."""
        batch = self._batch
        m = batch.mask.bool()
        ev = explained_variance(batch.values[m].numpy(), batch.returns[m].numpy())
        for key in ("policy_gradient_loss", "value_loss", "entropy_loss", "clip_fraction", "approx_kl"):
            self.logger.record(f"train/{key}", np.mean(logs[key]))
        self.logger.record("train/loss", logs["loss"][-1])
        self.logger.record("train/explained_variance", ev)
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", self.clip_range_vf(self._current_progress_remaining))
