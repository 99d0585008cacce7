"""The autograder's checks of exercises 3 (PPO losses) and 4 (Bradley-Terry reward model).

Probes, expected outputs and judges as described in :mod:`course.checks`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from course import _reference as R
from course.checks import _prefix_mask
from course.grading import check
from course.judging import as_array, assert_close, compare_all, entry, func, number, require


def _losses():
    from agents import losses

    return losses


# ---------------------------------------------------------------------------------------- ex3
def _ppo_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = _prefix_mask([6, 3, 5], 6)
    old = -2 * torch.rand(3, 6, generator=g)
    logp = (old + 0.6 * torch.randn(3, 6, generator=g)).requires_grad_(True)
    adv = torch.randn(3, 6, generator=g)
    return logp, old, adv, mask


_MASKED = ("masked mean", "whitened values", "whitened values after changing padding")


def _masked_inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 6, generator=g), _prefix_mask([6, 2, 4], 6)


def _masked_expected():
    x, mask = _masked_inputs()
    L = _losses()
    return dict(zip(_MASKED, (L.masked_mean(x, mask), L.masked_whiten(x, mask), L.masked_whiten(x, mask))))


@check("ex3", "masked_mean and masked_whiten[vs agents.losses]", expect=_masked_expected)
def _masked(m, ctx):
    x, mask = _masked_inputs()
    y = x + 100 * (1 - mask)  # padding must not matter
    mean = func(m, "masked_mean")(x, mask)  # first, as the exercise file defines it first
    whiten = func(m, "masked_whiten")
    return dict(zip(_MASKED, (mean, whiten(x, mask), whiten(y, mask))))


PPO_CLIPS = (0.2, 0.1)


def _judge_ppo(got, expected) -> None:
    for clip in PPO_CLIPS:
        what = f"loss (clip_range={clip})"
        assert_close(entry(got, what), expected[what], what)
        stats, e_stats = entry(got, f"stats (clip_range={clip})"), expected[f"stats (clip_range={clip})"]
        require(isinstance(stats, dict), "the second return value must be a dict of stats")
        for key in ("clip_fraction", "approx_kl"):
            require(key in stats, f"stats lack {key!r} (got keys {sorted(stats)})")
            assert_close(stats[key], e_stats[key], f"stats[{key!r}] (clip_range={clip})")


@check("ex3", "ppo_policy_loss[vs agents.losses.ppo_policy_loss]", points=2, reference=_losses, judge=_judge_ppo)
def _ppo_ref(m, ctx):
    out = {}
    for clip in PPO_CLIPS:
        logp, old, adv, mask = _ppo_batch(8)
        loss, stats = func(m, "ppo_policy_loss")(logp, old, adv, mask, clip)
        require(isinstance(stats, dict), f"the second return value must be a dict of stats, got {type(stats).__name__}")
        out[f"loss (clip_range={clip})"] = loss
        out[f"stats (clip_range={clip})"] = {k: stats[k] for k in ("clip_fraction", "approx_kl") if k in stats}
    return out


@check("ex3", "ppo_policy_loss[gradient: clipped tokens get none]", reference=_losses)
def _ppo_grad(m, ctx):
    logp, old, adv, mask = _ppo_batch(9)
    func(m, "ppo_policy_loss")(logp, old, adv, mask, 0.2)[0].backward()
    require(logp.grad is not None, "the loss has no gradient with respect to logp (did you detach it?)")
    return {"d loss / d logp": logp.grad}


_RATIO_ONE = ("loss at ratio 1", "clip fraction at ratio 1", "loss after changing padding positions")


def _ratio_one_expected():
    _, old, adv, mask = _ppo_batch(10)
    loss = -(adv * mask).sum() / mask.sum()
    return dict(zip(_RATIO_ONE, (loss, torch.tensor(0.0), loss)))


@check("ex3", "ppo_policy_loss[ratio 1 gives -mean(A); padding ignored]", expect=_ratio_one_expected)
def _ppo_one(m, ctx):
    _, old, adv, mask = _ppo_batch(10)
    loss, stats = func(m, "ppo_policy_loss")(old.clone(), old, adv, mask, 0.2)
    junk = old + 50 * (1 - mask)
    loss2, _ = func(m, "ppo_policy_loss")(junk, old, adv + 9 * (1 - mask), mask, 0.2)
    return dict(zip(_RATIO_ONE, (loss, stats["clip_fraction"], loss2)))


@check("ex3", "value_loss[vs agents.losses.value_loss, with and without clipping]", points=2, reference=_losses)
def _vloss(m, ctx):
    g = torch.Generator().manual_seed(11)
    mask = _prefix_mask([5, 2, 4], 5)
    old, ret = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    out = {}
    for clip in (None, 0.2):
        v = (old + 0.5 * torch.randn(3, 5, generator=g)).requires_grad_(True)
        loss = func(m, "value_loss")(v, old, ret, mask, clip)
        out[f"value loss (clip_range_vf={clip})"] = loss
        loss.backward()
        out[f"d value_loss / d values (clip_range_vf={clip})"] = v.grad
    return out


# ---------------------------------------------------------------------------------------- ex4
def _bt_reference():
    from reward_models.bradley_terry import bradley_terry_loss

    return SimpleNamespace(bradley_terry_loss=bradley_terry_loss)


@check("ex4", "bradley_terry_loss[vs reward_models.bradley_terry]", points=2, reference=_bt_reference)
def _bt_ref(m, ctx):
    g = torch.Generator().manual_seed(12)
    c, r, margin = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.rand(16, generator=g)
    fn = func(m, "bradley_terry_loss")
    return {"loss": fn(c, r), "loss with per-pair margins": fn(c, r, margin), "loss with margin 0.5": fn(c, r, 0.5)}


_TIES, _GRAD = "loss of equal rewards (log 2)", "d loss / d r_chosen (expected -sigmoid(-d)/N)"
_PAIR = (torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.0, 0.5, -1.0]))


def _judge_bt_closed(got, expected) -> None:
    compare_all(got, expected)
    big = number(entry(got, "big"), "loss of a pair with r_chosen - r_rejected = -200")
    require(
        math.isfinite(big) and abs(big - 200) < 1e-3,
        f"loss of a pair with r_chosen - r_rejected = -200 is {big}, expected 200 (use logsigmoid)",
    )


@check(
    "ex4",
    "bradley_terry_loss[closed forms: ties, gradient, stability]",
    judge=_judge_bt_closed,
    expect=lambda: {_TIES: torch.tensor(math.log(2)), _GRAD: -torch.sigmoid(-(_PAIR[0] - _PAIR[1])) / 3},
)
def _bt_closed(m, ctx):
    fn = func(m, "bradley_terry_loss")
    ties = fn(torch.zeros(5), torch.zeros(5))
    c, r = _PAIR[0].clone().requires_grad_(True), _PAIR[1].clone()
    fn(c, r).backward()
    return {_TIES: ties, _GRAD: c.grad, "big": fn(torch.tensor([-200.0]), torch.tensor([0.0]))}


_ACC = "accuracy (one tie in 5 pairs)"
_ACC_PAIRS = (torch.tensor([1.0, 2.0, 0.5, 3.0, -1.0]), torch.tensor([0.0, 2.0, 1.0, 1.0, -2.0]))


def _judge_acc(got, expected) -> None:
    value = entry(got, _ACC)
    require(type(value) is float, f"accuracy must be a Python float, got {type(value).__name__}")
    assert_close(value, expected, _ACC)


@check(
    "ex4",
    "preference_accuracy[vs reference, ties are errors]",
    judge=_judge_acc,
    expect=lambda: R.preference_accuracy(*_ACC_PAIRS),
)
def _acc(m, ctx):
    got = func(m, "preference_accuracy")(*_ACC_PAIRS)
    require(isinstance(got, float), f"accuracy must be a Python float, got {type(got).__name__}")
    return {_ACC: got}


def _preferences():
    g = torch.Generator().manual_seed(13)
    w_true = torch.randn(8, generator=g)
    a, b = torch.randn(800, 8, generator=g), torch.randn(800, 8, generator=g)
    a_wins = (a @ w_true) > (b @ w_true)
    return torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)


def _judge_linear_rm(got, held_out) -> None:
    w = as_array(entry(got, "weights"), "weights")
    require(w.shape == (8,), f"weights must have shape (8,), got {tuple(w.shape)}")
    w = torch.as_tensor(w, dtype=torch.float32)
    chosen, rejected = held_out
    acc = R.preference_accuracy(chosen @ w, rejected @ w)
    require(acc >= 0.85, f"held-out accuracy {acc:.3f} < 0.85 after 300 steps (is the sign of the loss right?)")


@check(
    "ex4",
    "train_linear_reward_model[>= 85% held-out accuracy]",
    points=2,
    judge=_judge_linear_rm,
    expect=lambda: tuple(x[400:] for x in _preferences()),
)
def _linear_rm(m, ctx):
    chosen, rejected = _preferences()
    return {"weights": func(m, "train_linear_reward_model")(chosen[:400], rejected[:400], steps=300, lr=0.05, seed=0)}
