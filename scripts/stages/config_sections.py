"""The pipeline's config sections: one dataclass per stage, each validated when built.

Each section is a YAML section and a group of flags (``scripts/stages/config.py`` layers them,
``scripts/stages/config_cli.py`` parses them); field docstrings are the ``--help``.

Every section validates itself when built (``__post_init__``): each value must match its field's
type (``seed: abc`` in a YAML file is rejected; an integer is accepted for a float) and its rule in
``RULES`` (``--rl.n-envs 0``, ``--temperature 0``), so a bad option stops the pipeline at start-up
with the flag / YAML key to fix, before any stage has run.

Library defaults. The reward-model and RL sections keep flat fields (flags and YAML keys), but a field
that is also a field of a library config (:class:`reward_models.config.RewardModelConfig`,
:class:`reward_models.config.RewardTrainingConfig`, :class:`agents.kl.KLConfig`) takes its default from
there; where the pipeline needs another value, the field's default is written here and
:data:`LIBRARY_OVERRIDES` names it with its reason (``tests/scripts/test_config_defaults.py`` checks
both directions, so neither a silent drift nor a stale override survives).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agents.kl import KLConfig
from reward_models.annotator import AnnotatorConfig
from reward_models.config import RewardModelConfig, RewardTrainingConfig
from scripts.field_types import check_field_types

DEFAULT_ALGO = "rlhf_ppo"
"""Default ``--algo``: the fast sequence-level PPO (``agents/rlhf_ppo.py``, docs/design.md section 4)."""

Rule = tuple[str, Callable[[Any], bool]]
COUNT: Rule = ("an integer >= 1", lambda v: v >= 1)
POSITIVE: Rule = ("a finite number > 0", lambda v: 0 < v < math.inf)
NON_NEGATIVE: Rule = ("a finite number >= 0", lambda v: 0 <= v < math.inf)
FRACTION: Rule = ("a number in [0, 1]", lambda v: 0 <= v <= 1)
NON_EMPTY: Rule = ("a non-empty string", lambda v: bool(v.strip()))


def fix_hint(section: str, name: str) -> str:
    """Where a value comes from: its flag and its YAML key (the fix part of config error messages)."""
    flag = "--" + (name if section == "run" else f"{section}.{name}").replace("_", "-")
    return f"set {flag} or key {name!r} of section {section!r} in the YAML config"


LIBRARY_OVERRIDES: dict[tuple[str, str], str] = {
    (
        "reward_model",
        "logging_steps",
    ): "train_log.csv is the report's reward-model loss plot; the default run takes ~120 optimiser steps "
    "(~630 pairs / 16 x 3 epochs), which the library's 10 would draw as 12 points",
    (
        "rl",
        "kl_coef",
    ): "the pipeline's reward is the normalised reward model (std 1 on SFT samples, ~2.5x the spread of "
    "VADER, for which docs/design.md section 5 measured 0.05); at 0.1 session 1's run gained all its "
    "RM score in 4 rollouts, then drifted to 15 nats of KL; docs/results/2026-11-22-pipeline-default-run.md used 0.2",
    (
        "rl",
        "kl_horizon",
    ): "the horizon counts episodes: the library's 10000 is lm-human-preferences' for ~10^6-episode runs, "
    "and never moved beta in the default run's ~600-800 episodes; 128 lets beta move up to ~5% per "
    "32-episode rollout (docs/results/2026-11-22-pipeline-default-run.md: beta 0.20 -> 0.37)",
    (
        "rl",
        "kl_target",
    ): "the held-out KL lands above the last rollouts' target-steered KL; with two Adam steps per rollout a "
    "target of 5 kept the held-out KL under the project's bound of 10 nats over 3 seeds "
    "(docs/results/2026-12-01-rl-defaults.md)",
}
"""``{(section, field): reason}``: the defaults of this module that differ, on purpose, from the library
config field of the same name (:class:`reward_models.config.RewardModelConfig`,
:class:`reward_models.config.RewardTrainingConfig`, :class:`agents.kl.KLConfig`); every other such
field takes the library's default."""


