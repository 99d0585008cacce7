"""Dataclass -> argparse: the one command-line engine of every script and of the pipeline.

One config dataclass per script (the pipeline: one per section), its field docstrings are the
``--help``. :func:`add_options` is the one place where fields become options; :func:`build_parser`
/ :func:`parse_args` use it for a script, :mod:`scripts.stages.config_cli` for the pipeline's
sections (``--rl.kl-coef``). A maintained library (tyro, simple-parsing) was considered: the pipeline
layers defaults < ``--tiny`` < the run folder's saved config < YAML < flags, which needs to know which
flags were *given* (``argparse.SUPPRESS``), and the saved config depends on ``--run-dir`` itself; the
~250 lines here do that with the standard library and keep the help format of every script.

Every script in ``scripts/`` declares its options as a dataclass whose fields carry a docstring
right below them (the attribute-docstring convention that Sphinx and IDEs understand)::

    @dataclass
    class Config:
        seed: int = 0
        \"\"\"Random seed for everything.\"\"\"
        tags: list[str] = field(default_factory=list)
        \"\"\"Free-form tags.\"\"\"

and parses its command line with ``config = parse_args(Config)``. Field docstrings are read from the
class source with :mod:`ast` (walking the MRO, so inherited fields keep their help); a field may
instead give ``field(metadata={"help": ...})``, which wins. Supported types:

* ``int``, ``float``, ``str``, ``pathlib.Path``: ``--name VALUE``;
* ``bool``: ``--name`` / ``--no-name``;
* ``Optional[X]`` / ``X | None``: like ``X``; the words ``none``/``null`` give ``None``;
* ``list[X]`` / ``tuple[X, ...]``: ``--name A B C`` (zero or more values);
* ``Literal["a", "b"]``: ``--name a`` with choices;
* ``dict``: a JSON object, ``--name '{"k": 1}'``.

Underscores in field names become dashes (``--max-new-tokens``); the underscore spelling is
accepted too. Fields without a default are required options.

Help text comes from :func:`help_from_doc`, the one place where docstrings become argparse help
(it escapes ``%``, which argparse would otherwise read as a format). Values that bypass the command
line (YAML files, hand-built configs) are checked against the annotations by
:func:`scripts.field_types.check_field_types` from a config's ``__post_init__``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import inspect
import json
import os
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_NONE_WORDS = {"none", "null"}


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a dataclass's fields, read from the class source (and its bases).

    Args:
        cls: a dataclass type.

    Returns:
        ``{field_name: docstring}`` for every field documented by a string literal placed right
        after its annotated assignment. Classes whose source is unavailable contribute nothing.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # subclasses override their bases' docs
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        class_defs = [node for node in tree.body if isinstance(node, ast.ClassDef)]
        if not class_defs:
            continue
        body = class_defs[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def help_from_doc(doc: str, default: Any = dataclasses.MISSING) -> str:
    """An argparse ``help=`` string from a field docstring and its default.

    argparse %-formats every help string (``%(default)s``), so a literal ``%`` in a docstring or a
    default ("2.5% per rollout") would crash ``--help`` with "unsupported format character": every
    ``%`` is escaped here, the one place where docstrings become help.

    Args:
        doc: the field docstring (whitespace is collapsed).
        default: the default shown after the text; ``dataclasses.MISSING`` shows "required".
    """
    if default is dataclasses.MISSING:
        shown = "required"
    else:
        shown = "default: " + (str(default) if isinstance(default, Path) else repr(default))
    text = " ".join(doc.split())
    return (f"{text} ({shown})" if text else f"({shown})").replace("%", "%%")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar_converter(tp: Any, optional: bool, name: str):
    """An argparse ``type=`` function for a scalar field type."""
    if tp in (int, float, str, Path):
        base = tp
    elif tp is Any:
        base = str
    else:
        raise TypeError(f"field {name!r}: unsupported type {tp!r} for the command line")

    def convert(text: str):
        if optional and text.lower() in _NONE_WORDS:
            return None
        return base(text)

    convert.__name__ = getattr(base, "__name__", "value")  # argparse names it in error messages
    return convert


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default (calling its ``default_factory``), or ``dataclasses.MISSING`` if it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _type_kwargs(tp: Any, name: str) -> dict[str, Any]:
    """The ``add_argument`` keywords (``type``/``action``/``nargs``/``choices``/``metavar``) for a field type."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        choices = list(typing.get_args(inner))
        return {"type": type(choices[0]), "choices": choices}
    if origin in (list, tuple, Sequence) or inner in (list, tuple):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        item = args[0] if args else str
        return {
            "nargs": "*",
            "type": _scalar_converter(item, False, name),
            "metavar": getattr(item, "__name__", "VALUE").upper(),
        }
    if inner is dict or origin is dict:
        return {"type": json_object(name), "metavar": "JSON"}
    return {"type": _scalar_converter(inner, optional, name), "metavar": getattr(inner, "__name__", "VALUE").upper()}


