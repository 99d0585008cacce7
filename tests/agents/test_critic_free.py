"""Critic-free agents (agents/critic_free.py): estimators by hand, the REINFORCE gradient, learning."""

import numpy as np
import pytest
import torch
from learning_sweep import assert_learns

import agents
from agents.critic_free import CriticFreePG, aggregate, group_advantages, reward_to_go
from agents.losses import masked_whiten
from agents.policy import LMActorCriticPolicy
from agents.rollout import collect_round

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway through the second act"]


def test_rloo_and_grpo_advantages_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    rloo = group_advantages(r, groups, "rloo")
    expected = [1 - (2 + 6) / 2, 2 - (1 + 6) / 2, 6 - (1 + 2) / 2, 0 - 1.5, 0 - 1.5, 3 - 0]
    torch.testing.assert_close(rloo, torch.tensor(expected))
    grpo = group_advantages(r, groups, "grpo")
    g0 = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(grpo[:3], (g0 - 3.0) / (g0.std() + 1e-4))
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(r[:1], np.array([0]), "rloo")


def test_reinforce_pp_reward_to_go_and_global_normalisation():
    rewards = torch.tensor([[0.0, -0.1, -0.2, 1.0], [0.0, 0.0, -0.3, 2.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    g = reward_to_go(rewards, mask)
    torch.testing.assert_close(g[0], torch.tensor([0.0, 0.7, 0.8, 1.0]))
    torch.testing.assert_close(g[1], torch.tensor([1.7, 1.7, 1.7, 2.0]))
    w = masked_whiten(g, mask)
    assert float((w * mask).sum() / mask.sum()) == pytest.approx(0.0, abs=1e-6)


def test_aggregations():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    assert float(aggregate(x, m, "sequence_sum")) == pytest.approx((6 + 4) / 2)
    assert float(aggregate(x, m, "sequence_mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(x, m, "token_mean")) == pytest.approx(10 / 4)


def _env(n_envs=2, **kw):
    kw.setdefault("reward", "sentiment")
    return agents.make_vec_text_env(
        n_envs=n_envs, model="tiny", prompts=PROMPTS, max_new_tokens=5, max_prompt_tokens=10, **kw
    )


def test_reinforce_gradient_equals_the_hand_written_score_function_gradient():
    env = _env(n_envs=3, reward=lambda p, r: float(len(r)) / 10)
    agent = CriticFreePG(
        LMActorCriticPolicy,
        env,
        estimator="reinforce",
        baseline=False,
        kl_coef=0.0,
        adaptive_kl=False,
        policy_kwargs={"model": "tiny"},
        seed=0,
    )
    from stable_baselines3.common.logger import configure

    agent.set_logger(configure(None, []))  # _finish_batch logs rlhf/*; learn() would set this up
    # A float64 trunk: in float32 the two gradient sums (one teacher-forced forward vs one window per token)
    # differ by rounding alone up to 4e-5 on the embedding rows; in float64 by < 1e-6, so the test sees the maths.
    agent.policy.lm.double()
    agent.policy.set_training_mode(False)
    env.reset()
    batch, _ = collect_round(agent.policy, env)
    batch.extras["group"] = np.arange(batch.n)
    agent._finish_batch(batch)
    params = [p for p in agent.policy.parameters() if p.requires_grad]
    agent.policy.set_training_mode(True)
    loss, _ = agent.minibatch_loss(batch, torch.arange(batch.n), clip_range=0.2)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    # Hand-written: grad J = mean_i R_i * sum_t grad log pi(a_it | s_it), one episode and token at a time.
    hand = [torch.zeros_like(p) for p in params]
    for i in range(batch.n):
        for j in np.flatnonzero(batch.mask[i].numpy()):
            pos = batch.input_ids.shape[1] - batch.horizon + j
            ids, mask = batch.input_ids[i : i + 1, :pos], batch.attention_mask[i : i + 1, :pos]
            dist = agent.policy.get_distribution({"input_ids": ids.float(), "attention_mask": mask.float()})
            logp = dist.log_prob(batch.input_ids[i, pos][None]).sum()
            g = torch.autograd.grad(logp, params, allow_unused=True)
            for h, gi in zip(hand, g):
                if gi is not None:
                    h -= float(batch.scores[i]) * gi / batch.n
    for (name, _), g, h in zip([(n, p) for n, p in agent.policy.named_parameters() if p.requires_grad], grads, hand):
        if g is None:
            assert float(h.abs().max()) == 0.0, name
            continue
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-3, msg=name)


def test_groups_share_prompts_through_the_env():
    env = agents.make_vec_text_env(
        n_envs=4,
        model="tiny",
        prompts="bundled:reviews",
        max_new_tokens=3,
        max_prompt_tokens=24,
        reward="sentiment",
        seed=0,
    )
    agent = CriticFreePG(
        LMActorCriticPolicy, env, estimator="grpo", group_size=2, policy_kwargs={"model": "tiny"}, seed=0
    )
    env.reset()
    batch, _ = collect_round(agent.policy, env, group_size=2)
    assert batch.prompts[0] == batch.prompts[1] and batch.prompts[2] == batch.prompts[3]
    with pytest.raises(ValueError, match="multiple of group_size"):
        CriticFreePG(
            LMActorCriticPolicy, _env(n_envs=3), estimator="rloo", group_size=2, policy_kwargs={"model": "tiny"}
        )
    with pytest.raises(ValueError, match="unknown estimator"):
        CriticFreePG(LMActorCriticPolicy, env, estimator="ppo", policy_kwargs={"model": "tiny"})


def test_critic_free_agents_have_no_value_head_in_policy_optimizer_or_zip(tmp_path):
    import zipfile

    agent = agents.make_agent("rloo", _env(n_envs=2), group_size=2, seed=0)
    assert agent.policy.value_head is None
    names = [n for n, _ in agent.policy.named_parameters()]
    assert names and not any("value" in n for n in names)
    in_optimizer = {id(p) for group in agent.policy.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in agent.policy.parameters()}  # every optimised tensor is an LM one
    agent.learn(1)  # one round and one update: no critic appears on the way
    agent.save(tmp_path / "rloo.zip")
    with zipfile.ZipFile(tmp_path / "rloo.zip") as archive:
        state = torch.load(archive.open("policy.pth"), weights_only=True)
        optimizer = torch.load(archive.open("policy.optimizer.pth"), weights_only=True)
    assert state and not any("value" in k for k in state if k != "kl_beta")
    n_params = len(list(agent.policy.parameters()))
    assert len(optimizer["param_groups"][0]["params"]) == n_params and len(optimizer["state"]) <= n_params
    loaded = CriticFreePG.load(tmp_path / "rloo.zip")
    assert loaded.policy.value_head is None and not any("value" in n for n, _ in loaded.policy.named_parameters())
    with pytest.raises(ValueError, match="no value head"):
        CriticFreePG(
            LMActorCriticPolicy, _env(n_envs=2), group_size=2, policy_kwargs={"model": "tiny", "value_head": True}
        )


@pytest.mark.parametrize("estimator", ["reinforce", "rloo", "grpo", "reinforce_pp"])
def test_each_estimator_learns_the_rule_reward(estimator):
    """The task of tests/support/learning_sweep.py (fraction of ' yes' tokens), against its swept threshold."""
    assert_learns(estimator)
