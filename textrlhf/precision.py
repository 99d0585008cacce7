"""The dtype of forwards that only sample (fp32, bf16, or bf16 where the hardware multiplies it natively), and frozen
bf16 copies for autocast.

Sampling preference pairs is data generation: nothing is trained on the sampler's log-probs, so its
weights may be rounded to bfloat16 without biasing a log-prob ratio (the annotator labels whatever was
sampled). The samples still come from a slightly different distribution (0.003 nats of KL per token
for SmolLM2-135M), and its pairs trained slightly weaker reward models over 5 seeds, so the pipeline
keeps fp32 by default and this is an option. Where the hardware multiplies bf16 matrices natively (Intel AMX or AVX-512
BF16 on a CPU, a CUDA GPU with bf16), that halves the weights' memory traffic and runs the matrix
products several times faster; elsewhere bf16 is emulated through fp32 kernels and is several times
*slower* (docs/results/2026-12-01-precision.md). So ``"auto"`` asks the device, and every caller
records what it resolved to. The policies under training never sample this way: their rollouts and
updates must agree on the log-probs (their own ``precision`` option is autocast over fp32 weights). What
they take from here is :func:`autocast_frozen_copy`, for the frozen reference: bf16 weights that give
exactly the operands autocast would have made, cast once instead of at every forward.

Measured on the 2-core Xeon with AMX (docs/results/2026-12-02-bf16-sampling.md): SmolLM2-135M
sampling 64 rows x 24 tokens ran at 1.6x the tokens/s of fp32 (both with inverse-CDF draws).
"""

from __future__ import annotations

import torch

SAMPLING_PRECISIONS = ("auto", "fp32", "bf16")
"""Values of a sampler's ``precision`` option (see :func:`sampling_dtype`)."""


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the AMX tiles or AVX-512 BF16 instructions, as torch
    detects them (``torch.cpu._is_amx_tile_supported``, ``torch.cpu._is_avx512_bf16_supported``: private
    helpers of torch's CPU feature detection). Any other device: ``False``.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def sampling_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The weights' dtype for a sampling-only forward on ``device``.

    Args:
        precision: ``"fp32"``, ``"bf16"``, or ``"auto"`` (bf16 where :func:`native_bf16`, else fp32).
        device: where the sampler runs.

    Raises:
        ValueError: ``precision`` is not one of :data:`SAMPLING_PRECISIONS`.
    """
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"precision must be one of {list(SAMPLING_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``"fp32"`` / ``"bf16"`` (the option's spelling) for what :func:`sampling_dtype` returned."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]


def autocast_frozen_copy(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """A frozen copy of ``model`` whose ``nn.Linear`` weights and biases are stored in ``dtype`` ahead of time.

    Under ``torch.autocast(..., dtype=dtype)`` a linear layer casts its input, weight and bias to ``dtype``
    (round to nearest) at every call; the cast is not cached for weights that do not require grad, so a
    frozen 135M-parameter reference re-reads 0.5 GB of fp32 weights per forward (155 ms of a 410 ms
    reference pass of 8 x 34 tokens on the 2-core Xeon; docs/results/2026-12-02-shared-prompts.md).
    Casting once gives the same operands, so the copy's forward under autocast is bit-identical to the
    original's. Every other parameter (embeddings, norms) is shared with ``model``, not copied; a linear
    layer tied to the input embedding (an LM head) gets its own bf16 weight, leaving the embedding in its
    dtype. Use it only under that autocast: outside it, its linear layers would meet inputs of another dtype.

    Args:
        model: a frozen module (``requires_grad=False``); the copy shares its non-linear parameters and leaves
            its linear layers as they are. dtype: autocast's lower-precision dtype.

    Returns:
        The copy, in eval mode, with ``requires_grad=False`` everywhere.
    """
    import copy

    # Every parameter maps to itself: the copy shares them, and only its linear layers get new bf16 ones below.
    memo = {id(p): p for p in model.parameters(recurse=True)}
    out = copy.deepcopy(model, memo).eval().requires_grad_(False)
    for module in out.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
            if module.bias is not None:
                module.bias = torch.nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)
    return out
