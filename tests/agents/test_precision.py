"""bf16 autocast (``policy_kwargs={"precision": "bf16"}``): the first PPO ratio stays 1, and bf16 is really used."""

from __future__ import annotations

import contextlib

import pytest
import torch

import agents
from agents.rollout import collect_round, sequence_forward
from textrlhf.precision import packed_bf16_available

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway through the second act", "The ending was"]


def make_env(n_envs=4):
    return agents.make_vec_text_env(
        n_envs=n_envs, model="tiny", prompts=PROMPTS, max_new_tokens=8, max_prompt_tokens=10
    )


def first_ratio_deviation(agent, rescore: bool, drift: float = 0.0) -> float:
    """max |ratio - 1| over response tokens of the first update's forward on a shuffled minibatch.

    ``drift`` is added to the rollout's log-probs before the optional re-scoring: a stand-in for the
    rounding difference between the KV-cached rollout and the teacher-forced update in bf16, which
    depends on the CPU's kernels (up to 1.4e-3 in ratio on an AMD EPYC without bf16 instructions, none
    on a Xeon with AMX: docs/results/2026-12-01-precision.md).
    """
    env = agent.env
    agent.policy.set_training_mode(False)
    env.reset()
    with torch.no_grad():
        batch, _ = collect_round(agent.policy, env)
        batch.logp.add_(drift)
        if rescore:
            agent._rescore_policy(batch)
    agent.policy.set_training_mode(True)
    idx = torch.randperm(batch.n, generator=torch.Generator().manual_seed(0))[: agent.episode_batch_size]
    with torch.no_grad():  # the same forward as the update's, without its graph
        logp, _, _ = sequence_forward(agent.policy, batch.input_ids[idx], batch.attention_mask[idx], batch.horizon)
    m = batch.mask[idx].bool()
    return float((torch.exp(logp[m] - batch.logp[idx][m]) - 1).abs().max())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_first_ratio_is_one_in_every_precision(precision):
    agent = agents.make_agent("rlhf_ppo", make_env(), seed=0, batch_size=2, policy_kwargs={"precision": precision})
    # fp32: the KV-cached rollout already equals the update's forward; bf16: after re-scoring it does.
    assert first_ratio_deviation(agent, rescore=precision == "bf16") < 1e-4


def test_bf16_computes_in_bf16():
    fp32 = agents.make_agent("rlhf_ppo", make_env(), seed=0)
    bf16 = agents.make_agent("rlhf_ppo", make_env(), seed=0, policy_kwargs={"precision": "bf16"})
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = sequence_forward(fp32.policy, ids, mask, 5)[0]
        b = sequence_forward(bf16.policy, ids, mask, 5)[0]
    diff = float((a - b).abs().max())
    assert 1e-4 < diff < 0.5  # rounded like bf16, still the same model
    assert b.dtype == torch.float32  # log-probs come out in fp32 (log_softmax outside autocast)
    assert not bf16.policy._runner.enabled  # SB3's window rollouts: whole windows, as its updates


def test_bf16_rescoring_replaces_drifted_rollout_log_probs():
    """Whatever the rollout's log-probs drifted by, the re-scoring makes them the update's own forward."""
    agent = agents.make_agent("rlhf_ppo", make_env(), seed=0, batch_size=2, policy_kwargs={"precision": "bf16"})
    assert first_ratio_deviation(agent, rescore=False, drift=1e-2) > 5e-3  # ~0.00995: the drift shows
    assert first_ratio_deviation(agent, rescore=True, drift=1e-2) < 1e-4


def test_an_unknown_precision_fails_in_the_constructor():
    with pytest.raises(ValueError, match="precision must be one of"):
        agents.make_agent("rlhf_ppo", make_env(), policy_kwargs={"precision": "fp16"})


def test_bf16_rollouts_cast_each_weight_once_and_score_in_full_precision():
    """One autocast context around the lock-step loop: each weight is cast to bf16 once per rollout (not once
    per token), and the env's reward, called inside the loop, runs outside it."""
    seen = []

    def reward(prompt: str, response: str) -> float:
        seen.append(torch.is_autocast_enabled("cpu"))
        return float(len(response))

    env = agents.make_vec_text_env(n_envs=4, model="tiny", prompts=PROMPTS, max_new_tokens=8, reward=reward)
    agent = agents.make_agent("rlhf_ppo", env, seed=0, policy_kwargs={"precision": "bf16"})
    weight_shape = list(agent.policy.lm.base_model.layers[0].self_attn.q_proj.weight.shape)
    agent.policy.set_training_mode(False)
    env.reset()
    with torch.profiler.profile(record_shapes=True) as prof:
        batch, _ = collect_round(agent.policy, env)
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[:1] == [weight_shape]]
    n_layers = len(agent.policy.lm.base_model.layers)
    # q_proj's shape is shared by o_proj: 2 casts per layer per cast pass. Per token it would be 2 x 8 x layers.
    assert 0 < len(casts) <= 2 * n_layers, len(casts)
    assert batch.n == 4 and seen == [False] * 4


