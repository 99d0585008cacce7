"""The language-model operations every layer shares: KV cache, sampling, generation, log-probs.

They live in ``textrlhf`` (the bottom layer, docs/design.md section 2) because the simulated annotator
in ``reward_models`` samples from a policy too, and may not import ``agents``. Everything here works on
a plain Hugging Face causal LM (or its trunk, ``model.base_model``) and left-padded token rows:

* :class:`KVCache`: prefill once, extend by one token per row per step (the project's one KV cache);
  :class:`KVCacheRunner` drives it from sliding observation windows, exact by tensor comparison;
* :func:`sample_tokens`: the one token sampler (temperature and allowed tokens applied by the caller,
  a ``torch.Generator`` or the global stream); :func:`generate`: batched response sampling with the cache;
* :func:`token_logprobs`: teacher-forced log-probs of response tokens in one forward (at several
  temperatures: :func:`token_logprobs_at`).

The LM policy of ``agents`` builds its rollouts, values and sequence-level forwards on top of these.
"""

from textrlhf.lm.cache import (
    CACHE_KEY,
    KVCache,
    UnsupportedCacheError,
    cache_kwargs,
    output_cache,
    position_ids_from_mask,
    trunk_hidden,
)
from textrlhf.lm.logprobs import token_logprobs, token_logprobs_at
from textrlhf.lm.runner import KVCacheRunner
from textrlhf.lm.sampling import SAMPLING_METHODS, Generation, generate, restrict_logits, sample_tokens

__all__ = [
    "CACHE_KEY",
    "Generation",
    "KVCache",
    "KVCacheRunner",
    "SAMPLING_METHODS",
    "UnsupportedCacheError",
    "cache_kwargs",
    "generate",
    "output_cache",
    "position_ids_from_mask",
    "restrict_logits",
    "sample_tokens",
    "token_logprobs",
    "token_logprobs_at",
    "trunk_hidden",
]
