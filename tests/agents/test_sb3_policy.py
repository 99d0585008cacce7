"""LMActorCriticPolicy inside SB3: exact log-probs, exact KV cache, dropout, masks, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_helpers import PROMPTS, small_env_kwargs
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import agents
from textrlhf.lm import trunk_hidden


def _rollout(agent, n_steps=None):
    """Run SB3's own collect_rollouts once."""
    _, callback = agent._setup_learn(10_000, None)
    agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, n_steps or agent.n_steps)
    return agent.rollout_buffer


def _flat_obs(buf):
    return {k: torch.as_tensor(v.reshape(-1, v.shape[-1])) for k, v in buf.observations.items()}


def test_rollout_logprobs_equal_evaluate_actions_and_kl_is_zero_before_any_update():
    env = agents.make_vec_text_env(3, seed=0, **small_env_kwargs())
    agent = agents.make_agent("ppo", env, seed=0, n_steps=10)
    buf = _rollout(agent)
    assert agent.policy._runner.stats["incremental"] > 0  # the rollout really used the KV cache
    agent.policy.set_training_mode(True)  # what PPO.train() does first
    values, logp, entropy = agent.policy.evaluate_actions(_flat_obs(buf), torch.as_tensor(buf.actions.reshape(-1)))
    assert logp.requires_grad
    old = torch.as_tensor(buf.log_probs.reshape(-1))
    torch.testing.assert_close(logp.detach(), old, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.exp(logp.detach() - old), torch.ones_like(old), atol=1e-5, rtol=0)
    torch.testing.assert_close(values.detach().flatten(), torch.as_tensor(buf.values.reshape(-1)), atol=1e-6, rtol=0)
    # Same weights as the reference: the summed KL of every finished episode is 0.
    stats = buf.last_stats
    assert stats["rlhf/episodes"] >= 3
    assert abs(stats["rlhf/kl"]) < 1e-4


def _mixed_envs():
    # Same window length L = 14, different horizons, so episodes end (and reset) at different steps.
    def make(p, n):
        return lambda: Monitor(
            gym.make(
                "TextRLHF-v0", model="tiny", prompts=PROMPTS, reward="length", max_prompt_tokens=p, max_new_tokens=n
            )
        )

    return DummyVecEnv([make(10, 4), make(8, 6), make(11, 3)])


def test_kv_cached_logits_equal_full_forward_with_resets_and_batch_changes():
    env = _mixed_envs()
    env.seed(0)
    agent = agents.make_agent("ppo", env, seed=0, model="tiny", n_steps=8)
    policy = agent.policy
    policy.set_training_mode(False)
    obs = env.reset()
    torch.manual_seed(0)
    for step in range(20):
        o = {k: torch.as_tensor(v) for k, v in obs.items()}
        if step == 9:  # a different batch (one env) in the middle: exact fallback, then back
            sub = {k: v[:1] for k, v in o.items()}
            with torch.no_grad():
                got = policy.get_distribution(sub).distribution.logits
            full = policy.action_logits(
                trunk_hidden(policy.lm.base_model, sub["input_ids"], sub["attention_mask"])[:, -1]
            )
            torch.testing.assert_close(got, torch.log_softmax(full, -1), atol=1e-4, rtol=0)
        with torch.no_grad():
            actions, _, _ = policy(o)
            cached = policy.get_distribution(o).distribution.logits  # (n_envs, V), repeat of the same window
            full = policy.action_logits(trunk_hidden(policy.lm.base_model, o["input_ids"], o["attention_mask"])[:, -1])
        torch.testing.assert_close(cached, torch.log_softmax(full, -1), atol=1e-4, rtol=0)
        obs, _, dones, _ = env.step(actions.numpy())
        if step == 13:
            obs = env.reset()  # an explicit reset of every env
    stats = policy._runner.stats
    assert stats["incremental"] > 0 and stats["full"] > 0 and stats["repeat"] > 0