def _flash_calls(policy, ids, mask) -> int:
    """Flash-attention calls (forward and backward) of one teacher-forced forward + backward."""
    with torch.profiler.profile() as prof:
        logp, _, _ = sequence_forward(policy, ids, mask, 4)
        logp.sum().backward()
    return sum(e.name.startswith("aten::_scaled_dot_product_flash_attention") for e in prof.events())


def test_bf16_sequence_forwards_use_the_math_attention_on_short_cpu_rows():
    """bf16 on a CPU: the update's and the re-scoring's forward run SDPA's math backend (torch's CPU flash
    backward is ~6x slower in bf16), with the same log-probs as the flash kernel up to bf16 rounding;
    fp32 and long rows keep SDPA's own choice."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from agents.lm_model import MATH_ATTENTION_MAX_LEN

    bf16 = agents.make_agent("rlhf_ppo", make_env(), seed=0, policy_kwargs={"precision": "bf16"}).policy
    fp32 = agents.make_agent("rlhf_ppo", make_env(), seed=0).policy
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    assert _flash_calls(bf16, ids, mask) == 0
    assert _flash_calls(fp32, ids, mask) > 0
    long_ids = torch.randint(10, 1000, (1, MATH_ATTENTION_MAX_LEN + 1), generator=torch.Generator().manual_seed(1))
    assert _flash_calls(bf16, long_ids, torch.ones_like(long_ids)) > 0
    with torch.no_grad():
        math = sequence_forward(bf16, ids, mask, 4)[0]
        bf16.sequence_attention = lambda seq_len: sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        flash = sequence_forward(bf16, ids, mask, 4)[0]
    assert _flash_calls(bf16, ids, mask) > 0  # the comparison really ran the flash kernel
    diff = float((math - flash).abs().max())
    assert diff < 0.05, diff  # bf16 rounding of two kernels, not two models


@pytest.mark.parametrize("n_epochs", [1, 2])
def test_bf16_one_pass_updates_take_the_old_log_probs_from_their_own_forward(n_epochs, monkeypatch):
    """One epoch of one minibatch: no separate re-scoring forward, and the first ratio is exactly 1 even if the
    rollout's log-probs drifted; with two epochs the rollout is re-scored as before."""
    from stable_baselines3.common.logger import configure

    agent = agents.make_agent("grpo", make_env(), seed=0, n_epochs=n_epochs, policy_kwargs={"precision": "bf16"})
    agent.set_logger(configure(None, []))
    rescored = []
    original = agent._rescore_policy
    monkeypatch.setattr(agent, "_rescore_policy", lambda batch: rescored.append(batch.n) or original(batch))
    agent.policy.set_training_mode(False)
    agent.env.reset()
    batch, _ = collect_round(agent.policy, agent.env, group_size=agent.group_size)
    batch.extras["group"] = torch.arange(batch.n).numpy() // agent.group_size
    batch.logp.add_(1e-2 * batch.mask)  # the rounding drift of a CPU without bf16 instructions, exaggerated
    agent._finish_batch(batch)
    assert rescored == ([] if n_epochs == 1 else [batch.n])
    agent.policy.set_training_mode(True)
    _, stats = agent.minibatch_loss(batch, torch.arange(batch.n), clip_range=0.2)
    assert stats["approx_kl"] < 1e-7 and stats["clip_fraction"] == 0.0


