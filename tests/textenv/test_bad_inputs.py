"""docs/design.md section 6: every bad input gets a typed error that names the value and the fix."""

import warnings

import numpy as np
import pytest
from gymnasium.error import ResetNeeded


@pytest.mark.parametrize("action", [49152, -1, 10**9])
def test_action_out_of_range(make_env, action):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=str(action)):
        env.step(action)


@pytest.mark.parametrize("action", [True, np.bool_(False), 3.0, np.float32(3), "3", None, np.array([1, 2]), [3]])
def test_action_of_the_wrong_type(make_env, action):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [5, np.int64(5), np.int32(5), np.uint16(5), np.array(5)])
def test_integer_kinds_are_accepted(make_env, action):
    env = make_env()
    env.reset(seed=0)
    assert env.step(action)[0]["input_ids"][-1] == 5


def test_step_before_reset_and_after_the_end(make_env):
    env = make_env(max_new_tokens=1)
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(5)
    env.reset(seed=0)
    assert env.step(5)[2]
    with pytest.raises(ResetNeeded, match="ended"):
        env.step(5)
    with pytest.raises(ResetNeeded):
        make_env(wrapped=True).step(5)  # also through gym.make's wrappers


def test_long_prompt_truncates_from_the_left_with_a_warning(make_env):
    long = " ".join(["word"] * 40) + " END"
    with pytest.warns(UserWarning, match="max_prompt_tokens=16"):
        env = make_env(prompts=[long])
    obs, _ = env.reset(seed=0)
    assert obs["attention_mask"][:8].sum() == 0 and obs["attention_mask"][8:].all()  # exactly 16 kept
    assert env.tokenizer.decode(obs["input_ids"][8:]).endswith("word END")


def test_long_prompt_raises_when_configured(make_env):
    with pytest.raises(ValueError, match="prompt 1 .*max_prompt_tokens=16"):
        make_env(prompts=["short", "word " * 40], prompt_overflow="error")


def test_prompt_plus_response_beyond_the_context(make_env):
    with pytest.raises(ValueError, match=r"exceeds the context of 'tiny' \(512 tokens\)"):
        make_env(max_prompt_tokens=500, max_new_tokens=20)


def test_empty_prompt_source_and_empty_prompt(make_env):
    with pytest.raises(ValueError, match="no prompts"):
        make_env(prompts=[])
    with pytest.raises(ValueError, match="prompt 2 .*empty"):
        make_env(prompts=["a", "b", ""])
    env = make_env()
    with pytest.raises(ValueError, match="non-empty"):
        env.reset(options={"prompt": ""})


@pytest.mark.parametrize(
    "value, error",
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ([1.0, 2.0], TypeError),
        ("high", TypeError),
        (None, TypeError),
    ],
)
def test_bad_reward_values_name_the_prompt(make_env, prompts, value, error):
    env = make_env(reward=lambda p, r: value)
    env.reset(options={"prompt_index": 1})
    with pytest.raises(error, match=prompts[1]):
        env.step(env.eos_token_id)


def test_bad_batched_reward_shape_names_the_prompt(make_env, prompts):
    class TwoScores:
        def score(self, prompts, responses):
            return np.zeros(2)

    env = make_env(reward=TwoScores())
    env.reset(options={"prompt_index": 0})
    with pytest.raises(ValueError, match="shape"):
        env.step(env.eos_token_id)


def test_unknown_config_key_lists_the_valid_ones(make_env):
    with pytest.raises(TypeError, match=r"unknown TextRLHF-v0 option\(s\) \['max_tokens'\].*max_new_tokens"):
        make_env(max_tokens=5)


def test_unknown_reward_name_lists_the_valid_ones(make_env):
    with pytest.raises(ValueError, match="unknown reward 'happiness'.*sentiment"):
        make_env(reward="happiness")
    with pytest.raises(TypeError, match="no option"):
        make_env(reward="length", reward_kwargs={"goal": 3})


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", 0),
        ("max_prompt_tokens", -3),
        ("max_new_tokens", 2.5),
        ("prompt_overflow", "drop"),
        ("max_prompts", 0),
    ],
)
def test_bad_config_values(make_env, field, value):
    with pytest.raises(ValueError, match=field):
        make_env(**{field: value})


