"""``RLHFPPO``: PPO for ``TextRLHF-v0`` with lock-step KV-cached rollouts and sequence-level updates.

The fast path (issue 8). It keeps SB3 PPO's hyperparameter names, logger, callbacks and
``save``/``load`` (it *is* a ``PPO`` subclass, driving :class:`agents.LMActorCriticPolicy`), but
replaces the two loops that make the generic path slow on text:

* **rollouts** (:func:`agents.rollout.collect_round`): every env runs one episode per round, in
  lock-step, with one batched KV-cached forward per token — what ``generate`` costs — while every
  token still goes through ``env.step``;
* **updates** (:func:`agents.rollout.sequence_forward`): one teacher-forced forward per minibatch of
  whole episodes gives every token's log-prob and value, instead of one forward of the whole window
  per stored transition (``T`` times less work; DESIGN section 4).

Less work than TRL's PPO trainer on the same task: the value head shares the policy trunk (no second
135M network in every forward and backward), the rollout's log-probs and values are used as the
"old" ones (TRL recomputes both in extra forwards), and the reference model scores all episodes of a
rollout in batched teacher-forced forwards.

The objective and its details follow DESIGN section 5: ``score - beta * KL`` with KL to the frozen
reference (terminal or per-token shaping, estimators k1/k2/k3, fixed or adaptive ``beta``, Ziegler
et al. 2019), gamma 1, GAE, per-minibatch advantage whitening, optional value clipping, dropout off.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.utils import FloatSchedule, explained_variance

from agents.kl import AdaptiveKLController, FixedKLController, check_kl_options, kl_estimate, shape_rewards
from agents.losses import gae, masked_mean, masked_whiten, ppo_policy_loss, value_loss
from agents.policy import LMActorCriticPolicy
from agents.rollout import EpisodeBatch, _check_env, collect_round, sequence_forward


class RLHFPPO(PPO):
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
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device: as SB3.
    """

    def __init__(
        self,
        policy: type | str,
        env,
        learning_rate: float = 3e-5,
        n_steps: int | None = None,
        batch_size: int | None = None,
        n_epochs: int = 4,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        clip_range_vf: float | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.1,
        max_grad_norm: float = 1.0,
        target_kl: float | None = None,
        kl_coef: float = 0.05,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000.0,
        kl_estimator: str = "k1",
        kl_mode: str = "terminal",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if policy == "LMActorCriticPolicy":
            policy = LMActorCriticPolicy
        if not (isinstance(policy, type) and issubclass(policy, LMActorCriticPolicy)):
            raise TypeError(f"RLHFPPO drives agents.LMActorCriticPolicy (or a subclass), got {policy!r}")
        _check_env(env)
        check_kl_options(kl_coef, kl_estimator, kl_mode)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size counts episodes and must be >= 1 (or None for all), got {batch_size}")
        horizon = int(env.get_attr("config", indices=[0])[0].max_new_tokens)
        n_steps = horizon if n_steps is None else int(n_steps)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.horizon = horizon
        self.n_rounds = -(-n_steps // horizon)  # ceil: whole episodes only
        self.episode_batch_size = batch_size
        self.kl_coef = float(kl_coef)
        self.adaptive_kl = bool(adaptive_kl)
        self.kl_target = float(kl_target)
        self.kl_horizon = float(kl_horizon)
        self.kl_estimator = kl_estimator
        self.kl_mode = kl_mode
        self.kl_controller: AdaptiveKLController | FixedKLController | None = None
        self._batch: EpisodeBatch | None = None
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=max(2, n_steps * env.num_envs),
            n_epochs=n_epochs, gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage, ent_coef=ent_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm,
            target_kl=target_kl, stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device, _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # No transition-level RolloutBuffer: episodes live in an EpisodeBatch.
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule,
                                        **self.policy_kwargs).to(self.device)
        self.rollout_buffer = None
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_batch"]

    # ------------------------------------------------------------------ KL coefficient
    @property
    def beta(self) -> float:
        """The current KL coefficient (restored by ``load``)."""
        return self._controller().value

    def _controller(self):
        if self.kl_controller is None:
            saved = float(self.policy.kl_beta)
            init = saved if np.isfinite(saved) else self.kl_coef
            self.kl_controller = (AdaptiveKLController(init, self.kl_target, self.kl_horizon) if self.adaptive_kl
                                  else FixedKLController(init))
        return self.kl_controller

    # ------------------------------------------------------------------ rollouts
    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        """Run ``n_rounds`` lock-step rounds, then add the KL penalty and compute GAE."""
        self.policy.set_training_mode(False)
        t0 = time.perf_counter()
        callback.on_rollout_start()

        def on_step(n_stepped: int, finished_infos: list[dict]) -> bool:
            self.num_timesteps += n_stepped
            if finished_infos:
                self._update_info_buffer(finished_infos, np.ones(len(finished_infos), dtype=bool))
            callback.update_locals({"infos": finished_infos})
            return callback.on_step()

        batches, keep_going = [], True
        group_size = getattr(self, "group_size", 1)
        for r in range(self.n_rounds):
            batch, keep_going = collect_round(self.policy, env, on_step=on_step, group_size=group_size)
            if batch is not None:
                # Episodes answering the same prompt in the same round share a group id.
                batch.extras["group"] = r * env.num_envs + batch.env_index // group_size
                batches.append(batch)
            if not keep_going:
                break
        if not batches:
            return False
        batch = EpisodeBatch.concat(batches)
        t_gen = time.perf_counter() - t0
        self._finish_batch(batch)
        self._batch = batch
        self.logger.record("time/rollout_s", time.perf_counter() - t0)
        self.logger.record("time/generation_s", t_gen)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return keep_going

    @torch.no_grad()
    def _finish_batch(self, batch: EpisodeBatch) -> None:
        """Reference log-probs in batched forwards, KL-shaped rewards, GAE, the KL controller."""
        beta = self._score_reference(batch)
        batch.rewards = shape_rewards(batch.scores, batch.logp, batch.ref_logp, beta, self.kl_mode,
                                      self.kl_estimator, batch.mask.bool())
        batch.advantages, batch.returns = gae(batch.rewards, batch.values, batch.mask, self.gamma, self.gae_lambda)
        self._update_kl_and_log(batch, beta)

    def _score_reference(self, batch: EpisodeBatch) -> float:
        """Fill ``batch.ref_logp`` (one batched teacher-forced pass); return the current ``beta``."""
        T = batch.horizon
        ref = self.policy.reference_logprobs(batch.input_ids.to(self.device), batch.attention_mask.to(self.device),
                                             batch.response_mask.to(self.device)).cpu()
        batch.ref_logp = ref[:, -T:]
        return self._controller().value

    def _update_kl_and_log(self, batch: EpisodeBatch, beta: float) -> None:
        """Step the KL controller on this batch's mean summed KL and log the ``rlhf/*`` metrics."""
        kl = (kl_estimate(batch.logp, batch.ref_logp, self.kl_estimator) * batch.mask).sum(-1)  # (n,)
        self.policy.kl_beta.fill_(self._controller().update(float(kl.mean()), batch.n))
        self.logger.record("rlhf/score", float(batch.scores.mean()))
        self.logger.record("rlhf/kl", float(kl.mean()))
        self.logger.record("rlhf/beta", beta)
        self.logger.record("rlhf/response_len", float(batch.lengths.mean()))
        self.logger.record("rlhf/shaped_return", float(batch.rewards.sum(-1).mean()))
        self.logger.record("rlhf/episodes", batch.n)

    # ------------------------------------------------------------------ updates
    def train(self) -> None:
        """``n_epochs`` passes of sequence-level PPO over minibatches of whole episodes."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = self.clip_range_vf(self._current_progress_remaining) if self.clip_range_vf is not None else None
        batch, dev = self._batch, self.device
        n, T = batch.n, batch.horizon
        bs = self.episode_batch_size or n
        logs: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ent", "clip", "kl", "loss")}
        t0 = time.perf_counter()
        continue_training = True
        for _ in range(self.n_epochs):
            for idx in torch.randperm(n).split(bs):
                mask = batch.mask[idx].to(dev)
                logp, values, entropy = sequence_forward(
                    self.policy, batch.input_ids[idx].to(dev), batch.attention_mask[idx].to(dev), T,
                    entropy=True, entropy_grad=self.ent_coef != 0,
                )
                adv = batch.advantages[idx].to(dev)
                if self.normalize_advantage and mask.sum() > 1:
                    adv = masked_whiten(adv, mask)
                pg_loss, stats = ppo_policy_loss(logp, batch.logp[idx].to(dev), adv, mask, clip_range)
                vf_loss = value_loss(values, batch.values[idx].to(dev), batch.returns[idx].to(dev), mask, clip_range_vf)
                ent_loss = -masked_mean(entropy, mask)
                loss = pg_loss + self.ent_coef * ent_loss + self.vf_coef * vf_loss
                approx_kl = float(stats["approx_kl"])
                for key, value in zip(logs, (pg_loss, vf_loss, ent_loss, stats["clip_fraction"], approx_kl, loss)):
                    logs[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {self._n_updates} due to reaching max kl: {approx_kl:.2f}")
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break
        self.policy.set_training_mode(False)
        m = batch.mask.bool()
        ev = explained_variance(batch.values[m].numpy(), batch.returns[m].numpy())
        self.logger.record("train/policy_gradient_loss", np.mean(logs["pg"]))
        self.logger.record("train/value_loss", np.mean(logs["vf"]))
        self.logger.record("train/entropy_loss", np.mean(logs["ent"]))
        self.logger.record("train/clip_fraction", np.mean(logs["clip"]))
        self.logger.record("train/approx_kl", np.mean(logs["kl"]))
        self.logger.record("train/loss", logs["loss"][-1])
        self.logger.record("train/explained_variance", ev)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("time/update_s", time.perf_counter() - t0)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
