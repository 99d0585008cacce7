"""Prompt sources for ``TextRLHF-v0``, read through the ``datasets`` library.

A source is the bundled set (``"bundled:reviews"``, ``"bundled:instructions"``, ``"bundled:all"``),
a local ``.json``/``.jsonl``/``.csv``/``.txt`` file, a Hugging Face hub dataset name (same
``load_dataset`` code path; needs internet), or a Python list of strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

BUNDLED_PATH = Path(__file__).parent / "data" / "prompts.jsonl"
"""The bundled prompt sets (rows ``{"prompt", "task", "split"}``), ``bundled:reviews`` and friends."""
DEMONSTRATIONS_PATH = Path(__file__).parent / "data" / "demonstrations.jsonl"
"""The bundled SFT demonstrations (rows ``{"prompt", "response"}``) for the review prompts."""


class PromptTruncatedWarning(UserWarning):
    """A prompt longer than ``max_prompt_tokens`` lost its first tokens (``prompt_overflow="truncate"``).

    A class of its own so that code which truncates on purpose can silence exactly this warning:
    ``warnings.simplefilter("ignore", PromptTruncatedWarning)``.
    """


_BUNDLED_TASKS = {"reviews": "review", "instructions": "instruction", "all": None}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


def load_prompts(
    source: str | Sequence[str] = "bundled:reviews",
    column: str = "prompt",
    split: str = "train",
    max_prompts: int | None = None,
) -> list[str]:
    """Read a list of prompts.

    Args:
        source: see the module docstring.
        column: text column for files and hub datasets (``.txt`` files: one prompt a line).
        split: ``"train"``, ``"test"`` or ``"all"`` for the bundled set and for files with a ``split``
            column; the split name for hub datasets.
        max_prompts: keep only the first ``max_prompts``.

    Returns:
        The prompts, in source order.

    Raises:
        ValueError: an empty source, or an empty prompt (naming its index).
        FileNotFoundError: a path-like source that does not exist.
        ValueError: a file that is not UTF-8 or not valid JSON, naming the file and line.
        KeyError: a missing column, listing the available ones.
    """
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        prompts = _load_named(os.fspath(source), column, split)
    elif isinstance(source, Sequence):
        prompts = list(source)
    else:
        raise TypeError(f"prompts must be a source name, a path or a list of strings, got {type(source).__name__}")
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    if not prompts:
        raise ValueError(f"prompt source {name} (split {split!r}) holds no prompts; give a non-empty source")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} of {name} is a {type(p).__name__}, not a str: {p!r}")
        if not p.strip():
            raise ValueError(f"prompt {i} of {name} is empty; remove it or give it text")
    return prompts


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return f"<list of {len(source)}>" if isinstance(source, Sequence) else repr(source)


def _load_named(source: str, column: str, split: str) -> list[str]:
    from datasets import load_dataset

    if source.startswith("bundled:"):
        subset = source.removeprefix("bundled:")
        if subset not in _BUNDLED_TASKS:
            raise ValueError(
                f"unknown bundled prompt set {source!r}; use one of {['bundled:' + k for k in _BUNDLED_TASKS]}"
            )
        ds = load_dataset("json", data_files=str(BUNDLED_PATH), split="train")
        task = _BUNDLED_TASKS[subset]
        return [
            row["prompt"]
            for row in ds
            if (task is None or row["task"] == task) and (split == "all" or row["split"] == split)
        ]
    suffix = Path(source).suffix.lower()
    if suffix in _FILE_BUILDERS or os.path.exists(source):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"prompt file {source!r} does not exist")
        if os.path.getsize(source) == 0:
            return []  # `datasets` cannot infer a schema from an empty file; report it as empty below
        builder = _FILE_BUILDERS.get(suffix)
        if builder is None:
            raise ValueError(f"prompt file {source!r}: unsupported extension; use one of {sorted(_FILE_BUILDERS)}")
        ds = _load_file(source, builder)
        if builder == "text":
            return [row["text"] for row in ds]
        if "split" in ds.column_names and split != "all":
            ds = ds.filter(lambda row: row["split"] == split)
        return _column(ds, column, source)
    ds = load_dataset(source, split=split)  # hub dataset: needs internet
    return _column(ds, column, source)


def _load_file(source: str, builder: str):
    """``load_dataset`` on a local file; a file that is not UTF-8 or not valid JSON raises ``ValueError``
    naming the file and the line at fault (``datasets`` names neither)."""
    from datasets import load_dataset

    with open(source, "rb") as f:
        raw = f.read()
    # Checked up front: ``datasets`` can load a non-UTF-8 JSON file and fail only when a row is read.
    _check_utf8(source, raw)
    try:
        return load_dataset(builder, data_files=source, split="train")
    except Exception as exc:  # noqa: BLE001 - datasets wraps parse errors in its own classes
        if builder != "json":
            raise
        problem = _find_bad_json(raw.decode("utf-8"), jsonl=Path(source).suffix.lower() == ".jsonl")
        if problem is None:
            raise
        raise ValueError(f"prompt file {source!r}: {problem}") from exc


def _check_utf8(source: str, raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(raw.splitlines(), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"prompt file {source!r}: line {number} is not UTF-8 (byte {line[err.start]:#04x} at column "
                    f"{err.start + 1}); save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > NEW_FILE"
                ) from None
        raise  # not reached: a line-wise decode fails wherever the whole one does


def _find_bad_json(text: str, jsonl: bool) -> str | None:
    """Describe the first line of ``text`` that is not valid JSON (Lines), if any."""
    if not jsonl:
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            return f"line {err.lineno} is not valid JSON ({err.msg}, column {err.colno})"
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return (
                    f"line {number} is not valid JSON ({err.msg}, column {err.colno}); "
                    f"JSON Lines needs one object a line"
                )
    return None


def _column(ds, column: str, source: str) -> list[str]:
    if column not in ds.column_names:
        raise KeyError(
            f"prompt source {source!r} has no column {column!r}; available: {ds.column_names} (set prompt_column)"
        )
    return list(ds[column])