def test_dropout_stays_off_after_set_training_mode():
    env = agents.make_vec_text_env(2, seed=0, **small_env_kwargs())
    agent = agents.make_agent("a2c", env, seed=0, n_steps=6)
    policy = agent.policy
    for layer in policy.lm.base_model.layers:
        layer.self_attn.attention_dropout = 0.9  # would change every forward if dropout were on
    policy.set_training_mode(True)
    assert policy.training
    assert not any(m.training for m in policy.modules() if m is not policy)
    obs = {k: torch.as_tensor(v) for k, v in env.reset().items()}
    acts = torch.zeros(2, dtype=torch.long)
    a = policy.evaluate_actions(obs, acts)[1]
    b = policy.evaluate_actions(obs, acts)[1]
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_reference_is_outside_state_dict_optimizer_and_trpo_split():
    env = agents.make_vec_text_env(2, seed=0, **small_env_kwargs())
    agent = agents.make_agent("trpo", env, seed=0, n_steps=6)
    policy = agent.policy
    ref_params = {id(p) for p in policy.reference_model.parameters()}
    assert not ref_params & {id(p) for p in policy.parameters()}
    assert not any(k.startswith("_reference") for k in policy.state_dict())
    critic = [n for n, _ in policy.named_parameters() if "value" in n]
    assert critic == ["value_head.weight", "value_head.bias"]
    assert torch.all(policy.value_head.weight == 0)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo"])
def test_save_load_round_trip_generates_the_same_tokens(algo, tmp_path):
    from sb3_contrib import TRPO, MaskablePPO
    from stable_baselines3 import A2C, PPO

    cls = {"ppo": PPO, "a2c": A2C, "trpo": TRPO, "maskable_ppo": MaskablePPO}[algo]
    env = agents.make_vec_text_env(2, seed=0, **small_env_kwargs(max_new_tokens=4))
    agent = agents.make_agent(algo, env, seed=0, n_steps=4, learning_rate=1e-3, kl_coef=0.2)
    if algo == "ppo":
        agent.learn(8)  # one update: the weights differ from the model name's
    agent.save(tmp_path / "agent.zip")
    loaded = cls.load(tmp_path / "agent.zip", env=env)
    for k, v in agent.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[k], v, atol=0, rtol=0)
    assert loaded.policy.kl_beta.item() == pytest.approx(agent.policy.kl_beta.item())
    obs = env.reset()
    kwargs = {"action_masks": np.stack(env.env_method("action_masks"))} if algo == "maskable_ppo" else {}
    outs = []
    for model in (agent, loaded):
        torch.manual_seed(123)
        outs.append([model.predict(obs, deterministic=False, **kwargs)[0] for _ in range(3)])
    np.testing.assert_array_equal(np.array(outs[0]), np.array(outs[1]))
    if algo == "ppo":
        agent.policy.save_pretrained(tmp_path / "hf")
        from textrlhf.models import load_model

        exported = load_model(str(tmp_path / "hf"))
        ids = torch.as_tensor(obs["input_ids"])
        with torch.no_grad():
            a = exported(input_ids=ids[:, -3:]).logits
            b = agent.policy.lm(input_ids=ids[:, -3:]).logits
        torch.testing.assert_close(a, b)


def test_same_seed_same_actions():
    runs = []
    for _ in range(2):
        env = agents.make_vec_text_env(2, seed=0, **small_env_kwargs(max_new_tokens=4))
        agent = agents.make_agent("ppo", env, seed=0, n_steps=4, learning_rate=1e-3, n_epochs=1)
        agent.learn(16)
        runs.append((agent.rollout_buffer.actions.copy(), agent.policy.value_head.weight.detach().clone()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1], atol=0, rtol=0)


def test_reference_masks_never_empty_and_masked_distribution_is_exact():
    env = agents.make_vec_text_env(
        2, seed=0, mask="reference", mask_kwargs={"top_k": 5, "top_p": 0.5}, **small_env_kwargs()
    )
    agent = agents.make_agent("maskable_ppo", env, seed=0, n_steps=6)
    obs = env.reset()
    for _ in range(8):
        masks = np.stack(env.env_method("action_masks"))  # (n_envs, V)
        assert masks.any(-1).all() and (masks.sum(-1) <= 5).all()
        o = {k: torch.as_tensor(v) for k, v in obs.items()}
        with torch.no_grad():
            dist = agent.policy.get_distribution(o, action_masks=masks)
            probs = dist.distribution.probs
        assert torch.all(probs[~torch.as_tensor(masks)] == 0)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2))
        actions, _ = agent.predict(obs, action_masks=masks)
        assert masks[np.arange(2), actions].all()
        obs, *_ = env.step(actions)
    # top_k=1 / tiny top_p still leave exactly one valid action
    from agents.masking import reference_mask

    allowed = np.ones(50, dtype=bool)
    allowed[:10] = False
    for k, p in ((1, None), (None, 1e-9)):
        m = reference_mask(torch.randn(50), allowed, top_k=k, top_p=p)
        assert m.sum() == 1 and not m[:10].any()


