"""Teacher-forced log-probs of response tokens: every token of every row in ONE forward.

docs/design.md section 4, (b) and (c): scoring whole finished sequences in one batched forward costs a
few percent of stepping them token by token. The reference model's KL term, the evaluation's
sequence log-probs and the course's training log-probs all use :func:`token_logprobs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from textrlhf.lm.cache import position_ids_from_mask
from textrlhf.lm.sampling import restrict_logits


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    allowed_tokens: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """``log pi(x_j | x_<j)`` of every response token in one teacher-forced forward (keeps gradients).

    :func:`token_logprobs_at` with one temperature; the arguments and errors are the same.

    Returns:
        ``(batch, seq_len)`` float32: the log-prob where ``response_mask`` is True, 0 elsewhere.
    """
    return token_logprobs_at(model, input_ids, attention_mask, response_mask, (temperature,), allowed_tokens)[0]


def token_logprobs_at(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperatures: Sequence[float],
    allowed_tokens: Sequence[int] | torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """``log pi(x_j | x_<j)`` of every response token at each of several temperatures, from ONE forward.

    The evaluation needs the reference's log-probs at the sampling temperature (the KL) and at 1 (the
    perplexity): the forward is the expensive part, the softmax at each temperature is not.

    Args:
        model: a causal LM (``*ForCausalLM``), in eval mode.
        input_ids: ``(batch, seq_len)`` prompt + response, left-padded.
        attention_mask: ``(batch, seq_len)`` 0/1.
        response_mask: ``(batch, seq_len)`` bool, True on the response tokens whose log-probs are wanted.
        temperatures: each divides the logits for one output; the sampling temperature of the policy
            (docs/design.md section 5: the same temperature everywhere, or the KL is biased).
        allowed_tokens: if given, the distribution is restricted to these ids (as when sampling).

    Returns:
        One ``(batch, seq_len)`` float32 tensor per temperature: the log-prob where ``response_mask`` is
        True, 0 elsewhere.

    Raises:
        ValueError: a response token at position 0 (it would have no context), or a shape mismatch.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != response_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
            f"response_mask {tuple(response_mask.shape)} must have the same shape"
        )
    response_mask = response_mask.bool()
    if bool(response_mask[:, 0].any()):
        raise ValueError("a response token at position 0 has no context; left-pad or prepend the prompt")
    if not bool(response_mask.any()):
        return [torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device) for _ in temperatures]
    # Responses sit at the end of left-padded rows: only the last `keep` positions' logits are needed,
    # which saves a (batch, seq_len, V) tensor (V = 49152 for SmolLM2); and padding columns that every
    # row shares (short prompts) are dropped before the forward.
    first = int(response_mask.any(0).nonzero()[0])
    lead = min(int(attention_mask.any(0).to(torch.int8).argmax()), first - 1)
    ids, mask = input_ids[:, lead:].long(), attention_mask[:, lead:].long()
    first -= lead
    keep = ids.shape[1] - first + 1
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": position_ids_from_mask(mask),
        "use_cache": False,
    }
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # models without `logits_to_keep`
        logits = model(**inputs).logits
    logits = logits[:, -keep:-1].float()  # (batch, keep - 1, V): predictions of positions first..end
    targets = ids[:, first:].unsqueeze(-1)  # (batch, keep - 1, 1)
    outs = []
    for temperature in temperatures:
        scaled = logits / temperature
        if allowed_tokens is not None:
            scaled = restrict_logits(scaled, allowed_tokens)
        logp = torch.log_softmax(scaled, dim=-1).gather(-1, targets).squeeze(-1)  # (batch, keep - 1)
        out = torch.cat([logp.new_zeros((ids.shape[0], lead + first)), logp], dim=1)  # (batch, seq_len)
        # torch.where, not `* mask`: a prompt token outside `allowed_tokens` may have a huge negative log-prob
        outs.append(torch.where(response_mask, out, torch.zeros_like(out)))
    return outs
