"""A KV cache for sliding token windows: :class:`KVCacheRunner`, exact by tensor comparison.

``TextRLHF-v0`` observations are fixed-length, left-padded windows: at every step the window shifts
left by one and the sampled token lands in the last slot (``obs[t+1][:-1] == obs[t][1:]``). Callers
that only see windows (SB3's rollouts through the policy, the reference-mask wrapper, the course's
hand-written loop) call the runner with each window; it feeds only the new token against the cached
keys/values of the previous window (:class:`textrlhf.lm.KVCache`), batched over all envs.

Exactness. The cache is only used when the tensors prove that it is valid: for every row, the new
window must equal the previous one shifted by one token (ids *and* mask), the slot that fell off the
left must have been padding, and the new last slot must be a real token. Rows that fail (episode
starts, resets, another batch) are re-encoded from scratch; if no row qualifies, or the batch size
changed, the whole batch is. Rows are merged by left-padding with masked zeros: masked keys get
exactly zero attention weight, so the result equals a full forward up to float summation order
(~1e-6 in fp32; tested at 1e-4). Leading columns that are padding in every row are trimmed, so the
cache never grows beyond ``L + 1`` positions.
"""

from __future__ import annotations

import torch
from torch import nn

from textrlhf.lm.cache import KVCache, UnsupportedCacheError, trunk_hidden


class KVCacheRunner:
    """Last-position hidden state of left-padded windows, reusing a KV cache when provably exact.

    Call it only under ``torch.no_grad()`` with fixed weights; call :meth:`reset` whenever the weights
    may have changed (the LM policy does this on every ``set_training_mode``/``train`` call, i.e. before
    and after each SB3 update).

    Args:
        trunk: the decoder without its LM head.
        enabled: ``False`` turns every call into a plain full forward (for comparisons).

    Attributes:
        stats: counters ``full`` (rows encoded from scratch), ``incremental`` (rows fed one token),
            ``repeat`` (calls answered from the stored result of an identical input).
    """

    def __init__(self, trunk: nn.Module, enabled: bool = True):
        self.trunk = trunk
        self.enabled = enabled
        self.stats = {"full": 0, "incremental": 0, "repeat": 0}
        self.reset()

    def reset(self) -> None:
        """Forget the cache (after any weight change)."""
        self._state: KVCache | None = None  # keys/values of the last window
        self._ids: torch.Tensor | None = None  # (batch, L): last window seen
        self._mask: torch.Tensor | None = None  # (batch, L)
        self._last: torch.Tensor | None = None  # (batch, hidden): last-position hidden of that window

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden state at the last position of each window.

        Args:
            input_ids: ``(batch, L)`` long, left-padded.
            attention_mask: ``(batch, L)`` 0/1.

        Returns:
            ``(batch, hidden)``.
        """
        ids = input_ids.long()
        mask = attention_mask.long()
        if not self.enabled:
            return trunk_hidden(self.trunk, ids, mask)[:, -1]
        try:
            return self._step(ids, mask)
        except UnsupportedCacheError:
            # A model whose cache is not a plain DynamicCache (sliding windows, quantized, ...):
            # stay exact by never caching.
            self.enabled = False
            self.reset()
            return trunk_hidden(self.trunk, ids, mask)[:, -1]

    def _continues(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` bool: rows whose window is the previous one shifted by one real token."""
        if self._ids is None or self._ids.shape != ids.shape:
            return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        return (
            (self._ids[:, 1:] == ids[:, :-1]).all(-1)
            & (self._mask[:, 1:] == mask[:, :-1]).all(-1)
            & (self._mask[:, 0] == 0)  # the slot that fell off was padding
            & (mask[:, -1] == 1)  # and the new last slot is a real token
        )

    def _step(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._ids is not None and torch.equal(self._ids, ids) and torch.equal(self._mask, mask):
            self.stats["repeat"] += ids.shape[0]
            return self._last.clone()
        cont = self._continues(ids, mask)
        if not bool(cont.any()):
            state, last = self._prefill(ids, mask)
        elif bool(cont.all()):
            state, last = self._extend(self._state, ids, mask)
        else:
            keep = cont.nonzero().squeeze(-1)  # rows continuing their window
            fresh = (~cont).nonzero().squeeze(-1)  # rows starting over
            kept, last_k = self._extend(self._state.select(keep), ids[keep], mask[keep])
            new, last_f = self._prefill(ids[fresh], mask[fresh])
            state = KVCache.merge(ids.shape[0], [(keep, kept), (fresh, new)])
            last = last_k.new_empty((ids.shape[0], last_k.shape[-1]))
            last[keep], last[fresh] = last_k, last_f
        self._state = state.trim()
        self._ids, self._mask, self._last = ids.clone(), mask.clone(), last
        return last.clone()

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[KVCache, torch.Tensor]:
        state = KVCache(self.trunk)
        last = state.prefill(ids, mask.clone())
        self.stats["full"] += ids.shape[0]
        return state, last

    def _extend(self, state: KVCache, ids: torch.Tensor, mask: torch.Tensor) -> tuple[KVCache, torch.Tensor]:
        pos = mask.sum(-1, keepdim=True) - 1  # (batch, 1): real tokens before the new one
        last = state.extend(ids[:, -1], position_ids=pos)
        self.stats["incremental"] += ids.shape[0]
        return state, last
