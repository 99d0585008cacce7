"""The autograder's checks: each compares a student function with the project's implementation on
seeded inputs, or checks a property with a known answer. A check fails by raising ``CheckFailed``
with a readable reason."""

from __future__ import annotations

import math

import torch

from agents import losses as L
from agents.kl import kl_estimate as ref_kl
from agents.kl import shape_rewards
from course import _reference as R
from course.grading import assert_close, check, func, require

KINDS = ("k1", "k2", "k3")


def _prefix_mask(lengths, T):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def _suffix_mask(lengths, T):
    return (torch.arange(T)[None, :] >= T - torch.tensor(lengths)[:, None])


def _logps(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -3 * torch.rand(*shape, generator=g), -3 * torch.rand(*shape, generator=g)


# ---------------------------------------------------------------------------------------- ex1
for _kind in KINDS:
    @check("ex1", f"kl_estimate[{_kind}]")
    def _kl_kind(m, ctx, kind=_kind):
        logp, ref = _logps(3, 5)
        assert_close(func(m, "kl_estimate")(logp, ref, kind), ref_kl(logp, ref, kind), f"{kind} estimates")


@check("ex1", "kl_estimate[properties]")
def _kl_props(m, ctx):
    kl = func(m, "kl_estimate")
    logp, ref = _logps(200, seed=1)
    for kind in ("k2", "k3"):
        require(bool((kl(logp, ref, kind) >= 0).all()), f"{kind} must be >= 0 everywhere (it is a square / x-1-log x)")
    for kind in KINDS:
        assert_close(kl(logp, logp.clone(), kind), torch.zeros(200), f"{kind} of identical log-probs (must be 0)")
    try:
        kl(logp, ref, "k4")
    except ValueError:
        return
    raise AssertionError("kind='k4' must raise ValueError")


@check("ex1", "categorical_kl[closed form]")
def _cat_kl(m, ctx):
    ck = func(m, "categorical_kl")
    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.9, 0.1]).log()
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108 nats
    assert_close(ck(p, q), torch.tensor(expected), "KL([.5,.5] || [.9,.1])")
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    exact = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=a),
                                              torch.distributions.Categorical(logits=b))
    assert_close(ck(a, b), exact, "KL of random categoricals (batch of 4)")
    assert_close(ck(a + 3.0, b - 1.0), exact, "KL after shifting the logits (must not change)")


@check("ex1", "kl_estimate[Monte Carlo: mean k1 and k3 -> exact KL]")
def _kl_mc(m, ctx):
    g = torch.Generator().manual_seed(3)
    p_logits, q_logits = torch.randn(6, generator=g), torch.randn(6, generator=g)
    lp, lq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    exact = float((lp.exp() * (lp - lq)).sum())
    x = torch.multinomial(lp.exp(), 200_000, replacement=True, generator=g)
    for kind in ("k1", "k3"):
        est = float(func(m, "kl_estimate")(lp[x], lq[x], kind).mean())
        require(abs(est - exact) < 0.02 + 0.03 * exact,
                f"mean {kind} over 200000 samples is {est:.4f}, but the exact KL is {exact:.4f} (it is unbiased)")


@check("ex1", "kl_penalized_reward[vs agents.kl.shape_rewards]", points=2)
def _shaped(m, ctx):
    fn = func(m, "kl_penalized_reward")
    logp, ref = _logps(4, 6, seed=4)
    scores = torch.tensor([1.0, -0.5, 0.25, 2.0])
    for name, mask in (("left-aligned", _prefix_mask([6, 3, 1, 4], 6).bool()),
                       ("right-aligned", _suffix_mask([6, 3, 1, 4], 6))):
        for kind in ("k1", "k3"):
            expected = shape_rewards(scores, logp, ref, 0.1, "terminal", kind, mask)
            assert_close(fn(scores, logp, ref, 0.1, mask, kind), expected, f"rewards ({name} responses, {kind})")


@check("ex1", "kl_penalized_reward[beta=0 gives the score on the last token]")
def _shaped_beta0(m, ctx):
    logp, ref = _logps(2, 4, seed=5)
    mask = _prefix_mask([4, 2], 4).bool()
    out = func(m, "kl_penalized_reward")(torch.tensor([0.7, -0.3]), logp, ref, 0.0, mask, "k1")
    assert_close(out, torch.tensor([[0, 0, 0, 0.7], [0, -0.3, 0, 0]]), "rewards with beta=0")


# ---------------------------------------------------------------------------------------- ex2
def _gae_batch(seed=0, B=4, T=7):
    g = torch.Generator().manual_seed(seed)
    mask = _prefix_mask([7, 4, 1, 5][:B], T)
    rewards = torch.randn(B, T, generator=g) * mask
    values = torch.randn(B, T, generator=g)  # garbage on padding on purpose
    return rewards, values, mask


