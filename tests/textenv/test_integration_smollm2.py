"""One integration test with the real SmolLM2-135M-Instruct: load, reset, a full sampled episode."""

import gymnasium as gym
import pytest
import torch

import textenv  # noqa: F401  (registers TextRLHF-v0)
from scripts.demo import sample_token
from textrlhf.models import load_model


@pytest.mark.slow
def test_real_model_full_episode():
    env = gym.make("TextRLHF-v0", max_new_tokens=12)
    model = load_model()
    assert env.action_space.n == model.get_output_embeddings().weight.shape[0] == 49152
    gen = torch.Generator().manual_seed(0)
    obs, info = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, reward, done, truncated, info = env.step(sample_token(model, obs, 0.7, gen))
        steps += 1
        assert not truncated
    assert 1 <= steps <= 12 and len(info["response_tokens"]) == steps
    assert -1.0 <= reward <= 1.0 and reward == info["score"]
    assert info["response"].strip()  # the pretrained model writes real text
