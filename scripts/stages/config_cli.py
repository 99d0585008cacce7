"""The pipeline's command line: one flag per config field, help from the field docstrings.

``run`` fields are plain flags (``--seed 1``), the other sections' are prefixed (``--rl.total-timesteps
4096``). Defaults are suppressed (``argparse.SUPPRESS``), so only the flags actually given form the
command-line layer (:func:`cli_layer`) that :func:`scripts.stages.config.build_config` puts on top of
the defaults, the ``--tiny`` preset and the YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

from scripts.cli import HelpFormatter, command_name, field_docs, help_from_doc, json_object
from scripts.stages.config import SECTIONS


def _converter(tp: Any, name: str):
    """An argparse ``type=`` for a field type (``none``/``null`` for Optional ones, JSON for dicts)."""
    inner = tp
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, optional = args[0], len(args) < len(typing.get_args(tp))

    def convert(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        if inner is dict:
            return json_object(name)(text)
        return inner(text)

    convert.__name__ = getattr(inner, "__name__", "value")
    return convert, inner


def pipeline_command() -> str:
    """``python -m scripts.pipeline`` when run that way, else the console script ``textrlhf``."""
    name = command_name()
    return name if name == "python -m scripts.pipeline" else "textrlhf"


def build_parser() -> argparse.ArgumentParser:
    """One flag per field of every section; defaults are suppressed so only explicit flags override."""
    parser = argparse.ArgumentParser(
        prog=pipeline_command(), formatter_class=HelpFormatter,
        description="The whole RLHF pipeline: sft -> preferences -> reward-model -> rl -> evaluate.\n"
                    "Precedence: defaults < --tiny < the run folder's config.yaml < --config YAML < flags.\n"
                    "See README 'The pipeline'.")
    parser.add_argument("--config", type=Path, default=None, help="YAML file with sections " + ", ".join(SECTIONS))
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section, inspect_doc(cls))
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            dest = f.name if section == "run" else f"{section}.{f.name}"
            flag = "--" + dest.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            tp = hints[f.name]
            kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS,
                                      "help": help_from_doc(docs.get(f.name, ""), default)}
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is list:
                kwargs.update(nargs="+", metavar="STAGE")
            elif typing.get_origin(tp) is Literal:
                kwargs.update(choices=list(typing.get_args(tp)))
            else:
                kwargs["type"], inner = _converter(tp, dest)
                kwargs["metavar"] = "JSON" if inner is dict else getattr(inner, "__name__", "X").upper()
            group.add_argument(flag, **kwargs)
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
