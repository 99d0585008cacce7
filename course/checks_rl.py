"""The autograder's checks of exercises 5 and 6 (the hand-written agent and the comparison)."""

from __future__ import annotations

import copy
import csv
import math
import tempfile
from pathlib import Path

import torch

from course import _reference as R
from course.checks import _suffix_mask
from course.grading import assert_close, check, func, require


# ---------------------------------------------------------------------------------------- ex5
@check("ex5", "rloo_advantages[vs reference and closed forms]", points=2)
def _rloo(m, ctx):
    fn = func(m, "rloo_advantages")
    g = torch.Generator().manual_seed(14)
    r = torch.randn(12, generator=g)
    assert_close(fn(r, 4), R.rloo_advantages(r, 4), "advantages (3 prompts x 4 samples)")
    require(float(fn(r, 4).reshape(3, 4).sum(-1).abs().max()) < 1e-5, "each prompt's advantages must sum to 0")
    assert_close(fn(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2), torch.tensor([-2.0, 2.0, 0.0, 0.0]),
                 "advantages with k=2 (A = +-(R1 - R2))")


@check("ex5", "reinforce_loss[value, gradient, padding]", points=2)
def _reinforce(m, ctx):
    fn = func(m, "reinforce_loss")
    g = torch.Generator().manual_seed(15)
    mask = _suffix_mask([3, 5, 1, 4], 6).float()
    logp = (-3 * torch.rand(4, 6, generator=g)).requires_grad_(True)
    adv = torch.randn(4, generator=g)
    loss = fn(logp, adv, mask)
    assert_close(loss, R.reinforce_loss(logp, adv, mask), "loss")
    loss.backward()
    assert_close(logp.grad, -adv[:, None] * mask / 4, "d loss / d logp (expected -A_i * mask / B)")
    assert_close(fn(logp.detach() + 7 * (1 - mask), adv, mask), loss, "loss after changing padding positions")


def _fake_batch(cfg, model):
    """A seeded batch of 2 prompts x 4 samples without the env: random prompts, allowed-word responses."""
    from course.scaffold import Batch, allowed_token_ids, token_logprobs
    from textenv import load_tokenizer

    allowed = allowed_token_ids(cfg, load_tokenizer(cfg.model))
    g = torch.Generator().manual_seed(16)
    lengths = [4, 2, 5, 3, 5, 1, 4, 5]
    S = 6 + 5
    ids = torch.zeros(8, S, dtype=torch.long)
    attn = torch.zeros(8, S, dtype=torch.long)
    prompt = torch.zeros(6, dtype=torch.long)
    for i, n in enumerate(lengths):
        if i % 4 == 0:  # rows of one prompt share it
            prompt = torch.randint(100, 5000, (6,), generator=g)
        resp = torch.tensor(allowed)[torch.randint(len(allowed), (n,), generator=g)]
        ids[i, S - 6 - n:] = torch.cat([prompt, resp])
        attn[i, S - 6 - n:] = 1
    resp_mask = _suffix_mask(lengths, S)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        logp = token_logprobs(model, ids, attn, resp_mask, cfg.temperature, allowed)
        ref_logp = token_logprobs(ref, ids, attn, resp_mask, cfg.temperature, allowed)
    scores = torch.randn(8, generator=g)
    return Batch([""] * 8, [""] * 8, ids, attn, resp_mask, logp, ref_logp, scores), allowed


