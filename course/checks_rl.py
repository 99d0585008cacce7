"""The autograder's checks of exercises 5 and 6 (the hand-written agent and the comparison).

Probes, expected outputs and judges as described in :mod:`course.checks`.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from course import _reference as R
from course.checks import _suffix_mask
from course.grading import check
from course.judging import as_array, assert_close, entry, func, number, require

# ---------------------------------------------------------------------------------------- ex5
_ADV, _ADV2 = "advantages (3 prompts x 4 samples)", "advantages with k=2 (A = +-(R1 - R2))"


def _rewards():
    return torch.randn(12, generator=torch.Generator().manual_seed(14))


def _judge_rloo(got, expected) -> None:
    assert_close(entry(got, _ADV), expected[_ADV], _ADV)
    sums = as_array(got[_ADV], _ADV).reshape(3, 4).sum(-1)
    require(float(np.abs(sums).max()) < 1e-5, "each prompt's advantages must sum to 0")
    assert_close(entry(got, _ADV2), expected[_ADV2], _ADV2)


@check(
    "ex5",
    "rloo_advantages[vs reference and closed forms]",
    points=2,
    judge=_judge_rloo,
    expect=lambda: {_ADV: R.rloo_advantages(_rewards(), 4), _ADV2: torch.tensor([-2.0, 2.0, 0.0, 0.0])},
)
def _rloo(m, ctx):
    fn = func(m, "rloo_advantages")
    return {_ADV: fn(_rewards(), 4), _ADV2: fn(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2)}


_LOSS, _GRAD, _PADDED = "loss", "d loss / d logp (expected -A_i * mask / B)", "loss after changing padding positions"


def _reinforce_inputs():
    g = torch.Generator().manual_seed(15)
    mask = _suffix_mask([3, 5, 1, 4], 6).float()
    logp = (-3 * torch.rand(4, 6, generator=g)).requires_grad_(True)
    return logp, torch.randn(4, generator=g), mask


def _reinforce_expected():
    logp, adv, mask = _reinforce_inputs()
    loss = R.reinforce_loss(logp, adv, mask)
    return {_LOSS: loss, _GRAD: -adv[:, None] * mask / 4, _PADDED: loss}


@check("ex5", "reinforce_loss[value, gradient, padding]", points=2, expect=_reinforce_expected)
def _reinforce(m, ctx):
    fn = func(m, "reinforce_loss")
    logp, adv, mask = _reinforce_inputs()
    loss = fn(logp, adv, mask)
    loss.backward()
    require(logp.grad is not None, "the loss has no gradient with respect to logp (did you detach it?)")
    return {_LOSS: loss, _GRAD: logp.grad, _PADDED: fn(logp.detach() + 7 * (1 - mask), adv, mask)}


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
        ids[i, S - 6 - n :] = torch.cat([prompt, resp])
        attn[i, S - 6 - n :] = 1
    resp_mask = _suffix_mask(lengths, S)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        logp = token_logprobs(model, ids, attn, resp_mask, cfg.temperature, allowed)
        ref_logp = token_logprobs(ref, ids, attn, resp_mask, cfg.temperature, allowed)
    scores = torch.randn(8, generator=g)
    return Batch([""] * 8, [""] * 8, ids, attn, resp_mask, logp, ref_logp, scores), allowed


_STATS = ("loss", "kl", "reward")


def _judge_update(got, expected) -> None:
    stats = entry(got, "stats")
    require(isinstance(stats, dict), "update must return a dict")
    for key in _STATS:
        require(key in stats, f"the returned dict lacks {key!r} (got {sorted(stats)})")
        assert_close(number(stats[key], f"returned {key!r}"), expected["stats"][key], f"returned {key!r}")
    deltas, moved = entry(got, "deltas"), False
    for name, e_delta in expected["deltas"].items():
        what = f"the change of parameter {name}"
        delta = as_array(entry(deltas, name, what), what)
        assert_close(delta, e_delta, what, atol=1e-6, rtol=1e-3)
        moved = moved or bool(np.any(delta != 0))
    require(moved, "update did not change any parameter (did you call optimizer.step()?)")


@check(
    "ex5",
    "update[one SGD step moves the weights exactly as the reference]",
    points=3,
    judge=_judge_update,
    reference=lambda: SimpleNamespace(update=R.rloo_update),
)
def _update(m, ctx):
    from course.scaffold import TrainConfig
    from textenv import load_model

    cfg = TrainConfig.preset("tiny", group_size=4, beta=0.5, max_grad_norm=1.0)
    base = load_model("tiny")
    batch, allowed = _fake_batch(cfg, base)
    mine = copy.deepcopy(base)
    stats = func(m, "update")(mine, torch.optim.SGD(mine.parameters(), lr=1.0), batch, cfg, allowed)
    require(isinstance(stats, dict), f"update must return a dict, got {type(stats).__name__}")
    for key in _STATS:
        require(key in stats, f"the returned dict lacks {key!r} (got {sorted(map(str, stats))})")
    with torch.no_grad():
        deltas = {name: p - p0 for (name, p), p0 in zip(mine.named_parameters(), base.parameters())}
    return {"stats": {key: float(stats[key]) for key in _STATS}, "deltas": deltas}


_TRAIN = {"iterations": 8, "n_prompts": 4, "group_size": 4, "eval_prompts": 8, "max_new_tokens": 8}


def _judge_train(got, expected) -> None:
    history, n = entry(got, "history"), _TRAIN["iterations"]
    require(isinstance(history, list), "the history must be a list of per-iteration dicts")
    require(len(history) == n, f"history has {len(history)} rows, expected {n}")
    values = [
        number(entry(h, k, f"history row {i}: {k}"), f"history row {i}: {k}")
        for i, h in enumerate(history)
        for k in ("score", "kl", "loss")
    ]
    require(all(math.isfinite(v) for v in values), "non-finite score, kl or loss in the history")
    before, after = number(entry(got, "before"), "score before"), number(entry(got, "after"), "score after")
    # 0.15: the reference solution's rise over seeds 0-7 was min 0.43 / median 0.54 / max 0.89
    # (`make sweep ARGS=course_ex5`, 2026-11-30), so the bar holds with margin on any seed.
    require(
        after > before + 0.15,
        f"held-out score went from {before:+.3f} to {after:+.3f} in {n} "
        f"iterations; expected a rise of more than 0.15 (the reference gets ~+0.5)",
    )


@check("ex5", "train[a short run on the tiny model raises the held-out score]", points=2, judge=_judge_train)
def _train(m, ctx):
    from course.scaffold import TrainConfig

    out = func(m, "train")(TrainConfig.preset("tiny", **_TRAIN), verbose=False)
    return {
        "history": [{k: float(h[k]) for k in ("score", "kl", "loss")} for h in out["history"]],
        "before": float(out["before"]["score"]),
        "after": float(out["after"]["score"]),
    }


# ---------------------------------------------------------------------------------------- ex6
MAX_CSV_BYTES = 2**20


def _comparison(m, ctx) -> Path:
    """The folder the student's ``run_comparison`` wrote to (run once per grading process: two checks read it)."""
    if "ex6" not in ctx:
        from course.scaffold import TrainConfig

        out_dir = Path(ctx["tmp"]) / "ex6"  # inside the grader's temporary folder for this child
        cfg = TrainConfig.preset("tiny", iterations=3, n_prompts=2, group_size=2, eval_prompts=2, max_new_tokens=6)
        try:
            ctx["ex6"] = (out_dir, func(m, "run_comparison")(out_dir, cfg), None)
        except Exception as exc:
            ctx["ex6"] = (out_dir, None, exc)
    out_dir, path, exc = ctx["ex6"]
    if exc is not None:
        raise exc
    return out_dir


