"""The common task of a comparison between RL algorithms: what ``compare_agents`` and ``frontier`` share.

A fair comparison trains every algorithm on one env (model, reward, prompts, horizon), samples at one
temperature and scores the held-out answers with the same judges; only the algorithm and its own options
change. :class:`AlgoTask` holds those settings once; each script's ``Config`` extends it (dataclass
inheritance keeps the flags flat: ``--model``, ``--n-envs``...) with its budget and what it sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AlgoTask:
    """One RLHF task for every algorithm of a comparison, and the per-algorithm options."""

    algos: list[str] = field(default_factory=lambda: ["rlhf_ppo", "rloo", "grpo"])
    """Algorithms to compare (names of agents.available_algorithms()); comma-separated items are split."""
    model: str = "smollm2-135m-instruct"
    """Policy (and reference) model: smollm2-135m-instruct (offline), tiny, a folder or a hub name."""
    reward: str = "sentiment"
    """Reward of the env and the held-out score: sentiment (VADER), length, keywords, or a reward-model folder."""
    second_judge: str = "pattern_sentiment"
    """A judge no run trains on, scored beside the reward on the held-out answers (docs/reward-models.md)."""
    prompts: str = "bundled:reviews"
    """Prompt source: training uses its train split, the held-out evaluation its test split."""
    n_envs: int = 16
    """Episodes per rollout (a multiple of the group agents' group size, 4)."""
    max_new_tokens: int = 24
    """Response length limit (episode horizon)."""
    max_prompt_tokens: int = 32
    """Prompt budget in tokens."""
    temperature: float = 0.7
    """Sampling temperature of rollouts, log-probs and the held-out evaluation."""
    learning_rates: dict = field(default_factory=dict)
    """Per-algorithm learning rates as JSON, e.g. '{"grpo": 2e-4}' (default: the registry's)."""
    algo_kwargs: dict = field(default_factory=dict)
    """Per-algorithm extra options as JSON, e.g. '{"rlhf_ppo": {"n_epochs": 2}}'."""

    def __post_init__(self) -> None:
        import agents

        self.algos = [a.strip().lower() for item in self.algos for a in str(item).split(",") if a.strip()]
        valid = agents.available_algorithms()
        bad = [a for a in self.algos if a not in valid]
        if bad or not self.algos:
            raise ValueError(f"unknown algorithm(s) {bad or '(none given)'} in --algos; choose from {valid}")
        for name in ("n_envs", "max_new_tokens", "max_prompt_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        unknown = sorted((set(self.learning_rates) | set(self.algo_kwargs)) - set(valid))
        if unknown:
            raise ValueError(f"--learning-rates/--algo-kwargs name unknown algorithms {unknown}; choose from {valid}")

    def make_env(self, seed: int):
        """The common env (train split of ``prompts``): the same for every algorithm of a seed."""
        import agents

        return agents.make_vec_text_env(
            self.n_envs,
            seed=seed,
            model=self.model,
            reward=self.reward,
            prompts=self.prompts,
            prompt_split="train",
            max_new_tokens=self.max_new_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
        )

    def agent_options(self, algo: str) -> dict:
        """``algo``'s own options for :func:`agents.make_agent`: its ``algo_kwargs``, and its learning rate."""
        options = dict(self.algo_kwargs.get(algo, {}))
        if algo in self.learning_rates:
            options["learning_rate"] = float(self.learning_rates[algo])
        return options
