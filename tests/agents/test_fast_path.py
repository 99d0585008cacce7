"""What makes the fast agents fast, checked for exactness: the sampler, batched episode-end scoring,
dropped padding columns, the fused optimizer (agents/rollout.py, textenv/vector_env.py)."""

import numpy as np
import torch

import agents
from agents.kl import reference_logprobs
from agents.policy import LMActorCriticPolicy
from agents.rlhf_ppo import RLHFPPO
from agents.rollout import collect_round, sequence_forward
from textrlhf.lm import sample_tokens

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway"]


def test_sample_tokens_draws_from_the_softmax_and_never_a_masked_token():
    torch.manual_seed(0)
    logits = torch.randn(3, 40)
    logits[:, ::3] = -1e8  # masked, as restrict_logits does
    tokens, logp = sample_tokens(logits.repeat_interleave(40000, 0))
    probs = torch.softmax(logits, -1)
    for row in range(3):
        freq = torch.bincount(tokens[row * 40000 : (row + 1) * 40000], minlength=40) / 40000
        # binomial std of a frequency is at most 0.5 / sqrt(40000) = 0.0025: 0.012 is ~5 std
        torch.testing.assert_close(freq, probs[row], atol=0.012, rtol=0)
        assert freq[::3].sum() == 0
    expected = torch.log_softmax(logits, -1).repeat_interleave(40000, 0).gather(-1, tokens[:, None])[:, 0]
    torch.testing.assert_close(logp, expected)


def test_sample_tokens_is_seeded_by_torch():
    logits = torch.randn(4, 100)
    torch.manual_seed(3)
    a, _ = sample_tokens(logits)
    torch.manual_seed(3)
    b, _ = sample_tokens(logits)
    assert torch.equal(a, b)


def _env(n=3, **kw):
    return agents.make_vec_text_env(
        n_envs=n,
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=5,
        max_prompt_tokens=12,
        reward="length",
        reward_kwargs={"target": 3},
        **kw,
    )


def test_lock_step_rollout_scores_episode_ends_in_batches_with_the_envs_own_scores():
    env = _env()
    fns = env.get_attr("reward_fn")
    assert all(f is fns[0] for f in fns), "make_vec_text_env builds the reward once"
    agent = RLHFPPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, seed=0)
    env.reset()
    calls = []
    inner = fns[0]
    original = inner.score
    inner.score = lambda p, r: calls.append(len(p)) or original(p, r)
    batch, _ = collect_round(agent.policy, env)
    assert sum(calls) == batch.n  # every episode scored once, in the vector env's batched calls
    assert len(calls) == len({int(x) for x in batch.lengths})  # one call per step at which episodes ended
    expected = original(batch.prompts, batch.responses)
    np.testing.assert_allclose(batch.scores.numpy(), expected, rtol=0, atol=1e-6)


def test_shared_padding_columns_change_no_log_prob_or_value():
    env = _env()
    agent = RLHFPPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, seed=0)
    agent.policy.set_training_mode(False)
    env.reset()
    batch, _ = collect_round(agent.policy, env)
    T = batch.horizon
    # "Halfway" is a short prompt: the final windows share leading padding columns; add 4 more.
    assert not bool(batch.attention_mask[:, 0].any())
    pad = torch.zeros((batch.n, 4), dtype=torch.long)
    wide_ids, wide_mask = torch.cat([pad, batch.input_ids], 1), torch.cat([pad, batch.attention_mask], 1)
    with torch.no_grad():
        a = sequence_forward(agent.policy, batch.input_ids, batch.attention_mask, T)
        b = sequence_forward(agent.policy, wide_ids, wide_mask, T)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
        torch.testing.assert_close(a[0][batch.mask.bool()], batch.logp[batch.mask.bool()], atol=1e-5, rtol=0)
        ref = agent.policy.reference_model
        r1 = reference_logprobs(ref, batch.input_ids, batch.attention_mask, batch.response_mask)
        r2 = reference_logprobs(ref, wide_ids, wide_mask, torch.cat([pad.bool(), batch.response_mask], 1))
        torch.testing.assert_close(r1, r2[:, 4:], atol=1e-5, rtol=0)


def test_adam_is_fused_unless_the_caller_picks_a_kernel():
    env = _env(n=1)
    fused = RLHFPPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, seed=0)
    assert fused.policy.optimizer.defaults["fused"] is True
    plain = RLHFPPO(
        LMActorCriticPolicy,
        env,
        seed=0,
        policy_kwargs={"model": "tiny", "optimizer_kwargs": {"eps": 1e-5, "foreach": False}},
    )
    assert not plain.policy.optimizer.defaults["fused"]
