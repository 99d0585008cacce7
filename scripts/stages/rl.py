"""Stage ``rl``: the SFT policy trained against the reward model with a KL penalty to the SFT model.

The objective is InstructGPT's (Ouyang et al. 2022, eq. 2, without the pretraining term) and
Ziegler et al.'s (2019): ``R = r_RM(x, y) - beta * KL(pi || pi_SFT)``, beta adapted towards a target
KL (Ziegler et al. 2019, section 2.2). The policy *and* the KL reference start as the SFT model
(the env and the agent are built from ``sft/model``; the agent's reference is a frozen copy of its
initial weights). Any algorithm of ``agents.available_algorithms()`` runs it (``--algo``).

Logging: SB3's logger writes ``rl/progress.csv`` and ``rl/tensorboard/`` after every rollout
(the ``rlhf/*`` metrics every agent logs, ``agents.RLHF_METRICS``, plus SB3's ``rollout/*``, ``time/*``
and ``train/*``), one CSV row per iteration (rollout + update), keyed by ``iteration``. Iterations are
counted by the logger's dumps (SB3 dumps once per rollout with ``log_interval=1``), not derived from
``num_timesteps``: agents whose episodes stop at EOS step a varying number of tokens per rollout.

Interruption safety: every ``checkpoint_every`` rollouts (at the start of the next rollout, i.e.
after the previous update) and at the end, the resume state is written to ``rl/checkpoint/``
atomically: policy weights as safetensors, the optimizer state, and ``state.json`` with
``num_timesteps``, the iteration, the update count and the KL coefficient (data only, never a pickle:
``scripts/stages/rl_checkpoint.py``). ``--resume`` builds the agent exactly as a fresh run does
(``agents.make_agent`` from this run folder's ``sft/model``, so a copied or moved folder resumes
against its own models), loads that state into it, keeps the ``progress.csv`` rows up to the
checkpoint (refusing a truncated file), drops newer rows and TensorBoard events (they are redone),
and calls ``learn(remaining, reset_num_timesteps=False)``: each iteration appears in the CSV exactly
once. A checkpoint that already holds ``total_timesteps`` or ``rl.rollouts`` rollouts (killed during the
final export) just exports the policy. SB3 dumps a rollout's ``train/*`` losses with the next iteration's
row, so the row right after a resume point lacks the ``train/*`` values of the update before it.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat

from agents.distributed import is_main_process
from scripts.run_dir import RunDirError, atomic_write_csv, clear_stage, mark_done, read_csv, require, stage_dir
from scripts.stages.common import StageTimer, abs_path, fmt, resolve_device, seed_everything
from scripts.stages.config import PipelineConfig
from scripts.stages.rl_checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    no_pickle_note,
    progress_rows,
    read_state,
    save_checkpoint,
)

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
        rows: the rows kept from before a resume (:func:`scripts.stages.rl_checkpoint.progress_rows`:
            iterations 1..``counter.done``); ``[]`` starts a new file.
    """

    def __init__(self, path: str | os.PathLike, counter: IterationCounter, rows: list[dict] | None = None):
        self.path, self.counter = Path(path), counter
        self.rows = list(rows or [])
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


class Checkpointer(BaseCallback):
    """Save the resume state every ``every`` iterations, at the start of the next rollout (so the
    checkpoint holds the update of the iteration just logged), and on :meth:`save`.

    It holds the agent itself: :meth:`save` works whether or not ``learn()`` ever ran (a resumed
    checkpoint that already holds every step never starts ``learn``).
    """

    def __init__(self, agent, folder: Path, algo: str, counter: IterationCounter, every: int, timer: StageTimer):
        super().__init__()
        self.agent, self.folder, self.algo = agent, folder, algo
        self.counter, self.every, self.timer = counter, max(1, every), timer
        self.saved_at = counter.done

    def _on_rollout_start(self) -> None:
        if self.counter.done > 0 and self.counter.done % self.every == 0:
            self.save()

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        """Write ``rl/checkpoint/`` unless it already holds the current iteration."""
        if self.counter.done == self.saved_at:
            return
        with self.timer.phase("checkpoint"):
            save_checkpoint(self.agent, self.folder, self.algo, self.counter.done, self.timer.seconds)
        self.saved_at = self.counter.done


class RolloutLimit(BaseCallback):
    """Stop ``learn`` once the run holds ``limit`` rollouts (``rl.rollouts``), counting those before a resume.

    SB3 callbacks can only stop from ``on_step``, so the stop comes at the first step of the next rollout:
    ``learn`` then ends before that rollout's update (SB3's loop and the fast agents discard a stopped
    rollout), having stepped one token per env more than it trains on. Every data-parallel rank counts the
    same rollouts, so they stop together.
    """

    def __init__(self, limit: int, done: int):
        super().__init__()
        self.limit, self.done = limit, done

    def _on_rollout_end(self) -> None:
        self.done += 1

    def _on_step(self) -> bool:
        return self.done < self.limit


