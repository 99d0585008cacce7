"""Shared-prompt teacher-forced forwards (textrlhf/lm/prefix.py) == one plain forward, values and gradients."""

from __future__ import annotations

import pytest
import torch

from textrlhf.lm import KVCache, position_ids_from_mask, shared_prompt_forward, trunk_hidden
from textrlhf.lm.cache import distinct_rows
from textrlhf.models import load_model

P, T = 6, 5  # prompt columns, response columns


@pytest.fixture(scope="module")
def model():
    return load_model("tiny").eval()


def _rows(group: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts (6, 4 and 2 real tokens), each answered ``group`` times; ragged responses."""
    g = torch.Generator().manual_seed(0)
    ids, mask = [], []
    for real in (6, 4, 2):
        prompt = torch.randint(5, 100, (real,), generator=g)
        for j in range(group):
            resp_len = T - j % 3  # right-padded responses of 5, 4, 3 tokens
            resp = torch.randint(5, 100, (resp_len,), generator=g)
            ids.append(
                torch.cat(
                    [torch.zeros(P - real, dtype=torch.long), prompt, resp, torch.zeros(T - resp_len, dtype=torch.long)]
                )
            )
            mask.append(
                torch.cat([torch.zeros(P - real), torch.ones(real + resp_len), torch.zeros(T - resp_len)]).long()
            )
    return torch.stack(ids), torch.stack(mask)  # (3 * group, P + T)


def test_distinct_rows_finds_each_prompt_once_and_maps_every_row_to_it():
    ids, mask = _rows()
    rows, inverse = distinct_rows(ids, mask, P)
    assert len(rows) == 3 and inverse.shape == (9,)
    assert torch.equal(ids[rows[inverse], :P], ids[:, :P]) and torch.equal(mask[rows[inverse], :P], mask[:, :P])


def test_trunk_hidden_states_equal_one_plain_forward(model):
    ids, mask = _rows()
    with torch.no_grad():
        shared = shared_prompt_forward(model.base_model, ids, mask, P)  # (9, P + T, hidden)
        plain = trunk_hidden(model.base_model, ids, mask)
    real = mask.bool()  # padding slots carry no meaning in either
    torch.testing.assert_close(shared[real], plain[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("keep", [None, 3])
def test_lm_logits_equal_one_plain_forward(model, keep):
    ids, mask = _rows()
    with torch.no_grad():
        shared = shared_prompt_forward(model, ids, mask, P, logits_to_keep=keep)
        plain = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    k = T + 1 if keep is None else keep
    assert shared.shape == (9, k, plain.shape[-1])
    torch.testing.assert_close(shared, plain[:, -k:], atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_the_shared_prompt_into_every_row(model):
    """The forward + backward equals the plain one: the prompt's states get every row's gradient."""
    ids, mask = _rows()
    w = torch.randn(9, P + T, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    w = w * mask[..., None]  # only real positions count

    def grads(forward):
        model.zero_grad()
        (forward() * w).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared = grads(lambda: shared_prompt_forward(model.base_model, ids, mask, P))
    plain = grads(lambda: trunk_hidden(model.base_model, ids, mask))
    model.zero_grad()
    assert shared.keys() == plain.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(shared[name], plain[name], atol=1e-4, rtol=1e-4, msg=name)


def test_each_distinct_prompt_is_encoded_once(model):
    ids, mask = _rows(group=4)
    seen = []
    hook = model.base_model.embed_tokens.register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        with torch.no_grad():
            shared_prompt_forward(model.base_model, ids, mask, P)
    finally:
        hook.remove()
    assert seen == [3 * P, 12 * T]  # 3 prompts once, then 12 responses (a plain forward: 12 * (P + T))


def test_rows_with_distinct_prompts_take_the_plain_forward(model):
    ids, mask = _rows(group=1)
    with torch.no_grad():
        assert torch.equal(
            shared_prompt_forward(model.base_model, ids, mask, P), trunk_hidden(model.base_model, ids, mask)
        )


def test_bad_split_or_keep_is_refused(model):
    ids, mask = _rows()
    with pytest.raises(ValueError, match="prompt_len"):
        shared_prompt_forward(model.base_model, ids, mask, P + T)
    with pytest.raises(ValueError, match="logits_to_keep"):
        shared_prompt_forward(model, ids, mask, P, logits_to_keep=T + 2)


def test_kv_cache_prefill_encodes_identical_rows_once_and_extends_them_exactly(model):
    """A group's identical prompts are prefilled once; every row then extends with its own tokens."""
    ids, mask = _rows(group=3)
    ids, mask = ids[:, :P], mask[:, :P]  # the prompts: 3 distinct, each 3 times
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    new = torch.randint(5, 100, (9, 3), generator=torch.Generator().manual_seed(2))  # different tokens per row
    try:
        with torch.no_grad():
            cache = KVCache(model, share_rows=True)
            steps = [cache.prefill(ids, mask)] + [cache.extend(new[:, t]) for t in range(3)]
            KVCache(model).prefill(ids, mask)  # the default: every row (seeded samples stay as they were)
    finally:
        hook.remove()
    assert seen[0] == 3  # the prefill forwarded 3 rows, not 9
    assert seen[-1] == 9
    for t, logits in enumerate(steps):
        full_ids = torch.cat([ids, new[:, :t]], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(new[:, :t])], dim=1)
        with torch.no_grad():
            ref = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask))
        torch.testing.assert_close(logits, ref.logits[:, -1], atol=1e-5, rtol=1e-5)
