"""``check_scores``: the reward protocol's validation of score arrays."""

import numpy as np
import pytest

from reward_models.base import CallableReward, check_scores


@pytest.mark.parametrize("value", [3.5e39, -3.5e39, np.finfo(np.float64).max])
def test_scores_beyond_float32_are_refused_naming_the_prompt(value):
    # Finite in float64 but inf once cast to the float32 the protocol returns.
    with pytest.raises(ValueError, match="outside the float32 range.*'p2'"):
        check_scores(np.array([0.0, value]), ["p1", "p2"])
    with pytest.raises(ValueError, match="outside the float32 range.*'p1'"):
        CallableReward(lambda p, r: value).score(["p1"], ["r1"])


def test_largest_float32_scores_pass():
    top = float(np.finfo(np.float32).max)
    out = check_scores([top, -top], ["a", "b"])
    assert out.dtype == np.float32 and np.isfinite(out).all()
