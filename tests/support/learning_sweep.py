"""Every "it learns" test's task as a function of the seed, and the seed sweep that sets its threshold.

A learning test must not flip when a library release changes the floating-point stream (a new
release is, for a seeded run, just another seed). So each learning test runs its learner here on
its seeds (``Learner.seeds``) and asserts that the **median** outcome clears the learner's threshold, and each
threshold was picked from a sweep over at least 8 seeds, written next to it in ``LEARNERS``.
Rerun the sweep after changing a task, a budget or a default the learners use::

    make sweep                              # every learner, seeds 0-7
    make sweep ARGS="ppo rloo --seeds 12"   # some learners, seeds 0-11

Outcomes:

* RL learners (rule reward: 8 response tokens from {" yes", " no", " cat", " dog"}, reward = fraction
  of " yes"; the untrained, near-uniform policy scores ~0.25): the *gain*, mean rollout score of the
  last two rollouts minus that of the first (untrained) rollout. A rollout mean over 64 tokens has a
  std of ~0.05 under the untrained policy, so a gain's std is ~0.06 without learning. Without learning,
  one seed exceeds 0.15 with probability ~0.007 and 0.1 with ~0.05; the median of 3 seeds exceeds
  0.1 with ~0.007 (thresholds of 0.1 are used with 3 seeds, or where one seed's sweep is far above).
* ``reward_model``: the held-out accuracy of the tiny Bradley-Terry model on the synthetic
  "contains 'excellent'" pairs (``tests/reward_models/conftest.py``).
* ``course_ex5``: the course's reference RLOO (``course/solutions/ex5_rloo.py``) under the grader's
  ex5 config: held-out score after minus before.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

TESTS = Path(__file__).resolve().parents[1]

TEST_SEEDS = (0, 1, 2)
"""Seeds a learning test runs unless its learner says otherwise; it asserts on the median outcome."""


def rollout_gain(history: Sequence[float]) -> float:
    """Mean score of the last two rollouts minus the first rollout's (the untrained policy's)."""
    return float(np.mean(history[-2:]) - history[0])


# ------------------------------------------------------------------------------------ learners
SB3_SETTINGS = {
    "ppo": dict(learning_rate=1e-2, n_epochs=2, batch_size=64),
    "a2c": dict(learning_rate=1e-2),
    # TRPO's step has a fixed KL size whatever the gradient's noise, so it needs a less noisy gradient than
    # PPO: 8 envs (16 episodes a rollout; with 4 envs, 3 of 8 seeds gained < 0.1). A larger trust region
    # than the RLHF default and a short CG, which did better than 10 CG steps in the sweep (median 0.227).
    "trpo": dict(target_kl=0.1, n_critic_updates=1, cg_max_steps=3, line_search_max_iter=5, learning_rate=1e-2),
    "maskable_ppo": dict(learning_rate=1e-2, n_epochs=2, batch_size=64),
}
"""SB3-path settings for a ~5-rollout budget of 64 transitions each. Learning rates are far above the LM
defaults because the tiny random model must move in 5 updates."""

SB3_BUDGET = {"trpo": (8, 6)}
"""``(n_envs, rollouts)`` of an SB3-path learner, 16 steps per env per rollout (``(4, 5)`` unless listed)."""

CRITIC_FREE_LR = {"reinforce": 5e-3, "rloo": 1e-2, "grpo": 1e-2, "reinforce_pp": 4e-2}
"""Per-token averaging (GRPO's 1/|o|, REINFORCE++'s token mean) divides the step by up to |o| = 8 tokens
compared with the sequence sums of REINFORCE/RLOO, so their learning rates are scaled up to match."""


def _word_ids() -> list[int]:
    from sb3_helpers import WORDS

    from textrlhf.models import load_tokenizer

    tok = load_tokenizer("tiny")
    return [tok(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]


@functools.cache
def sb3_history(algo: str, seed: int) -> tuple[float, ...]:
    """Rollout scores of an SB3-path algorithm (16 steps a rollout per env; envs and rollouts: SB3_BUDGET).

    Cached: a pure function of ``(algo, seed)``, so a test comparing two learners reuses another test's run."""
    from sb3_helpers import ScoreRecorder, small_env_kwargs, target_fraction

    import agents

    n_envs, rollouts = SB3_BUDGET.get(algo, (4, 5))
    word_ids = _word_ids()
    kw = small_env_kwargs(reward=target_fraction, max_new_tokens=8)
    if algo == "maskable_ppo":  # the vocabulary is restricted by an action mask ...
        env = agents.make_vec_text_env(n_envs, seed=seed, mask="subset", mask_kwargs={"token_ids": word_ids}, **kw)
        policy_kwargs = {}
    else:  # ... or by the policy, so the sampled, stored and optimised distributions are the same
        env = agents.make_vec_text_env(n_envs, seed=seed, **kw)
        policy_kwargs = {"allowed_tokens": word_ids}
    agent = agents.make_agent(
        algo,
        env,
        seed=seed,
        temperature=1.0,
        policy_kwargs=policy_kwargs,
        kl_coef=0.0,
        adaptive_kl=False,
        n_steps=16,
        **SB3_SETTINGS[algo],
    )
    rec = ScoreRecorder()
    agent.learn(16 * n_envs * rollouts, callback=rec)
    return tuple(h["rlhf/score"] for h in rec.history)


