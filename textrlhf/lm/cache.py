"""Exact forwards of a causal LM (or its trunk) on left-padded rows, with the project's one KV cache.

:class:`KVCache` is the cache: ``prefill`` a batch of left-padded rows once, then ``extend`` every row
by one token per step (docs/design.md section 4: the difference between ~20 and ~75-170 new tokens/s on a
2-core CPU). It wraps either a ``*ForCausalLM`` (then it returns next-token logits) or its trunk
``model.base_model`` (then it returns last-layer hidden states, for a policy that puts its own heads on
them). Rollouts, the annotator's and the evaluation's sampling (:func:`textrlhf.lm.generate`) and the
SB3 policy's window runner (:class:`textrlhf.lm.KVCacheRunner`) all step through it.

Positions follow docs/design.md section 5 (left padding): ``cumsum(mask) - mask``, so the first real
token of every row is position 0 and each new token takes the next position of its row.
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
    """Last-layer hidden states of whole left-padded rows (no cache).

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


class UnsupportedCacheError(RuntimeError):
    """The model's KV cache is not a plain ``DynamicCache``, so its rows cannot be spliced or trimmed.

    Sliding-window or quantized caches do not hold every past position in full precision.
    :class:`textrlhf.lm.KVCacheRunner` catches it and falls back to full forwards (still exact);
    plain prefill/extend with :class:`KVCache` never needs splicing and works with any cache.
    """


class KVCache:
    """Prefill once, then extend every row by one token per step, for one model (batched, left-padded).

    Not an ``nn.Module``: it holds no parameters, only a reference to the model, so it never shows up in
    a ``state_dict`` or an optimizer. Use it under ``torch.no_grad()`` with fixed weights.

    Args:
        model: a ``*ForCausalLM`` (calls return next-token logits ``(batch, V)``) or its trunk
            ``model.base_model`` (calls return last hidden states ``(batch, hidden)``).

    Attributes:
        cache: the transformers cache object after the last call (``None`` before ``prefill``).
        mask: ``(batch, cache_len)`` attention mask over the cached positions.
        next_pos: ``(batch, 1)`` position of each row's next token.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        # A *ForCausalLM has an output embedding (its LM head); its trunk (base_model) has none.
        self.returns_logits = model.get_output_embeddings() is not None
        self.cache = None
        self.mask: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None

    def _last(self, out) -> torch.Tensor:
        return out.logits[:, -1] if self.returns_logits else out.last_hidden_state[:, -1]

    def _head_kwargs(self) -> dict:
        # Only the last position's logits are needed: saves a (batch, seq_len, V) tensor at prefill.
        return {"logits_to_keep": 1} if self.returns_logits else {}

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode whole left-padded rows and keep their keys/values.

        Args:
            input_ids: ``(batch, seq_len)`` long. attention_mask: ``(batch, seq_len)`` 0/1 (long).

        Returns:
            Last-position logits ``(batch, V)`` or hidden states ``(batch, hidden)``.
        """
        from transformers import DynamicCache

        self.mask = attention_mask  # (batch, C)
        self.next_pos = attention_mask.sum(-1, keepdim=True)  # (batch, 1): position of the next token
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=True,
            **cache_kwargs(DynamicCache()),
            **self._head_kwargs(),
        )
        self.cache = output_cache(out)
        return self._last(out)

    def extend(self, tokens: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Append one real token to every row.

        Args:
            tokens: ``(batch,)`` long, the new token of each row.
            position_ids: ``(batch, 1)``; default: the next position of each row (tracked since ``prefill``).

        Returns:
            Logits ``(batch, V)`` or hidden states ``(batch, hidden)`` at the new token.
        """
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)  # (batch, C + 1)
        pos = self.next_pos if position_ids is None else position_ids
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=pos,
            use_cache=True,
            **cache_kwargs(self.cache),
            **self._head_kwargs(),
        )
        self.cache = output_cache(out)
        self.next_pos = pos + 1
        return self._last(out)

    # ------------------------------------------------------------------ row surgery (KVCacheRunner)
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(keys, values)`` per layer, each ``(batch, heads, cache_len, head_dim)``.

        Raises:
            UnsupportedCacheError: the cache is not a plain ``DynamicCache`` of full ``DynamicLayer``s.
        """
        from transformers import DynamicCache, DynamicLayer

        # Exact types on purpose: a sliding-window or quantized layer subclasses DynamicLayer but does not
        # hold every past position in full precision, so its keys/values cannot be spliced.
        cache = self.cache
        if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
            raise UnsupportedCacheError(type(cache).__name__)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _replace(self, kv: list[tuple[torch.Tensor, torch.Tensor]], mask, next_pos) -> KVCache:
        """A cache of the same model holding ``kv``, built through ``Cache.update``, the public API.

        ``update`` on an empty layer stores exactly ``keys``/``values``: the same calls
        ``DynamicCache(ddp_cache_data=kv)`` makes inside, but that argument is an internal of distributed
        training that may change without notice.
        """
        from transformers import DynamicCache

        out = KVCache(self.model)
        out.cache = DynamicCache()
        for layer_idx, (keys, values) in enumerate(kv):
            out.cache.update(keys, values, layer_idx)
        out.mask, out.next_pos = mask, next_pos
        return out

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache holding only ``rows`` (a ``(k,)`` long index), in that order."""
        kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.layers()]
        return self._replace(kv, self.mask[rows], self.next_pos[rows])

    def trim(self) -> KVCache:
        """Drop leading cached columns that are padding in every row (exact: they get zero attention weight)."""
        real_cols = self.mask.any(0).nonzero()
        start = int(real_cols[0]) if len(real_cols) else 0
        kv = self.layers()  # checks the cache type on every call, trimmed or not
        if start == 0:
            return self
        return self._replace([(k[:, :, start:], v[:, :, start:]) for k, v in kv], self.mask[:, start:], self.next_pos)

    @staticmethod
    def merge(batch: int, parts: list[tuple[torch.Tensor, KVCache]]) -> KVCache:
        """Interleave caches of disjoint rows into one of ``batch`` rows.

        Shorter caches are left-padded with masked zeros: masked keys get exactly zero attention weight,
        so every row's next forward is unchanged up to float summation order.

        Args:
            batch: total rows. parts: ``(rows, cache)`` pairs; ``rows`` ``(k,)`` long, where each cache's
                rows go.
        """
        length = max(part.mask.shape[1] for _, part in parts)

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = length - t.shape[dim]
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        first = parts[0][1]
        layers = [part.layers() for _, part in parts]
        kv = []
        for layer_idx, (k0, v0) in enumerate(layers[0]):
            k_all = k0.new_empty((batch, k0.shape[1], length, k0.shape[3]))
            v_all = v0.new_empty((batch, v0.shape[1], length, v0.shape[3]))
            for (rows, _), part_layers in zip(parts, layers):
                k, v = part_layers[layer_idx]
                k_all[rows], v_all[rows] = left_pad(k, 2), left_pad(v, 2)
            kv.append((k_all, v_all))
        mask = first.mask.new_zeros((batch, length))
        next_pos = first.next_pos.new_zeros((batch, 1))
        for rows, part in parts:
            mask[rows], next_pos[rows] = left_pad(part.mask, 1), part.next_pos
        return first._replace(kv, mask, next_pos)
