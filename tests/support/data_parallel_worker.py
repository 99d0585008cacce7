"""One short data-parallel ``learn()`` per algorithm, run by ``torchrun`` from tests/agents/test_data_parallel.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/support/data_parallel_worker.py OUT ALGO...

Plain user code: nothing here knows about ranks except the file names. Each rank writes, per algorithm,
``ALGO-rank{r}.pt``: the weights before and after ``learn()``, the rollout it collected (after advantages),
the ``beta`` that rollout used and ``num_timesteps``.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist

import agents

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway through the second act", "The ending was"]
N_ENVS, MAX_NEW_TOKENS = 4, 6
OPTIONS = {"seed": 0, "n_steps": MAX_NEW_TOKENS, "n_epochs": 2, "batch_size": None, "learning_rate": 1e-3}
"""One rollout of one round, two Adam steps on it; a large learning rate so a wrong reduction shows."""


def make_env():
    return agents.make_vec_text_env(
        n_envs=N_ENVS, model="tiny", prompts=PROMPTS, max_new_tokens=MAX_NEW_TOKENS, max_prompt_tokens=10
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def main(out: Path, algos: list[str]) -> None:
    for algo in algos:
        agent = agents.make_agent(algo, make_env(), **OPTIONS)
        start = snapshot(agent.policy)
        beta = agent.beta
        agent.learn(total_timesteps=1)  # one rollout (every rank's tokens count), then one update
        batch = agent._batch
        torch.save(
            {
                "start": start,
                "end": snapshot(agent.policy),
                "batch": {f.name: getattr(batch, f.name) for f in fields(batch)},
                "beta": beta,
                "num_timesteps": agent.num_timesteps,
                "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            },
            out / f"{algo}-rank{dist.get_rank() if dist.is_initialized() else 0}.pt",
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
