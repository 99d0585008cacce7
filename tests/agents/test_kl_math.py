"""KL estimators, controllers, reward shaping and reference log-probs (agents/kl.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from agents.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    kl_estimate,
    make_kl_controller,
    reference_logprobs,
    shape_rewards,
)


def _pair():
    g = torch.Generator().manual_seed(0)
    p = Categorical(logits=torch.randn(7, generator=g))
    q = Categorical(logits=torch.randn(7, generator=g))
    return p, q


def test_k1_and_k3_are_exactly_unbiased_by_enumeration():
    p, q = _pair()
    actions = torch.arange(7)
    logp, ref = p.log_prob(actions), q.log_prob(actions)
    exact = kl_divergence(p, q)
    for kind in ("k1", "k3"):
        expectation = (p.probs * kl_estimate(logp, ref, kind)).sum()
        torch.testing.assert_close(expectation, exact, atol=1e-6, rtol=1e-6)
    # k2 is the biased one: E[0.5 log^2 r] differs from KL in general, but matches to second order.
    k2 = (p.probs * kl_estimate(logp, ref, "k2")).sum()
    assert not torch.isclose(k2, exact, atol=1e-6)
    assert torch.all(kl_estimate(logp, ref, "k3") >= 0) and torch.all(kl_estimate(logp, ref, "k2") >= 0)


def test_estimators_by_sampling_match_closed_form():
    p, q = _pair()
    torch.manual_seed(0)
    a = p.sample((200_000,))
    exact = kl_divergence(p, q).item()
    for kind in ("k1", "k3"):
        est = kl_estimate(p.log_prob(a), q.log_prob(a), kind).mean().item()
        assert abs(est - exact) < 0.02, (kind, est, exact)


def test_estimators_closed_forms_and_errors():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])  # log r = -1
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([1.0]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), torch.tensor([0.5]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([np.exp(-1.0) - 1.0 + 1.0]).float())
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logp, ref, "k4")


def test_adaptive_controller_matches_the_formula():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(9.0, 64)  # KL/target - 1 = 0.5 -> clipped to 0.2
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    v = c.value
    c.update(4.5, 100)  # -0.25 -> clipped to -0.2
    assert c.value == pytest.approx(v * (1 - 0.2 * 100 / 10000))
    v = c.value
    c.update(6.6, 10)  # +0.1, inside the clip
    assert c.value == pytest.approx(v * (1 + 0.1 * 10 / 10000))
    assert FixedKLController(0.3).update(100.0, 1000) == 0.3
    with pytest.raises(ValueError):
        FixedKLController(-1.0)


def test_shape_rewards_terminal_and_per_token_give_the_same_return():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    scores = [1.0, 2.0]
    term = shape_rewards(scores, logp, ref, beta=0.1, mode="terminal", mask=mask)
    per = shape_rewards(scores, logp, ref, beta=0.1, mode="per_token", mask=mask)
    torch.testing.assert_close(term[0], torch.tensor([0.0, 0.0, 1.0 - 0.1 * (0.5 + 0.0 + 0.5)]))
    torch.testing.assert_close(term[1], torch.tensor([0.0, 2.0 - 0.1 * 1.0, 0.0]))
    torch.testing.assert_close(per[0], torch.tensor([-0.05, 0.0, 1.0 - 0.05]))
    torch.testing.assert_close(term.sum(-1), per.sum(-1))
    with pytest.raises(ValueError, match="mode"):
        shape_rewards(scores, logp, ref, beta=0.1, mode="sum")


def test_reference_logprobs_match_a_manual_unpadded_forward():
    from textrlhf.models import load_model

    model = load_model("tiny")
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    resp = torch.zeros_like(ids, dtype=torch.bool)
    resp[:, -2:] = True
    out = reference_logprobs(model, ids, mask, resp, temperature=0.7)
    assert torch.all(out[:, :-2] == 0)
    for row, start in ((0, 2), (1, 0)):
        real = ids[row, start:][None]
        with torch.no_grad():
            logits = model(input_ids=real).logits[0].float() / 0.7
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, real[0, 1:, None])[:, 0]
        torch.testing.assert_close(out[row, -2:], lp[-2:], atol=1e-5, rtol=1e-5)


def test_a_controller_stored_in_a_module_keeps_beta_only_there():
    module = torch.nn.Module()
    module.register_buffer("kl_beta", torch.tensor(float("nan"), dtype=torch.float64))
    c = make_kl_controller(0.1, adaptive_kl=True, kl_target=6.0, kl_horizon=100.0)
    assert isinstance(c, AdaptiveKLController) and isinstance(c, KLController)
    assert c.store_in(module) is c and float(module.kl_beta) == 0.1  # NaN (fresh) takes the controller's beta
    c.update(9.0, 10)
    assert float(module.kl_beta) == c.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    module.load_state_dict({"kl_beta": torch.tensor(0.25, dtype=torch.float64)})  # what load() does
    assert c.value == 0.25
    resumed = make_kl_controller(0.1, adaptive_kl=False).store_in(module)  # a finite stored beta wins
    assert isinstance(resumed, FixedKLController) and resumed.value == 0.25
    import pickle

    copy = pickle.loads(pickle.dumps(c))  # a pickled controller keeps beta, not the module
    assert copy.value == 0.25 and copy._module is None
    copy.value = 1.0
    assert float(module.kl_beta) == 0.25
