"""Stage ``rl``: the SFT policy trained against the reward model with a KL penalty to the SFT model.

The objective is InstructGPT's (Ouyang et al. 2022, eq. 2, without the pretraining term) and
Ziegler et al.'s (2019): ``R = r_RM(x, y) - beta * KL(pi || pi_SFT)``, beta adapted towards a target
KL (Ziegler et al. 2019, section 2.2). The policy *and* the KL reference start as the SFT model
(the env and the agent are built from ``sft/model``; the agent's reference is a frozen copy of its
initial weights). Any algorithm of ``agents.available_algorithms()`` runs it (``--algo``).

Logging: SB3's logger writes ``rl/progress.csv`` and ``rl/tensorboard/`` after every rollout
(``rlhf/score``, ``rlhf/kl``, ``rlhf/beta``, ``rlhf/response_len`` from the KL buffer, plus SB3's
``train/*``), one CSV row per iteration (rollout + update), keyed by ``iteration``. Iterations are
counted by the logger's dumps (SB3 dumps once per rollout with ``log_interval=1``), not derived from
``num_timesteps``: agents whose episodes stop at EOS step a varying number of tokens per rollout.

Interruption safety: every ``checkpoint_every`` rollouts (at the start of the next rollout, i.e.
after the previous update) the agent is saved with SB3's ``save`` to ``rl/checkpoint.zip``
atomically. The KL coefficient lives in the policy's ``kl_beta`` buffer, so it is in the checkpoint.
``--resume`` loads it (``Algo.load``), drops CSV rows and TensorBoard events newer than it (they
will be redone), and calls ``learn(remaining, reset_num_timesteps=False)``: each iteration appears
in the CSV exactly once. SB3 dumps a rollout's ``train/*`` losses with the next iteration's row, so
the row right after a resume point lacks the ``train/*`` values of the update before it.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat

from scripts.run_dir import (
    atomic_file,
    atomic_write_csv,
    atomic_write_json,
    clear_stage,
    mark_done,
    read_csv,
    require,
    stage_dir,
)
from scripts.stages.common import StageTimer, abs_path, fmt, resolve_device, seed_everything
from scripts.stages.config import PipelineConfig

CHECKPOINT = "checkpoint.zip"
PROGRESS = "progress.csv"
DROPPED_KEYS = ("time/iterations",)  # SB3 restarts it at each learn() call; "iteration" is the true count


class IterationCounter:
    """Finished iterations (rollout + update) of the run, shared by the CSV writer and the checkpointer."""

    def __init__(self, done: int = 0):
        self.done = done


class ResumableCSV(KVWriter):
    """SB3 ``KVWriter`` that keeps one row per iteration and rewrites the file atomically each dump.

    Args:
        path: the CSV file.
        counter: the run's :class:`IterationCounter` (each dump is one more iteration).
        resume: keep the rows up to ``counter.done`` (the checkpoint's iteration) and drop newer ones,
            which the resumed run redoes; ``False`` starts a new file.
    """

    def __init__(self, path: str | os.PathLike, counter: IterationCounter, resume: bool = False):
        self.path, self.counter = Path(path), counter
        self.rows = [r for r in read_csv(path) if int(r["iteration"]) <= counter.done] if resume else []
        atomic_write_csv(self.path, self.rows, ["iteration", "timesteps"] if not self.rows else None)

    def write(self, key_values, key_excluded, step: int = 0) -> None:
        self.counter.done += 1
        row: dict = {"iteration": self.counter.done, "timesteps": step}
        for key in sorted(key_values):
            value, excluded = key_values[key], key_excluded.get(key)
            if key in DROPPED_KEYS or (excluded is not None and "csv" in excluded):
                continue
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                row[key] = float(value)
        self.rows.append(row)
        atomic_write_csv(self.path, self.rows)

    def close(self) -> None:
        pass


class _TensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard writer with ``purge_step``: on resume, events at or after it are discarded."""

    def __init__(self, folder: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


class CheckpointCallback(BaseCallback):
    """Save the agent atomically every ``every`` iterations, at the start of the next rollout (so the
    checkpoint holds the update of the iteration just logged)."""

    def __init__(self, stage: Path, counter: IterationCounter, every: int, timer: StageTimer):
        super().__init__()
        self.stage, self.counter, self.every, self.timer = stage, counter, max(1, every), timer
        self.saved_at = counter.done

    def _on_rollout_start(self) -> None:
        if self.counter.done > 0 and self.counter.done % self.every == 0:
            self.save()

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        """Write ``checkpoint.zip`` (SB3 ``save``) then ``checkpoint.json``, both atomically."""
        if self.counter.done == self.saved_at:
            return
        self.model.pipeline_iteration = self.counter.done  # pickled into the zip with the agent's attributes
        with atomic_file(self.stage / CHECKPOINT) as fh:
            self.model.save(fh)
        beta = getattr(self.model.policy, "kl_beta", None)
        atomic_write_json(self.stage / "checkpoint.json", {
            "num_timesteps": int(self.model.num_timesteps), "iteration": self.counter.done,
            "beta": float(beta) if beta is not None else None, "seconds": round(self.timer.seconds, 2)})
        self.saved_at = self.counter.done


def _algo_kwargs(cfg: PipelineConfig, algo_class) -> dict:
    """Agent options from the config: unset ones (None) keep the algorithm's RLHF defaults."""
    rl = cfg.rl
    valid = set(inspect.signature(algo_class.__init__).parameters)
    kwargs = {"kl_coef": rl.kl_coef, "adaptive_kl": rl.adaptive_kl, "kl_target": rl.kl_target,
              "kl_horizon": rl.kl_horizon}
    for key in ("n_steps", "batch_size", "n_epochs", "learning_rate"):
        value = getattr(rl, key)
        if value is None:
            continue
        if key not in valid:
            print(f"[rl] note: {algo_class.__name__} has no {key!r}; rl.{key}={value} ignored")
            continue
        kwargs[key] = value
    return {**kwargs, **rl.algo_kwargs}


def run_rl(cfg: PipelineConfig, resume: bool = False) -> str:
    """Train (or continue training) the agent; export the policy to ``rl/policy``. Returns the summary."""
    import agents
    from agents.registry import get_spec

    timer, run, rl = StageTimer("rl"), cfg.run, cfg.rl
    sft_dir = abs_path(require(run.run_dir, "sft", "rl") / "model")
    rm_dir = abs_path(require(run.run_dir, "reward-model", "rl") / "model")
    spec = get_spec(run.algo)  # unknown names raise, listing agents.available_algorithms()
    out = stage_dir(run.run_dir, "rl")
    ckpt = out / CHECKPOINT
    resuming = resume and ckpt.is_file()
    if not resuming:
        clear_stage(run.run_dir, "rl")
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(run.seed)
    device = resolve_device(run.device)
    env = agents.make_vec_text_env(
        n_envs=rl.n_envs, seed=run.seed, model=sft_dir, reward=rm_dir, prompts=rl.prompts, prompt_split="train",
        max_prompts=rl.max_prompts, max_new_tokens=run.max_new_tokens, max_prompt_tokens=run.max_prompt_tokens,
        no_eos_penalty=rl.no_eos_penalty)
    if resuming:
        agent = spec.algo_class.load(str(ckpt), env=env, device=device)
        agent._last_obs = None  # the saved mid-episode observation belongs to envs that no longer exist: reset
        if hasattr(agent.rollout_buffer, "bind"):
            agent.rollout_buffer.bind(agent)  # logger + the restored beta (policy.kl_beta)
        env.seed(run.seed + int(agent.num_timesteps))  # fresh prompts, not a replay of the first rollouts
    else:
        agent = agents.make_agent(run.algo, env, temperature=run.temperature, seed=run.seed, device=device,
                                  verbose=0, **_algo_kwargs(cfg, spec.algo_class))
    counter = IterationCounter(int(getattr(agent, "pipeline_iteration", 0)) if resuming else 0)
    done_iters = counter.done
    start_beta = float(agent.policy.kl_beta) if hasattr(agent.policy, "kl_beta") else float("nan")
    log_file = open(out / "log.txt", "a", encoding="utf-8")  # SB3's human-readable tables, appended on resume
    agent.set_logger(Logger(str(out), [
        ResumableCSV(out / PROGRESS, counter, resume=resuming),
        _TensorBoard(str(out / "tensorboard"), purge_step=agent.num_timesteps if resuming else None),
        HumanOutputFormat(log_file),
    ]))
    meta = out / "checkpoint.json"
    if resuming and meta.is_file():  # the stage's wall time includes the work before the interruption
        timer.start -= float(json.loads(meta.read_text()).get("seconds", 0.0))
    callback = CheckpointCallback(out, counter, rl.checkpoint_every, timer)
    remaining = rl.total_timesteps - agent.num_timesteps
    if resuming:
        print(f"[rl] resuming {run.algo} at iteration {done_iters} ({agent.num_timesteps} steps, "
              f"beta {start_beta:.4g}); "
              f"{max(remaining, 0)} steps left", flush=True)
    if remaining > 0:
        agent.learn(remaining, callback=callback, progress_bar=run.progress, reset_num_timesteps=not resuming,
                    log_interval=1)
    if callback.model is None:  # learn() never ran (nothing left): bind the callback for the final save
        callback.init_callback(agent)
    callback.save()
    agent.policy.save_pretrained(out / "policy")
    for fmt_ in agent.logger.output_formats:
        fmt_.close()
    log_file.close()
    rows = read_csv(out / PROGRESS)
    scores = [float(r["rlhf/score"]) for r in rows if r.get("rlhf/score") not in (None, "")]
    kls = [float(r["rlhf/kl"]) for r in rows if r.get("rlhf/kl") not in (None, "")]
    beta = float(agent.policy.kl_beta) if hasattr(agent.policy, "kl_beta") else math.nan
    text = (f"{run.algo}, {len(rows)} iterations ({agent.num_timesteps} tokens), score "
            f"{fmt(scores[0] if scores else None, 2)} -> {fmt(scores[-1] if scores else None, 2)}, "
            f"KL {fmt(kls[-1] if kls else None, 2)} nats, beta {beta:.3g}" + (" (resumed)" if resuming else ""))
    summary = timer.summary(text)
    mark_done(run.run_dir, "rl", summary, timer.seconds, iterations=len(rows), num_timesteps=int(agent.num_timesteps))
    env.close()
    return summary
