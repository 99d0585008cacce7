"""The native vector env (textenv/vector_env.py): N single envs' behaviour, stepped and scored in batches."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.utils.passive_env_checker import check_obs
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

import textenv  # noqa: F401  (registers TextRLHF-v0)
from textenv import TextRLHFEnv, TextRLHFVectorEnv

PROMPTS = ["one two", "three four five", "six", "seven eight nine ten"]
KWARGS = dict(
    model="tiny", prompts=PROMPTS, max_new_tokens=4, max_prompt_tokens=8, reward="length", reward_kwargs={"target": 3}
)


def make_vec(n=3, **kw):
    if "reward" in kw:
        kw.setdefault("reward_kwargs", {})
    return gym.make_vec("TextRLHF-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**KWARGS, **kw})


def row_info(infos, i):
    """Row ``i`` of Gymnasium's batched info (``info[key]`` where ``info["_key"][i]``), NumPy scalars as Python's."""
    return {
        k: v[i].item() if isinstance(v[i], np.generic) else v[i]
        for k, v in infos.items()
        if not k.startswith("_") and infos[f"_{k}"][i]
    }


class CountingReward:
    """A reward object that records the batch size of every ``score`` call."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append(len(prompts))
        return np.array([len(r) - len(p) / 10 for p, r in zip(prompts, responses)], dtype=np.float32)


def test_make_vec_builds_the_native_vector_env_with_the_single_envs_spaces():
    envs = make_vec(3)
    single = gym.make("TextRLHF-v0", **KWARGS)
    assert type(envs) is TextRLHFVectorEnv and isinstance(envs, VectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] is AutoresetMode.DISABLED
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    assert envs.observation_space == batch_space(single.observation_space, 3)
    assert envs.action_space == batch_space(single.action_space, 3)
    assert gym.make_vec("TextRLHF-v0", num_envs=2, **KWARGS).unwrapped.num_envs == 2  # the default mode


def _single_episode_steps(env, actions):
    """Step one single env through ``actions`` until its episode ends; one (obs, r, term, info) per step."""
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term:
            break
    return out


@pytest.mark.parametrize("seed", [0, 7])
def test_equivalent_to_n_single_envs_with_the_same_seeds(seed):
    n = 3
    envs = make_vec(n, reward=CountingReward())
    singles = [gym.make("TextRLHF-v0", **{**KWARGS, "reward": CountingReward(), "reward_kwargs": {}}) for _ in range(n)]
    eos = envs.unwrapped.eos_token_id
    rng = np.random.default_rng(seed)
    for episode in range(3):
        v_obs, v_info = envs.reset(seed=seed) if episode == 0 else envs.reset()
        for i, env in enumerate(singles):
            s_obs, s_info = env.reset(seed=seed + i) if episode == 0 else env.reset()
            assert data_equivalence(s_obs, {k: v[i] for k, v in v_obs.items()}, exact=True)
            assert data_equivalence(s_info, row_info(v_info, i), exact=True)
        actions = rng.integers(300, 400, size=(4, n))
        actions[rng.random((4, n)) < 0.3] = eos  # episodes of different lengths
        expected = [_single_episode_steps(env, actions[:, i]) for i, env in enumerate(singles)]
        for t in range(4):
            obs, rewards, terminated, truncated, infos = envs.step(actions[t])
            assert not truncated.any()
            for i in range(n):
                if t < len(expected[i]):
                    s_obs, s_r, s_term, _, s_info = expected[i][t]
                    assert data_equivalence(s_obs, {k: v[i] for k, v in obs.items()}, exact=True)
                    assert (rewards[i], terminated[i]) == (s_r, s_term)
                    assert row_info(infos, i).keys() == s_info.keys()
                    assert data_equivalence(s_info, row_info(infos, i), exact=True)
                else:  # ended earlier: idle, never auto-reset
                    assert (rewards[i], terminated[i], row_info(infos, i)) == (0.0, False, {})
                    assert data_equivalence(expected[i][-1][0], {k: v[i] for k, v in obs.items()}, exact=True)
            if all(t + 1 >= len(e) for e in expected):
                break


def test_reset_and_step_contracts_env_checker_style():
    envs = make_vec(2)
    obs, info = envs.reset(seed=3)
    check_obs(obs, envs.observation_space, "reset")
    assert isinstance(info, dict) and info["_prompt"].all()
    again, info2 = envs.reset(seed=3)  # reset determinism
    assert data_equivalence(obs, again, exact=True) and data_equivalence(info, info2, exact=True)
    other = make_vec(2)
    assert data_equivalence(obs, other.reset(seed=3)[0], exact=True)
    step = envs.step(np.array([300, 301]))
    check_obs(step[0], envs.observation_space, "step")
    rewards, terminated, truncated = step[1:4]
    assert rewards.shape == terminated.shape == truncated.shape == (2,)
    assert terminated.dtype == truncated.dtype == np.bool_ and np.issubdtype(rewards.dtype, np.floating)
    assert isinstance(step[4], dict)
    # Returned data is never reused: the next step must not change what the last one returned.
    before = {k: v.copy() for k, v in step[0].items()}
    nxt = envs.step(np.array([302, 303]))
    assert data_equivalence(step[0], before, exact=True)
    assert not any(np.shares_memory(nxt[0][k], step[0][k]) for k in before)
    assert envs.action_masks().shape == (2, envs.unwrapped.vocab_size)
    envs.close()
    assert envs.closed


