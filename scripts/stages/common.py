"""Helpers shared by the pipeline stages: device, seeding, prompt encoding, stage summaries."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.stages.config import PipelineConfig


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` if a GPU is visible, else ``"cpu"``; ``"cuda"`` without a GPU raises."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (``transformers.set_seed``)."""
    from transformers import set_seed

    set_seed(seed)


def make_text_env(
    cfg: PipelineConfig,
    model: str | os.PathLike,
    prompts,
    split: str = "train",
    max_prompts: int | None = None,
    reward="length",
):
    """An unwrapped ``TextRLHF-v0`` used for its prompt list and ``encode_prompt`` (never stepped)."""
    import gymnasium as gym

    import textenv  # noqa: F401  (registers TextRLHF-v0)

    env = gym.make(
        "TextRLHF-v0",
        model=os.fspath(model),
        prompts=prompts,
        prompt_split=split,
        max_prompts=max_prompts,
        max_new_tokens=cfg.run.max_new_tokens,
        max_prompt_tokens=cfg.run.max_prompt_tokens,
        reward=reward,
    )
    return env.unwrapped


def encode_prompts(env, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt exactly as the env encodes them (truncation included)."""
    return [[int(t) for t in env.encode_prompt(p)] for p in prompts]


def abs_path(path: str | os.PathLike) -> str:
    """Absolute path as a string, for *loading* a run folder's model now (independent of later cwd changes).

    Never store the result in the run folder (a checkpoint, metadata, a config): a copied or moved run
    folder would then point back at the original one. Store paths relative to the run folder.
    """
    return str(Path(path).resolve())


class StageTimer:
    """Wall time of a stage and of its phases; ``summary(text)`` prints the one-line ``[stage] ...`` summary.

    Phases say where a stage's time goes (``report.md``'s stages table): ``with timer.phase("train"):``
    adds the block's wall time to ``train``, :meth:`add` adds seconds measured elsewhere (inside a library
    call); phases must not overlap. :meth:`phase_seconds` adds ``other``, the time outside every phase.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def phase(self, name: str):
        """Add the wall time of the ``with`` block to phase ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name``."""
        self.phases[name] = self.phases.get(name, 0.0) + float(seconds)

    def phase_seconds(self) -> dict[str, float]:
        """Each phase's seconds (rounded to 0.1), then ``other``: the stage's seconds outside every phase."""
        out = {name: round(s, 1) for name, s in self.phases.items()}
        out["other"] = round(max(self.seconds - sum(self.phases.values()), 0.0), 1)
        return out

    def summary(self, text: str) -> str:
        line = f"[{self.stage}] {text}, {self.seconds:.0f} s"
        print(line, flush=True)
        return line


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for summaries and tables (``-`` for missing)."""
    if x is None:
        return "-"
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def accuracy_band(metrics: dict) -> str:
    """`` [low, high]``: the 95% interval of a reward-model accuracy (``evaluate_preferences`` with
    ``n_resamples``), or ``""`` for metrics without one (written before intervals existed, or one prompt)."""
    if metrics.get("accuracy_low") is None:
        return ""
    return f" [{fmt(metrics['accuracy_low'], 2)}, {fmt(metrics['accuracy_high'], 2)}]"
