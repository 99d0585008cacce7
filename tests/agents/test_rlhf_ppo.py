"""The fast sequence-level PPO agent (agents/rlhf_ppo.py, agents/rollout.py)."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import agents
from agents.kl import kl_estimate
from agents.losses import gae
from agents.policy import LMActorCriticPolicy
from agents.rlhf_ppo import RLHFPPO
from agents.rollout import collect_round, sequence_forward

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway through the second act"]


def make_env(n_envs=3, max_new_tokens=6, **kw):
    kw.setdefault("reward", "sentiment")
    return agents.make_vec_text_env(
        n_envs=n_envs, model="tiny", prompts=PROMPTS, max_new_tokens=max_new_tokens, max_prompt_tokens=10, **kw
    )


def make_agent(env, **kw):
    return RLHFPPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, seed=0, **kw)


def test_rollout_logprobs_and_values_equal_the_update_forward_before_any_step():
    env = make_env()
    agent = make_agent(env)
    agent.policy.set_training_mode(False)
    env.reset()
    torch.manual_seed(0)
    batch, _ = collect_round(agent.policy, env)
    agent.policy.set_training_mode(True)
    logp, values, _ = sequence_forward(agent.policy, batch.input_ids, batch.attention_mask, batch.horizon)
    m = batch.mask.bool()
    ratio = torch.exp(logp[m] - batch.logp[m])
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
    torch.testing.assert_close(values[m], batch.values[m], atol=1e-5, rtol=0)


def test_kv_cached_rollout_logits_match_full_window_forwards():
    """Each rollout log-prob equals a full forward of the env's observation at that step."""
    env = make_env(n_envs=2, max_new_tokens=5)
    agent = make_agent(env)
    agent.policy.set_training_mode(False)
    env.reset()
    batch, _ = collect_round(agent.policy, env)
    T = batch.horizon
    for row in range(batch.n):
        ids, mask = batch.input_ids[row], batch.attention_mask[row]
        for j in np.flatnonzero(batch.mask[row].numpy()):
            pos = ids.shape[0] - T + j  # the token's position in the final window
            window_ids = torch.cat([torch.full((T - j,), 0), ids[:pos]])[None]  # the env's obs before it
            window_mask = torch.cat([torch.zeros(T - j, dtype=torch.long), mask[:pos]])[None]
            with torch.no_grad():
                dist = agent.policy.get_distribution(
                    {"input_ids": window_ids.float(), "attention_mask": window_mask.float()}
                )
                expected = dist.log_prob(ids[pos][None])
            assert float(batch.logp[row, j]) == pytest.approx(float(expected), abs=1e-4)


def test_env_is_the_source_of_truth_for_episode_end_and_reward():
    env = make_env(n_envs=3, max_new_tokens=4, reward="length", reward_kwargs={"target": 2})
    agent = make_agent(env)
    env.reset()
    batch, _ = collect_round(agent.policy, env)
    from reward_models import make_reward

    scores = make_reward("length", target=2).score(batch.prompts, batch.responses)
    np.testing.assert_allclose(batch.scores.numpy(), scores, atol=1e-6)
    assert (batch.lengths >= 1).all() and (batch.lengths <= 4).all()


def test_shaped_rewards_and_returns_by_hand():
    env = make_env()
    agent = make_agent(env, kl_coef=0.1, adaptive_kl=False)
    agent.learn(1)  # one rollout (and one update)
    b = agent._batch
    kl = (kl_estimate(b.logp, b.ref_logp, "k1") * b.mask).sum(-1)
    total = b.rewards.sum(-1)
    torch.testing.assert_close(total, b.scores - 0.1 * kl, atol=1e-5, rtol=0)
    adv, ret = gae(b.rewards, b.values, b.mask, 1.0, 0.95)
    torch.testing.assert_close(b.advantages, adv)
    torch.testing.assert_close(ret, (adv + b.values) * b.mask)


