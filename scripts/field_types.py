"""Config values that bypass the command line, checked against their dataclass annotations.

The command line converts each value through its field's type (``scripts/cli.py``), but YAML files
and hand-built configs do not: ``seed: abc`` would only fail deep inside a stage, after hours of work.
:func:`check_field_types`, called from a config's ``__post_init__``, rejects such a value at start-up
with the field, the expected type in words and the fix (the pipeline's sections in
``scripts/stages/config_sections.py`` use it).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path",
    dict: "a mapping",
    list: "a list",
}


def _describe(tp: Any) -> str:
    """``tp`` in words, for error messages ("an integer or null")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (list, tuple, Sequence):
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    return _TYPE_WORDS.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _conform(tp: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``tp``, and the value normalised (int -> float, str -> Path)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args, value
        for arg in (a for a in args if a is not type(None)):
            ok, out = _conform(arg, value)
            if ok:
                return True, out
        return False, value
    if origin is typing.Literal:
        return value in args, value
    if tp is float:  # YAML writes 1 for 1.0; a bool is never a number here
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is Path:
        ok = isinstance(value, (str, os.PathLike))
        return ok, Path(value) if ok else value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = next((a for a in args if a is not Ellipsis), Any)
        checked = [_conform(item, v) for v in value]
        return all(ok for ok, _ in checked), type(value)(v for _, v in checked)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return (isinstance(value, tp), value) if isinstance(tp, type) else (True, value)


def check_field_types(config: Any, prefix: str = "", hint: Callable[[str], str] | None = None) -> None:
    """Check every field of a dataclass instance against its annotation; normalise ints for floats.

    The command line converts each value through its type, but YAML files and hand-built configs do
    not: ``seed: abc`` would only fail deep inside a stage, after hours of work. Call this from a
    config's ``__post_init__``.

    Args:
        config: a dataclass instance (fields are updated in place: ``1`` -> ``1.0`` for a float field).
        prefix: prepended to field names in messages (``"rl."``).
        hint: field name -> how to fix it (which flag or file key sets it), appended to the message.

    Raises:
        TypeError: a value does not match its field's type; the message names field, type and value.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        ok, normalised = _conform(hints.get(f.name, Any), value)
        if not ok:
            fix = f"; {hint(f.name)}" if hint is not None else ""
            raise TypeError(
                f"{prefix}{f.name} must be {_describe(hints[f.name])}, got {value!r} ({type(value).__name__}){fix}"
            )
        if normalised is not value:
            object.__setattr__(config, f.name, normalised)
