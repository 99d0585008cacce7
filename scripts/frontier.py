"""Reward-vs-KL frontiers: algorithms x KL targets x seeds, compared at equal KL (issue 15).

An RLHF method is judged by the score it buys per nat of KL to its reference, over seeds (Gao et al.
2022 and Noukhovitch et al. 2023 plot gold reward against KL). A comparison at one fixed beta confounds
the two: an algorithm whose KL term bites less travels further and "wins". So every run here steers its
KL with the adaptive controller (Ziegler et al. 2019) towards its ``kl_target``, whatever the
algorithm's own KL mechanism, on the same env, reward, reference and token budget; then its policy
answers the held-out prompts, scored by the env's reward and by a second judge that nothing trained on.

Reads top to bottom: evaluate the untrained reference once (the frontier's origin, KL 0); for every
``(seed, kl_target, algo)`` not yet in ``OUT/runs.jsonl``, train, evaluate, append the run (with its
per-prompt scores, for the bootstrap) and rewrite the outputs. A killed sweep resumes where it stopped
when run again with the same options. Outputs (``scripts/frontier_report.py``):

* ``frontier.csv``: one row per (algo, seed, kl_target): ``heldout_kl``, ``heldout_score``,
  ``heldout_second_judge``, ``tokens``, ``seconds``...;
* ``frontier.png``: held-out score (and the second judge's) against held-out KL, one colour per algorithm,
  every run a dot, the mean per target joined, 95% intervals;
* ``summary.md`` / ``summary.json``: each algorithm's score interpolated at equal KL with 95% intervals
  (bootstrap over seeds and prompts), and which differences between algorithms exclude 0.

    python -m scripts.frontier --out runs/frontier --jobs 2                          # the real sweep, ~1 h
    python -m scripts.frontier --tiny --seeds 0 1 --kl-targets 2 6 --algos rloo grpo --out /tmp/f  # a minute
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.algo_task import AlgoTask
from scripts.cli import config_to_dict, parse_args
from scripts.run_dir import atomic_write_text

TINY_PRESET = {
    "model": "tiny",
    "n_envs": 4,
    "max_new_tokens": 4,
    "max_prompt_tokens": 24,
    "total_timesteps": 32,
    "eval_max_prompts": 8,
    "n_resamples": 200,
}
"""What ``--tiny`` changes (only fields whose value equals the default, given or not): the random 2-layer
model, 2 rollouts per run, 8 held-out prompts. Seconds per run, for tests; its numbers mean nothing."""


@dataclass
class Config(AlgoTask):
    """Train algorithms x KL targets x seeds on one RLHF task; plot held-out score against held-out KL."""

    algos: list[str] = field(default_factory=lambda: ["rlhf_ppo", "rloo", "grpo", "reinforce_pp"])
    """Algorithms (names of agents.available_algorithms())."""
    algo_kwargs: dict = field(default_factory=lambda: {"rlhf_ppo": {"n_epochs": 1, "learning_rate": 1e-4}})
    """Per-algorithm options as JSON. Default: rlhf_ppo takes one epoch at lr 1e-4, the pipeline's setting,
    so every algorithm makes one pass over each batch (the registry's 4 epochs cost 4x the update time)."""
    kl_targets: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Targets of the adaptive KL controller, nats per episode (one run per target, algorithm and seed). In the
    default budget the KL of the training batches stays under 0.8 x 4 nats for most of a run, so targets past
    4 nats are the same run as 4: beta falls at every rollout (docs/results/2026-12-01-frontier.md)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of the envs, the agents and their held-out sampling."""
    total_timesteps: int = 3072
    """Generated tokens per run (the common budget: 16 envs x 24 tokens x 8 full-length rounds)."""
    kl_coef: float = 1.0
    """Initial KL coefficient beta of every run. High on purpose: the KL starts at 0, so the controller lowers
    beta until the KL comes up to the run's target, approaching it from below. Started at 0.1, beta fell to
    0.02 in the first rollouts, before the policy had moved, and the KL then overshot a 2-nat target to 8."""
    kl_horizon: float = 8.0
    """Controller horizon in episodes: beta moves by up to a factor 1 +- 0.2 x 16 / 8 = 1.4 / 0.6 per 16-episode
    rollout, so it can steer within an 8-rollout run (the library's 10000 suits ~10^6 episodes)."""
    eval_samples: int = 1
    """Samples per held-out prompt."""
    eval_max_prompts: int | None = None
    """Evaluate on the first N test prompts (none: all 109 bundled review prompts)."""
    kl_grid: list[float] = field(default_factory=list)
    """KL values (nats) at which the summary compares algorithms, by interpolation. Default: 30%, 60% and 90%
    of the smallest KL that every (algorithm, seed) reaches, so every value is inside every curve."""
    n_resamples: int = 2000
    """Bootstrap resamples of the summary's intervals."""
    jobs: int = 1
    """Runs trained at once, each in its own process with (cores // jobs) torch threads. On the 2-core CPU two
    one-thread runs finish 1.2-1.3x the runs per hour of one two-thread run, with the same numbers
    (docs/results/2026-12-02-frontier-rerun.md); each process holds its own policy, reference and Adam state
    (peak 6.2 GB with SmolLM2). Runs are still appended one by one as they finish."""
    progress: bool = True
    """Progress bar of each run's training (off with more than one job: one line per finished run instead)."""
    tiny: bool = False
    """Preset for tests: the tiny random model, 2 rollouts per run, 8 held-out prompts (TINY_PRESET)."""
    out: Path = Path("runs/frontier")
    """Output folder: runs.jsonl, frontier.csv, frontier.png, summary.md, summary.json, config.json."""

    def __post_init__(self) -> None:
        if self.tiny:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in TINY_PRESET.items():
                if getattr(self, name) == defaults[name]:
                    setattr(self, name, value)
        super().__post_init__()
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must list distinct seeds, got {self.seeds}")
        if not self.kl_targets or any(not t > 0 for t in self.kl_targets):
            raise ValueError(f"--kl-targets must be positive numbers of nats, got {self.kl_targets}")
        for name in ("total_timesteps", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        cores = os.cpu_count() or 1
        if not 1 <= self.jobs <= cores:
            raise ValueError(f"--jobs {self.jobs}: give 1 to {cores} (this machine's cores; each job gets >= 1 thread)")
        if self.n_resamples < 100:
            raise ValueError(f"--n-resamples {self.n_resamples} is too few for 95% percentiles; give >= 100")
        if self.eval_max_prompts is not None and self.eval_max_prompts < 2:
            raise ValueError("--eval-max-prompts must be >= 2: the intervals resample prompts")
        if any(not g > 0 for g in self.kl_grid):
            raise ValueError(f"--kl-grid must be positive numbers of nats, got {self.kl_grid}")
        self.kl_grid = sorted(self.kl_grid)


RUN_KEY = ("algo", "seed", "kl_target")
"""What identifies one run in ``runs.jsonl`` (and one row of ``frontier.csv``)."""


def held_out(cfg: Config, lm, reference, env, second_judge, seed: int) -> dict:
    """``lm`` on the test-split prompts: per-prompt ``score`` (the env's reward), ``second_judge`` and ``kl``
    to ``reference``, plus ``response_len``; one :func:`agents.evaluation.evaluate_on_env` pass."""
    from agents.evaluation import evaluate_on_env
    from textenv import load_prompts

    prompts = load_prompts(cfg.prompts, split="test", max_prompts=cfg.eval_max_prompts)
    prompts = [p for p in prompts for _ in range(cfg.eval_samples)]  # a prompt's samples in a row
    result = evaluate_on_env(
        "held_out",
        lm,
        reference,
        env,
        prompts,
        cfg.max_new_tokens,
        cfg.temperature,
        seed,
        second_judge=second_judge,
        batch_size=128,  # the 109 bundled prompts in one generate call: more tokens per second on a CPU
    )
    return {
        "score": result.annotator_scores,
        "second_judge": result.second_judge_scores,
        "kl": result.kl,
        "response_len": result.metrics["response_len"],
    }


def train_and_evaluate(cfg: Config, algo: str, seed: int, kl_target: float, second_judge) -> dict:
    """One run: train ``algo`` to the token budget with the controller aiming at ``kl_target``, then
    evaluate it held out. Returns the ``runs.jsonl`` record."""
    import torch

    import agents
    from agents.callbacks import ProgressBar

    env = cfg.make_env(seed)
    agent = agents.make_agent(
        algo,
        env,
        temperature=cfg.temperature,
        kl_coef=cfg.kl_coef,
        adaptive_kl=True,
        kl_target=kl_target,
        kl_horizon=cfg.kl_horizon,
        seed=seed,
        **cfg.agent_options(algo),
    )
    history = agents.RLHFHistory()
    t0 = time.perf_counter()
    agent.learn(cfg.total_timesteps, callback=[history, ProgressBar()] if cfg.progress else history)
    seconds = time.perf_counter() - t0
    last = history.history[-1]
    t1 = time.perf_counter()
    evaluation = held_out(cfg, agent.policy.lm, agent.policy.reference_model, env, second_judge, seed)
    env.close()
    return {
        "algo": algo,
        "seed": seed,
        "kl_target": kl_target,
        "learning_rate": agent.learning_rate,
        "tokens": int(agent.num_timesteps),
        "rollouts": len(history.history),
        "seconds": round(seconds, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "threads": torch.get_num_threads(),
        "train_score_last": last["rlhf/score"],
        "train_kl_last": last["rlhf/kl"],
        "beta_last": last["rlhf/beta"],
        **evaluation,
    }


def _run_in_process(cfg: Config, algo: str, seed: int, kl_target: float, threads: int) -> dict:
    """:func:`train_and_evaluate` in a worker process of ``--jobs``, with ``threads`` torch threads, no bar."""
    import torch

    from reward_models import make_reward

    torch.set_num_threads(threads)
    cfg.progress = False  # this process's copy: bars of parallel runs would overwrite each other
    return train_and_evaluate(cfg, algo, seed, kl_target, make_reward(cfg.second_judge))


def run_parallel(cfg: Config, plan: list[tuple], on_done) -> None:
    """Train ``plan``'s runs ``cfg.jobs`` at a time, one fresh spawned process per run; ``on_done(record)`` in
    this process as each finishes.

    A failed run stops the queued ones; the runs already going finish and are kept (``on_done``), then the
    first error is raised (a worker that died, e.g. out of memory, as a ``RuntimeError`` saying so).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pool
    error: BaseException | None = None
    with ProcessPoolExecutor(cfg.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_run_in_process, cfg, *run, threads) for run in plan]
        for future in as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is not None:
                error = error or future.exception()
                for queued in futures:
                    queued.cancel()
                continue
            on_done(future.result())
    if isinstance(error, BrokenProcessPool):  # a worker killed from outside, most often by the kernel's OOM killer
        raise RuntimeError(
            f"a --jobs worker process died ({error}); each holds its own models (~6 GB with SmolLM2): run again "
            "with fewer --jobs to resume (the finished runs are kept in runs.jsonl)"
        ) from error
    if error is not None:
        raise error


def reference_record(cfg: Config, second_judge) -> dict:
    """The untrained policy on the held-out prompts: the frontier's origin (KL 0), sampled with seed 0."""
    from textenv import load_model

    env = cfg.make_env(0)
    reference = load_model(cfg.model)
    evaluation = held_out(cfg, reference, reference, env, second_judge, 0)
    env.close()
    return {"algo": "reference", "seed": 0, "kl_target": 0.0, "tokens": 0, "seconds": 0.0, **evaluation}


def heldout_fingerprint(cfg: Config) -> dict:
    """How many held-out prompts there are and a hash of them: a resumed sweep must evaluate on the same ones
    (the bundled test split grew from 34 to 109 prompts once; options alone would not show it)."""
    from textenv import load_prompts

    prompts = load_prompts(cfg.prompts, split="test", max_prompts=cfg.eval_max_prompts)
    digest = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]
    return {"n_prompts": len(prompts), "sha256": digest}


def load_runs(cfg: Config, fingerprint: dict) -> list[dict]:
    """The runs already in ``OUT/runs.jsonl``, after checking that they were made the same way.

    A last line cut short by a kill is dropped (its run is redone); a run recorded twice counts once.

    Raises:
        ValueError: ``OUT`` holds a sweep made with other options or other held-out prompts (a mix would
            compare unlike runs), or a damaged line that is not the last.
    """
    saved, path = cfg.out / "config.json", cfg.out / "runs.jsonl"
    if not path.is_file():
        return []
    theirs = json.loads(saved.read_text()) if saved.is_file() else {}
    diff = _changed_options(theirs, config_to_dict(cfg), fingerprint)
    if diff:
        raise ValueError(
            f"{cfg.out} holds a sweep made with other settings ({', '.join(diff)}); give another --out, or the "
            "same settings to resume it"
        )
    text = path.read_text()
    lines = text.splitlines()
    runs: dict[tuple, dict] = {}
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # only the last line can be cut short by a kill
                raise ValueError(f"{path} line {i + 1} is not JSON; delete that line to resume") from None
            print(f"[frontier] {path}: the last line was cut short by an interruption; its run is redone", flush=True)
            continue
        runs[tuple(record[k] for k in RUN_KEY)] = record  # the last record of a run wins
    # Rewrite before anything is appended: no half line to glue a record onto, no duplicate.
    if len(runs) != len(lines) or not text.endswith("\n"):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in runs.values()))
    bad = [k for k, r in runs.items() if len(r["kl"]) != fingerprint["n_prompts"] * cfg.eval_samples]
    if bad:
        raise ValueError(f"{path}: runs {bad} were evaluated on another number of prompts; give another --out")
    return list(runs.values())


def _changed_options(theirs: dict, mine: dict, fingerprint: dict) -> list[str]:
    """Names of the settings that differ from the saved sweep's, among those that change what a run measures.

    Algorithms, seeds and targets may grow; an algorithm's learning rate and options must match only if it has
    runs already."""
    free = {"algos", "seeds", "kl_targets", "kl_grid", "n_resamples", "out", "tiny", "progress", "jobs", "heldout"}
    per_algo = {"learning_rates", "algo_kwargs"}
    diff = [k for k in (mine.keys() | theirs.keys()) - free - per_algo if mine.get(k) != theirs.get(k)]
    if theirs.get("heldout") != fingerprint:
        diff.append("held-out prompts")
    for key in per_algo:
        for algo in theirs.get("algos", []):
            if theirs.get(key, {}).get(algo) != mine.get(key, {}).get(algo):
                diff.append(f"{key}[{algo}]")
    return sorted(diff)


def append_run(cfg: Config, record: dict) -> None:
    """Append one run to ``runs.jsonl`` (one line, flushed and fsynced: a kill loses at most this run)."""
    with open(cfg.out / "runs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def main(argv: list[str] | None = None) -> dict:
    """Run the sweep's missing runs, then write its outputs; returns the summary (``write_outputs``)."""
    from reward_models import make_reward
    from scripts.frontier_report import write_outputs

    cfg = parse_args(Config, argv)
    second_judge = make_reward(cfg.second_judge)  # a bad judge fails before any training
    fingerprint = heldout_fingerprint(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(cfg, fingerprint)
    saved = {**config_to_dict(cfg), "heldout": fingerprint}
    if runs:  # algorithms, seeds and targets of earlier invocations stay part of the sweep
        old = json.loads((cfg.out / "config.json").read_text())
        for key in ("algos", "seeds", "kl_targets"):
            saved[key] = list(dict.fromkeys([*old[key], *saved[key]]))
        for key in ("learning_rates", "algo_kwargs"):
            saved[key] = {**old[key], **saved[key]}
    atomic_write_text(cfg.out / "config.json", json.dumps(saved, indent=2))
    done = {tuple(r[k] for k in RUN_KEY) for r in runs}
    if ("reference", 0, 0.0) not in done:
        runs.append(reference_record(cfg, second_judge))
        append_run(cfg, runs[-1])
    plan = [(a, s, t) for s in cfg.seeds for t in cfg.kl_targets for a in cfg.algos if (a, s, t) not in done]
    print(f"[frontier] {len(plan)} runs to go ({len(done)} already in {cfg.out / 'runs.jsonl'})", flush=True)
    t0, finished = time.perf_counter(), []

    def on_done(record: dict) -> None:
        finished.append(record)
        runs.append(record)
        append_run(cfg, record)
        row, minutes = write_outputs(cfg, runs)["rows"][-1], (time.perf_counter() - t0) / 60
        print(
            f"[frontier] {len(finished)}/{len(plan)} {record['algo']} seed {record['seed']} target "
            f"{record['kl_target']:g}: held-out KL {row['heldout_kl']:.2f}, score {row['heldout_score']:.3f}, "
            f"{record['seconds']:.0f} + {record['eval_seconds']:.0f} s ({minutes:.1f} min so far)",
            flush=True,
        )

    if cfg.jobs > 1:
        run_parallel(cfg, plan, on_done)
    else:
        for algo, seed, target in plan:
            on_done(train_and_evaluate(cfg, algo, seed, target, second_judge))
    summary = write_outputs(cfg, runs)
    print((cfg.out / "summary.md").read_text())
    return summary


if __name__ == "__main__":
    main()
