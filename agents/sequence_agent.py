"""``SequenceAgent``: the one base of the fast sequence-level agents (``RLHFPPO`` and ``CriticFreePG``).

It keeps SB3 PPO's hyperparameter names, logger, callbacks and ``save``/``load`` (it *is* a ``PPO``
subclass, driving :class:`agents.LMActorCriticPolicy`), but replaces the two loops that make the generic
path slow on text (docs/design.md section 4):

* **rollouts** (:func:`agents.rollout.collect_round`): every env runs one episode per round, in
  lock-step, with one batched KV-cached forward per token, while every token still goes through
  ``env.step``; the reference model then scores all episodes in batched teacher-forced forwards;
* **updates**: ``n_epochs`` passes over minibatches of whole episodes, each one teacher-forced forward
  (:func:`agents.rollout.sequence_forward`) instead of one window forward per stored transition.

What differs between the agents is exactly two things, and a subclass supplies exactly those:

* the **advantage estimator**, :meth:`SequenceAgent.compute_advantages`: fills a rollout's shaped
  rewards, advantages and returns (PPO: GAE over the value head; critic-free: a group or running
  baseline);
* the **loss**, :meth:`SequenceAgent.minibatch_loss` (PPO: clipped surrogate + value loss; critic-free:
  clipped surrogate aggregated per sequence, optionally a KL term), with
  :meth:`SequenceAgent.record_train` naming what it logs under ``train/``.

Launched by ``torchrun`` / ``accelerate launch``, the same agent trains data-parallel: each rank its own
envs, gradients averaged before every step, the statistics that define the objective global
(:mod:`agents.distributed`, docs/design.md section 8).

The KL coefficient has one home (docs/design.md section 5): the agent's :class:`agents.kl.KLController`,
which keeps ``beta`` in the policy's ``kl_beta`` buffer, so ``save`` writes it and ``load`` restores it;
``kl_coef`` is only its starting value.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import FloatSchedule

from agents.callbacks import rollout_metrics
from agents.distributed import DataParallel
from agents.kl import KLConfig, KLController, check_kl_options, kl_estimate, make_kl_controller
from agents.rollout import EpisodeBatch, checked_policy, collect_round, episode_budget, sequence_forward
from agents.saved_agent import GUARD_KEY, _LoadGuard, check_saved_class, class_path, guard_replacement


class SequenceAgent(PPO):
    """Lock-step rollouts and sequence-level updates; subclasses plug in advantages and loss.

    The constructor's arguments are those of :class:`agents.RLHFPPO`, which documents each (``RLHFPPO``
    has no constructor of its own); :class:`agents.CriticFreePG` adds its estimator's.

    Attributes:
        group_size: episodes per prompt in a round (1 here; the critic-free agents set their ``k``).
        kl_controller: the :class:`agents.kl.KLController` holding ``beta`` (built on first use, from
            the policy's ``kl_beta`` when a saved agent restored it, else from ``kl_coef``).
        agent_class: ``module.QualName`` of the class, saved in the zip so ``load`` can check it.
    """

    group_size: int = 1

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
        kl_coef: float = KLConfig.kl_coef,
        adaptive_kl: bool = KLConfig.adaptive_kl,
        kl_target: float = KLConfig.kl_target,
        kl_horizon: float = KLConfig.kl_horizon,
        kl_estimator: str = KLConfig.kl_estimator,
        kl_mode: str = KLConfig.kl_mode,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy = checked_policy(type(self).__name__, policy, env, _init_setup_model)
        check_kl_options(kl_coef, kl_estimator, kl_mode)
        self.horizon, n_steps = episode_budget(env, n_steps, batch_size)
        self.n_rounds = -(-n_steps // self.horizon)  # ceil: whole episodes only
        self.episode_batch_size = batch_size
        self.kl_coef, self.adaptive_kl = float(kl_coef), bool(adaptive_kl)
        self.kl_target, self.kl_horizon = float(kl_target), float(kl_horizon)
        self.kl_estimator, self.kl_mode = kl_estimator, kl_mode
        self.kl_controller: KLController | None = None
        self._batch: EpisodeBatch | None = None
        self.agent_class = class_path(type(self))
        setattr(self, GUARD_KEY, _LoadGuard(self.agent_class))  # saved with the agent; see agents.saved_agent
        n_envs = env.num_envs if env is not None else 1
        self._dp = DataParallel()  # the real one is known once SB3 has resolved the device, below
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=max(2, n_steps * n_envs),
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self._dp = self._data_parallel()
        if _init_setup_model:
            self._setup_model()

    def _data_parallel(self) -> DataParallel:
        """The process group this agent trains in (:mod:`agents.distributed`; a single process when not launched).

        Under a multi-GPU launch each rank takes its own GPU, ``cuda:LOCAL_RANK``.
        """
        dp = DataParallel.current(self.device)
        if dp.distributed and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        return dp

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding (python, numpy, torch, action space, envs) with this rank's seed
        (:meth:`agents.distributed.DataParallel.seed`: the seed itself in a single process)."""
        super().set_random_seed(self._dp.seed(seed))

    def _setup_model(self) -> None:
        # No transition-level RolloutBuffer: episodes live in an EpisodeBatch.
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        # Ranks seed differently (own prompts); the weights start as rank 0's, as DDP starts them.
        self._dp.broadcast_parameters(self.policy)
        if self.env is not None:  # these decide how many collectives each rank makes
            self._dp.check_same(
                n_envs=self.env.num_envs,
                horizon=self.horizon,
                n_rounds=self.n_rounds,
                batch_size=self.episode_batch_size or 0,
                n_epochs=self.n_epochs,
                group_size=self.group_size,
            )
        self.rollout_buffer = None
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        # Built on first use: load() restores the policy's kl_beta only after this method returns.
        self.kl_controller = None

    def _excluded_save_params(self) -> list[str]:
        # beta is saved once, in the policy's state dict; the controller is rebuilt from it (and the options).
        return [*super()._excluded_save_params(), "_batch", "kl_controller", "_dp"]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback=None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ):
        """SB3's set-up; on ranks other than 0 the logger records but writes nothing, and no progress bar."""
        if not self._dp.is_main:  # before SB3's set-up, which would create TensorBoard folders
            self.set_logger(Logger(folder=None, output_formats=[]))
        progress_bar = progress_bar and self._dp.is_main
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def save(self, path, exclude=None, include=None) -> None:
        """SB3's ``save``; under data parallel only rank 0 writes (every rank holds the same weights)."""
        if self._dp.is_main:
            super().save(path, exclude=exclude, include=include)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | Any,
        env=None,
        device: torch.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs,
    ) -> SequenceAgent:
        """SB3's ``load``, once the file is known to hold an agent of exactly this class.

        As in SB3, ``env`` may be omitted to only ``predict`` (give one, or call ``set_env``, to train);
        a single env is wrapped in a ``DummyVecEnv``. Other arguments as SB3's ``BaseAlgorithm.load``.
        ``beta`` comes back with the policy's state; :mod:`agents.saved_agent` says how the class is checked.

        Raises:
            AgentClassMismatchError: the file was saved by another class (the message names it).
        """
        check_saved_class(path, cls)
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects={**(custom_objects or {}), **guard_replacement(cls)},
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    @property
    def data_parallel(self) -> DataParallel:
        """This process's rank and world size (``DataParallel()``, rank 0 of 1, when not launched)."""
        return self._dp

    # ------------------------------------------------------------------ KL coefficient
    @property
    def beta(self) -> float:
        """The current KL coefficient (restored by ``load``)."""
        return self._kl_controller().value

    def _kl_controller(self) -> KLController:
        """The agent's controller, built on first use and stored in the policy (a finite saved beta wins)."""
        if self.kl_controller is None:
            controller = make_kl_controller(self.kl_coef, self.adaptive_kl, self.kl_target, self.kl_horizon)
            self.kl_controller = controller.store_in(self.policy)
        return self.kl_controller

    # ------------------------------------------------------------------ rollouts
    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        """Run ``n_rounds`` lock-step rounds, then score the reference, shape the rewards, estimate advantages."""
        self.policy.set_training_mode(False)
        t0 = time.perf_counter()
        callback.on_rollout_start()

        start, local = self.num_timesteps, 0

        def on_step(n_stepped: int, finished_infos: list[dict]) -> bool:
            nonlocal local
            local += n_stepped
            # Until the exact global count below, assume every rank stepped as many tokens as this one.
            self.num_timesteps += n_stepped * self._dp.world_size
            if finished_infos:
                self._update_info_buffer(finished_infos, np.ones(len(finished_infos), dtype=bool))
            callback.update_locals({"infos": finished_infos})
            return callback.on_step()

        batches, keep_going = [], True
        for r in range(self.n_rounds):
            batch, keep_going = collect_round(self.policy, env, on_step=on_step, group_size=self.group_size)
            if batch is not None:
                # Episodes answering the same prompt in the same round share a group id.
                batch.extras["group"] = r * env.num_envs + batch.env_index // self.group_size
                batches.append(batch)
            if not keep_going:
                break
        self.num_timesteps = start + int(self._dp.sum(torch.tensor([local]))[0])
        if self._dp.distributed:
            # Every rank stops together, so the ranks that reach train() all hold full rollouts of the same size.
            keep_going = self._dp.all(keep_going and bool(batches))
        if not keep_going or not batches:
            # A stopped rollout is dropped as SB3's loop drops it (learn() ends before train()): no KL
            # controller step or rollout metrics from a partial batch.
            return False
        batch = EpisodeBatch.concat(batches)
        t_gen = time.perf_counter() - t0
        self._finish_batch(batch)
        self._batch = batch
        self.logger.record("time/rollout_s", time.perf_counter() - t0)
        self.logger.record("time/generation_s", t_gen)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @torch.no_grad()
    def _finish_batch(self, batch: EpisodeBatch) -> None:
        """Reference log-probs, the subclass's advantages, then the KL controller and the ``rlhf/*`` metrics."""
        if self.policy.precision != "fp32":
            if self._update_is_the_rescoring(batch):
                batch.logp_from_update = True  # minibatch_forward fills batch.logp
            else:
                self._rescore_policy(batch)
        beta = self._score_reference(batch)
        self.compute_advantages(batch, beta)
        self._update_kl_and_log(batch, beta)

    def _rescore_policy(self, batch: EpisodeBatch) -> None:
        """Replace the rollout's log-probs and values by the update's teacher-forced forward (low precision).

        In fp32 the KV-cached rollout forward equals the teacher-forced one to ~1e-6; in bf16 the two can
        round differently (by up to 1.4e-3 in ratio on a CPU without bf16 instructions; they matched on one
        with AMX), and the first PPO ratio would not be 1. One no-grad forward per minibatch-sized
        chunk makes the "old" log-probs the update's own computation.
        """
        dev, T = self.device, batch.horizon
        for idx in torch.arange(batch.n).split(self.episode_batch_size or batch.n):
            logp, values, _ = sequence_forward(
                self.policy, batch.input_ids[idx].to(dev), batch.attention_mask[idx].to(dev), T, entropy=False
            )
            batch.logp[idx] = logp.cpu() * batch.mask[idx]
            batch.values[idx] = values.cpu() * batch.mask[idx]

    def _update_is_the_rescoring(self, batch: EpisodeBatch) -> bool:
        """Whether the update's own forward can stand in for :meth:`_rescore_policy` (low precision).

        With one epoch of one minibatch and no critic, the update forwards every episode exactly once, before
        its only optimizer step: that forward *is* the teacher-forced re-scoring, so its detached log-probs
        are the "old" ones (the first ratio is exactly 1, as in TRL's GRPO with ``num_iterations=1``) and the
        separate no-grad forward is saved. The rollout's own log-probs still feed the KL penalty and metrics,
        as in fp32. A critic needs re-scored values before its advantages, so agents with one re-score.
        """
        one_minibatch = self.episode_batch_size is None or self.episode_batch_size >= batch.n
        return self.n_epochs == 1 and one_minibatch and self.policy.value_head is None

    def _score_reference(self, batch: EpisodeBatch) -> float:
        """Fill ``batch.ref_logp`` (one batched teacher-forced pass); return the current ``beta``."""
        T = batch.horizon
        ref = self.policy.reference_logprobs(
            batch.input_ids.to(self.device), batch.attention_mask.to(self.device), batch.response_mask.to(self.device)
        ).cpu()
        batch.ref_logp = ref[:, -T:]
        return self._kl_controller().value

    def _update_kl_and_log(self, batch: EpisodeBatch, beta: float) -> None:
        """Step the KL controller on this batch's mean summed KL and log the ``rlhf/*`` metrics."""
        kl = (kl_estimate(batch.logp, batch.ref_logp, self.kl_estimator) * batch.mask).sum(-1)  # (n,)
        # Under data parallel: every rank's episodes (identical controller and metrics on every rank).
        kl, scores, lengths = (self._dp.gather(t) for t in (kl, batch.scores, batch.lengths))
        self._kl_controller().update(float(kl.mean()), len(kl))
        # The same helper as the generic path's KLRolloutBuffer: one set of names and meanings.
        stats = rollout_metrics(scores.numpy(), kl.numpy(), lengths.numpy(), beta)
        for key, value in stats.items():
            self.logger.record(key, value)

    # ------------------------------------------------------------------ updates
    def train(self) -> None:
        """``n_epochs`` passes over minibatches of whole episodes, one Adam step per minibatch."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        batch = self._batch
        logs: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        continue_training = True
        for _ in range(self.n_epochs):
            for idx in torch.randperm(batch.n).split(self.episode_batch_size or batch.n):
                loss, stats = self.minibatch_loss(batch, idx, clip_range)
                # Data parallel: re-weight so the rank-averaged gradient is the mean over all ranks' items.
                scale, stats = self._dp.loss_scale(self.minibatch_weight(batch, idx), stats)
                for key, value in {**stats, "loss": float(loss.detach())}.items():
                    logs.setdefault(key, []).append(value)
                if self.target_kl is not None and stats["approx_kl"] > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {self._n_updates}: approx_kl {stats['approx_kl']:.2f}")
                    break
                self.policy.optimizer.zero_grad()
                (loss * scale if self._dp.distributed else loss).backward()
                self._dp.average_gradients(self.policy.parameters())
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break
        self.policy.set_training_mode(False)
        self.record_train(logs, clip_range)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("time/update_s", time.perf_counter() - t0)

    # ------------------------------------------------------------------ what a subclass supplies
    def compute_advantages(self, batch: EpisodeBatch, beta: float) -> None:
        """Fill ``batch.rewards``, ``batch.advantages`` and ``batch.returns`` (each ``(n, T)``).

        Called once per rollout, without gradients, after ``batch.ref_logp`` is filled.

        Args:
            batch: the rollout's episodes.
            beta: the KL coefficient of this rollout (the controller moves only after this call).
        """
        raise NotImplementedError(f"{type(self).__name__} must define compute_advantages()")

    def minibatch_weight(self, batch: EpisodeBatch, idx: torch.Tensor) -> float:
        """How many items the loss of minibatch ``idx`` averages over: its response tokens by default.

        Only data parallel reads it (:meth:`agents.distributed.DataParallel.loss_scale`): a subclass whose
        loss is a mean over episodes returns ``len(idx)``.
        """
        return float(batch.mask[idx].sum())

    def minibatch_forward(
        self, batch: EpisodeBatch, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(mask, logp, values, entropy)`` of the episodes ``idx``, each ``(len(idx), horizon)`` on the
        agent's device, from one teacher-forced forward (the entropy keeps its graph only if ``ent_coef``
        uses it)."""
        dev = self.device
        logp, values, entropy = sequence_forward(
            self.policy,
            batch.input_ids[idx].to(dev),
            batch.attention_mask[idx].to(dev),
            batch.horizon,
            entropy=True,
            entropy_grad=self.ent_coef != 0,
        )
        if batch.logp_from_update:
            # The re-scoring of this rollout (:meth:`_update_is_the_rescoring`): the only forward before the step.
            batch.logp[idx] = logp.detach().cpu() * batch.mask[idx]
        return batch.mask[idx].to(dev), logp, values, entropy

    def minibatch_loss(
        self, batch: EpisodeBatch, idx: torch.Tensor, clip_range: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the episodes ``idx`` of ``batch`` and its statistics.

        Args:
            batch: the rollout (after :meth:`compute_advantages`).
            idx: ``(m,)`` episode indices of the minibatch.
            clip_range: the PPO ratio clip at the current progress.

        Returns:
            ``(loss, stats)``: a scalar to minimise, and floats that must include ``approx_kl`` (the
            ``target_kl`` early stop reads it); the loop adds ``loss`` and hands the lists to :meth:`record_train`.
        """
        raise NotImplementedError(f"{type(self).__name__} must define minibatch_loss()")

    def record_train(self, logs: dict[str, list[float]], clip_range: float) -> None:
        """Log one update's ``train/*`` metrics.

        Args:
            logs: every key of :meth:`minibatch_loss`'s stats (and ``loss``), one value per minibatch.
            clip_range: the PPO ratio clip of this update.
        """
        raise NotImplementedError(f"{type(self).__name__} must define record_train()")