def test_finished_rows_stay_finished_until_reset_mask():
    envs = make_vec(2)
    eos = envs.unwrapped.eos_token_id
    envs.reset(seed=0)
    final, rewards, terminated, _, infos = envs.step(np.array([eos, 300]))
    assert terminated.tolist() == [True, False] and infos["_score"].tolist() == [True, False]
    obs, rewards, terminated, _, infos = envs.step(np.array([301, 302]))
    assert rewards[0] == 0.0 and not terminated[0] and not infos
    np.testing.assert_array_equal(obs["input_ids"][0], final["input_ids"][0])
    obs, info = envs.reset(options={"reset_mask": np.array([True, False]), "prompt_index": 1})
    assert info["_prompt"].tolist() == [True, False] and info["prompt"][0] == PROMPTS[1]
    assert obs["input_ids"][1][-2:].tolist() == [300, 302]  # the other row kept its episode
    obs, _, terminated, _, _ = envs.step(np.array([303, 304]))
    assert terminated.tolist() == [False, False] and obs["input_ids"][1][-1] == 304


def test_one_reward_call_per_step_at_which_episodes_end():
    reward = CountingReward()
    envs = make_vec(3, reward=reward)
    eos = envs.unwrapped.eos_token_id
    envs.reset(seed=0)
    for actions in ([300, eos, eos], [300, 300, 300], [300, 300, 300], [300, 300, 300]):
        envs.step(np.array(actions))
    assert reward.calls == [2, 1]  # rows 1 and 2 at step 1 together; row 0 at the horizon


def test_per_row_reset_options():
    envs = make_vec(3)
    _, info = envs.reset(seed=0, options={"prompt_index": [2, None, 0]})
    assert info["prompt_index"][[0, 2]].tolist() == [2, 0]
    _, info = envs.reset(options={"prompt": [None, "a custom prompt", None], "prompt_index": [3, None, 3]})
    assert info["prompt_index"].tolist() == [3, -1, 3] and info["prompt"][1] == "a custom prompt"


@pytest.mark.parametrize("bad", [True, 3.0, "3", None, 49152, -1])
def test_bad_actions_raise_the_single_envs_errors(bad):
    single = TextRLHFEnv(**KWARGS)
    single.reset(seed=0)
    with pytest.raises(Exception) as expected:
        single.step(bad)
    envs = make_vec(2)
    obs, _ = envs.reset(seed=0)
    for actions in (np.array([bad, bad]), [5, bad]):
        with pytest.raises(expected.type, match="action"):
            envs.step(actions)
    assert data_equivalence(envs.unwrapped._obs(), obs, exact=True)  # nothing moved


@pytest.mark.parametrize("actions", [np.array(5), np.array([1, 2, 3]), np.array([[1, 2]]), [1, [2, 3]]])
def test_actions_of_the_wrong_shape(actions):
    envs = make_vec(2)
    envs.reset(seed=0)
    with pytest.raises(TypeError, match="action"):
        envs.step(actions)


def test_step_before_reset_and_after_every_episode_ended():
    envs = make_vec(2, max_new_tokens=1)
    with pytest.raises(ResetNeeded, match="reset"):
        envs.step(np.array([5, 5]))
    envs.reset(seed=0)
    assert envs.step(np.array([5, 5]))[2].all()
    with pytest.raises(ResetNeeded, match="ended"):
        envs.step(np.array([5, 5]))


def test_bad_reset_options_and_constructor_arguments():
    envs = make_vec(2)
    with pytest.raises(ValueError, match="unknown reset option"):
        envs.reset(options={"temperature": 1.0})
    with pytest.raises(ValueError, match="outside"):
        envs.reset(options={"prompt_index": 99})
    with pytest.raises(TypeError, match="int"):
        envs.reset(options={"prompt_index": [True, 0]})
    with pytest.raises(ValueError, match="one per row"):
        envs.reset(options={"prompt_index": [0, 1, 2]})
    with pytest.raises(TypeError, match="bool"):
        envs.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="shape"):
        envs.reset(options={"reset_mask": np.array([True])})
    with pytest.raises(ValueError, match="num_envs"):
        TextRLHFVectorEnv(0, **KWARGS)
    with pytest.raises(ValueError, match="unknown reward"):
        make_vec(2, reward="happiness")


def test_from_envs_continues_the_single_envs_random_streams():
    singles = [TextRLHFEnv(**KWARGS) for _ in range(2)]
    twins = [TextRLHFEnv(**KWARGS) for _ in range(2)]
    for i, (a, b) in enumerate(zip(singles, twins)):
        a.reset(seed=i)
        b.reset(seed=i)
    envs = TextRLHFVectorEnv.from_envs(singles)
    assert envs.tokenizer is singles[0].tokenizer and envs.reward_fn is singles[0].reward_fn
    obs, _ = envs.reset()
    for i, twin in enumerate(twins):
        np.testing.assert_array_equal(obs["input_ids"][i], twin.reset()[0]["input_ids"])
    with pytest.raises(TypeError, match="one config"):
        TextRLHFVectorEnv.from_envs([singles[0], TextRLHFEnv(**{**KWARGS, "max_new_tokens": 2})])