class _Section:
    """Start-up validation of a config section: field types, then ``RULES`` (``{field: (rule, check)}``).

    A bad value fails here, before any stage runs, not hours later inside a stage (``--rl.n-envs 0``
    used to surface only after SFT, preferences and the reward model had been trained). ``None`` is
    not checked against a rule: it means "the default" wherever a field is ``Optional``.
    """

    SECTION: ClassVar[str] = ""
    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        check_field_types(self, f"{self.SECTION}.", hint=lambda name: fix_hint(self.SECTION, name))
        for name, (rule, ok) in self.RULES.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ValueError(f"{self.SECTION}.{name} must be {rule}, got {value!r}; {fix_hint(self.SECTION, name)}")


def _valid_seeds(seeds: list[int]) -> bool:
    return not seeds or (len(seeds) >= 2 and len(set(seeds)) == len(seeds) and min(seeds) >= 0)


@dataclass
class RunConfig(_Section):
    """Settings shared by every stage."""

    SECTION: ClassVar[str] = "run"
    RULES: ClassVar[dict[str, Rule]] = {
        "run_dir": NON_EMPTY,
        "seed": ("an integer >= 0", lambda v: v >= 0),
        "algo": NON_EMPTY,
        "model": NON_EMPTY,
        "annotator": NON_EMPTY,
        "max_new_tokens": COUNT,
        "max_prompt_tokens": COUNT,
        "temperature": POSITIVE,
        "threads": COUNT,
        "stages": ("a non-empty list of stage names", bool),
        "seeds": ("no seed or at least 2 distinct seeds >= 0 (one run: --seed)", lambda v: _valid_seeds(v)),
    }

    run_dir: str = "runs/default"
    """Run directory (config, checkpoints, metrics, plots, report)."""
    stages: list[str] = field(
        default_factory=lambda: ["sft", "preferences", "reward-model", "rl", "evaluate"], metadata={"metavar": "STAGE"}
    )
    """Stages to run, in pipeline order: sft preferences reward-model rl evaluate (also comma-separated)."""
    resume: bool = False
    """Delete temporaries of a killed run, skip finished stages and continue RL from its last checkpoint."""
    tiny: bool = False
    """Preset for tests: tiny random model, a handful of prompts/pairs/steps, tiny RM backbone (seconds)."""
    seed: int = 0
    """Seed of every stage (sampling, data order, initialisations)."""
    seeds: list[int] = field(default_factory=list)
    """Run the whole pipeline once per seed (e.g. --seeds 0 1 2), each in RUN_DIR/seed-N, then write
    RUN_DIR/aggregate.md and aggregate.json (every headline number per seed and its mean with a 95% interval) and
    RUN_DIR/sweep.json. Empty: one run."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for training and sampling: auto picks cuda when available."""
    algo: str = DEFAULT_ALGO
    """RL algorithm: any name in agents.available_algorithms()."""
    model: str = "smollm2-135m-instruct"
    """Base model: "smollm2-135m-instruct" (offline), "tiny", a local folder or a hub name."""
    annotator: str = "sentiment"
    """Simulated annotator (a reward spec): labels the pairs and judges the evaluation; RL never sees it."""
    max_new_tokens: int = 24
    """Response length limit in tokens (the RL horizon), for sampling in every stage."""
    max_prompt_tokens: int = 32
    """Prompt budget in tokens (longer prompts lose their first tokens)."""
    temperature: float = 0.7
    """Policy sampling temperature in RL and evaluation (also divides every log-prob)."""
    threads: int | None = None
    """torch CPU threads (none = torch's default)."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class SFTConfig(_Section):
    """Supervised fine-tuning on demonstrations (InstructGPT step 1)."""

    SECTION: ClassVar[str] = "sft"
    RULES: ClassVar[dict[str, Rule]] = {
        "data": NON_EMPTY,
        "best_of_n": COUNT,
        "best_of_n_temperature": POSITIVE,
        "max_examples": COUNT,
        "epochs": POSITIVE,
        "learning_rate": POSITIVE,
        "batch_size": COUNT,
        "warmup_ratio": FRACTION,
        "weight_decay": NON_NEGATIVE,
        "max_response_tokens": COUNT,
    }

    data: str = "bundled"
    """Demonstrations: "bundled" (textrlhf/data/demonstrations.jsonl), "best_of_n" (the annotator picks among
    samples of the base model), a .jsonl/.json/.csv file or a hub dataset."""
    prompt_column: str = "prompt"
    """Prompt column of a user file or hub dataset."""
    response_column: str = "response"
    """Response column of a user file or hub dataset."""
    split: str = "train"
    """Split of a hub dataset."""
    best_of_n: int = 4
    """With data=best_of_n: samples per train prompt; the annotator's favourite becomes the demonstration."""
    best_of_n_temperature: float = 1.0
    """With data=best_of_n: sampling temperature."""
    max_examples: int | None = None
    """Use only the first N demonstrations (none = all)."""
    epochs: float = 1.0
    """Passes over the demonstrations. One pass at 2e-5 teaches the review style and leaves RL room:
    held-out VADER 0.23 (base) -> 0.43; two passes at 5e-5 reached 0.83, near VADER's ceiling, and RL
    then had nothing left to win (session 1 run: RL vs SFT win rate 0.44)."""
    learning_rate: float = 2e-5
    """AdamW learning rate (linear decay)."""
    batch_size: int = 8
    """Demonstrations per optimiser step."""
    warmup_ratio: float = 0.1
    """Share of steps with linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    append_eos: bool = True
    """End each response with EOS, so the policy learns to stop."""
    max_response_tokens: int = 64
    """Response tokens kept per demonstration."""
    skip: bool = False
    """No fine-tuning: the SFT model is the base model (saved as is)."""


@dataclass
class PreferencesConfig(_Section):
    """Preference pairs sampled from the SFT policy and labelled by the annotator (InstructGPT step 2)."""

    SECTION: ClassVar[str] = "preferences"
    RULES: ClassVar[dict[str, Rule]] = {
        "max_prompts": COUNT,
        "samples_per_prompt": ("an integer >= 2 (a pair needs two responses)", lambda v: v >= 2),
        "temperature": POSITIVE,
        "noise_temperature": NON_NEGATIVE,
        "min_gap": NON_NEGATIVE,
        "batch_size": COUNT,
    }

    data: str | None = None
    """Use this preference file / hub dataset instead of sampling (none = sample and label)."""
    max_prompts: int | None = None
    """Train review prompts used (none = all)."""
    samples_per_prompt: int = 4
    """Responses sampled per prompt (K); all K(K-1)/2 pairs are labelled."""
    temperature: float = 1.0
    """Sampling temperature of the SFT policy for pairs."""
    noise_temperature: float = 0.0
    """Annotator noise: a wins with probability sigmoid((s_a - s_b) / T); 0 = no noise."""
    min_gap: float = 0.3
    """Skip pairs whose annotator scores differ by at most this (near-ties are label noise)."""
    batch_size: int = AnnotatorConfig.batch_size
    """Sequences per generate() call (the annotator library's default)."""
    precision: Literal["auto", "fp32", "bf16"] = AnnotatorConfig.precision
    """SFT weights' dtype while sampling pairs: fp32, bf16, or auto (bf16 where the device multiplies it natively:
    AMX or AVX-512 BF16 CPUs, CUDA). bf16 samples 1.6x faster on an AMX CPU; its pairs differ (docs/pipeline.md)."""


@dataclass
class RewardModelStageConfig(_Section):
    """Bradley-Terry reward model trained on the pairs (InstructGPT step 2)."""

    SECTION: ClassVar[str] = "reward_model"
    RULES: ClassVar[dict[str, Rule]] = {
        "backbone": NON_EMPTY,
        "max_length": COUNT,
        "eval_fraction": ("a number in [0, 1)", lambda v: 0 <= v < 1),
        "learning_rate": POSITIVE,
        "num_epochs": POSITIVE,
        "batch_size": COUNT,
        "warmup_ratio": FRACTION,
        "logging_steps": COUNT,
    }

    backbone: str = RewardModelConfig.backbone
    """Backbone: "minilm" (offline all-MiniLM-L6-v2), "tiny", "smollm2-135m-instruct", a folder or a hub name."""
    pooling: Literal["auto", "mean", "last", "cls"] = RewardModelConfig.pooling
    """Hidden state read by the head: auto, mean, last or cls."""
    max_length: int = RewardModelConfig.max_length
    """Tokens of prompt + response kept (the bundled prompts and responses stay far below it)."""
    random_init: bool = RewardModelConfig.random_init
    """Random backbone weights from its config (tests)."""
    config_overrides: dict = field(default_factory=dict)
    """Backbone config overrides, e.g. {"num_hidden_layers": 2, "hidden_size": 32} (with random_init)."""
    eval_fraction: float = 0.15
    """Share of prompts held out for accuracy (split by prompt)."""
    learning_rate: float = RewardTrainingConfig.learning_rate
    """AdamW learning rate (the reward-model library's default, measured on the sentiment pairs)."""
    num_epochs: float = RewardTrainingConfig.num_epochs
    """Passes over the training pairs."""
    batch_size: int = RewardTrainingConfig.batch_size
    """Pairs per optimiser step."""
    warmup_ratio: float = RewardTrainingConfig.warmup_ratio
    """Share of steps with linear warm-up."""
    logging_steps: int = 5  # a named override: LIBRARY_OVERRIDES
    """Log the training loss every this many steps (the loss plot's resolution)."""
    normalize: bool = True
    """Fit gain/bias so SFT-policy samples score mean 0, std 1 (Stiennon et al. 2020)."""


@dataclass
class RLConfig(_Section):
    """RL fine-tuning against the reward model with a KL penalty to the SFT model (InstructGPT step 3)."""

    SECTION: ClassVar[str] = "rl"
    RULES: ClassVar[dict[str, Rule]] = {
        "total_timesteps": COUNT,
        "rollouts": COUNT,
        "n_envs": COUNT,
        "n_steps": COUNT,
        "batch_size": COUNT,
        "n_epochs": COUNT,
        "learning_rate": POSITIVE,
        "kl_coef": NON_NEGATIVE,
        "kl_target": POSITIVE,
        "kl_horizon": POSITIVE,
        "prompts": NON_EMPTY,
        "max_prompts": COUNT,
        "no_eos_penalty": ("a finite number", math.isfinite),
        "checkpoint_every": COUNT,
        "lora_r": ("an integer >= 0", lambda v: v >= 0),
    }

    total_timesteps: int = 13824
    """Environment steps (= generated tokens) in total: 18 rollouts of 32 episodes x 24 tokens."""
    rollouts: int | None = 15
    """Stop after this many rollouts (each with its update) even if ``total_timesteps`` is not reached; none = no
    cap. A rollout's cost falls far less than its token count (lock-step generation runs to the longest of the
    answers, the update pads to it): on the 3-seed run (docs/results/2026-12-01-pipeline-seeds.md) rollouts of
    237 to 320 tokens took 13.7 to 14.3 s, so when RL shortens the answers a token budget alone buys more
    rollouts (seed 1: 59 instead of 44, 811 s). With today's learning rate and batch the answers stay ~20
    tokens. 15 rollouts of 32 episodes are the 480 episodes of the earlier 30 of 16."""
    n_envs: int = 32
    """Parallel environments (episodes per rollout round). 32 rather than 16 for the same 480 episodes: a batch of
    32 generates more tokens per second, and half the rollouts save half the checkpoints; over 3 seeds the RL
    stage took 262 s instead of 293 s with the same win rate (0.80 against 0.81;
    docs/results/2026-12-02-rl-rollouts-of-32.md)."""
    n_steps: int | None = None
    """Steps (tokens) per env per rollout (none = the algorithm's default)."""
    batch_size: int | None = 8
    """Minibatch size (none = the algorithm's default). The fast agents (rlhf_ppo, the critic-free ones) count
    episodes: 8 makes four Adam steps of each 32-episode rollout for the same forward+backward work; with the
    learning rate below it lifted the 3-seed win rate from 0.65 to 0.79 (docs/results/2026-12-01-rl-defaults.md).
    The SB3-path algorithms (ppo, a2c, trpo, maskable_ppo) count transitions: give them a larger one (e.g. 64)."""
    n_epochs: int | None = 1
    """Optimisation epochs per rollout (none = the algorithm's default). One pass keeps a CPU run in
    budget: an epoch is a forward+backward over every episode, the most expensive part (docs/design.md section 4)."""
    learning_rate: float | None = 5e-5
    """Learning rate (none = the algorithm's RLHF default). docs/design.md section 5 measured that one Adam step
    per batch at 1e-4 moves SmolLM2's sentiment in minutes on this CPU, and 1e-5 does not. With two steps per
    rollout, 1e-4 let the KL run to 12-13 nats on seed 0 (a beta starting twice as high did not hold it); 5e-5
    kept it under the target and gained more (docs/results/2026-12-01-rl-defaults.md)."""
    kl_coef: float = 0.2  # a named override: LIBRARY_OVERRIDES
    """Initial KL coefficient beta (the normalised reward-model score has std 1, about 2.5x VADER's).
    At 0.1 the session-1 run gained all its RM score in 4 rollouts, then drifted to 15 nats of KL."""
    adaptive_kl: bool = KLConfig.adaptive_kl
    """Adaptive beta (Ziegler et al. 2019) instead of a fixed one."""
    kl_target: float = 5.0  # a named override: LIBRARY_OVERRIDES
    """Target summed KL per episode, nats (adaptive controller). The held-out KL lands above the rollouts' (the
    last rollouts drift), so 5 keeps it under the 10 nats the project holds RL to."""
    kl_horizon: float = 128.0  # a named override: LIBRARY_OVERRIDES
    """Adaptive controller horizon, episodes. Ziegler et al. use 10000 over ~10^6 episodes; this run has
    ~500, so a horizon of 10000 never moved beta; 128 lets it change up to 5% per 32-episode rollout."""
    algo_kwargs: dict = field(default_factory=dict)
    """More algorithm options as JSON, e.g. {"clip_range": 0.1}."""
    prompts: str = "bundled:reviews"
    """Training prompts (the train split of this source)."""
    max_prompts: int | None = None
    """Keep only the first N training prompts."""
    no_eos_penalty: float = 0.0
    """Added to the score of responses that hit the length limit without EOS."""
    checkpoint_every: int = 10
    """Save the resume state (rl/checkpoint/: weights, Adam state, counters; atomically) every this many rollouts,
    and at the end. SmolLM2 + Adam is ~1.6 GB, ~5.5 s a save on this CPU: every 5 rollouts of 16 episodes cost 10%
    of the RL stage (docs/results/2026-12-01-pipeline-profile.md); every 10 rollouts of 32 (~17 s each), a kill
    loses at most ~3 minutes."""
    lora_r: int = 0
    """LoRA rank of the policy (0: every weight trains). With r > 0 only rank-r adapters train, the KL reference is
    the SFT model with the adapters off (no second copy), and rl/policy is exported merged (needs the lora extra)."""


@dataclass
class EvaluateConfig(_Section):
    """Base, SFT and RL policies on the held-out test prompts."""

    SECTION: ClassVar[str] = "evaluate"
    RULES: ClassVar[dict[str, Rule]] = {
        "prompts": NON_EMPTY,
        "max_prompts": ("an integer >= 2 (the intervals resample prompts)", lambda v: v >= 2),
        "samples_per_prompt": COUNT,
        "batch_size": COUNT,
        "samples_in_report": ("an integer >= 0", lambda v: v >= 0),
        "second_judge": NON_EMPTY,
        "n_resamples": ("an integer >= 100", lambda v: v >= 100),
    }

    prompts: str = "bundled:reviews"
    """Held-out prompts (the test split of this source: 109 bundled review prompts)."""
    max_prompts: int | None = None
    """Evaluate on the first N test prompts (none = all)."""
    samples_per_prompt: int = 1
    """Responses per held-out prompt and policy. One: the intervals resample prompts, and 109 prompts x 1 cost what
    34 x 3 did while varying what is measured more."""
    batch_size: int = 64
    """Prompts per generate() call (and per teacher-forced forward). 64 rather than 16: on 2 CPU cores a
    larger batch generates more tokens per second (docs/results/2026-12-01-pipeline-profile.md)."""
    samples_in_report: int = 10
    """Rows of the samples table shown in report.md (the CSV has all)."""
    second_judge: str = "pattern_sentiment"
    """A second judge that no stage sees, reported beside the annotator (a reward spec: pattern_sentiment is
    TextBlob's lexicon, independent of VADER's; docs/reward-models.md)."""
    n_resamples: int = 2000
    """Bootstrap resamples (over prompts) of the 95% intervals in metrics.json and report.md (the reward-model
    stage uses it too, for its held-out accuracy's interval)."""
