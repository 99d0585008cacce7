"""CPU settings of the command-line scripts: OpenMP's waiting threads and glibc's large blocks (docs/install.md).

**OpenMP** keeps CPU training fair on a shared machine (docs/install.md, "Shared machines").

torch's CPU kernels run on an OpenMP thread pool (libgomp in the PyPI and CPU wheels). Between two
parallel regions its threads spin-wait for a while before they sleep, which costs nothing on an idle
machine and a great deal on a busy one: the spinning threads take the cores the other programs (and
torch's own late threads) need, so a training step slows far more than by the share of CPU it loses
(measured in docs/results/2026-12-01-cpu-contention.md). With ``OMP_WAIT_POLICY=PASSIVE`` waiting
threads sleep at once.

OpenMP reads these variables once, when torch loads it: they must be in the environment before the
first ``import torch``. The command-line scripts apply :data:`OPENMP_DEFAULTS` first thing (in
``scripts/__init__.py``); a variable the user already set is left alone, and
``TEXTRLHF_OPENMP_DEFAULTS=0`` leaves OpenMP's own defaults. Library users who want the same set the
variable in their shell or call :func:`apply_openmp_defaults` before importing torch.

**glibc malloc** gives every block above its mmap threshold (raised on the fly, at most 32 MiB) its own
``mmap`` and hands it back to the kernel on ``free``; the next step's tensor of the same size then
page-faults every page in again, zero-filled by the kernel. A training step allocates and frees several
such tensors (a ``(batch, horizon, vocabulary)`` logits tensor is one), so on 2 cores the SFT stage spent
17-24 s of system time in 60-73 s (docs/results/2026-12-02-malloc.md). :func:`apply_malloc_defaults` has
glibc serve large blocks from its heap and keep freed memory for the next step (``mallopt``: no block of
its own ``mmap``, trimming only above 2 GiB); the pipeline hands that memory back between its stages
(:func:`release_free_memory`). The scripts apply it with the OpenMP defaults; ``TEXTRLHF_MALLOC_DEFAULTS=0``,
or a ``MALLOC_*_`` / ``GLIBC_TUNABLES`` malloc setting of the user's, leaves glibc's own behaviour.

Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

OPENMP_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The variables :func:`apply_openmp_defaults` sets when the environment does not (see the module docstring)."""
OPT_OUT = "TEXTRLHF_OPENMP_DEFAULTS"
"""Set this environment variable to ``0`` to keep OpenMP's own defaults in the scripts."""


def apply_openmp_defaults() -> dict[str, str]:
    """Put each of :data:`OPENMP_DEFAULTS` the environment lacks into ``os.environ``.

    Returns:
        The variables it set: none when ``TEXTRLHF_OPENMP_DEFAULTS=0``, when the user set them already, or
        when torch is already imported (OpenMP has read its settings by then; setting them would only
        mislead child processes into looking configured).
    """
    if os.environ.get(OPT_OUT, "1").strip() == "0" or "torch" in sys.modules:
        return {}
    missing = {name: value for name, value in OPENMP_DEFAULTS.items() if name not in os.environ}
    os.environ.update(missing)
    return missing


MALLOC_DEFAULTS: dict[str, int] = {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1, "M_TOP_PAD": 256 << 20}
"""The ``mallopt`` settings of :func:`apply_malloc_defaults`: no block gets its own ``mmap``; freed memory
goes back to the kernel only once 2 GiB of it sit at the top of the heap (the largest threshold ``mallopt``
takes), so one training step's tensors are reused by the next; the heap grows 256 MiB at a time (fewer
``brk`` calls)."""
MALLOC_OPT_OUT = "TEXTRLHF_MALLOC_DEFAULTS"
"""Set this environment variable to ``0`` to keep glibc's own malloc behaviour in the scripts."""
_MALLOPT_PARAMS = {"M_TRIM_THRESHOLD": -1, "M_TOP_PAD": -2, "M_MMAP_THRESHOLD": -3, "M_MMAP_MAX": -4}
"""glibc's ``mallopt`` parameter numbers (``<malloc.h>``)."""


def _user_malloc_settings() -> list[str]:
    """The malloc settings the environment already has: ``MALLOC_*_`` variables, or ``glibc.malloc`` tunables."""
    names = [name for name in os.environ if name.startswith("MALLOC_") and name.endswith("_")]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def apply_malloc_defaults() -> dict[str, int]:
    """Apply :data:`MALLOC_DEFAULTS` to this process's glibc allocator (see the module docstring).

    Returns:
        The settings applied: none when ``TEXTRLHF_MALLOC_DEFAULTS=0``, when the user set malloc options of
        their own, or when the C library is not glibc (macOS, Windows, musl), whose allocators do not work
        this way.
    """
    if os.environ.get(MALLOC_OPT_OUT, "1").strip() == "0" or _user_malloc_settings() or not _is_glibc():
        return {}
    libc = ctypes.CDLL(None)
    applied = {}
    for name, value in MALLOC_DEFAULTS.items():
        if libc.mallopt(ctypes.c_int(_MALLOPT_PARAMS[name]), ctypes.c_int(value)) == 1:
            applied[name] = value
    return applied


def release_free_memory() -> bool:
    """Collect garbage, then hand the allocator's free memory back to the kernel (glibc's ``malloc_trim(0)``).

    With :func:`apply_malloc_defaults` freed memory stays in the process for the next training step; between
    two parts of a program that allocate differently (the pipeline's stages: other models, other tensor
    sizes) that memory would only add to the next part's peak. The pipeline calls this after every stage.

    Returns:
        Whether memory was returned (``False`` also where the C library is not glibc: nothing to do there).
    """
    gc.collect()
    if not _is_glibc():
        return False
    return bool(ctypes.CDLL(None).malloc_trim(ctypes.c_size_t(0)))


def _is_glibc() -> bool:
    """Whether this process runs on GNU libc (the only C library whose ``mallopt`` this module knows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        return bool(libc.gnu_get_libc_version())
    except (OSError, AttributeError):
        return False


__all__ = [
    "MALLOC_DEFAULTS",
    "MALLOC_OPT_OUT",
    "OPENMP_DEFAULTS",
    "OPT_OUT",
    "apply_malloc_defaults",
    "apply_openmp_defaults",
    "release_free_memory",
]
