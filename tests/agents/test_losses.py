"""agents/losses.py against naive versions and closed forms."""

import pytest
import torch

from agents.losses import gae, masked_mean, masked_whiten, ppo_policy_loss, value_loss


def naive_gae(rewards, values, lengths, gamma, lam):
    """One episode at a time, the textbook loop; episodes start at column 0."""
    adv = torch.zeros_like(rewards)
    for i, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[i, t + 1] if t + 1 < n else 0.0  # terminated: no bootstrap
            delta = rewards[i, t] + gamma * next_v - values[i, t]
            last = delta + gamma * lam * last
            adv[i, t] = last
    return adv


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (1.0, 1.0), (0.9, 0.8)])
def test_gae_matches_the_hand_loop_left_aligned(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lengths = [6, 3, 1, 5]
    mask = torch.zeros(4, 6)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    rewards, values = rewards * mask, values * mask
    adv, ret = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, naive_gae(rewards, values, lengths, gamma, lam))
    torch.testing.assert_close(ret, (adv + values) * mask)


def test_gae_right_aligned_equals_left_aligned():
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    left_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    right_mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    adv_l, _ = gae(r * left_mask, v * left_mask, left_mask)
    r_right, v_right = torch.roll(r * left_mask, 1, -1), torch.roll(v * left_mask, 1, -1)
    adv_r, _ = gae(r_right, v_right, right_mask)
    torch.testing.assert_close(adv_r[:, 1:], adv_l[:, :3])


def test_terminal_reward_closed_form():
    """One terminal score R, V = 0: A_t = (gamma * lam)^(n-1-t) * R."""
    n, R, lam = 5, 2.0, 0.9
    rewards = torch.zeros(1, n)
    rewards[0, -1] = R
    adv, ret = gae(rewards, torch.zeros(1, n), torch.ones(1, n), 1.0, lam)
    torch.testing.assert_close(adv[0], torch.tensor([lam ** (n - 1 - t) * R for t in range(n)]))
    adv1, ret1 = gae(rewards, torch.zeros(1, n), torch.ones(1, n), 1.0, 1.0)
    torch.testing.assert_close(ret1[0], torch.full((n,), R))  # lambda 1: every return is the score


def test_ppo_policy_loss_against_naive():
    g = torch.Generator().manual_seed(2)
    logp, old, adv = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.float32)
    loss, stats = ppo_policy_loss(logp, old, adv, mask, 0.2)
    terms = []
    for i in range(3):
        for t in range(4):
            if mask[i, t]:
                ratio = float(torch.exp(logp[i, t] - old[i, t]))
                a = float(adv[i, t])
                terms.append(min(ratio * a, max(min(ratio, 1.2), 0.8) * a))
    assert float(loss) == pytest.approx(-sum(terms) / len(terms), rel=1e-5)
    same, s2 = ppo_policy_loss(old, old, adv, mask, 0.2)
    assert float(s2["ratio"]) == pytest.approx(1.0) and float(s2["approx_kl"]) == 0.0
    assert float(s2["clip_fraction"]) == 0.0


def test_value_loss_clipped_and_plain():
    v, old, ret = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 2.0]])
    mask = torch.ones(1, 2)
    assert float(value_loss(v, old, ret, mask)) == pytest.approx((1 + 1) / 2)
    # clipped at 0.5 around old: clip(1)=0.5 -> (0.5-2)^2=2.25 > 1; clip(3)=0.5 -> 2.25 > 1
    assert float(value_loss(v, old, ret, mask, 0.5)) == pytest.approx(0.5 * (2.25 + 2.25) / 2)


def test_masked_whiten_and_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert float(masked_mean(w, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(masked_mean(w**2, mask)) == pytest.approx(1.0, abs=1e-4)
    assert float(w[0, 3]) == 0.0
