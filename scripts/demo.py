"""Demo rollout: the real SmolLM2-135M-Instruct answers a few prompts through ``TextRLHF-v0``.

Runs offline on a CPU in well under a minute (after the one-off ~20 s model conversion):

    python -m scripts.demo --n-prompts 5 --seed 0

Every token goes through ``env.step``: the model reads the observation (left-padded token
context), samples the next token at ``temperature``, and the env appends it, ends the episode at
EOS or ``max_new_tokens`` and returns the reward-model score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import textenv  # registers TextRLHF-v0
from scripts.cli import parse_args
from textrlhf.models import load_model


@dataclass
class Config:
    """Demo rollout: the real SmolLM2-135M-Instruct answers a few prompts through TextRLHF-v0."""

    model: str = textenv.OFFLINE_MODEL
    """Policy model: smollm2-135m-instruct (offline), tiny, a folder or a hub name."""
    reward: str = "sentiment"
    """Reward name (sentiment, length, keywords) or the folder of a trained reward model."""
    n_prompts: int = 5
    """Number of episodes to show."""
    max_new_tokens: int = 24
    """Response length limit in tokens."""
    temperature: float = 0.7
    """Sampling temperature."""
    seed: int = 0
    """Seed for prompts and sampling."""


@torch.no_grad()
def sample_token(model, obs: dict, temperature: float, generator: torch.Generator) -> int:
    """Sample the next token from ``model`` given one observation (full forward, no cache)."""
    input_ids = torch.as_tensor(obs["input_ids"]).long()[None]  # (1, L)
    mask = torch.as_tensor(obs["attention_mask"]).long()[None]  # (1, L)
    position_ids = (mask.cumsum(-1) - mask).clamp(min=0)  # left padding: real tokens start at 0
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits[0, -1]
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Config, argv)

    t0 = time.perf_counter()
    env = gym.make("TextRLHF-v0", model=args.model, reward=args.reward, max_new_tokens=args.max_new_tokens)
    model = load_model(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"TextRLHF-v0: model={args.model} reward={args.reward} "
        f"obs={env.observation_space['input_ids'].shape} actions={env.action_space}\n"
    )
    scores = []
    for i in range(args.n_prompts):
        obs, info = env.reset(seed=args.seed + i)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(sample_token(model, obs, args.temperature, generator))
        scores.append(info["score"])
        end = "max tokens" if info["hit_max_tokens"] else "EOS"
        print(
            f"[{i}] prompt:   {info['prompt']}\n    response: {info['response'].strip()!r}\n"
            f"    reward:   {info['score']:+.3f}  ({len(info['response_tokens'])} tokens, ended at {end})\n"
        )
    print(f"mean reward {np.mean(scores):+.3f} over {len(scores)} episodes, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
