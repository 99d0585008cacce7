"""The env runs inside Gymnasium's SyncVectorEnv and SB3's DummyVecEnv and SubprocVecEnv."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import textenv  # noqa: F401  (registers TextRLHF-v0)

KWARGS = dict(
    model="tiny",
    prompts=["one two", "three four five"],
    max_new_tokens=3,
    max_prompt_tokens=8,
    reward="length",
    reward_kwargs={"target": 3},
)


def test_gymnasium_sync_vector_env():
    envs = gym.make_vec("TextRLHF-v0", num_envs=2, vectorization_mode="sync", **KWARGS)
    obs, _ = envs.reset(seed=0)
    assert obs["input_ids"].shape == (2, 11)
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = envs.step(np.array([300, 400]))
    assert terminated.all() and not truncated.any()
    assert rewards.shape == (2,) and np.isfinite(rewards).all()
    envs.close()


@pytest.mark.parametrize("vec_cls", [DummyVecEnv, SubprocVecEnv])
def test_sb3_vec_envs(vec_cls):
    kwargs = {"start_method": "spawn"} if vec_cls is SubprocVecEnv else {}
    # A spawned worker has not imported textenv: the "module:id" form imports it there.
    venv = make_vec_env(
        "textenv:TextRLHF-v0", n_envs=2, seed=0, env_kwargs=KWARGS, vec_env_cls=vec_cls, vec_env_kwargs=kwargs
    )
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, 11)
    masks = venv.env_method("action_masks")
    assert len(masks) == 2 and masks[0].shape == (49152,)
    dones_seen = []
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.array([300, 400]))
        dones_seen.append(dones.copy())
    assert dones_seen[-1].all() and not dones_seen[0].any()
    assert all("score" in info and "response" in info for info in infos)
    assert all(info["TimeLimit.truncated"] is False for info in infos)
    venv.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_vector_envs_stack_episode_ends_of_different_lengths(mode):
    """Two envs ending in the same step with responses of different lengths: Gymnasium merges their
    ``info`` into one array per key, which needs values of one shape (or plain objects)."""
    kwargs = dict(KWARGS, max_new_tokens=4)
    # "module:id" so that a worker started with spawn/forkserver registers the env too.
    envs = gym.make_vec("textenv:TextRLHF-v0", num_envs=2, vectorization_mode=mode, **kwargs)
    try:
        eos = envs.get_attr("eos_token_id")[0]
        envs.reset(seed=0)
        # env 0: EOS at once, autoreset step, then 300 + EOS; env 1: four tokens, ending at the horizon.
        for actions in ([eos, 300], [300, 300], [300, 300], [eos, 300]):
            _, _, terminated, _, infos = envs.step(np.array(actions))
    finally:
        envs.close(terminate=True)
    assert terminated.all() and infos["_response_tokens"].all()
    assert tuple(infos["response_tokens"][0]) == (300, eos)
    assert tuple(infos["response_tokens"][1]) == (300,) * 4
    assert infos["hit_max_tokens"].tolist() == [False, True]
