"""scripts.cli: dataclass -> argparse, field docstrings as help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from scripts.cli import build_parser, field_docs, parse_args


@dataclass
class Base:
    """A test config."""

    seed: int = 0
    """Random seed."""


@dataclass
class Demo(Base):
    """Demo config."""

    lr: float = 1e-3
    """Learning rate of
    the optimiser."""
    name: Optional[str] = None
    """Run name."""
    verbose: bool = False
    """Talk more."""
    tags: list[str] = field(default_factory=list)
    """Free tags."""
    sizes: tuple[int, ...] = (1, 2)
    """Layer sizes."""
    mode: Literal["fast", "slow"] = "fast"
    """Speed."""
    extra: dict = field(default_factory=dict)
    """JSON options."""
    out: Path = Path("runs/x")
    """Output folder."""
    helped: int = field(default=3, metadata={"help": "From metadata."})
    max_len: int = 5
    """Underscore field."""


def test_field_docs_read_source_and_bases():
    docs = field_docs(Demo)
    assert docs["seed"] == "Random seed." and docs["lr"].startswith("Learning rate of")


def test_parse_all_types():
    cfg = parse_args(Demo, ["--seed", "3", "--lr", "0.5", "--name", "none", "--verbose", "--tags", "a", "b",
                            "--sizes", "4", "5", "--mode", "slow", "--extra", '{"k": 1}', "--out", "/tmp/o",
                            "--helped", "7", "--max_len", "6"])
    assert cfg == Demo(seed=3, lr=0.5, name=None, verbose=True, tags=["a", "b"], sizes=(4, 5), mode="slow",
                       extra={"k": 1}, out=Path("/tmp/o"), helped=7, max_len=6)
    assert parse_args(Demo, []) == Demo()
    assert parse_args(Demo, ["--no-verbose", "--name", "run1"]).name == "run1"
    assert parse_args(Demo, ["--max-len", "8"]).max_len == 8


def test_help_text_and_errors(capsys):
    text = build_parser(Demo).format_help()
    assert "Learning rate of the optimiser." in text and "From metadata." in text and "default: runs/x" in text
    with pytest.raises(SystemExit):
        parse_args(Demo, ["--mode", "medium"])
    with pytest.raises(SystemExit):
        parse_args(Demo, ["--unknown", "1"])
    with pytest.raises(TypeError):
        build_parser(int)
