"""Measurement helpers for ``scripts/benchmark.py``: timers, a peak-RSS sampler, medians, memory hygiene."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Iterable

import torch

from textrlhf.cpu import release_free_memory

MB = 1024.0 * 1024.0


def sync(device: str | torch.device | None = None) -> None:
    """Wait for queued accelerator work, so wall-clock timings are honest (no-op on CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def minor_faults() -> int | None:
    """Minor page faults of this process so far (``getrusage``), ``None`` where there is no ``resource`` module.

    A fault per 4 KiB page touched for the first time: an iteration that still grows its working set shows
    them, a steady one does not (the benchmark records them per iteration).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fault_delta(before: int | None) -> int | None:
    """Minor page faults since ``before`` (a :func:`minor_faults` reading), ``None`` if unknown."""
    now = minor_faults()
    return None if before is None or now is None else now - before


class Timer:
    """``with Timer(device) as t: ...`` then ``t.seconds`` (synchronises the device at both ends)."""

    def __init__(self, device: str | torch.device | None = "cpu"):
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> Timer:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


class PeakRSS:
    """Process RSS high-water mark while the block runs, sampled by a background thread.

    ``peak_mb`` is the highest sampled RSS minus the RSS at entry (the memory this block added), also
    ``cuda_peak_mb`` (``torch.cuda.max_memory_allocated`` over the block) when CUDA is in use.
    Sampling every ``interval`` seconds can miss spikes shorter than the interval.
    """

    def __init__(self, interval: float = 0.005):
        import psutil  # only needed for the memory measurement

        self.interval = interval
        self._proc = psutil.Process()
        self.peak_mb = float("nan")
        self.cuda_peak_mb: float | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        release_memory()
        self._before = self._proc.memory_info().rss
        self._max = self._before
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self._cuda_before = torch.cuda.memory_allocated()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._max = max(self._max, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.peak_mb = (self._max - self._before) / MB
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_peak_mb = (torch.cuda.max_memory_allocated() - getattr(self, "_cuda_before", 0)) / MB


def release_memory() -> None:
    """Collect garbage and hand freed memory back (:func:`textrlhf.cpu.release_free_memory`, and CUDA's cache),
    so that the next method's RSS baseline is not inflated by the previous method's freed-but-kept heap."""
    release_free_memory()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def median(values: Iterable[float | None]) -> float | None:
    """Median of the finite values (``None`` if there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def fmt(value: float | None, digits: int = 1) -> str:
    """A table cell: ``-`` for missing values, else a rounded number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) < 10 ** (-digits) and value != 0:
        return f"{value:.{digits + 2}f}"
    return f"{value:.{digits}f}"
