"""textrlhf.cpu: the OpenMP defaults the scripts apply before torch loads OpenMP, and the malloc defaults."""

import ctypes
import os
import subprocess
import sys

import pytest

from textrlhf.cpu import MALLOC_DEFAULTS, OPENMP_DEFAULTS, _is_glibc, apply_openmp_defaults


def _glibc_with_mallinfo2() -> bool:
    """glibc >= 2.33, whose ``mallinfo2`` the malloc test reads."""
    return _is_glibc() and hasattr(ctypes.CDLL(None), "mallinfo2")


def _child(code: str, **env: str | None) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` changes (None removes); its stdout."""
    child = dict(os.environ)
    for k, v in env.items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    return subprocess.run([sys.executable, "-c", code], env=child, capture_output=True, text=True, check=True).stdout


def test_scripts_set_passive_waiting_before_torch_loads_and_respect_the_user():
    code = "import scripts, os, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    assert _child(code, OMP_WAIT_POLICY=None, TEXTRLHF_OPENMP_DEFAULTS=None).split() == ["PASSIVE", "False"]
    assert _child(code, OMP_WAIT_POLICY="ACTIVE").split()[0] == "ACTIVE"  # the user's setting wins
    assert _child(code, OMP_WAIT_POLICY=None, TEXTRLHF_OPENMP_DEFAULTS="0").split()[0] == "None"  # opt-out


def test_nothing_is_set_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loaded: OpenMP has read its settings)

    for name in OPENMP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TEXTRLHF_OPENMP_DEFAULTS", raising=False)
    assert apply_openmp_defaults() == {}
    assert all(name not in os.environ for name in OPENMP_DEFAULTS)


_NO_MALLOC_SETTINGS = {"TEXTRLHF_MALLOC_DEFAULTS": None, "MALLOC_MMAP_MAX_": None, "MALLOC_TRIM_THRESHOLD_": None}
"""Environment changes for a child whose allocator only the code under test may tune."""

# mallinfo2's hblks: how many blocks glibc serves from their own mmap right now.
_MMAPPED_BLOCKS = """
import ctypes, sys
{prelude}
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)  # 64 MiB: above glibc's largest automatic mmap threshold (32 MiB)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(block))
"""


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="mallopt and mallinfo2 are glibc's (>= 2.33)")
def test_scripts_serve_large_blocks_from_the_heap_and_respect_the_user():
    with_scripts, without = _MMAPPED_BLOCKS.format(prelude="import scripts"), _MMAPPED_BLOCKS.format(prelude="")
    clean = _NO_MALLOC_SETTINGS
    assert _child(with_scripts, **clean) == "0\n"
    assert _child(without, **clean) == "1\n"  # glibc's own behaviour: the block gets its own mmap
    assert _child(with_scripts, **{**clean, "TEXTRLHF_MALLOC_DEFAULTS": "0"}) == "1\n"  # opt-out
    # A malloc setting of the user's wins (one that keeps glibc's mmap of large blocks: trim at 128 KiB).
    assert _child(with_scripts, **{**clean, "MALLOC_TRIM_THRESHOLD_": "131072"}) == "1\n"


def test_malloc_defaults_name_real_mallopt_parameters():
    from textrlhf.cpu import _MALLOPT_PARAMS

    assert set(MALLOC_DEFAULTS) <= set(_MALLOPT_PARAMS)
    assert all(0 <= v <= 2**31 - 1 for v in MALLOC_DEFAULTS.values())  # mallopt takes a C int


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="malloc_trim is glibc's (the same check as above)")
def test_release_free_memory_hands_freed_heap_memory_back_to_the_kernel():
    code = """
import ctypes, scripts
from textrlhf.cpu import release_free_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
resident_mib = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
blocks = [libc.malloc(1 << 20) for _ in range(300)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)  # touched: 300 MiB resident, from the heap under the scripts' defaults
for b in blocks[:-1]:
    libc.free(ctypes.c_void_p(b))  # the last stays in use at the heap's top: only malloc_trim(0) frees below it
kept = resident_mib()
released = release_free_memory()
print(released, kept - resident_mib())
"""
    clean = _NO_MALLOC_SETTINGS
    released, mib = _child(code, **clean).split()
    assert released == "True" and int(mib) > 250  # the 299 freed MiB went back
