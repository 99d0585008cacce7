"""Exact forwards of a causal-LM trunk on left-padded token windows, with an optional KV cache.

``TextRLHF-v0`` observations are fixed-length, left-padded windows: at every step the window shifts
left by one and the sampled token lands in the last slot (``obs[t+1][:-1] == obs[t][1:]``).
:class:`KVCacheRunner` exploits that during rollouts: instead of re-running the whole window
(``L`` tokens per env per step) it feeds only the new token against the cached keys/values of the
previous window, batched over all envs (docs/design.md section 4: this is the difference between ~20 and
~75-170 new tokens/s on a 2-core CPU).

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
import transformers
from packaging.version import Version
from torch import nn

# transformers 5.24 renamed the KV-cache keyword of every model's ``forward`` and the matching output
# field from ``past_key_values`` to ``cache``; the old name warns and is removed in 5.40. Older
# releases only know the old name. One switch here, read by every KV-cached forward of the project.
CACHE_KEY = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


def cache_kwargs(cache) -> dict:
    """The keyword argument that passes ``cache`` to a transformers model's ``forward``."""
    return {CACHE_KEY: cache}


def output_cache(out):
    """The KV cache a transformers model output returns (``use_cache=True``)."""
    return out[CACHE_KEY]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions for left-padded rows: ``cumsum(mask) - mask``, so the first real token is position 0.

    Args:
        attention_mask: ``(batch, seq_len)`` of 0/1.

    Returns:
        ``(batch, seq_len)`` long tensor (0 on the padding slots).
    """
    mask = attention_mask.long()
    # Huang et al. 2024 ("N implementation details of RLHF with PPO"), detail on left padding:
    # positions must restart at the first real token, as in TRL's `forward` helper.
    return (mask.cumsum(-1) - mask).clamp(min=0)


def trunk_hidden(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states of the whole window (no cache).

    Args:
        trunk: the decoder without its LM head (``model.base_model`` of a ``*ForCausalLM``).
        input_ids: ``(batch, seq_len)`` long.
        attention_mask: ``(batch, seq_len)`` 0/1.

    Returns:
        ``(batch, seq_len, hidden)`` float tensor.
    """
    mask = attention_mask.long()
    out = trunk(
        input_ids=input_ids.long(),
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    )
    return out.last_hidden_state


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]] | None):
    """A ``DynamicCache`` holding ``kv`` (one ``(keys, values)`` pair per layer), built through its public API.

    ``Cache.update(keys, values, layer_idx)`` on an empty layer stores exactly ``keys``/``values``: the same
    calls ``DynamicCache(ddp_cache_data=kv)`` makes inside, but that argument is an internal of distributed
    training that may change without notice, and ``update`` is the documented way to fill a cache.
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer_idx, (keys, values) in enumerate(kv or ()):
        cache.update(keys, values, layer_idx)
    return cache


def _cache_to_list(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(keys, values)`` per layer of a plain ``DynamicCache``; :class:`_UnsupportedCache` for any other kind."""
    from transformers import DynamicCache, DynamicLayer

    # Exact types on purpose: a sliding-window or quantized layer subclasses DynamicLayer but does not
    # hold every past position in full precision, so its keys/values cannot be spliced as below.
    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise _UnsupportedCache(type(cache).__name__)
    return [(layer.keys, layer.values) for layer in cache.layers]


class _UnsupportedCache(RuntimeError):
    pass


