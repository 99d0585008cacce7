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

The objective and its details follow docs/design.md section 5: ``score - beta * KL`` with KL to the frozen
reference (terminal or per-token shaping, estimators k1/k2/k3, fixed or adaptive ``beta``, Ziegler
et al. 2019), gamma 1, GAE, per-minibatch advantage whitening, optional value clipping, dropout off.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.save_util import open_path
from stable_baselines3.common.utils import FloatSchedule, explained_variance

from agents.callbacks import rollout_metrics
from agents.kl import AdaptiveKLController, FixedKLController, KLConfig, check_kl_options, kl_estimate, shape_rewards
from agents.losses import gae, masked_mean, masked_whiten, ppo_policy_loss, value_loss
from agents.policy import LMActorCriticPolicy
from agents.rollout import EpisodeBatch, _check_env, collect_round, sequence_forward

_GUARD_KEY = "_load_guard"
"""Entry of a fast agent's saved ``data`` that only the fast agents' own ``load`` may read (see ``RLHFPPO.load``)."""


class AgentClassMismatchError(ValueError):
    """A saved agent was loaded with another class's ``load``; the message names the class to use.

    A ``ValueError`` rather than a ``TypeError`` on purpose: SB3's loader turns a ``TypeError`` raised
    while unpickling a saved entry into a warning, which would let ``PPO.load`` go on silently.
    """


def class_path(cls: type) -> str:
    """``module.QualName`` of ``cls``: what a fast agent's zip records as ``agent_class``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _use_instead(saved_by: str) -> str:
    module, _, name = saved_by.rpartition(".")
    return f"load it with {name}.load(...) (from {module} import {name})"


def _refuse_load(saved_by: str):
    """Unpickling hook of :class:`_LoadGuard`: reached only by a loader that is not the saving class's."""
    raise AgentClassMismatchError(
        f"this file was saved by {saved_by}; {_use_instead(saved_by)}, not with another "
        f"algorithm's load (e.g. stable_baselines3.PPO.load)"
    )


class _LoadGuard:
    """Saved with every fast agent; unpickling it raises :class:`AgentClassMismatchError` (see ``RLHFPPO.load``)."""

    def __init__(self, saved_by: str):
        self.saved_by = saved_by  # SB3 also writes it in clear in the zip's JSON, next to the pickle

    def __reduce__(self):
        return _refuse_load, (self.saved_by,)

    def __copy__(self) -> _LoadGuard:
        return _LoadGuard(self.saved_by)  # copying an agent must not go through __reduce__

    def __deepcopy__(self, memo) -> _LoadGuard:
        return _LoadGuard(self.saved_by)


def _read_saved_data(path) -> dict[str, Any]:
    """The zip's ``data`` JSON as stored (no entry unpickled); a file object is rewound for SB3's own read."""
    owned = isinstance(path, (str, os.PathLike))
    file = open_path(path, "r", suffix="zip")
    start = None if owned else file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            return json.loads(archive.read("data")) if "data" in archive.namelist() else {}
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not a zip file written by an agent's save()") from e
    finally:
        if owned:
            file.close()
        else:
            file.seek(start)


def _saved_agent_class(data: dict[str, Any]) -> str | None:
    """The fast-agent class a zip's data records; ``None`` for a plain SB3 algorithm's zip."""
    if isinstance(data.get("agent_class"), str):
        return data["agent_class"]
    if "n_rounds" in data:  # a fast agent saved before zips recorded their class (issue 17)
        return "agents.critic_free.CriticFreePG" if "estimator" in data else "agents.rlhf_ppo.RLHFPPO"
    return None


