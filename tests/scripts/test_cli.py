"""scripts.cli: dataclass -> argparse, field docstrings as help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    name: str | None = None
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
    cfg = parse_args(
        Demo,
        [
            "--seed",
            "3",
            "--lr",
            "0.5",
            "--name",
            "none",
            "--verbose",
            "--tags",
            "a",
            "b",
            "--sizes",
            "4",
            "5",
            "--mode",
            "slow",
            "--extra",
            '{"k": 1}',
            "--out",
            "/tmp/o",
            "--helped",
            "7",
            "--max_len",
            "6",
        ],
    )
    assert cfg == Demo(
        seed=3,
        lr=0.5,
        name=None,
        verbose=True,
        tags=["a", "b"],
        sizes=(4, 5),
        mode="slow",
        extra={"k": 1},
        out=Path("/tmp/o"),
        helped=7,
        max_len=6,
    )
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


def test_the_pipeline_parses_with_the_same_engine(capsys):
    """One engine: a section's options behave like a script's (types, choices, none, underscore spelling),
    and only the flags given reach the pipeline's command-line layer."""
    from scripts.stages.config_cli import build_parser as pipeline_parser
    from scripts.stages.config_cli import cli_layer

    parser = pipeline_parser()
    ns = parser.parse_args(
        [
            "--rl.kl_coef",
            "0.1",
            "--reward-model.max-length",
            "64",
            "--threads",
            "none",
            "--stages",
            "rl,evaluate",
            "--no-progress",
        ]
    )
    assert cli_layer(ns) == {
        "rl": {"kl_coef": 0.1},
        "reward_model": {"max_length": 64},
        "run": {"threads": None, "stages": ["rl", "evaluate"], "progress": False},
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])  # a Literal field: choices, as in the scripts
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--rl.n-envs", "two"])
    assert "invalid int value" in capsys.readouterr().err
