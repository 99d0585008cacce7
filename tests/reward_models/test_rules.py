"""Rule rewards, the callable wrapper's checks, and reward normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models import make_reward
from reward_models.normalization import NormalizedReward, fit_gain_bias

P = ["prompt one", "prompt two"]


def test_sentiment_sign_on_obvious_texts():
    s = make_reward("sentiment").score(P, ["I love this, it is wonderful and great!", "Terrible, awful, I hate it."])
    assert s.dtype == np.float32 and s[0] > 0.5 and s[1] < -0.5


def test_pattern_sentiment_is_a_second_opinion():
    judge = make_reward("pattern_sentiment")
    s = judge.score(P, ["I love this, it is wonderful and great!", "Terrible, awful, I hate it."])
    assert s.dtype == np.float32 and s[0] > 0.5 and s[1] < -0.5
    # It averages where VADER sums, and has no capitals boost: repeating or shouting a word is no gain.
    texts = ["the film is good", "good good good", "the film is GOOD"]
    np.testing.assert_allclose(make_reward("pattern_sentiment").score(texts, texts), [0.7, 0.7, 0.7])
    vader = make_reward("sentiment").score(texts, texts)
    assert vader[1] > vader[0] and vader[2] > vader[0]
    import pickle

    assert pickle.loads(pickle.dumps(judge)).score(P[:1], ["fine"]).shape == (1,)


def test_length_keywords_and_weighted_sum():
    np.testing.assert_allclose(make_reward("length", target=4).score(P, ["a b c d", "a b"]), [0.0, -0.5])
    np.testing.assert_allclose(
        make_reward("keywords", keywords=["good", "fun"]).score(P, ["GOOD fun", "meh"]), [1.0, 0.0]
    )
    ws = make_reward("weighted_sum", rewards={"length": 2.0, "keywords": 1.0})
    np.testing.assert_allclose(
        ws.score(P, ["good a b c d e f g h i j k", "x"]), [2 * 0.0 + 1 / 3, 2 * (-11 / 12) + 0.0], rtol=1e-6
    )


@pytest.mark.parametrize(
    "value, error",
    [(float("nan"), ValueError), (float("inf"), ValueError), ([1.0, 2.0], TypeError), ("1.0", TypeError)],
)
def test_callable_bad_outputs_name_the_prompt(value, error):
    reward = make_reward(lambda p, r: value if p == "bad prompt" else 0.0)
    with pytest.raises(error, match="bad prompt"):
        reward.score(["fine", "bad prompt"], ["x", "y"])


def test_unknown_reward_lists_valid_names():
    with pytest.raises(ValueError, match="sentiment"):
        make_reward("no-such-reward")


def test_normalized_reward_and_degenerate_fit():
    responses = ["good", "great fun", "bad", "awful mess", "ok", "fine"]
    prompts = ["p"] * len(responses)
    r = NormalizedReward("sentiment").fit(prompts, responses)
    s = r.score(prompts, responses)
    assert abs(float(s.mean())) < 1e-5 and abs(float(s.std()) - 1) < 1e-4
    with pytest.raises(ValueError, match="all 3 reference scores are equal"):
        fit_gain_bias([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        fit_gain_bias([1.0])