def check_saved_class(path: str | os.PathLike | io.BufferedIOBase, cls: type) -> None:
    """Raise :class:`AgentClassMismatchError` unless the agent saved at ``path`` is exactly a ``cls``."""
    expected, saved_by = class_path(cls), _saved_agent_class(_read_saved_data(path))
    if saved_by is None:
        raise AgentClassMismatchError(
            f"{path} was not saved by {expected}: it records no textrlhf agent class, so a plain Stable-Baselines3 "
            f"/ sb3-contrib algorithm saved it (PPO, A2C, TRPO, MaskablePPO, ...); load it with that class's load, "
            f"e.g. stable_baselines3.PPO.load(path)"
        )
    if saved_by != expected:
        raise AgentClassMismatchError(f"{path} was saved by {saved_by}, not by {expected}; {_use_instead(saved_by)}")


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
            The six KL options' defaults are :class:`agents.kl.KLConfig`'s.
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device: as SB3.

    ``env=None`` is accepted only with ``_init_setup_model=False``: that is how SB3's ``load`` builds an
    agent for prediction, before restoring every attribute from the file.

    Attributes:
        agent_class: ``module.QualName`` of the class, saved in the zip so ``load`` can check it.
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
        if policy == "LMActorCriticPolicy":
            policy = LMActorCriticPolicy
        if not (isinstance(policy, type) and issubclass(policy, LMActorCriticPolicy)):
            raise TypeError(f"RLHFPPO drives agents.LMActorCriticPolicy (or a subclass), got {policy!r}")
        if env is not None:
            _check_env(env)
        elif _init_setup_model:
            raise TypeError(
                f"{type(self).__name__} needs a VecEnv of TextRLHF-v0 envs (agents.make_vec_text_env); "
                f"without one, use {type(self).__name__}.load(path) to predict with a saved agent"
            )
        check_kl_options(kl_coef, kl_estimator, kl_mode)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size counts episodes and must be >= 1 (or None for all), got {batch_size}")
        # env=None comes from load(), which then restores horizon, n_steps, n_rounds... from the file.
        horizon = int(env.get_attr("config", indices=[0])[0].max_new_tokens) if env is not None else 1
        n_envs = env.num_envs if env is not None else 1
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
        self.agent_class = class_path(type(self))
        setattr(self, _GUARD_KEY, _LoadGuard(self.agent_class))  # saved with the agent; see load()
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
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # No transition-level RolloutBuffer: episodes live in an EpisodeBatch.
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        self.rollout_buffer = None
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_batch"]

    @classmethod
    def load(
        cls,
        path,
        env=None,
        device: torch.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs,
    ) -> RLHFPPO:
        """SB3's ``load``, once the file is known to hold an agent of exactly this class.

        As in SB3, ``env`` may be omitted to only ``predict`` (give one, or call ``set_env``, to train);
        a single env is wrapped in a ``DummyVecEnv``. Other arguments as SB3's ``BaseAlgorithm.load``.

        Which class saved a zip: SB3 records no algorithm class in it, and a fast agent's policy class
        (:class:`agents.LMActorCriticPolicy`) is the one a plain ``PPO`` uses too, so without help
        ``PPO.load`` would silently rebuild a ``PPO`` whose rollouts and updates ignore this agent's
        episodes and KL options. Two entries are therefore saved with every fast agent:

        * ``agent_class`` (plain JSON text): read here, before anything is built, so loading with the
          wrong fast class (or a plain SB3 zip with a fast class) names the class to use instead;
        * ``_load_guard``: a tiny object whose unpickling raises :class:`AgentClassMismatchError`.
          SB3's ``load`` unpickles every saved entry first, so ``PPO.load`` (or ``A2C.load``,
          ``MaskablePPO.load``...) on a fast agent's zip fails at once with that message, without
          patching SB3; this method hands SB3 a replacement through its own ``custom_objects``
          mechanism, so the guard never runs here. (``PPO.load(path, custom_objects={"_load_guard":
          None})`` deliberately bypasses it, and zips saved before the guard existed still load as
          ``PPO``: their class is inferred only by this method.)

        Raises:
            AgentClassMismatchError: the file was saved by another class (the message names it).
        """
        check_saved_class(path, cls)
        custom_objects = {**(custom_objects or {}), _GUARD_KEY: _LoadGuard(class_path(cls))}
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    # ------------------------------------------------------------------ KL coefficient
    @property
    def beta(self) -> float:
        """The current KL coefficient (restored by ``load``)."""
        return self._controller().value

    def _controller(self):
        if self.kl_controller is None:
            saved = float(self.policy.kl_beta)
            init = saved if np.isfinite(saved) else self.kl_coef
            self.kl_controller = (
                AdaptiveKLController(init, self.kl_target, self.kl_horizon)
                if self.adaptive_kl
                else FixedKLController(init)
            )
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
        batch.rewards = shape_rewards(
            batch.scores, batch.logp, batch.ref_logp, beta, self.kl_mode, self.kl_estimator, batch.mask.bool()
        )
        batch.advantages, batch.returns = gae(batch.rewards, batch.values, batch.mask, self.gamma, self.gae_lambda)
        self._update_kl_and_log(batch, beta)

    def _score_reference(self, batch: EpisodeBatch) -> float:
        """Fill ``batch.ref_logp`` (one batched teacher-forced pass); return the current ``beta``."""
        T = batch.horizon
        ref = self.policy.reference_logprobs(
            batch.input_ids.to(self.device), batch.attention_mask.to(self.device), batch.response_mask.to(self.device)
        ).cpu()
        batch.ref_logp = ref[:, -T:]
        return self._controller().value

    def _update_kl_and_log(self, batch: EpisodeBatch, beta: float) -> None:
        """Step the KL controller on this batch's mean summed KL and log the ``rlhf/*`` metrics."""
        kl = (kl_estimate(batch.logp, batch.ref_logp, self.kl_estimator) * batch.mask).sum(-1)  # (n,)
        self.policy.kl_beta.fill_(self._controller().update(float(kl.mean()), batch.n))
        # The same helper as the generic path's KLRolloutBuffer: one set of names and meanings.
        stats = rollout_metrics(batch.scores.numpy(), kl.numpy(), batch.lengths.numpy(), beta)
        for key, value in stats.items():
            self.logger.record(key, value)

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
                    self.policy,
                    batch.input_ids[idx].to(dev),
                    batch.attention_mask[idx].to(dev),
                    T,
                    entropy=True,
                    entropy_grad=self.ent_coef != 0,
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