@check("ex2", "discounted_returns[one terminal reward]")
def _ret_terminal(m, ctx):
    mask = _prefix_mask([5, 2], 5)
    rewards = torch.zeros(2, 5)
    rewards[0, 4], rewards[1, 1] = 1.0, -2.0
    expected = torch.tensor([[0.9 ** 4, 0.9 ** 3, 0.9 ** 2, 0.9, 1.0], [-2 * 0.9, -2.0, 0, 0, 0]])
    assert_close(func(m, "discounted_returns")(rewards, mask, 0.9), expected, "returns (gamma=0.9)")


@check("ex2", "discounted_returns[vs reference]")
def _ret_ref(m, ctx):
    rewards, _, mask = _gae_batch(1)
    expected = L.gae(rewards, torch.zeros_like(rewards), mask, 0.95, 1.0)[1]
    assert_close(func(m, "discounted_returns")(rewards, mask, 0.95), expected, "returns (gamma=0.95)")


@check("ex2", "gae[vs agents.losses.gae]", points=2)
def _gae_ref(m, ctx):
    for seed, gamma, lam in ((2, 1.0, 0.95), (3, 0.99, 0.9), (4, 0.9, 0.5)):
        rewards, values, mask = _gae_batch(seed)
        adv, ret = func(m, "gae")(rewards, values, mask, gamma, lam)
        e_adv, e_ret = L.gae(rewards, values, mask, gamma, lam)
        assert_close(adv, e_adv, f"advantages (gamma={gamma}, lam={lam})")
        assert_close(ret, e_ret, f"returns (gamma={gamma}, lam={lam})")


@check("ex2", "gae[lambda=1: advantage = return - value]")
def _gae_l1(m, ctx):
    _, values, mask = _gae_batch(5)
    rewards = torch.zeros_like(mask)
    last = mask.sum(-1).long() - 1
    rewards[torch.arange(4), last] = torch.tensor([1.0, -1.0, 0.5, 2.0])
    adv, _ = func(m, "gae")(rewards, values, mask, 1.0, 1.0)
    expected = (rewards.sum(-1, keepdim=True) - values) * mask
    assert_close(adv, expected, "advantages with gamma=1, lambda=1 (expected R - V(s_t))")


@check("ex2", "gae[lambda=0: advantage = TD error]")
def _gae_l0(m, ctx):
    rewards, values, mask = _gae_batch(6)
    adv, _ = func(m, "gae")(rewards, values, mask, 0.9, 0.0)
    next_v = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(4, 1)], 1)
    assert_close(adv, (rewards + 0.9 * next_v - values) * mask, "advantages with lambda=0 (expected delta_t)")


# ---------------------------------------------------------------------------------------- ex3
def _ppo_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = _prefix_mask([6, 3, 5], 6)
    old = -2 * torch.rand(3, 6, generator=g)
    logp = (old + 0.6 * torch.randn(3, 6, generator=g)).requires_grad_(True)
    adv = torch.randn(3, 6, generator=g)
    return logp, old, adv, mask


@check("ex3", "masked_mean and masked_whiten[vs agents.losses]")
def _masked(m, ctx):
    g = torch.Generator().manual_seed(7)
    x, mask = torch.randn(3, 6, generator=g), _prefix_mask([6, 2, 4], 6)
    assert_close(func(m, "masked_mean")(x, mask), L.masked_mean(x, mask), "masked mean")
    assert_close(func(m, "masked_whiten")(x, mask), L.masked_whiten(x, mask), "whitened values")
    y = x + 100 * (1 - mask)  # padding must not matter
    assert_close(func(m, "masked_whiten")(y, mask), L.masked_whiten(x, mask), "whitened values after changing padding")


@check("ex3", "ppo_policy_loss[vs agents.losses.ppo_policy_loss]", points=2)
def _ppo_ref(m, ctx):
    for clip in (0.2, 0.1):
        logp, old, adv, mask = _ppo_batch(8)
        loss, stats = func(m, "ppo_policy_loss")(logp, old, adv, mask, clip)
        e_loss, e_stats = L.ppo_policy_loss(logp, old, adv, mask, clip)
        assert_close(loss, e_loss, f"loss (clip_range={clip})")
        require(isinstance(stats, dict), f"the second return value must be a dict of stats, got {type(stats).__name__}")
        for key in ("clip_fraction", "approx_kl"):
            require(key in stats, f"stats lack {key!r} (got keys {sorted(stats)})")
            assert_close(stats[key], e_stats[key], f"stats[{key!r}] (clip_range={clip})")


@check("ex3", "ppo_policy_loss[gradient: clipped tokens get none]")
def _ppo_grad(m, ctx):
    logp, old, adv, mask = _ppo_batch(9)
    func(m, "ppo_policy_loss")(logp, old, adv, mask, 0.2)[0].backward()
    got = logp.grad.clone()
    logp2 = logp.detach().clone().requires_grad_(True)
    L.ppo_policy_loss(logp2, old, adv, mask, 0.2)[0].backward()
    assert_close(got, logp2.grad, "d loss / d logp")


