"""The pipeline's command line: one flag per config field, help from the field docstrings.

``run`` fields are plain flags (``--seed 1``), the other sections' are prefixed (``--rl.total-timesteps
4096``). Defaults are suppressed (``argparse.SUPPRESS``), so only the flags actually given form the
command-line layer (:func:`cli_layer`) that :func:`scripts.stages.config.build_config` puts on top of
the defaults, the ``--tiny`` preset and the YAML file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scripts.cli import HelpFormatter, add_options, command_name
from scripts.stages.config import SECTIONS


def pipeline_command() -> str:
    """``python -m scripts.pipeline`` when run that way, else the console script ``textrlhf``."""
    name = command_name()
    return name if name == "python -m scripts.pipeline" else "textrlhf"


def build_parser() -> argparse.ArgumentParser:
    """One flag per field of every section (the scripts' engine, :func:`scripts.cli.add_options`); flags
    not given stay out of the namespace, so only explicit flags override the other layers."""
    parser = argparse.ArgumentParser(
        prog=pipeline_command(),
        formatter_class=HelpFormatter,
        description="The whole RLHF pipeline: sft -> preferences -> reward-model -> rl -> evaluate.\n"
        "Precedence: defaults < --tiny < the run folder's config.yaml < --config YAML < flags.\n"
        "See docs/pipeline.md.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file with sections " + ", ".join(SECTIONS))
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section, inspect_doc(cls))
        add_options(group, cls, prefix="" if section == "run" else f"{section}.", only_given=True)
    return parser


def inspect_doc(cls: type) -> str:
    """First line of a class docstring (an argument group's title line)."""
    return (cls.__doc__ or "").strip().splitlines()[0]


def cli_layer(namespace: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The explicitly given flags as a ``{section: {key: value}}`` layer."""
    layer: dict[str, dict[str, Any]] = {}
    for dest, value in vars(namespace).items():
        if dest == "config":
            continue
        section, _, key = dest.rpartition(".")
        if section == "run" or not section:
            section, key = "run", dest
        if section == "run" and key == "stages":
            value = [s for item in value for s in item.split(",") if s]
        layer.setdefault(section, {})[key] = value
    return layer