def test_same_seed_same_learning_and_save_load_round_trip(tmp_path):
    def run():
        env = make_env()
        agent = make_agent(env, n_epochs=1)
        agent.learn(36)
        return agent, env

    a, env = run()
    b, _ = run()
    assert torch.equal(a._batch.input_ids, b._batch.input_ids)
    for (name, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb), name
    a.save(tmp_path / "agent.zip")
    loaded = RLHFPPO.load(tmp_path / "agent.zip", env=env)
    assert loaded.beta == a.beta and loaded.num_timesteps == a.num_timesteps
    for pa, pb in zip(a.policy.parameters(), loaded.policy.parameters()):
        assert torch.equal(pa, pb)
    obs = env.reset()
    torch.manual_seed(1)
    act_a, _ = a.predict(obs)
    torch.manual_seed(1)
    act_b, _ = loaded.predict(obs)
    np.testing.assert_array_equal(act_a, act_b)


def test_constructor_errors():
    env = make_env(n_envs=2)
    with pytest.raises(ValueError, match="kl_estimator"):
        make_agent(env, kl_estimator="k4")
    with pytest.raises(ValueError, match="kl_mode"):
        make_agent(env, kl_mode="sometimes")
    with pytest.raises(ValueError, match="batch_size counts episodes"):
        make_agent(env, batch_size=0)
    with pytest.raises(TypeError, match="VecEnv"):
        make_agent(env.vector_env)  # a Gymnasium VectorEnv, not an SB3 VecEnv


def test_fast_agent_learns_the_rule_reward_like_generic_ppo():
    """Same task as tests/agents/test_learning.py (tests/support/learning_sweep.py), against its swept threshold."""
    from learning_sweep import assert_learns

    assert_learns("rlhf_ppo")


def test_the_adaptive_kl_controller_is_saved_and_restored_by_load(tmp_path):
    """beta has one home, the controller's store in the policy: what the agent uses, saves and loads."""
    from agents.kl import AdaptiveKLController

    env = make_env()
    agent = make_agent(env, n_epochs=1, kl_coef=0.2, kl_target=0.01, kl_horizon=3.0)
    agent.learn(36)  # two rollouts: the controller moves beta twice
    controller = agent.kl_controller
    assert isinstance(controller, AdaptiveKLController) and controller.value != 0.2
    assert agent.beta == controller.value == float(agent.policy.kl_beta)
    agent.save(tmp_path / "agent.zip")
    loaded = RLHFPPO.load(tmp_path / "agent.zip", env=env)
    assert loaded.beta == agent.beta
    assert repr(loaded.kl_controller) == repr(controller)  # same type, beta, target and horizon
    history = agents.RLHFHistory()
    loaded.learn(18, reset_num_timesteps=False, callback=history)
    assert history.history[0]["rlhf/beta"] == agent.beta  # the resumed rollout used the restored beta, not kl_coef
    assert loaded.beta == float(loaded.policy.kl_beta) != agent.beta  # and its update moved it, in the policy


class _StopLateInRollout2(BaseCallback):
    """Stop ``learn`` at rollout 2's 6th lock-step step, when its episodes (6 tokens at most) have ended."""

    def __init__(self):
        super().__init__()
        self.started = self.steps = 0

    def _on_rollout_start(self) -> None:
        self.started, self.steps = self.started + 1, 0

    def _on_step(self) -> bool:
        self.steps += 1
        return self.started < 2 or (self.started == 2 and self.steps < 6)


def test_a_rollout_stopped_by_a_callback_is_dropped_without_a_kl_controller_step():
    """learn() stopped at rollout 2's last step leaves the agent as one rollout + update leaves it (SB3 drops a
    stopped rollout: no update, and here no KL controller step or rollout metrics either)."""
    one = make_agent(make_env(), adaptive_kl=True, kl_coef=0.2, kl_target=0.5, n_epochs=1)
    one.learn(1)  # exactly one rollout and its update
    stopped = make_agent(make_env(), adaptive_kl=True, kl_coef=0.2, kl_target=0.5, n_epochs=1)
    stopped.learn(10_000, callback=_StopLateInRollout2())
    assert stopped._n_updates == one._n_updates > 0
    assert stopped.policy.kl_beta == one.policy.kl_beta != 0.2  # kl_coef: the controller moved once, not twice
    for a, b in zip(one.policy.parameters(), stopped.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