@check("ex3", "ppo_policy_loss[ratio 1 gives -mean(A); padding ignored]")
def _ppo_one(m, ctx):
    _, old, adv, mask = _ppo_batch(10)
    loss, stats = func(m, "ppo_policy_loss")(old.clone(), old, adv, mask, 0.2)
    assert_close(loss, -(adv * mask).sum() / mask.sum(), "loss at ratio 1")
    assert_close(stats["clip_fraction"], torch.tensor(0.0), "clip fraction at ratio 1")
    junk = old + 50 * (1 - mask)
    loss2, _ = func(m, "ppo_policy_loss")(junk, old, adv + 9 * (1 - mask), mask, 0.2)
    assert_close(loss2, loss, "loss after changing padding positions")


@check("ex3", "value_loss[vs agents.losses.value_loss, with and without clipping]", points=2)
def _vloss(m, ctx):
    g = torch.Generator().manual_seed(11)
    mask = _prefix_mask([5, 2, 4], 5)
    old, ret = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    for clip in (None, 0.2):
        v = (old + 0.5 * torch.randn(3, 5, generator=g)).requires_grad_(True)
        got = func(m, "value_loss")(v, old, ret, mask, clip)
        v2 = v.detach().clone().requires_grad_(True)
        expected = L.value_loss(v2, old, ret, mask, clip)
        assert_close(got, expected, f"value loss (clip_range_vf={clip})")
        got.backward()
        expected.backward()
        assert_close(v.grad, v2.grad, f"d value_loss / d values (clip_range_vf={clip})")


# ---------------------------------------------------------------------------------------- ex4
@check("ex4", "bradley_terry_loss[vs reward_models.bradley_terry]", points=2)
def _bt_ref(m, ctx):
    from reward_models.bradley_terry import bradley_terry_loss

    g = torch.Generator().manual_seed(12)
    c, r, margin = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.rand(16, generator=g)
    fn = func(m, "bradley_terry_loss")
    assert_close(fn(c, r), bradley_terry_loss(c, r), "loss")
    assert_close(fn(c, r, margin), bradley_terry_loss(c, r, margin), "loss with per-pair margins")
    assert_close(fn(c, r, 0.5), bradley_terry_loss(c, r, 0.5), "loss with margin 0.5")


@check("ex4", "bradley_terry_loss[closed forms: ties, gradient, stability]")
def _bt_closed(m, ctx):
    fn = func(m, "bradley_terry_loss")
    assert_close(fn(torch.zeros(5), torch.zeros(5)), torch.tensor(math.log(2)), "loss of equal rewards (log 2)")
    c = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    r = torch.tensor([0.0, 0.5, -1.0])
    fn(c, r).backward()
    assert_close(c.grad, -torch.sigmoid(-(c.detach() - r)) / 3, "d loss / d r_chosen (expected -sigmoid(-d)/N)")
    big = fn(torch.tensor([-200.0]), torch.tensor([0.0]))
    require(bool(torch.isfinite(big)) and abs(float(big) - 200) < 1e-3,
            f"loss of a pair with r_chosen - r_rejected = -200 is {float(big)}, expected 200 (use logsigmoid)")


@check("ex4", "preference_accuracy[vs reference, ties are errors]")
def _acc(m, ctx):
    c, r = torch.tensor([1.0, 2.0, 0.5, 3.0, -1.0]), torch.tensor([0.0, 2.0, 1.0, 1.0, -2.0])
    got = func(m, "preference_accuracy")(c, r)
    require(isinstance(got, float), f"accuracy must be a Python float, got {type(got).__name__}")
    assert_close(torch.tensor(got), torch.tensor(R.preference_accuracy(c, r)), "accuracy (one tie in 5 pairs)")


@check("ex4", "train_linear_reward_model[>= 85% held-out accuracy]", points=2)
def _linear_rm(m, ctx):
    g = torch.Generator().manual_seed(13)
    w_true = torch.randn(8, generator=g)
    a, b = torch.randn(800, 8, generator=g), torch.randn(800, 8, generator=g)
    a_wins = (a @ w_true) > (b @ w_true)
    chosen, rejected = torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)
    w = func(m, "train_linear_reward_model")(chosen[:400], rejected[:400], steps=300, lr=0.05, seed=0)
    w = torch.as_tensor(w).detach()
    require(tuple(w.shape) == (8,), f"weights must have shape (8,), got {tuple(w.shape)}")
    acc = R.preference_accuracy(chosen[400:] @ w, rejected[400:] @ w)
    require(acc >= 0.85, f"held-out accuracy {acc:.3f} < 0.85 after 300 steps (is the sign of the loss right?)")


# ex5 and ex6 (the agent) live in their own module.
import course.checks_rl  # noqa: E402,F401
