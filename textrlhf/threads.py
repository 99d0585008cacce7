"""Intra-op threads of the token-by-token decode loops (docs/scaling.md, "Decode threads").

A decode step multiplies a few rows by every weight matrix of the model: a few hundred small kernels
per token, each one an OpenMP parallel region. With ``OMP_WAIT_POLICY=PASSIVE`` (the scripts' default,
:mod:`textrlhf.cpu`, so that training does not collapse on a shared machine) the pool's idle threads
sleep at once, and every region wakes them through the kernel. In bf16 on a CPU that multiplies bf16
natively the kernels are so short that the wake-ups dominate: on the 2-core Xeon with AMX a bf16 rollout
of 8 episodes took 0.91x the seconds with its decode on one thread (32 episodes: 0.94x); in fp32 the
larger kernels need both cores (one thread: 1.20x), and with OpenMP's spinning threads two threads won
in bf16 too (docs/results/2026-12-02-decode-threads.md). So ``"auto"`` gives a
bf16 decode on a CPU with passive OpenMP threads half of torch's intra-op threads (one on 2 cores; only
that case is measured), and leaves every other decode alone. Only the decode steps change their thread
count; the env's reward, the reference and the update keep all threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

AUTO = "auto"
"""The ``decode_threads`` setting that lets :func:`decode_threads` choose."""


def check_decode_threads(setting: int | str) -> int | str:
    """``setting`` if it is ``"auto"`` or a positive int, else ``ValueError`` saying what is allowed."""
    if setting == AUTO or (isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1):
        return setting
    raise ValueError(f"decode_threads must be 'auto' or a positive int (intra-op threads), got {setting!r}")


def passive_openmp() -> bool:
    """Whether OpenMP's idle threads sleep at once (``OMP_WAIT_POLICY=PASSIVE`` in the environment)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def decode_threads(setting: int | str, precision: str, device: str | torch.device) -> int | None:
    """The intra-op threads a decode loop should run on, or ``None`` to leave torch's setting.

    Args:
        setting: an int (that many threads, on a CPU), or ``"auto"`` (see the module docstring).
        precision: the decode's precision, ``"fp32"`` or ``"bf16"``.
        device: where the decode runs; only CPU decodes change threads.

    Raises:
        ValueError: ``setting`` is neither ``"auto"`` nor a positive int.
    """
    check_decode_threads(setting)
    if torch.device(device).type != "cpu":
        return None
    if setting != AUTO:
        return int(setting)
    if precision == "bf16" and passive_openmp():
        return max(1, torch.get_num_threads() // 2)
    return None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` intra-op threads (``None``: unchanged), then restore torch's count."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["AUTO", "check_decode_threads", "decode_threads", "intra_op_threads", "passive_openmp"]