def _algo_kwargs(cfg: PipelineConfig, algo_class) -> dict:
    """Agent options from the config: unset ones (None) keep the algorithm's RLHF defaults."""
    rl = cfg.rl
    valid = set(inspect.signature(algo_class.__init__).parameters)
    kwargs = {
        "kl_coef": rl.kl_coef,
        "adaptive_kl": rl.adaptive_kl,
        "kl_target": rl.kl_target,
        "kl_horizon": rl.kl_horizon,
    }
    for key in ("n_steps", "batch_size", "n_epochs", "learning_rate"):
        value = getattr(rl, key)
        if value is None:
            continue
        if key not in valid:
            print(f"[rl] note: {algo_class.__name__} has no {key!r}; rl.{key}={value} ignored")
            continue
        kwargs[key] = value
    return {**kwargs, **rl.algo_kwargs}


def resume_state(out: Path, algo: str) -> tuple[dict | None, list[dict]]:
    """What a ``--resume`` continues from: the checkpoint's ``state.json`` and the progress rows it keeps.

    ``(None, [])`` when there is no checkpoint (the stage starts over). Everything is validated here,
    before any model is loaded, so a damaged run folder fails in a second with the file and the fix.

    Raises:
        RunDirError: a damaged checkpoint or progress.csv, another algorithm's checkpoint, or pickles only.
    """
    from agents.registry import get_spec

    folder = out / CHECKPOINT
    no_pickle_note(out, has_checkpoint=folder.exists())
    if not folder.exists():
        return None, []
    state = read_state(folder)
    try:
        same_algo = get_spec(state["algo"]) is get_spec(algo)
    except ValueError:  # an algorithm this version no longer has
        same_algo = False
    if not same_algo:
        raise RunDirError(
            f"{folder} was written by algorithm {state['algo']!r}, this run asks for {algo!r}; pass "
            f"--algo {state['algo']} to continue it, or restart RL with --stages rl"
        )
    return state, progress_rows(out / PROGRESS, state["iteration"])


def _set_logger(agent, out: Path, counter: IterationCounter, rows: list[dict], resuming: bool):
    """SB3 logger: progress.csv (one row per iteration), TensorBoard, log.txt. Returns log.txt's handle."""
    log_file = open(out / "log.txt", "a", encoding="utf-8")  # SB3's human-readable tables, appended on resume
    agent.set_logger(
        Logger(
            str(out),
            [
                ResumableCSV(out / PROGRESS, counter, rows),
                _TensorBoard(str(out / "tensorboard"), purge_step=agent.num_timesteps if resuming else None),
                HumanOutputFormat(log_file),
            ],
        )
    )
    return log_file


def _summary(run, agent, rows: list[dict], resuming: bool) -> str:
    scores = [float(r["rlhf/score"]) for r in rows if r.get("rlhf/score") not in (None, "")]
    kls = [float(r["rlhf/kl"]) for r in rows if r.get("rlhf/kl") not in (None, "")]
    beta = float(agent.policy.kl_beta) if hasattr(agent.policy, "kl_beta") else math.nan
    return (
        f"{run.algo}, {len(rows)} iterations ({agent.num_timesteps} tokens), score "
        f"{fmt(scores[0] if scores else None, 2)} -> {fmt(scores[-1] if scores else None, 2)}, "
        f"KL {fmt(kls[-1] if kls else None, 2)} nats, beta {beta:.3g}" + (" (resumed)" if resuming else "")
    )


def _make_env(cfg: PipelineConfig, sft_dir: str, rm_dir: str):
    """The RL vector env: the SFT model's tokenizer, the reward model's score, the train prompts."""
    import agents

    run, rl = cfg.run, cfg.rl
    return agents.make_vec_text_env(
        n_envs=rl.n_envs,
        seed=run.seed,
        model=sft_dir,
        reward=rm_dir,
        prompts=rl.prompts,
        prompt_split="train",
        max_prompts=rl.max_prompts,
        max_new_tokens=run.max_new_tokens,
        max_prompt_tokens=run.max_prompt_tokens,
        no_eos_penalty=rl.no_eos_penalty,
    )


def _learning_phases(rows: list[dict], timer: StageTimer) -> None:
    """Where ``learn`` spent its time, from the ``time/`` metrics the fast agents log every iteration
    (docs/agents.md, "Metrics"): generation, the rest of the rollout (reference log-probs, reward,
    env), the update. The generic SB3 path logs none of them: its learning time stays in ``other``."""

    def total(key: str) -> float:
        return sum(float(r[key]) for r in rows if r.get(key) not in (None, ""))

    if not rows or "time/rollout_s" not in rows[0]:
        return
    generation = total("time/generation_s")
    timer.add("generate", generation)
    timer.add("rollout: reference, reward, env", total("time/rollout_s") - generation)
    timer.add("update", total("time/update_s"))