def test_bf16_reference_forwards_are_bit_identical_with_matrices_cast_once():
    """The bf16 policy scores the reference with a copy whose linear weights are stored in bf16: the same
    log-probs as autocast over the fp32 reference (bit for bit), and the fp32 reference stays as it was."""
    from agents.kl import reference_logprobs

    agent = agents.make_agent("grpo", make_env(), seed=0, policy_kwargs={"precision": "bf16"})
    policy = agent.policy
    compute, ref = policy._reference_compute.module, policy.reference_model
    assert compute.get_output_embeddings().weight.dtype == torch.bfloat16
    assert ref.get_output_embeddings().weight.dtype == torch.float32  # evaluation samples from this one
    assert compute.get_input_embeddings().weight.dtype == torch.float32  # the residual stream keeps fp32
    ids = torch.randint(10, 1000, (4, 14), generator=torch.Generator().manual_seed(0))
    mask, response = torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool)
    response[:, -6:] = True
    with torch.no_grad():
        fast = policy.reference_logprobs(ids, mask, response)
        with policy.autocast():
            slow = reference_logprobs(ref, ids, mask, response, temperature=policy.temperature)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize(("decode_threads", "expected"), [(1, 1), ("auto", 2)])
def test_rollout_decodes_on_decode_threads_and_scores_on_all_threads(monkeypatch, decode_threads, expected):
    """The decode forwards run on ``decode_threads`` intra-op threads; the env's reward, called between them,
    and everything after the rollout get torch's own count back (textrlhf.threads)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # spinning OpenMP: "auto" changes nothing
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        at_reward = []

        def reward(prompt: str, response: str) -> float:
            at_reward.append(torch.get_num_threads())
            return float(len(response))

        env = agents.make_vec_text_env(n_envs=4, model="tiny", prompts=PROMPTS, max_new_tokens=8, reward=reward)
        agent = agents.make_agent(
            "grpo", env, seed=0, group_size=2, policy_kwargs={"precision": "bf16", "decode_threads": decode_threads}
        )
        at_decode = []
        agent.policy.lm.base_model.register_forward_pre_hook(lambda *_: at_decode.append(torch.get_num_threads()))
        agent.policy.set_training_mode(False)
        env.reset()
        batch, _ = collect_round(agent.policy, env)
        assert batch.n == 4 and len(at_decode) >= 2  # the prefill and at least one extend
        assert set(at_decode) == {expected} and at_reward == [2] * 4
        assert torch.get_num_threads() == 2
        assert agent.policy._get_constructor_parameters()["decode_threads"] == decode_threads  # saved with the agent
    finally:
        torch.set_num_threads(before)


def test_bad_decode_threads_fail_in_the_constructor():
    with pytest.raises(ValueError, match="decode_threads must be 'auto' or a positive int"):
        agents.make_agent("grpo", make_env(), group_size=2, policy_kwargs={"decode_threads": 0})


@pytest.mark.skipif(
    not packed_bf16_available("cpu"),
    reason="this CPU has no native bf16 or torch no oneDNN weight packing: its bf16 rollouts use plain autocast",
)
def test_bf16_decode_on_packed_weights_equals_autocast_and_leaves_the_layers_as_they_were():
    """The rollout's decode forwards on bf16 weights packed once give autocast's logits through oneDNN's packed
    kernel; on exit every linear layer computes as before (no instance ``forward`` left behind)."""
    agent = agents.make_agent("grpo", make_env(), seed=0, group_size=2, policy_kwargs={"precision": "bf16"})
    policy = agent.policy
    ids = torch.randint(10, 1000, (4, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row

    def decode(packed: bool) -> tuple[list[torch.Tensor], int]:
        weights = policy.decode_weights(4) if packed else contextlib.nullcontext()
        with torch.no_grad(), policy.autocast(), weights, torch.profiler.profile() as prof:
            cache = policy.rollout_cache()
            out = [cache.prefill(ids, mask)[0]]
            out += [cache.extend(ids[:, t])[0] for t in range(3)]
        return out, sum(e.name == "mkldnn::_linear_pointwise" for e in prof.events())

    (plain, plain_calls), (packed, packed_calls) = decode(False), decode(True)
    for a, b in zip(plain, packed):  # (4, V) tempered logits at each step
        assert torch.allclose(a, b, atol=2e-2, rtol=0), float((a - b).abs().max())
    n_linear = sum(type(m) is torch.nn.Linear for m in policy.lm.modules())
    assert plain_calls == 0 and packed_calls == 4 * n_linear  # every linear layer at every step, packed
    assert not any("forward" in vars(m) for m in policy.lm.modules())


def test_fp32_and_lora_policies_decode_on_their_own_weights():
    fp32 = agents.make_agent("grpo", make_env(), seed=0, group_size=2)
    lora = agents.make_agent("grpo", make_env(), seed=0, group_size=2, policy_kwargs={"precision": "bf16", "lora_r": 4})
    for agent in (fp32, lora):
        assert isinstance(agent.policy.decode_weights(4), contextlib.nullcontext)
