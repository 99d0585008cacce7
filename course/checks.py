"""The autograder's checks of exercises 1-2 (3-4 are in :mod:`course.checks_losses`, 5-6 in :mod:`course.checks_rl`).

Each check is a *probe* that calls the student's functions on seeded inputs in the student's process and
returns the raw outputs, the *expected* outputs (``reference=``: the same probe on the project's own
implementation; ``expect=``: closed forms) and a *judge* (default: every output close to the expected one);
the last two run in the grader (see :mod:`course.grading`). The project's references are imported inside
the functions that need them: the student's process never calls them, so it need not import them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from course.grading import check
from course.judging import as_array, assert_close, entry, func, number, require

KINDS = ("k1", "k2", "k3")


def _prefix_mask(lengths, T):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def _suffix_mask(lengths, T):
    return torch.arange(T)[None, :] >= T - torch.tensor(lengths)[:, None]


def _logps(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -3 * torch.rand(*shape, generator=g), -3 * torch.rand(*shape, generator=g)


def _raised(fn, *args) -> str | None:
    """Which exception ``fn(*args)`` raises ("ValueError" for any kind of ValueError), or None if it returns."""
    try:
        fn(*args)
    except ValueError:
        return "ValueError"
    except Exception as exc:
        return type(exc).__name__
    return None


# ---------------------------------------------------------------------------------------- ex1
def _kl_reference():
    from agents.kl import kl_estimate, shape_rewards

    def kl_penalized_reward(scores, logp, ref_logp, beta, mask, kind="k1"):
        return shape_rewards(scores, logp, ref_logp, beta, "terminal", kind, mask)

    return SimpleNamespace(kl_estimate=kl_estimate, kl_penalized_reward=kl_penalized_reward)


for _kind in KINDS:

    @check("ex1", f"kl_estimate[{_kind}]", reference=_kl_reference)
    def _kl_kind(m, ctx, kind=_kind):
        logp, ref = _logps(3, 5)
        return {f"{kind} estimates": func(m, "kl_estimate")(logp, ref, kind)}


def _judge_kl_props(got, expected) -> None:
    for kind in ("k2", "k3"):
        values = as_array(entry(got, kind), f"{kind} estimates")
        require(bool((values >= 0).all()), f"{kind} must be >= 0 everywhere (it is a square / x-1-log x)")
    for kind in KINDS:
        what = f"{kind} of identical log-probs (must be 0)"
        assert_close(entry(got, what), np.zeros(200), what)
    k4 = entry(got, "k4")
    require(k4 == "ValueError", f"kind='k4' must raise ValueError (it {f'raised {k4}' if k4 else 'returned'})")


@check("ex1", "kl_estimate[properties]", judge=_judge_kl_props)
def _kl_props(m, ctx):
    kl = func(m, "kl_estimate")
    logp, ref = _logps(200, seed=1)
    out = {kind: kl(logp, ref, kind) for kind in ("k2", "k3")}
    out.update({f"{kind} of identical log-probs (must be 0)": kl(logp, logp.clone(), kind) for kind in KINDS})
    out["k4"] = _raised(kl, logp, ref, "k4")
    return out


_CATEGORICAL = (
    "KL([.5,.5] || [.9,.1])",
    "KL of random categoricals (batch of 4)",
    "KL after shifting the logits (must not change)",
)


def _categoricals():
    g = torch.Generator().manual_seed(2)
    return torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)


def _categorical_expected():
    a, b = _categoricals()
    exact = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=a), torch.distributions.Categorical(logits=b)
    )
    closed = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108 nats
    return dict(zip(_CATEGORICAL, (torch.tensor(closed), exact, exact)))


@check("ex1", "categorical_kl[closed form]", expect=_categorical_expected)
def _cat_kl(m, ctx):
    ck = func(m, "categorical_kl")
    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.9, 0.1]).log()
    a, b = _categoricals()
    return dict(zip(_CATEGORICAL, (ck(p, q), ck(a, b), ck(a + 3.0, b - 1.0))))


def _mc_distributions():
    g = torch.Generator().manual_seed(3)
    p_logits, q_logits = torch.randn(6, generator=g), torch.randn(6, generator=g)
    return torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1), g


def _mc_exact() -> float:
    lp, lq, _ = _mc_distributions()
    return float((lp.exp() * (lp - lq)).sum())


def _judge_mc(got, exact: float) -> None:
    for kind in ("k1", "k3"):
        est = number(entry(got, kind), f"mean {kind}")
        require(
            abs(est - exact) < 0.02 + 0.03 * exact,
            f"mean {kind} over 200000 samples is {est:.4f}, but the exact KL is {exact:.4f} (it is unbiased)",
        )


@check("ex1", "kl_estimate[Monte Carlo: mean k1 and k3 -> exact KL]", expect=_mc_exact, judge=_judge_mc)
def _kl_mc(m, ctx):
    lp, lq, g = _mc_distributions()
    x = torch.multinomial(lp.exp(), 200_000, replacement=True, generator=g)
    return {kind: float(func(m, "kl_estimate")(lp[x], lq[x], kind).mean()) for kind in ("k1", "k3")}


@check("ex1", "kl_penalized_reward[vs agents.kl.shape_rewards]", points=2, reference=_kl_reference)
def _shaped(m, ctx):
    fn = func(m, "kl_penalized_reward")
    logp, ref = _logps(4, 6, seed=4)
    scores = torch.tensor([1.0, -0.5, 0.25, 2.0])
    out = {}
    for name, mask in (
        ("left-aligned", _prefix_mask([6, 3, 1, 4], 6).bool()),
        ("right-aligned", _suffix_mask([6, 3, 1, 4], 6)),
    ):
        for kind in ("k1", "k3"):
            out[f"rewards ({name} responses, {kind})"] = fn(scores, logp, ref, 0.1, mask, kind)
    return out


@check(
    "ex1",
    "kl_penalized_reward[beta=0 gives the score on the last token]",
    expect=lambda: {"rewards with beta=0": torch.tensor([[0, 0, 0, 0.7], [0, -0.3, 0, 0]])},
)
def _shaped_beta0(m, ctx):
    logp, ref = _logps(2, 4, seed=5)
    mask = _prefix_mask([4, 2], 4).bool()
    return {
        "rewards with beta=0": func(m, "kl_penalized_reward")(torch.tensor([0.7, -0.3]), logp, ref, 0.0, mask, "k1")
    }


# ---------------------------------------------------------------------------------------- ex2
def _gae_reference():
    from agents.losses import gae

    def discounted_returns(rewards, mask, gamma=1.0):
        return gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)[1]

    return SimpleNamespace(gae=gae, discounted_returns=discounted_returns)


def _gae_batch(seed=0, B=4, T=7):
    g = torch.Generator().manual_seed(seed)
    mask = _prefix_mask([7, 4, 1, 5][:B], T)
    rewards = torch.randn(B, T, generator=g) * mask
    values = torch.randn(B, T, generator=g)  # garbage on padding on purpose
    return rewards, values, mask


def _terminal_rewards():
    rewards = torch.zeros(2, 5)
    rewards[0, 4], rewards[1, 1] = 1.0, -2.0
    return rewards, _prefix_mask([5, 2], 5)


@check(
    "ex2",
    "discounted_returns[one terminal reward]",
    expect=lambda: {
        "returns (gamma=0.9)": torch.tensor([[0.9**4, 0.9**3, 0.9**2, 0.9, 1.0], [-2 * 0.9, -2.0, 0, 0, 0]])
    },
)
def _ret_terminal(m, ctx):
    return {"returns (gamma=0.9)": func(m, "discounted_returns")(*_terminal_rewards(), 0.9)}


@check("ex2", "discounted_returns[vs reference]", reference=_gae_reference)
def _ret_ref(m, ctx):
    rewards, _, mask = _gae_batch(1)
    return {"returns (gamma=0.95)": func(m, "discounted_returns")(rewards, mask, 0.95)}


@check("ex2", "gae[vs agents.losses.gae]", points=2, reference=_gae_reference)
def _gae_ref(m, ctx):
    out = {}
    for seed, gamma, lam in ((2, 1.0, 0.95), (3, 0.99, 0.9), (4, 0.9, 0.5)):
        adv, ret = func(m, "gae")(*_gae_batch(seed), gamma, lam)
        out[f"advantages (gamma={gamma}, lam={lam})"] = adv
        out[f"returns (gamma={gamma}, lam={lam})"] = ret
    return out


_L1 = "advantages with gamma=1, lambda=1 (expected R - V(s_t))"
_L0 = "advantages with lambda=0 (expected delta_t)"


def _terminal_batch():
    _, values, mask = _gae_batch(5)
    rewards = torch.zeros_like(mask)
    last = mask.sum(-1).long() - 1
    rewards[torch.arange(4), last] = torch.tensor([1.0, -1.0, 0.5, 2.0])
    return rewards, values, mask


def _l1_expected():
    rewards, values, mask = _terminal_batch()
    return {_L1: (rewards.sum(-1, keepdim=True) - values) * mask}


@check("ex2", "gae[lambda=1: advantage = return - value]", expect=_l1_expected)
def _gae_l1(m, ctx):
    adv, _ = func(m, "gae")(*_terminal_batch(), 1.0, 1.0)
    return {_L1: adv}


def _l0_expected():
    rewards, values, mask = _gae_batch(6)
    next_v = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(4, 1)], 1)
    return {_L0: (rewards + 0.9 * next_v - values) * mask}


@check("ex2", "gae[lambda=0: advantage = TD error]", expect=_l0_expected)
def _gae_l0(m, ctx):
    adv, _ = func(m, "gae")(*_gae_batch(6), 0.9, 0.0)
    return {_L0: adv}


# ex3-ex4 and ex5-ex6 live in modules of their own.
import course.checks_losses  # noqa: E402,F401  (registers ex3-ex4; last, as it imports `check` from here)
import course.checks_rl  # noqa: E402,F401  (registers ex5-ex6; last, as it imports `check` from here)