def test_registry_errors():
    env = agents.make_vec_text_env(1, seed=0, **small_env_kwargs())
    with pytest.raises(ValueError, match="valid"):
        agents.make_agent("dqn", env)
    with pytest.raises(ValueError, match="RecurrentPPO"):
        agents.make_agent("recurrent_ppo", env)
    with pytest.raises(TypeError, match="learning_rte"):
        agents.make_agent("ppo", env, learning_rte=1e-3)
    with pytest.raises(TypeError, match="net_arch"):
        agents.make_agent("ppo", env, policy_kwargs={"net_arch": [64]})


def test_value_head_false_builds_no_critic_and_ppo_still_runs(tmp_path):
    from stable_baselines3 import PPO

    from agents.rollout import collect_round, sequence_forward

    env = agents.make_vec_text_env(2, seed=0, **small_env_kwargs(max_new_tokens=4))
    agent = agents.make_agent("ppo", env, seed=0, n_steps=4, policy_kwargs={"value_head": False})
    policy = agent.policy
    assert policy.value_head is None and not policy.has_value_head
    assert not [n for n, _ in policy.named_parameters() if "value" in n]
    assert not [k for k in policy.state_dict() if "value_head" in k]
    lm_params = {id(p) for p in policy.lm.parameters()}
    opt_params = {id(p) for g in policy.optimizer.param_groups for p in g["params"]}
    assert opt_params == lm_params  # nothing of a value head in the optimizer
    obs = {k: torch.as_tensor(v) for k, v in env.reset().items()}
    with torch.no_grad():
        assert torch.equal(policy.predict_values(obs), torch.zeros(2, 1))
        _, values, _ = policy(obs)
    assert torch.equal(values, torch.zeros(2, 1))
    agent.learn(8)  # SB3's PPO update runs with constant zero values
    batch, _ = collect_round(policy, env)
    assert torch.equal(batch.values, torch.zeros_like(batch.values))
    _, seq_values, _ = sequence_forward(policy, batch.input_ids, batch.attention_mask, batch.horizon)
    assert torch.equal(seq_values, torch.zeros_like(seq_values))
    agent.save(tmp_path / "agent.zip")
    loaded = PPO.load(tmp_path / "agent.zip", env=env)
    assert loaded.policy.value_head is None
    policy.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf" / "value_head.pt").exists()
    with pytest.raises(ValueError, match="value_head=True"):
        agents.make_agent("ppo", env, policy_kwargs={"value_head": False, "value_model": "tiny"})
    from agents.lm_model import NoValueHeadError

    policy.set_training_mode(True)  # what TRPO's critic fit does: predict_values with gradients
    with pytest.raises(NoValueHeadError, match="value_head"):
        policy.predict_values(obs)


def test_reference_logprobs_are_the_same_in_any_ref_batch_size_and_bad_sizes_fail():
    from agents.rollout import collect_round

    env = agents.make_vec_text_env(5, seed=0, **small_env_kwargs(max_new_tokens=4))
    agent = agents.make_agent("rlhf_ppo", env, seed=0)
    policy = agent.policy
    assert policy.ref_batch_size == 32  # the default: a rollout of up to 32 rows in one forward
    batch, _ = collect_round(policy, env)
    args = (batch.input_ids, batch.attention_mask, batch.response_mask)
    whole = policy.reference_logprobs(*args)  # (5, L): one forward of the 5 rows
    assert whole[batch.response_mask].lt(0).all() and whole[~batch.response_mask].eq(0).all()
    for rows in (1, 2, 4):  # chunks of 1, 2 and 4 rows (the last one shorter)
        policy.ref_batch_size = rows
        torch.testing.assert_close(policy.reference_logprobs(*args), whole, atol=1e-5, rtol=0)
    for bad in (0, -1, True, 2.5, "8"):
        with pytest.raises(ValueError, match="ref_batch_size must be a positive int"):
            agents.make_agent("rlhf_ppo", env, seed=0, policy_kwargs={"ref_batch_size": bad})
