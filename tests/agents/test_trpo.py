"""``agents.trpo.LMTRPO`` (one batched backward for the actor gradients) == sb3-contrib's per-tensor TRPO."""

from __future__ import annotations

import copy
import types

import torch
from sb3_contrib import TRPO
from sb3_helpers import small_env_kwargs
from stable_baselines3.common.distributions import kl_divergence

import agents
from agents.trpo import LMTRPO


def _agent(seed: int = 0) -> LMTRPO:
    env = agents.make_vec_text_env(2, seed=seed, **small_env_kwargs(max_new_tokens=4))
    return agents.make_agent("trpo", env, seed=seed, n_steps=4, kl_coef=0.1, cg_max_steps=3)


def _objectives(agent: LMTRPO) -> tuple[torch.Tensor, torch.Tensor]:
    """A KL and a surrogate with non-zero gradients: the old policy is the current one before a nudge."""
    obs = {k: torch.as_tensor(v) for k, v in agent.env.reset().items()}
    actions = torch.tensor([3, 5])
    with torch.no_grad():
        old = copy.copy(agent.policy.get_distribution(obs))
        for name, p in agent.policy.named_parameters():
            if "value" not in name:
                p.add_(0.01 * torch.randn_like(p))
    new = agent.policy.get_distribution(obs)
    ratio = torch.exp(new.log_prob(actions) - old.log_prob(actions))
    return kl_divergence(new, old).mean(), (torch.tensor([1.0, -0.5]) * ratio).mean()


def test_actor_gradients_and_fisher_products_match_sb3_contrib():
    torch.manual_seed(0)
    agent = _agent()
    kl_div, objective = _objectives(agent)
    fast = agent._compute_actor_grad(kl_div, objective)
    naive = TRPO._compute_actor_grad(agent, kl_div, objective)
    assert [id(p) for p in fast[0]] == [id(p) for p in naive[0]]
    assert fast[3] == naive[3]
    assert naive[2].abs().max() > 1e-6 and naive[1].abs().max() > 1e-6  # the comparison is not of zeros
    torch.testing.assert_close(fast[1], naive[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast[2], naive[2], atol=1e-6, rtol=1e-5)
    v = torch.randn_like(fast[2])
    hvp_fast = agent.hessian_vector_product(fast[0], fast[2], v)
    hvp_naive = agent.hessian_vector_product(naive[0], naive[2], v)
    torch.testing.assert_close(hvp_fast, hvp_naive, atol=1e-5, rtol=1e-4)


def test_one_update_matches_sb3_contrib_and_skips_frozen_parameters():
    fast = _agent()
    fast.learn(8)  # one rollout, one TRPO update
    naive = _agent()  # built after fast's update: the constructor reseeds the global RNGs the rollout uses
    naive._compute_actor_grad = types.MethodType(TRPO._compute_actor_grad, naive)
    naive.learn(8)
    for agent in (fast, naive):  # the step was taken (a failed line search would compare two no-ops)
        assert agent.logger.name_to_value["train/is_line_search_success"] == 1.0
    for (name, a), b in zip(fast.policy.state_dict().items(), naive.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)

    frozen = next(p for n, p in fast.policy.named_parameters() if "embed" in n)
    frozen.requires_grad_(False)
    kl_div, objective = _objectives(fast)
    params = fast._compute_actor_grad(kl_div, objective)[0]
    assert all(p is not frozen for p in params) and params