class KVCacheRunner:
    """Last-position hidden state of left-padded windows, reusing a KV cache when provably exact.

    Not an ``nn.Module`` (it holds no parameters, only a reference to the trunk), so it never shows
    up in a ``state_dict`` or an optimizer. Call it only under ``torch.no_grad()`` with fixed weights;
    call :meth:`reset` whenever the weights may have changed (the policy does this on every
    ``set_training_mode``/``train`` call, i.e. before and after each SB3 update).

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
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._full_mask: torch.Tensor | None = None  # (batch, cache_len): mask over cached positions
        self._ids: torch.Tensor | None = None  # (batch, L): last window seen
        self._mask: torch.Tensor | None = None  # (batch, L)
        self._last: torch.Tensor | None = None  # (batch, hidden): last-position hidden of that window

    # ------------------------------------------------------------------ public
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
        except _UnsupportedCache:
            # A model whose cache is not a plain DynamicCache (sliding windows, quantized, ...):
            # stay exact by never caching.
            self.enabled = False
            self.reset()
            return trunk_hidden(self.trunk, ids, mask)[:, -1]

    # ------------------------------------------------------------------ internals
    def _step(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._ids is not None and self._ids.shape == ids.shape:
            if torch.equal(self._ids, ids) and torch.equal(self._mask, mask):
                self.stats["repeat"] += ids.shape[0]
                return self._last.clone()
            cont = (
                (self._ids[:, 1:] == ids[:, :-1]).all(-1)
                & (self._mask[:, 1:] == mask[:, :-1]).all(-1)
                & (self._mask[:, 0] == 0)  # the slot that fell off was padding
                & (mask[:, -1] == 1)  # and the new last slot is a real token
            )  # (batch,)
        else:
            cont = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

        if not bool(cont.any()):
            last, kv, full_mask = self._prefill(ids, mask)
        elif bool(cont.all()):
            last, kv, full_mask = self._extend(ids, mask, self._kv, self._full_mask)
        else:
            last, kv, full_mask = self._mixed(ids, mask, cont)
        kv, full_mask = self._trim(kv, full_mask)
        self._kv, self._full_mask = kv, full_mask
        self._ids, self._mask, self._last = ids.clone(), mask.clone(), last
        return last.clone()

    def _prefill(self, ids, mask):
        cache = _cache_from(None)
        out = self.trunk(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=True,
            **cache_kwargs(cache),
        )
        self.stats["full"] += ids.shape[0]
        return out.last_hidden_state[:, -1], _cache_to_list(output_cache(out)), mask.clone()

    def _extend(self, ids, mask, kv, full_mask):
        new_full = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)  # (batch, C+1)
        pos = mask.sum(-1, keepdim=True) - 1  # (batch, 1): real tokens before the new one
        out = self.trunk(
            input_ids=ids[:, -1:],
            attention_mask=new_full,
            position_ids=pos,
            use_cache=True,
            **cache_kwargs(_cache_from(kv)),
        )
        self.stats["incremental"] += ids.shape[0]
        return out.last_hidden_state[:, -1], _cache_to_list(output_cache(out)), new_full

    def _mixed(self, ids, mask, cont):
        keep = cont.nonzero().squeeze(-1)  # rows continuing their window
        fresh = (~cont).nonzero().squeeze(-1)  # rows starting over
        kv_keep = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in self._kv]
        last_k, kv_k, mask_k = self._extend(ids[keep], mask[keep], kv_keep, self._full_mask[keep])
        last_f, kv_f, mask_f = self._prefill(ids[fresh], mask[fresh])
        length = max(mask_k.shape[1], mask_f.shape[1])

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = length - t.shape[dim]
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t.new_zeros(shape), t], dim=dim)  # masked zeros: zero attention weight

        batch = ids.shape[0]
        kv = []
        for (kk, vk), (kf, vf) in zip(kv_k, kv_f):
            k_all = kk.new_empty((batch, kk.shape[1], length, kk.shape[3]))
            v_all = vk.new_empty((batch, vk.shape[1], length, vk.shape[3]))
            k_all[keep], v_all[keep] = left_pad(kk, 2), left_pad(vk, 2)
            k_all[fresh], v_all[fresh] = left_pad(kf, 2), left_pad(vf, 2)
            kv.append((k_all, v_all))
        full = mask.new_zeros((batch, length))
        full[keep], full[fresh] = left_pad(mask_k, 1), left_pad(mask_f, 1)
        last = last_k.new_empty((batch, last_k.shape[-1]))
        last[keep], last[fresh] = last_k, last_f
        return last, kv, full

    @staticmethod
    def _trim(kv, full_mask):
        # Drop leading cache columns that are padding in every row: they get zero attention weight,
        # so removing them is exact and bounds the cache at L + 1 positions.
        real_cols = full_mask.any(0).nonzero()
        start = int(real_cols[0]) if len(real_cols) else 0
        if start == 0:
            return kv, full_mask
        return [(k[:, :, start:], v[:, :, start:]) for k, v in kv], full_mask[:, start:]
