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
exactly the operands autocast would have made, cast once instead of at every forward; and, for their
rollouts' decode steps, :func:`packed_bf16_linears`: the same bf16 operands, packed once per rollout.

Measured on the 2-core Xeon with AMX (docs/results/2026-12-02-bf16-sampling.md): SmolLM2-135M
sampling 64 rows x 24 tokens ran at 1.6x the tokens/s of fp32 (both with inverse-CDF draws).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

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


def packed_bf16_available(device: str | torch.device) -> bool:
    """Whether :func:`packed_bf16_linears` can run on ``device``: a CPU that multiplies bf16 natively, with
    torch's oneDNN (mkldnn) weight-packing ops, which inductor uses for frozen linear layers on CPU."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available() or not native_bf16(device):
        return False
    return hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextmanager
def packed_bf16_linears(model: torch.nn.Module, rows: int) -> Iterator[None]:
    """Inside the block, every ``nn.Linear`` of ``model`` computes as under bf16 autocast, on a packed weight.

    On entry each linear weight (and bias) is cast to bf16 once and reordered once into oneDNN's blocked
    layout for about ``rows`` input rows; inside, a linear layer casts its input to bf16 and returns bf16,
    as autocast would, but skips the layout change that oneDNN otherwise makes on every call. For the few
    rows of a decode step that change dominates: on the 2-core Xeon with AMX a bf16 (8, 576) x (576, 1536)
    product took 160 us plain and 99 us packed, the (8, 576) x (576, 49152) LM head 3.4 ms and 1.5 ms, and
    a rollout of 32 episodes 0.4 s less after the 0.17 s of packing (docs/results/2026-12-02-decode-threads.md).
    On exit the layers compute as before. For no-grad forwards only (the packed weights are constants,
    stale once the weights change), and only where :func:`packed_bf16_available`.

    Args:
        model: the module whose ``nn.Linear`` layers (exactly that class, not subclasses) are packed.
        rows: the input rows oneDNN picks its layout for (the decode's batch size).
    """
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    try:
        for module in linears:
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(torch.bfloat16), rows)
            bias = None if module.bias is None else module.bias.detach().to(torch.bfloat16)
            # An instance attribute shadows the class's forward for this module only; removed on exit.
            module.forward = partial(_packed_linear, weight, bias)
        yield
    finally:
        for module in linears:
            module.__dict__.pop("forward", None)


def _packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``x @ W.T + b`` in bf16 on a weight packed by ``torch.ops.mkldnn._reorder_linear_weight``."""
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", [], "")