def _judge_csv(got, expected) -> None:
    text = entry(got, "csv")
    require(isinstance(text, str), "curves.csv could not be read")
    rows = list(csv.DictReader(io.StringIO(text)))
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
            except (TypeError, ValueError):
                ok = False
            require(ok, f"curves.csv row {i + 1}: {col}={r[col]!r} is not a finite number")


@check(
    "ex6", "run_comparison[curves.csv: algorithm, iteration, score, kl; >= 2 algorithms]", points=2, judge=_judge_csv
)
def _curves_csv(m, ctx):
    path = _comparison(m, ctx) / "curves.csv"
    require(path.exists(), f"{path} was not written")
    require(path.stat().st_size <= MAX_CSV_BYTES, f"{path} is larger than {MAX_CSV_BYTES} bytes")
    return {"csv": path.read_text(errors="replace")}


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _judge_png(got, expected) -> None:
    require(entry(got, "head") == PNG_MAGIC.hex(), f"{entry(got, 'path')} is not a PNG file")


@check("ex6", "run_comparison[curves.png is a PNG image]", judge=_judge_png)
def _curves_png(m, ctx):
    path = _comparison(m, ctx) / "curves.png"
    require(path.exists(), f"{path} was not written (use course.scaffold.plot_curves)")
    with open(path, "rb") as f:
        return {"head": f.read(len(PNG_MAGIC)).hex(), "path": str(path)}