@check("ex5", "update[one SGD step moves the weights exactly as the reference]", points=3)
def _update(m, ctx):
    from course.scaffold import TrainConfig
    from textenv import load_model

    cfg = TrainConfig.preset("tiny", group_size=4, beta=0.5, max_grad_norm=1.0)
    base = load_model("tiny")
    batch, allowed = _fake_batch(cfg, base)
    mine, ref = copy.deepcopy(base), copy.deepcopy(base)
    stats = func(m, "update")(mine, torch.optim.SGD(mine.parameters(), lr=1.0), batch, cfg, allowed)
    expected = R.rloo_update(ref, torch.optim.SGD(ref.parameters(), lr=1.0), batch, cfg, allowed)
    require(isinstance(stats, dict), f"update must return a dict, got {type(stats).__name__}")
    for key in ("loss", "kl", "reward"):
        require(key in stats, f"the returned dict lacks {key!r} (got {sorted(stats)})")
        assert_close(torch.tensor(float(stats[key])), torch.tensor(expected[key]), f"returned {key!r}")
    moved = False
    for (name, p), q, p0 in zip(mine.named_parameters(), ref.parameters(), base.parameters()):
        assert_close(p - p0, q - p0, f"the change of parameter {name}", atol=1e-6, rtol=1e-3)
        moved = moved or not torch.equal(p, p0)
    require(moved, "update did not change any parameter (did you call optimizer.step()?)")


@check("ex5", "train[a short run on the tiny model raises the held-out score]", points=2)
def _train(m, ctx):
    from course.scaffold import TrainConfig

    cfg = TrainConfig.preset("tiny", iterations=8, n_prompts=4, group_size=4, eval_prompts=8, max_new_tokens=8)
    out = func(m, "train")(cfg, verbose=False)
    history = out["history"]
    require(len(history) == cfg.iterations, f"history has {len(history)} rows, expected {cfg.iterations}")
    require(all(math.isfinite(h["score"]) and math.isfinite(h["kl"]) and math.isfinite(h["loss"]) for h in history),
            "non-finite score, kl or loss in the history")
    before, after = out["before"]["score"], out["after"]["score"]
    require(after > before + 0.15, f"held-out score went from {before:+.3f} to {after:+.3f} in {cfg.iterations} "
            f"iterations; expected a rise of more than 0.15 (the reference gets ~+0.5)")


# ---------------------------------------------------------------------------------------- ex6
def _comparison(m, ctx):
    if "ex6" not in ctx:
        from course.scaffold import TrainConfig

        out_dir = Path(tempfile.mkdtemp(prefix="course-ex6-"))
        cfg = TrainConfig.preset("tiny", iterations=3, n_prompts=2, group_size=2, eval_prompts=2, max_new_tokens=6)
        try:
            ctx["ex6"] = (out_dir, func(m, "run_comparison")(out_dir, cfg), None)
        except Exception as exc:
            ctx["ex6"] = (out_dir, None, exc)
    out_dir, path, exc = ctx["ex6"]
    if exc is not None:
        raise exc
    return out_dir


@check("ex6", "run_comparison[curves.csv: algorithm, iteration, score, kl; >= 2 algorithms]", points=2)
def _curves_csv(m, ctx):
    out_dir = _comparison(m, ctx)
    path = out_dir / "curves.csv"
    require(path.exists(), f"{path} was not written")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("algorithm", "iteration", "score", "kl") if c not in (rows[0] if rows else {})]
    require(rows and not missing, f"curves.csv lacks the column(s) {missing} (or has no rows)")
    algos = {r["algorithm"] for r in rows}
    require(len(algos) >= 2, f"curves.csv has {len(algos)} algorithm(s) {sorted(algos)}; compare at least 2")
    for algo in algos:
        n = sum(r["algorithm"] == algo for r in rows)
        require(n >= 2, f"algorithm {algo!r} has {n} row(s) in curves.csv; log one per iteration")
    for i, r in enumerate(rows):
        for col in ("iteration", "score", "kl"):
            try:
                ok = math.isfinite(float(r[col]))
            except ValueError:
                ok = False
            require(ok, f"curves.csv row {i + 1}: {col}={r[col]!r} is not a finite number")


@check("ex6", "run_comparison[curves.png is a PNG image]")
def _curves_png(m, ctx):
    path = _comparison(m, ctx) / "curves.png"
    require(path.exists(), f"{path} was not written (use course.scaffold.plot_curves)")
    require(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file")
