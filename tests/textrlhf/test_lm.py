"""The shared LM interface (textrlhf/lm/): KV cache, sampler, generation, teacher-forced log-probs.

Each operation is checked against what it replaced: full forwards, Hugging Face ``generate``, the
per-site sampling code, a naive one-forward-per-token loop.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from textrlhf.lm import (
    KVCache,
    KVCacheRunner,
    generate,
    position_ids_from_mask,
    restrict_logits,
    sample_tokens,
    token_logprobs,
    trunk_hidden,
)
from textrlhf.models import load_model, load_tokenizer

PROMPTS = ["The film opens with", "I watched this movie and", "Hello", "A", "The soundtrack is"]


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model("tiny"), load_tokenizer("tiny")
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    return model, tok, enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def eos_prone(tiny):
    """The tiny model with a bias on its EOS logit, so that sampled rows end early (P(EOS) >= ~1/4 a step).

    A bias, not a tuned EOS row: the random model's hidden states differ between transformers releases
    (``make test-lowest``), and the bias sets the EOS probability whatever they are, as its logits are
    all near 0."""
    model, tok, _, _ = tiny
    model = copy.deepcopy(model)
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = math.log(old.out_features / 3)
    model.set_output_embeddings(head)
    return model


def _full_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]


def test_kv_cache_prefill_and_extend_equal_full_forwards_for_an_lm_and_its_trunk(tiny):
    model, _, ids, mask = tiny
    new = torch.randint(5, 1000, (ids.shape[0], 4), generator=torch.Generator().manual_seed(0))
    for module in (model, model.base_model):
        cache = KVCache(module)
        assert cache.returns_logits == (module is model)
        with torch.no_grad():
            outs = [cache.prefill(ids, mask)]
            outs += [cache.extend(new[:, j]) for j in range(new.shape[1])]
        for j, got in enumerate(outs):
            full_ids = torch.cat([ids, new[:, :j]], 1)
            full_mask = torch.cat([mask, torch.ones_like(new[:, :j])], 1)
            if module is model:
                expected = _full_logits(model, full_ids, full_mask)
            else:
                with torch.no_grad():
                    expected = trunk_hidden(module, full_ids, full_mask)[:, -1]
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_kv_cache_select_merge_and_trim_keep_every_row_exact(tiny):
    model, _, ids, mask = tiny
    trunk = model.base_model
    with torch.no_grad():
        a = KVCache(trunk)
        a.prefill(ids[:3], mask[:3])
        b = KVCache(trunk)
        b.prefill(ids[3:, 2:], mask[3:, 2:])  # a shorter cache: merged with masked left padding
        merged = KVCache.merge(5, [(torch.tensor([0, 2, 4]), a), (torch.tensor([1, 3]), b)]).trim()
        tok = torch.tensor([7, 8, 9, 10, 11])
        got = merged.extend(tok)
        rows = [ids[0], ids[3, 2:], ids[1], ids[4, 2:], ids[2]]
        masks = [mask[0], mask[3, 2:], mask[1], mask[4, 2:], mask[2]]
        for i, (r, m) in enumerate(zip(rows, masks)):
            expected = trunk_hidden(trunk, torch.cat([r, tok[i : i + 1]])[None], torch.cat([m, m.new_ones(1)])[None])
            torch.testing.assert_close(got[i], expected[0, -1], atol=1e-4, rtol=0)
        picked = a.select(torch.tensor([2, 0]))
        expected = trunk_hidden(
            trunk, torch.cat([ids[[2, 0]], tok[:2, None]], 1), torch.cat([mask[[2, 0]], mask[:2, :1] * 0 + 1], 1)
        )
        torch.testing.assert_close(picked.extend(tok[:2]), expected[:, -1], atol=1e-4, rtol=0)


def test_window_runner_equals_full_forward_over_sliding_windows(tiny):
    model, _, ids, mask = tiny
    runner = KVCacheRunner(model.base_model)
    g = torch.Generator().manual_seed(1)
    ids, mask = ids.clone(), mask.clone()
    with torch.no_grad():
        for _ in range(4):
            torch.testing.assert_close(
                runner(ids, mask), trunk_hidden(model.base_model, ids, mask)[:, -1], atol=1e-4, rtol=0
            )
            new = torch.randint(5, 1000, (ids.shape[0], 1), generator=g)
            ids, mask = torch.cat([ids[:, 1:], new], 1), torch.cat([mask[:, 1:], torch.ones_like(new)], 1)
    assert runner.stats["incremental"] > 0 and runner.stats["full"] > 0


def test_sample_tokens_reproduces_the_old_per_site_draws_for_a_fixed_generator():
    logits = restrict_logits(torch.randn(6, 300, generator=torch.Generator().manual_seed(0)), list(range(0, 300, 2)))
    # the course's loop: torch.multinomial(exp(log_softmax)) with the caller's generator
    logp_all = torch.log_softmax(logits, -1)
    old = torch.multinomial(logp_all.exp(), 1, generator=torch.Generator().manual_seed(4)).squeeze(-1)
    new, logp = sample_tokens(logits, torch.Generator().manual_seed(4), method="multinomial")
    assert torch.equal(new, old)
    torch.testing.assert_close(logp, logp_all.gather(-1, old[:, None]).squeeze(-1), atol=0, rtol=0)
    # the rollouts' inverse-CDF draw on torch's global stream, as agents/rollout.py made it
    torch.manual_seed(9)
    cdf = logp_all.exp().double().cumsum(-1)
    u = torch.rand((6, 1), dtype=torch.float64) * cdf[:, -1:]
    old = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=299)
    torch.manual_seed(9)
    assert torch.equal(sample_tokens(logits)[0], old)
    assert torch.equal(sample_tokens(logits, torch.Generator().manual_seed(9))[0], old)  # same stream, own generator
    assert (old % 2 == 0).all()  # never a masked token
    with pytest.raises(ValueError, match="inverse_cdf"):
        sample_tokens(logits, method="top_k")


@pytest.mark.parametrize("temperature,min_new_tokens", [(1.0, 0), (0.7, 1)])
def test_generate_draws_what_hugging_face_generate_draws(tiny, eos_prone, temperature, min_new_tokens):
    _, tok, ids, mask = tiny
    for seed in range(3):
        torch.manual_seed(seed)
        hf = eos_prone.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=10,
            min_new_tokens=min_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[:, ids.shape[1] :]
        torch.manual_seed(seed)
        out = generate(
            eos_prone,
            ids,
            mask,
            10,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            temperature=temperature,
            min_new_tokens=min_new_tokens,
        )
        assert torch.equal(out.tokens, hf)
        ended = (hf == tok.eos_token_id).any(-1)
        assert ended.any()  # the EOS path is exercised
        for row, n in zip(hf.tolist(), out.lengths.tolist()):
            assert n == (row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row))
        if min_new_tokens:
            assert (out.tokens[:, 0] != tok.eos_token_id).all()


def test_generate_with_allowed_tokens_and_a_generator_is_seeded_and_restricted(tiny):
    model, tok, ids, mask = tiny
    allowed = [11, 12, 13, tok.eos_token_id]
    runs = [
        generate(
            model,
            ids,
            mask,
            6,
            pad_token_id=tok.pad_token_id,
            allowed_tokens=allowed,
            generator=torch.Generator().manual_seed(2),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].logp, runs[1].logp)
    assert torch.isin(runs[0].tokens, torch.tensor(allowed)).all()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, ids, mask, 4, pad_token_id=0, temperature=0.0)


def test_token_logprobs_match_a_naive_loop_and_keep_gradients(tiny):
    model, _, ids, mask = tiny
    new = torch.randint(5, 1000, (ids.shape[0], 3), generator=torch.Generator().manual_seed(3))
    full_ids, full_mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    resp = torch.zeros_like(full_ids, dtype=torch.bool)
    resp[:, -3:] = True
    resp[0, -3] = False  # a shorter response in row 0
    lp = token_logprobs(model, full_ids, full_mask, resp, temperature=0.7)
    assert lp.requires_grad
    lp.sum().backward()
    assert model.get_output_embeddings().weight.grad is not None
    model.zero_grad(set_to_none=True)
    for i in range(ids.shape[0]):
        row = full_ids[i][full_mask[i].bool()]
        for j in range(full_ids.shape[1]):
            if not resp[i, j]:
                assert lp[i, j] == 0
                continue
            k = len(row) - (full_ids.shape[1] - j)  # index of column j in the unpadded row
            with torch.no_grad():
                logits = model(row[None, :k]).logits[0, -1] / 0.7
            assert lp[i, j].item() == pytest.approx(float(torch.log_softmax(logits, -1)[row[k]]), abs=1e-4)
    with pytest.raises(ValueError, match="position 0"):
        token_logprobs(model, full_ids, full_mask, torch.ones_like(resp))


def test_token_logprobs_at_several_temperatures_equal_one_call_per_temperature(tiny):
    """One forward for several temperatures (the evaluation's reference pass) == a forward per temperature."""
    from textrlhf.lm import token_logprobs_at

    model, _, ids, mask = tiny
    new = torch.randint(5, 1000, (ids.shape[0], 3), generator=torch.Generator().manual_seed(4))
    full_ids, full_mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    resp = torch.zeros_like(full_ids, dtype=torch.bool)
    resp[:, -3:] = True
    with torch.no_grad():
        both = token_logprobs_at(model, full_ids, full_mask, resp, (0.7, 1.0), allowed_tokens=range(2000))
        for temperature, lp in zip((0.7, 1.0), both):
            one = token_logprobs(model, full_ids, full_mask, resp, temperature, allowed_tokens=range(2000))
            assert torch.equal(lp, one)
    assert not torch.equal(both[0], both[1])