def test_bad_reset_options(make_env):
    env = make_env()
    with pytest.raises(ValueError, match="outside"):
        env.reset(options={"prompt_index": 99})
    with pytest.raises(TypeError, match="int"):
        env.reset(options={"prompt_index": True})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"temperature": 1.0})


def test_forbidding_every_token_is_refused(make_env):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        make_env(forbidden_tokens=(10**6,))


@pytest.mark.parametrize(
    "field, value, error, fix",
    [
        ("no_eos_penalty", float("nan"), ValueError, "finite number"),
        ("no_eos_penalty", float("inf"), ValueError, "finite number"),
        ("no_eos_penalty", 1e300, ValueError, "float32"),
        ("no_eos_penalty", "x", TypeError, "a number"),
        ("no_eos_penalty", True, TypeError, "a number"),
        ("forbidden_tokens", [1.7], TypeError, "int token ids"),
        ("forbidden_tokens", ["a"], TypeError, "int token ids"),
        ("forbidden_tokens", 5, TypeError, r"sequence of int token ids.*\(5,\)"),
        ("chat_template", "yes", TypeError, "True or False"),
        ("system_prompt", 3, TypeError, "a string or None"),
    ],
)
def test_bad_config_types_are_refused_with_the_fix(make_env, field, value, error, fix):
    with pytest.raises(error, match=f"{field} must be .*{fix}"):
        make_env(**{field: value})


def test_system_prompt_without_chat_mode_is_refused(make_env):
    # Without the chat template the system prompt would be silently dropped.
    with pytest.raises(ValueError, match="system_prompt.*chat_template=True"):
        make_env(system_prompt="You are terse.")
    env = make_env(system_prompt="You are terse.", chat_template=True, max_prompt_tokens=64)
    obs, _ = env.reset(seed=0)
    assert "You are terse." in env.tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])


@pytest.mark.parametrize("value", [3.5e39, -3.5e39])
def test_reward_beyond_float32_is_refused(make_env, prompts, value):
    class Huge:
        def score(self, prompts, responses):
            return np.array([value])  # finite in float64, inf in float32

    env = make_env(reward=Huge())
    env.reset(options={"prompt_index": 1})
    with pytest.raises(ValueError, match=f"float32.*{prompts[1]}"):
        env.step(env.eos_token_id)
    env = make_env(reward=lambda p, r: value)
    env.reset(options={"prompt_index": 1})
    with pytest.raises(ValueError, match=f"float32.*{prompts[1]}"):
        env.step(env.eos_token_id)


def test_score_plus_no_eos_penalty_beyond_float32_is_refused(make_env):
    env = make_env(max_new_tokens=1, reward=lambda p, r: 3e38, no_eos_penalty=3e38)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="no_eos_penalty.*float32"):
        env.step(300)


def test_long_reset_prompt_truncates_with_a_warning(make_env):
    import textenv

    env = make_env()
    long = " ".join(["word"] * 40) + " END"
    with pytest.warns(UserWarning, match="reset option 'prompt'.*max_prompt_tokens=16") as record:
        obs, _ = env.reset(options={"prompt": long})
    assert all(issubclass(w.category, textenv.PromptTruncatedWarning) for w in record)
    assert obs["attention_mask"][:8].sum() == 0 and obs["attention_mask"][8:].all()  # exactly 16 kept
    assert env.tokenizer.decode(obs["input_ids"][8:]).endswith("word END")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(options={"prompt": "short"})  # a prompt that fits: no warning
    strict = make_env(prompt_overflow="error")
    with pytest.raises(ValueError, match="reset option 'prompt' .*max_prompt_tokens=16"):
        strict.reset(options={"prompt": long})