def sequence_history(algo: str, seed: int) -> list[float]:
    """Rollout scores of a fast sequence-level agent (8 envs, 8 rollouts, 2 epochs a batch)."""
    from sb3_helpers import BatchScoreRecorder, small_env_kwargs, target_fraction

    import agents
    from agents.critic_free import CriticFreePG
    from agents.policy import LMActorCriticPolicy
    from agents.rlhf_ppo import RLHFPPO

    env = agents.make_vec_text_env(8, seed=seed, **small_env_kwargs(reward=target_fraction, max_new_tokens=8))
    policy_kwargs = {"model": "tiny", "allowed_tokens": _word_ids(), "temperature": 1.0}
    common = dict(n_epochs=2, kl_coef=0.0, adaptive_kl=False, seed=seed, policy_kwargs=policy_kwargs)
    if algo == "rlhf_ppo":
        # lr 1e-2 over 6 rollouts failed 2 of 8 seeds (session 2): too large a step for a 64-token batch.
        agent = RLHFPPO(LMActorCriticPolicy, env, learning_rate=5e-3, **common)
    else:
        agent = CriticFreePG(LMActorCriticPolicy, env, estimator=algo, learning_rate=CRITIC_FREE_LR[algo], **common)
    rec = BatchScoreRecorder()
    agent.learn(8 * 8 * 8, callback=rec)
    return rec.history