def add_options(container: Any, cls: type, prefix: str = "", only_given: bool = False) -> None:
    """Add one option per field of the dataclass ``cls`` to a parser or argument group.

    The one place where config fields become options, for the scripts (:func:`build_parser`) and the
    pipeline's sections (``--rl.total-timesteps``, :mod:`scripts.stages.config_cli`).

    Args:
        container: an :class:`argparse.ArgumentParser` or an argument group of one.
        cls: the config dataclass; field docstrings (or ``field(metadata={"help": ...})``) are the help,
            ``field(metadata={"metavar": ...})`` names the value in it.
        prefix: prepended to option names and destinations (``"rl."`` gives ``--rl.kl-coef``, dest ``rl.kl_coef``).
        only_given: leave options that are not on the command line out of the namespace
            (``argparse.SUPPRESS``), for configs layered from several sources; the help still shows the
            field's default.
    """
    hints = typing.get_type_hints(cls, include_extras=False)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, str)
        flag = "--" + (prefix + f.name).replace("_", "-")
        # The underscore spelling is accepted too (not for bools: "--no-chat_template" reads badly);
        # HelpFormatter leaves it out of --help.
        underscore = "_" in prefix + f.name and _unwrap_optional(tp)[0] is not bool
        flags = [flag, f"--{prefix}{f.name}"] if underscore else [flag]
        default = _field_default(f)
        required = default is dataclasses.MISSING and not only_given
        kwargs: dict[str, Any] = {
            "dest": prefix + f.name,
            "required": required,
            "help": help_from_doc(f.metadata.get("help") or docs.get(f.name, ""), default),
        }
        if only_given:
            kwargs["default"] = argparse.SUPPRESS
        elif not required:
            kwargs["default"] = default
        kwargs.update(_type_kwargs(tp, prefix + f.name))
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        container.add_argument(*flags, **kwargs)


def json_object(name: str):
    """An argparse ``type`` that parses a JSON object, naming the flag ``--name`` in its errors."""

    def convert(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"--{name} must be a JSON object, e.g. '{{\"k\": 1}}': {exc}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"--{name} must be a JSON object, got {type(value).__name__}")
        return value

    convert.__name__ = "JSON object"
    return convert


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, without the underscore spellings of options (``--n-envs``, not also
    ``--n_envs``): they are still accepted, but a help page names every option once."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if "_" not in o]
        if not shown or len(shown) == len(action.option_strings):
            return super()._format_action_invocation(action)
        listed = copy.copy(action)
        listed.option_strings = shown
        return super()._format_action_invocation(listed)


def command_name() -> str:
    """The command the user typed, for usage lines: ``python -m scripts.train_agent`` or the console script."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m package.module
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def build_parser(cls: type, description: str | None = None, **parser_kwargs: Any) -> argparse.ArgumentParser:
    """An :class:`argparse.ArgumentParser` with one option per field of the dataclass ``cls``.

    Args:
        cls: the config dataclass.
        description: shown at the top of ``--help`` (default: the class docstring).
        **parser_kwargs: passed to :class:`argparse.ArgumentParser`.

    Raises:
        TypeError: ``cls`` is not a dataclass, or a field has a type the command line cannot express.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"build_parser needs a dataclass type, got {cls!r}")
    parser_kwargs.setdefault("formatter_class", HelpFormatter)
    parser_kwargs.setdefault("prog", command_name())
    parser = argparse.ArgumentParser(description=description or inspect.getdoc(cls), **parser_kwargs)
    add_options(parser, cls)
    return parser


def parse_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse a command line into an instance of the config dataclass ``cls``.

    Args:
        cls: the config dataclass; field docstrings become the help.
        argv: arguments (default ``sys.argv[1:]``).
        description: text at the top of ``--help`` (default: the class docstring).

    Returns:
        ``cls(**parsed)``; the dataclass's own ``__post_init__`` validation runs as usual.
    """
    parser = build_parser(cls, description=description)
    namespace = parser.parse_args(argv)
    values = vars(namespace)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # nargs="*" gives lists; honour tuple-typed fields
        inner, _ = _unwrap_optional(hints.get(f.name, str))
        if (typing.get_origin(inner) is tuple or inner is tuple) and isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))  # exits with status 2 and the usage line, like any argparse error
        raise  # unreachable; keeps type checkers quiet


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (paths as strings), for logs and metadata."""

    def fix(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return {k: fix(v) for k, v in dataclasses.asdict(config).items()}