def _restore(agent, out: Path, state: dict, counter: IterationCounter, timer: StageTimer, seed: int) -> None:
    """Load the checkpoint's state into a freshly built agent and carry its counters and wall time over."""
    load_checkpoint(agent, out / CHECKPOINT, state)
    agent.set_random_seed(seed + agent.num_timesteps)  # fresh prompts and samples, not a replay
    counter.done = state["iteration"]
    timer.start -= state["seconds"]  # the stage's wall time includes the work before the interruption


def _announce_resume(algo: str, agent, iteration: int, remaining: int, rollouts: int | None) -> None:
    """The one line that says where a resumed run continues (or that only the export is left)."""
    beta = float(agent.policy.kl_beta) if hasattr(agent.policy, "kl_beta") else math.nan
    left = f"{remaining} steps" + (f" (at most {rollouts - iteration} rollouts)" if rollouts is not None else "")
    print(
        f"[rl] resuming {algo} at iteration {iteration} ({agent.num_timesteps} steps, beta {beta:.4g}); "
        + (f"{left} left" if remaining > 0 else "every step is done: exporting the policy"),
        flush=True,
    )


def _close_logs(agent, log_file) -> None:
    """Flush and close the SB3 logger's writers (CSV, TensorBoard, log.txt)."""
    for fmt_ in agent.logger.output_formats:
        fmt_.close()
    log_file.close()


def run_rl(cfg: PipelineConfig, resume: bool = False) -> str:
    """Train (or continue training) the agent; export the policy to ``rl/policy``. Returns the summary."""
    import agents
    from agents.callbacks import ProgressBar
    from agents.registry import get_spec

    timer, run, rl = StageTimer("rl"), cfg.run, cfg.rl
    # Absolute paths for loading only: nothing below stores them (the checkpoint holds tensors and counters).
    sft_dir = abs_path(require(run.run_dir, "sft", "rl") / "model")
    rm_dir = abs_path(require(run.run_dir, "reward-model", "rl") / "model")
    spec = get_spec(run.algo)  # unknown names raise, listing agents.available_algorithms()
    out = stage_dir(run.run_dir, "rl")
    # Data parallel (torchrun / accelerate launch): every rank trains; only rank 0 writes (docs/scaling.md).
    main = is_main_process()
    state, rows = resume_state(out, run.algo) if resume else (None, [])
    resuming = state is not None
    if main and not resuming:
        clear_stage(run.run_dir, "rl")
    if main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(run.seed)
    device = resolve_device(run.device)
    with timer.phase("setup"):
        env = _make_env(cfg, sft_dir, rm_dir)
        # Resumed or not, the agent is built the same way; a resume then loads the saved state into it.
        agent = agents.make_agent(
            run.algo,
            env,
            temperature=run.temperature,
            seed=run.seed,
            device=device,
            verbose=0,
            policy_kwargs={"lora_r": rl.lora_r} if rl.lora_r else None,
            **_algo_kwargs(cfg, spec.algo_class),
        )
    counter = IterationCounter(0)
    if resuming:
        _restore(agent, out, state, counter, timer, run.seed)
    remaining = rl.total_timesteps - agent.num_timesteps
    if rl.rollouts is not None and counter.done >= rl.rollouts:
        remaining = 0
    limit = [RolloutLimit(rl.rollouts, counter.done)] if rl.rollouts is not None else []
    if not main:  # the agent's logger writes nothing on this rank; rank 0 checkpoints, exports and reports
        if remaining > 0:
            agent.learn(remaining, callback=limit, reset_num_timesteps=not resuming, log_interval=1)
        env.close()
        return f"{agent.num_timesteps} tokens over all ranks (rank 0 reports)"
    log_file = _set_logger(agent, out, counter, rows, resuming)
    checkpointer = Checkpointer(agent, out / CHECKPOINT, run.algo, counter, rl.checkpoint_every, timer)
    if resuming:
        _announce_resume(run.algo, agent, counter.done, remaining, rl.rollouts)
    if remaining > 0:
        callbacks = [*limit, checkpointer, ProgressBar()] if run.progress else [*limit, checkpointer]
        agent.learn(remaining, callback=callbacks, reset_num_timesteps=not resuming, log_interval=1)
    checkpointer.save()
    with timer.phase("save"):
        agent.policy.save_pretrained(out / "policy", merge=True)  # with LoRA: a plain model folder
    _close_logs(agent, log_file)
    rows = read_csv(out / PROGRESS)
    _learning_phases(rows, timer)
    summary = timer.summary(_summary(run, agent, rows, resuming))
    mark_done(
        run.run_dir,
        "rl",
        summary,
        timer.seconds,
        iterations=len(rows),
        num_timesteps=int(agent.num_timesteps),
        phases=timer.phase_seconds(),
    )
    env.close()
    return summary
