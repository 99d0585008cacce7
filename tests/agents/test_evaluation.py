"""Held-out evaluation metrics (agents/evaluation.py)."""

import numpy as np
import pytest
import torch

from agents.evaluation import EvalResult, distinct_n, evaluate_policy, sample_responses, sequence_logprobs, win_rate
from reward_models import make_reward
from textrlhf.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def setup():
    tok = load_tokenizer("tiny")
    prompts = ["The film opens with", "I watched this movie and", "The soundtrack is"]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return load_model("tiny"), tok, prompts, ids


def test_distinct_n_by_hand():
    assert distinct_n(["a b a b", "a b c"], 1) == 3 / 7
    assert distinct_n(["a b a b", "a b c"], 2) == 3 / 5  # (a b) x3, (b a), (b c)
    assert distinct_n(["one"], 2) == 0.0


def test_sampling_is_seeded_stops_at_eos_and_matches_env_decoding(setup):
    model, tok, prompts, ids = setup
    a = sample_responses(model, tok, prompts, ids, max_new_tokens=6, seed=3)
    b = sample_responses(model, tok, prompts, ids, max_new_tokens=6, seed=3)
    assert a.responses == b.responses and torch.equal(a.input_ids, b.input_ids)
    assert (a.response_lengths >= 1).all() and (a.response_lengths <= 6).all()
    for i in range(len(prompts)):  # the packed row is exactly prompt + response, left-padded
        row = a.input_ids[i][a.attention_mask[i].bool()].tolist()
        assert row[: len(ids[i])] == ids[i]
        resp = a.input_ids[i][a.response_mask[i]].tolist()
        assert tok.decode([t for t in resp if t != tok.eos_token_id], skip_special_tokens=True) == a.responses[i]


def test_sampling_is_the_rollouts_inverse_cdf_draw_under_the_seed(setup):
    from agents.evaluation import _pack
    from textrlhf.lm import generate

    model, tok, prompts, ids = setup
    s = sample_responses(model, tok, prompts, ids, max_new_tokens=6, temperature=0.7, seed=3, batch_size=3)
    packed, mask, _ = _pack(ids, [[] for _ in ids], tok.pad_token_id)
    torch.manual_seed(3)
    out = generate(model, packed, mask, 6, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   temperature=0.7, min_new_tokens=1, method="inverse_cdf")  # fmt: skip
    responses = [row[:n] for row, n in zip(out.tokens.tolist(), out.lengths.tolist())]
    assert [s.input_ids[i][s.response_mask[i]].tolist() for i in range(len(ids))] == responses


def test_sequence_logprobs_match_a_naive_loop(setup):
    model, tok, prompts, ids = setup
    s = sample_responses(model, tok, prompts, ids, max_new_tokens=4, seed=0)
    fast = sequence_logprobs(model, s, temperature=0.7)
    for i in range(len(prompts)):
        row = s.input_ids[i][s.attention_mask[i].bool()]
        n_resp = int(s.response_mask[i].sum())
        total = 0.0
        for j in range(len(row) - n_resp, len(row)):  # one unpadded forward per token
            with torch.no_grad():
                logits = model(row[None, :j]).logits[0, -1] / 0.7
            total += float(torch.log_softmax(logits, -1)[row[j]])
        assert fast[i].item() == pytest.approx(total, abs=1e-4)


def test_evaluate_policy_equals_one_teacher_forced_pass_per_quantity(setup):
    """The evaluation's shared reference forward (both temperatures at once, and the reference as a policy
    reusing it) gives exactly what three separate passes give."""
    model, tok, prompts, ids = setup
    other = load_model("tiny")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    kwargs = dict(max_new_tokens=5, temperature=0.7, seed=1)
    for policy in (other, model):
        res = evaluate_policy(
            "p", policy, model, tok, prompts, ids, make_reward("sentiment"), make_reward("length", target=3), **kwargs
        )
        s = sample_responses(policy, tok, prompts, ids, **kwargs)
        logp, ref_t = sequence_logprobs(policy, s, 0.7), sequence_logprobs(model, s, 0.7)
        ref_1 = sequence_logprobs(model, s, 1.0)
        assert res.kl == pytest.approx((logp - ref_t).tolist(), abs=1e-6)
        n_tokens = int(s.response_mask.sum())
        assert res.metrics["ref_perplexity"] == pytest.approx(float(np.exp(-float(ref_1.sum()) / n_tokens)), rel=1e-6)
        assert set(res.seconds) == {"generate", "logprobs", "reward_model", "annotator"}
        assert all(v >= 0 for v in res.seconds.values())


def test_evaluate_policy_and_win_rate(setup):
    model, tok, prompts, ids = setup
    res = evaluate_policy(
        "start",
        model,
        model,
        tok,
        prompts,
        ids,
        make_reward("sentiment"),
        make_reward("length", target=3),
        max_new_tokens=5,
        seed=0,
    )
    assert res.metrics["kl"] == 0.0  # policy == reference
    assert set(res.metrics) == {
        "rm_score",
        "annotator_score",
        "kl",
        "distinct_1",
        "distinct_2",
        "ref_perplexity",
        "response_len",
    }
    assert res.metrics["ref_perplexity"] > 1.0
    assert len(res.responses) == len(res.annotator_scores) == 3
    better = EvalResult("t", res.prompts, res.responses, res.rm_scores, [9.0, 9.0, -9.0], res.kl, res.response_lengths)
    worse = EvalResult("s", res.prompts, res.responses, res.rm_scores, [0.0, 9.0, 0.0], res.kl, res.response_lengths)
    assert win_rate(better, worse) == pytest.approx((1 + 0.5 + 0) / 3)
    with pytest.raises(ValueError, match="same prompts"):
        win_rate(better, EvalResult("x", ["other"], [""], [0.0], [0.0], [0.0], [1]))
    assert np.isfinite(list(res.metrics.values())).all()
