"""Train an LM on TextRLHF-v0 with any registered algorithm: ``--algo ppo|a2c|trpo|maskable_ppo|rlhf_ppo|rloo|...``.

    python -m scripts.train_agent --algo ppo --total-timesteps 2048
    python -m scripts.train_agent --algo maskable_ppo --mask reference --top-k 50

Data parallel with the fast agents (``rlhf_ppo``, ``reinforce``, ``rloo``, ``grpo``, ``reinforce_pp``): the
same command under ``torchrun --nproc_per_node N -m scripts.train_agent ...`` (docs/scaling.md); rank 0
alone writes the run folder.

Metrics go to stdout, ``progress.csv`` and TensorBoard in ``--run-dir`` (``rlhf/score``,
``rlhf/kl``, ``rlhf/beta``, ``rlhf/response_len`` plus SB3's own ``rollout/*`` and ``train/*``); the
agent is saved as ``agent.zip`` (SB3 format, reload with ``PPO.load``...) and the trained LM as a
Hugging Face folder ``model/``. Both are written atomically (temporary path, then rename).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before agents (huggingface_hub reads it once, on import)

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from agents.kl import KLConfig
from scripts.cli import config_to_dict, parse_args


@dataclass
class Config:
    """Train a language model on TextRLHF-v0 with an SB3 / sb3-contrib algorithm."""

    algo: str = "ppo"
    """Algorithm: ppo, a2c, trpo, maskable_ppo, rlhf_ppo, reinforce, rloo, grpo, reinforce_pp
    (agents.available_algorithms())."""
    model: str = "smollm2-135m-instruct"
    """Policy and env model: smollm2-135m-instruct (offline), tiny, a folder or a hub name."""
    reward: str = "sentiment"
    """Reward: sentiment, length, keywords, or the folder of a trained reward model."""
    prompts: str = "bundled:reviews"
    """Prompt source (see textenv.EnvConfig.prompts)."""
    chat_template: bool = False
    """Wrap prompts in the model's chat template."""
    n_envs: int = 8
    """Parallel envs (the policy batches them in one forward with a KV cache)."""
    max_new_tokens: int = 24
    """Response length limit (episode horizon)."""
    max_prompt_tokens: int = 16
    """Prompt budget in tokens."""
    total_timesteps: int = 2048
    """Tokens to generate in total (SB3 timesteps, summed over envs)."""
    n_steps: int | None = None
    """Steps per env per rollout (default 2 x max_new_tokens)."""
    learning_rate: float | None = None
    """Learning rate (default: the algorithm's RLHF default in agents.registry)."""
    algo_kwargs: dict | None = None
    """More options of the algorithm class as JSON, e.g. '{"n_epochs": 1, "batch_size": 192}'."""
    temperature: float = 0.7
    """Sampling temperature (also divides the logits of every log-prob)."""
    kl_coef: float = KLConfig.kl_coef
    """Initial KL coefficient beta."""
    adaptive_kl: bool = KLConfig.adaptive_kl
    """Adaptive beta (Ziegler et al. 2019); --no-adaptive-kl for a fixed one."""
    kl_target: float = KLConfig.kl_target
    """Target summed KL per episode (nats) of the adaptive controller."""
    kl_horizon: float = KLConfig.kl_horizon
    """Horizon of the adaptive controller, in episodes (lower it for short runs: see the pipeline's 128)."""
    kl_estimator: Literal["k1", "k2", "k3"] = KLConfig.kl_estimator
    """KL estimator in the reward (Schulman 2020)."""
    kl_mode: Literal["terminal", "per_token"] = KLConfig.kl_mode
    """Subtract beta*KL summed at the last token, or at every token."""
    mask: Literal["none", "reference"] = "none"
    """maskable_ppo only: 'reference' restricts actions to the reference model's top-k/top-p (NLPO)."""
    top_k: int | None = 50
    """Reference mask: keep the top-k tokens."""
    top_p: float | None = None
    """Reference mask: keep the top-p nucleus."""
    lora_r: int = 0
    """LoRA rank of the policy (0: every weight trains; needs the lora extra). See docs/scaling.md."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute precision of the policy's forwards: fp32, or bf16 autocast over fp32 weights."""
    seed: int = 0
    """Random seed (envs, policy sampling, minibatch order)."""
    threads: int | None = None
    """torch threads (default: torch's choice)."""
    run_dir: Path = Path("runs/agent")
    """Where progress.csv, TensorBoard events, agent.zip and model/ go."""
    export: bool = True
    """Also export the trained LM with save_pretrained to run_dir/model."""

    def __post_init__(self) -> None:
        import agents

        valid = agents.available_algorithms()
        if self.algo.lower() not in valid and self.algo.lower() not in ("nlpo", "maskableppo", "ppo_mask"):
            raise ValueError(f"unknown --algo {self.algo!r}; valid: {valid}")
        if self.mask == "reference" and "mask" not in self.algo.lower() and self.algo.lower() != "nlpo":
            raise ValueError("--mask reference needs --algo maskable_ppo (other algorithms ignore action masks)")
        for name in ("n_envs", "max_new_tokens", "max_prompt_tokens", "total_timesteps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lora_r < 0:
            raise ValueError(f"--lora-r must be >= 0 (0: no LoRA), got {self.lora_r}")
        self.kl_options()  # checks the KL flags at start-up

    def kl_options(self) -> dict:
        """The KL flags as :class:`agents.kl.KLConfig` keyword arguments (checked by it)."""
        return asdict(KLConfig(**{f.name: getattr(self, f.name) for f in fields(KLConfig)}))


def main(argv: list[str] | None = None) -> dict:
    """Run the training; returns the last ``rlhf/*`` stats."""
    cfg = parse_args(Config, argv)
    import torch
    from stable_baselines3.common.logger import configure

    import agents
    from agents.distributed import is_main_process

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.run_dir)
    main_rank = is_main_process()  # False only on ranks 1.. of a torchrun / accelerate launch
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))

    mask_kwargs = {"top_k": cfg.top_k, "top_p": cfg.top_p} if cfg.mask == "reference" else None
    env = agents.make_vec_text_env(
        cfg.n_envs,
        seed=cfg.seed,
        mask=None if cfg.mask == "none" else cfg.mask,
        mask_kwargs=mask_kwargs,
        model=cfg.model,
        reward=cfg.reward,
        prompts=cfg.prompts,
        chat_template=cfg.chat_template,
        max_new_tokens=cfg.max_new_tokens,
        max_prompt_tokens=cfg.max_prompt_tokens,
    )
    options = {**cfg.kl_options(), "seed": cfg.seed, "verbose": 0}  # --algo-kwargs may still override a KL option
    if cfg.n_steps is not None:
        options["n_steps"] = cfg.n_steps
    if cfg.learning_rate is not None:
        options["learning_rate"] = cfg.learning_rate
    options.update(cfg.algo_kwargs or {})
    policy_kwargs = {"lora_r": cfg.lora_r, "precision": cfg.precision, **options.pop("policy_kwargs", {})}
    agent = agents.make_agent(cfg.algo, env, temperature=cfg.temperature, policy_kwargs=policy_kwargs, **options)
    if main_rank:  # elsewhere the agent's logger records without writing
        agent.set_logger(configure(str(out), ["stdout", "csv", "tensorboard"]))
    history = agents.RLHFHistory()
    start = time.time()
    agent.learn(cfg.total_timesteps, log_interval=1, callback=history)
    elapsed = time.time() - start
    stats = {k: v for k, v in history.last.items() if k.startswith("rlhf/")}
    if not main_rank:
        return stats

    tmp = out / "agent.tmp.zip"
    agent.save(tmp)
    os.replace(tmp, out / "agent.zip")  # atomic: an interrupted save never leaves a broken agent.zip
    if cfg.export:
        agent.policy.save_pretrained(out / "model")
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 1),
                "tokens_per_s": round(agent.num_timesteps / elapsed, 1),
                **{k: round(v, 4) for k, v in stats.items()},
            }
        )
    )
    return stats


if __name__ == "__main__":
    main()
