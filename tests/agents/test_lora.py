"""LoRA adapters on the policy LM (agents/lora.py): what trains, the reference without a copy, save and reload."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

import agents
from agents.lora import AdaptersOff
from agents.rlhf_ppo import RLHFPPO
from textrlhf.models import load_model

PROMPTS = ["The film opens with", "I watched this movie and", "Halfway through the second act", "The ending was"]


def make_env(n_envs=4):
    return agents.make_vec_text_env(
        n_envs=n_envs, model="tiny", prompts=PROMPTS, max_new_tokens=6, max_prompt_tokens=10
    )


def make_agent(algo="rlhf_ppo", **policy_kwargs):
    policy_kwargs = {"lora_r": 4, **policy_kwargs}
    return agents.make_agent(algo, make_env(), seed=0, learning_rate=1e-2, policy_kwargs=policy_kwargs)


def fixed_batch():
    ids = torch.randint(10, 1000, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, -5:] = True
    return ids, mask, response


def policy_logprobs(policy, ids, mask, response):
    from textrlhf.lm import token_logprobs

    with torch.no_grad():
        return token_logprobs(policy.lm, ids, mask, response, policy.temperature)


def test_only_adapters_train_and_the_reference_is_the_same_weights_with_adapters_off():
    agent = make_agent()
    policy = agent.policy
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    assert sum(len(g["params"]) for g in policy.optimizer.param_groups) == len(trainable)
    ref = policy.reference_model
    assert isinstance(ref, AdaptersOff)
    own = {p.data_ptr() for p in policy.parameters()}
    assert {p.data_ptr() for p in ref.parameters()} <= own  # no second copy of the LM

    ids, mask, response = fixed_batch()
    before_policy = policy_logprobs(policy, ids, mask, response)
    before_ref = policy.reference_logprobs(ids, mask, response)
    torch.testing.assert_close(before_policy, before_ref, rtol=0, atol=0)  # B = 0: the policy is the reference
    base = load_model("tiny")  # the LM's own weights, untouched by LoRA
    with torch.no_grad():
        from textrlhf.lm import token_logprobs

        torch.testing.assert_close(before_ref, token_logprobs(base, ids, mask, response, policy.temperature))

    agent.learn(2 * 4 * 6)
    after_ref = policy.reference_logprobs(ids, mask, response)
    torch.testing.assert_close(after_ref, before_ref, rtol=0, atol=0)  # the reference never moves
    assert float((policy_logprobs(policy, ids, mask, response) - before_policy).abs().max()) > 1e-3  # the policy did
    assert all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)  # restored after scoring


# peft 0.21's PeftModel.from_pretrained reads transformers 5's deprecated `is_gradient_checkpointing`.
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_adapters_reload_and_generate_the_same_tokens(tmp_path):
    agent = make_agent("grpo")
    agent.learn(2 * 4 * 6)
    policy = agent.policy
    ids = torch.tensor([[1, 504, 3073, 8305, 351]])

    def greedy(model):
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)

    expected = greedy(policy.lm)
    policy.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapters only
    reloaded = PeftModel.from_pretrained(load_model("tiny"), tmp_path / "adapter")
    assert torch.equal(greedy(reloaded), expected)
    policy.save_pretrained(tmp_path / "merged", merge=True)
    assert torch.equal(greedy(load_model(str(tmp_path / "merged"))), expected)
    assert isinstance(policy.reference_model, AdaptersOff)  # merging worked on a copy


def test_a_saved_lora_agent_loads_with_its_adapters(tmp_path):
    agent = make_agent()
    agent.learn(2 * 4 * 6)
    agent.save(tmp_path / "agent.zip")
    loaded = RLHFPPO.load(tmp_path / "agent.zip", env=make_env())
    assert loaded.policy.lora == agent.policy.lora
    ids, mask, response = fixed_batch()
    torch.testing.assert_close(
        policy_logprobs(loaded.policy, ids, mask, response), policy_logprobs(agent.policy, ids, mask, response)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lora_r": -1}, "lora_r must be an int >= 0"),
        ({"lora_r": 4, "lora_dropout": 0.1}, "lora_dropout must be 0"),
        ({"lora_r": 4, "lora_alpha": 0}, "lora_alpha must be > 0"),
        ({"lora_r": 4, "lora_target_modules": "q_proj"}, "non-empty list"),
    ],
)
def test_bad_lora_options_fail_in_the_constructor(kwargs, message):
    with pytest.raises(ValueError, match=message):
        agents.make_agent("rlhf_ppo", make_env(), policy_kwargs=kwargs)
