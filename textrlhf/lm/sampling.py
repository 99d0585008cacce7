"""The project's one token sampler and its batched generation loop.

:func:`sample_tokens` draws one token per row from ``softmax(logits)``; :func:`generate` samples whole
responses with a :class:`textrlhf.lm.KVCache` (pure sampling at one temperature, optionally restricted to
allowed tokens: no top-k/top-p, so the samples come from the same distribution the rollouts and the
log-probs use, docs/design.md section 5). The env rollouts, the evaluation, the simulated annotator and
the course's hand-written loop all draw through :func:`sample_tokens`.

Two draws of the same distribution exist, chosen by ``method`` (each gives its own random stream, so a
call site that changes its draw samples other, equally likely, responses for the same seed):

* ``"inverse_cdf"`` (the rollouts, the annotator, the evaluation): exact inverse-CDF sampling, one
  uniform number per row. Over SmolLM2's 49152 tokens on a 2-core CPU it takes 7 ms for 32 rows against
  42 ms for ``torch.multinomial``, which draws a random number per vocabulary entry (``python -m
  scripts.benchmark`` reports the effect on whole rollouts; the annotator's and the evaluation's sampling
  moved to it on 2026-12-02, docs/results/2026-12-02-bf16-sampling.md).
* ``"multinomial"`` (the course, and :func:`generate`'s default): ``torch.multinomial``, the draw of
  Hugging Face ``generate`` and of ``Categorical.sample``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from textrlhf.lm.cache import KVCache

SAMPLING_METHODS = ("inverse_cdf", "multinomial")
"""Values of ``method`` in :func:`sample_tokens` and :func:`generate`."""


def restrict_logits(logits: torch.Tensor, allowed_tokens: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Set logits outside ``allowed_tokens`` to -1e8: probability exactly 0 in fp32.

    A finite value, as sb3-contrib's ``MaskableCategorical`` uses, rather than ``-inf``: torch's
    categorical KL (TRPO's constraint) computes ``logits_p - logits_q``, which is NaN for ``-inf - -inf``
    and poisons the gradients.

    Args:
        logits: ``(..., V)``.
        allowed_tokens: token ids to keep.

    Returns:
        ``(..., V)`` tensor.
    """
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(allowed_tokens, dtype=torch.long, device=logits.device)] = True
    return logits.masked_fill(~keep, -1e8)


def sample_tokens(
    logits: torch.Tensor, generator: torch.Generator | None = None, method: str = "inverse_cdf"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row from ``softmax(logits)``; return ``(tokens, log_probs)``, each ``(batch,)``.

    ``"inverse_cdf"``: token ``i`` is drawn when ``cdf[i-1] <= u < cdf[i]``, which has probability ``p_i``
    and never picks a token of probability 0 (masked logits). ``"multinomial"``:
    ``torch.multinomial(exp(log_softmax(logits)), 1)``. See the module docstring for why both exist.

    Args:
        logits: ``(batch, V)``, already divided by the temperature (and restricted, if at all).
        generator: the random stream; ``None`` uses torch's global one.
        method: ``"inverse_cdf"`` or ``"multinomial"``.

    Returns:
        ``(tokens, log_probs)``: ``(batch,)`` long and ``(batch,)`` float32 ``log softmax(logits)[token]``.

    Raises:
        ValueError: an unknown ``method``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (batch, V)
    if method == "inverse_cdf":
        cdf = logp.exp().double().cumsum(-1)  # float64, so 49152 summed terms do not drift
        u = torch.rand((cdf.shape[0], 1), dtype=torch.float64, device=cdf.device, generator=generator) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    elif method == "multinomial":
        tokens = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    else:
        raise ValueError(f"unknown sampling method {method!r}; use one of {list(SAMPLING_METHODS)}")
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


@dataclass
class Generation:
    """Sampled responses of :func:`generate`, left-aligned.

    Attributes:
        tokens: ``(batch, steps)`` long; after a row's EOS, ``pad_token_id`` (as Hugging Face
            ``generate`` returns them). ``steps <= max_new_tokens``: the loop stops when every row ended.
        logp: ``(batch, steps)`` float32 log-prob of each sampled token (0 after the row's end).
        lengths: ``(batch,)`` long: tokens up to and including each row's EOS (``steps`` if none).
    """

    tokens: torch.Tensor
    logp: torch.Tensor
    lengths: torch.Tensor


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None = None,
    temperature: float = 1.0,
    min_new_tokens: int = 0,
    allowed_tokens: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    method: str = "multinomial",
) -> Generation:
    """Sample responses to left-padded prompts with a KV cache: one batched forward per new token.

    The loop of Hugging Face ``generate(do_sample=True, top_k=0, top_p=1.0)`` without its hidden
    generation-config merging (docs/design.md section 7): logits divided by ``temperature``, EOS masked
    for the first ``min_new_tokens`` tokens, finished rows fed ``pad_token_id``; with
    ``method="multinomial"`` and the global random stream it draws the tokens ``generate`` draws.

    Args:
        model: a ``*ForCausalLM`` in eval mode.
        input_ids: ``(batch, seq_len)`` left-padded prompts. attention_mask: ``(batch, seq_len)`` 0/1.
        max_new_tokens: length limit of each response.
        pad_token_id: fed to (and returned for) rows that already ended.
        eos_token_id: id(s) that end a row (kept in the response); ``None``: rows end at the limit only.
        temperature: divides the logits.
        min_new_tokens: EOS gets probability 0 for this many first tokens.
        allowed_tokens: restrict every draw to these ids (:func:`restrict_logits`); ``None``: all.
        generator: the random stream (``None``: torch's global one).
        method: see :func:`sample_tokens`.

    Returns:
        A :class:`Generation`.

    Raises:
        ValueError: ``temperature <= 0`` or ``max_new_tokens < 1``.
    """
    if not temperature > 0 or max_new_tokens < 1:
        raise ValueError(f"temperature must be > 0 and max_new_tokens >= 1, got {temperature}, {max_new_tokens}")
    ids, mask = input_ids.long(), attention_mask.long()
    eos = torch.as_tensor([] if eos_token_id is None else eos_token_id, dtype=torch.long, device=ids.device)
    eos = eos.reshape(-1)
    cache = KVCache(model)
    logits = cache.prefill(ids, mask)  # (batch, V)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    tokens, logps = [], []
    for t in range(max_new_tokens):
        logits = logits.float() / temperature
        if allowed_tokens is not None:
            logits = restrict_logits(logits, allowed_tokens)
        if t < min_new_tokens and len(eos):
            logits[:, eos] = float("-inf")  # as transformers' MinNewTokensLengthLogitsProcessor
        token, logp = sample_tokens(logits, generator, method)  # (batch,), (batch,)
        token = torch.where(unfinished, token, torch.full_like(token, pad_token_id))
        tokens.append(token)
        logps.append(torch.where(unfinished, logp, torch.zeros_like(logp)))
        unfinished = unfinished & ~torch.isin(token, eos)
        if not bool(unfinished.any()) or t == max_new_tokens - 1:
            break
        logits = cache.extend(token)
    out = torch.stack(tokens, dim=1)  # (batch, steps)
    ended = torch.isin(out, eos)
    lengths = torch.where(
        ended.any(-1), ended.int().argmax(-1) + 1, torch.full_like(ended[:, 0], out.shape[1], dtype=torch.long)
    )
    return Generation(out, torch.stack(logps, dim=1), lengths.long())