def _rm_fixtures():
    """``tests/reward_models/conftest.py`` as a module (its synthetic pairs and tiny backbone)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rm_fixtures", TESTS / "reward_models" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reward_model_accuracy(seed: int) -> float:
    """Held-out accuracy of the tiny Bradley-Terry model (the ``trained_model`` fixture's recipe)."""
    from reward_models import train_reward_model

    synthetic_pairs, tiny_model = _rm_fixtures().synthetic_pairs, _rm_fixtures().tiny_model

    pairs = synthetic_pairs(200, seed=seed)
    metrics = train_reward_model(
        tiny_model(seed=seed),
        pairs[:160],
        pairs[160:],
        {"learning_rate": 3e-3, "num_epochs": 3, "batch_size": 16, "progress_bar": False, "seed": seed},
    )
    return float(metrics["eval_accuracy"])


def minilm_reward_model_accuracy(seed: int) -> float:
    """Held-out accuracy of the real offline MiniLM reward model after one epoch on 32 synthetic pairs."""
    from reward_models import BradleyTerryRewardModel, train_reward_model

    pairs = _rm_fixtures().synthetic_pairs(48, seed=seed)
    model = BradleyTerryRewardModel.build(max_length=32, seed=seed)
    metrics = train_reward_model(
        model,
        pairs[:32],
        pairs[32:],
        {"learning_rate": 1e-4, "num_epochs": 1, "batch_size": 8, "progress_bar": False, "seed": seed},
    )
    return float(metrics["eval_accuracy"])


def course_ex5_gain(seed: int) -> float:
    """The reference RLOO of the course under the grader's ex5 config: held-out score after - before."""
    from course.scaffold import TrainConfig
    from course.solutions.ex5_rloo import train

    cfg = TrainConfig.preset(
        "tiny", iterations=8, n_prompts=4, group_size=4, eval_prompts=8, max_new_tokens=8, seed=seed
    )
    out = train(cfg, verbose=False)
    return float(out["after"]["score"] - out["before"]["score"])


@dataclass(frozen=True)
class Learner:
    """One learning test's outcome as a function of the seed, and the bar its test asserts."""

    run: Callable[[int], float]
    threshold: float
    sweep: str
    """The sweep that set ``threshold``: min / median / max over seeds 0-7 (2026-11-30, transformers 5.24)."""
    seeds: tuple[int, ...] = TEST_SEEDS
    """Seeds the test runs. One seed where the sweep's min is at least twice the threshold; the median of
    three where a seed of the sweep came near the threshold or stalled."""


def _rl(kind: Callable[[str, int], list[float]], algo: str) -> Callable[[int], float]:
    return lambda seed: rollout_gain(kind(algo, seed))


# The sweep: `make sweep`, 2026-11-30,
# constraints.txt (transformers 5.24.0, torch 2.13.0).
LEARNERS: dict[str, Learner] = {
    "ppo": Learner(_rl(sb3_history, "ppo"), 0.1, "min 0.148 / median 0.434 / max 0.766; 2 of 8 below 0.2"),
    # Masking and allowed_tokens give the same distribution and the same random stream: same gains as PPO.
    "maskable_ppo": Learner(
        _rl(sb3_history, "maskable_ppo"), 0.1, "min 0.148 / median 0.434 / max 0.766; 2 of 8 below 0.2"
    ),
    "a2c": Learner(_rl(sb3_history, "a2c"), 0.1, "min 0.211 / median 0.445 / max 0.609", seeds=(0,)),
    # 8 envs x 6 rollouts (SB3_BUDGET). Per seed 0-7: 0.531 0.555 0.277 0.535 0.324 0.309 0.367 0.578.
    "trpo": Learner(_rl(sb3_history, "trpo"), 0.1, "min 0.277 / median 0.449 / max 0.578", seeds=(0,)),
    "rlhf_ppo": Learner(_rl(sequence_history, "rlhf_ppo"), 0.15, "min 0.297 / median 0.492 / max 0.719", seeds=(0,)),
    "reinforce": Learner(_rl(sequence_history, "reinforce"), 0.15, "min 0.344 / median 0.535 / max 0.703", seeds=(0,)),
    "rloo": Learner(_rl(sequence_history, "rloo"), 0.1, "min 0.227 / median 0.723 / max 0.797", seeds=(0,)),
    # GRPO stalls on some seeds (seed 5: +0.062): all rewards of a group equal, zero advantages.
    "grpo": Learner(_rl(sequence_history, "grpo"), 0.15, "min 0.062 / median 0.730 / max 0.781; 1 of 8 stalls"),
    # Seed 0 gains 0.195 under transformers 5.24 (0.54 under 5.23): the single-seed test that flipped.
    "reinforce_pp": Learner(
        _rl(sequence_history, "reinforce_pp"), 0.15, "min 0.195 / median 0.688 / max 0.812; 1 of 8 below 0.2"
    ),
    "reward_model": Learner(reward_model_accuracy, 0.9, "accuracy 1.0 on all 8 seeds", seeds=(0,)),
    "minilm_reward_model": Learner(minilm_reward_model_accuracy, 0.75, "accuracy 1.0 on all 8 seeds", seeds=(0,)),
    "course_ex5": Learner(course_ex5_gain, 0.15, "min 0.430 / median 0.535 / max 0.892", seeds=(0,)),
}


def median_outcome(name: str) -> tuple[float, list[float]]:
    """Run learner ``name`` on its test seeds; return the median outcome and every seed's."""
    outcomes = [LEARNERS[name].run(seed) for seed in LEARNERS[name].seeds]
    return float(np.median(outcomes)), outcomes


def assert_learns(name: str) -> None:
    """The learning tests' assertion: the median outcome of learner ``name`` over its seeds beats its threshold."""
    learner = LEARNERS[name]
    median, outcomes = median_outcome(name)
    assert median > learner.threshold, (
        f"{name} did not learn: outcomes {np.round(outcomes, 3).tolist()} on seeds {learner.seeds}, median "
        f"{median:.3f} <= {learner.threshold} (sweep over seeds 0-7: {learner.sweep})"
    )


def main(argv: list[str] | None = None) -> int:
    """Print each learner's outcome per seed with min / median / max (the numbers ``LEARNERS`` quotes)."""
    parser = argparse.ArgumentParser(prog="make sweep ARGS=", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "learners", nargs="*", metavar="LEARNER", help=f"which learners (default: all): {', '.join(LEARNERS)}"
    )
    parser.add_argument("--seeds", type=int, default=8, help="sweep N seeds (default 8)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed of the sweep (default 0)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.learners) - set(LEARNERS))
    if unknown:
        parser.error(f"unknown learner(s) {unknown}; choose from {list(LEARNERS)}")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    for name in args.learners or list(LEARNERS):
        start = time.perf_counter()
        outcomes = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            outcomes.append(LEARNERS[name].run(seed))
            print(f"  {name} seed {seed}: {outcomes[-1]:+.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        o = np.array(outcomes)
        below = int((o <= LEARNERS[name].threshold).sum())
        print(
            f"{name:13s} min {o.min():+.3f} median {np.median(o):+.3f} max {o.max():+.3f} "
            f"| at or below {LEARNERS[name].threshold}: {below}/{len(o)} | per seed {np.round(o, 3).tolist()} "
            f"| {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
