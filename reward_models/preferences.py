"""Preference data: pairs ``(prompt, chosen, rejected)`` from files, the hub, or the simulated annotator.

:func:`load_preferences` returns a ``list`` of :class:`PreferencePair` (a small frozen dataclass):
plain Python objects are easy to validate row by row, to filter, and to split by prompt, and the
reward-model trainer turns them into a ``datasets.Dataset`` itself (:func:`pairs_to_dataset`).

Two schemas are understood:

* **explicit**: columns ``prompt``, ``chosen``, ``rejected`` (the format written by
  :mod:`reward_models.annotator` and ``scripts/generate_preferences.py``; extra columns are ignored,
  an optional numeric ``margin`` column is kept);
* **Anthropic hh-rlhf** (Bai et al. 2022): only ``chosen`` and ``rejected``, each a whole dialogue
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. Both dialogues share every turn but the last assistant
  reply; :func:`split_hh_dialogue` cuts each at its last ``"\\n\\nAssistant:"`` into the shared
  prompt (which keeps that marker, as TRL's hh-rlhf preprocessing does) and the final response.

Every row is checked; a bad row raises :class:`ValueError` naming its index and the fix, before
any training starts (docs/design.md section 6).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HH_ASSISTANT = "\n\nAssistant:"
"""Marker that starts an assistant turn in the hh-rlhf dialogues."""
HH_HUMAN = "\n\nHuman:"
"""Marker that starts a human turn in the hh-rlhf dialogues."""


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: for ``prompt``, ``chosen`` was preferred over ``rejected``.

    Attributes:
        prompt: the shared context (may be empty only for hh dialogues without a human turn).
        chosen: the preferred response.
        rejected: the other response.
        margin: how much better ``chosen`` is, used as the ``margin`` of the Bradley-Terry loss
            (Llama 2 style graded margins); 0 for plain binary preferences.
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


def split_hh_dialogue(text: str, row: int | None = None, side: str = "text") -> tuple[str, str]:
    """Cut an hh-rlhf dialogue into ``(prompt, final assistant response)``.

    The prompt ends with ``"\\n\\nAssistant:"``; the response is what follows, without the single
    leading space of the schema.

    Args:
        text: a dialogue ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.
        row: row index, for error messages.
        side: ``"chosen"`` or ``"rejected"``, for error messages.

    Raises:
        ValueError: the dialogue has no assistant turn.
    """
    where = f"row {row} ({side})" if row is not None else side
    if not isinstance(text, str):
        raise ValueError(f"{where}: expected an hh-rlhf dialogue string, got {type(text).__name__}")
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise ValueError(
            f"{where} has no {HH_ASSISTANT!r} turn: hh-rlhf dialogues look like "
            f"'\\n\\nHuman: ...\\n\\nAssistant: ...'; give the row explicit 'prompt', 'chosen' and "
            f"'rejected' columns instead, or fix the dialogue"
        )
    prompt = text[: cut + len(HH_ASSISTANT)]
    response = text[cut + len(HH_ASSISTANT) :]
    if response.startswith(" "):
        response = response[1:]
    return prompt, response


def _text(value: Any, row: int, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):  # csv readers give None/NaN
        return ""
    if not isinstance(value, str):
        raise ValueError(f"row {row}: column {column!r} must be text, got {type(value).__name__} {value!r}")
    return value


def validate_pair(prompt: str, chosen: str, rejected: str, row: int, margin: float = 0.0) -> PreferencePair:
    """Check one row and build its :class:`PreferencePair`.

    Raises:
        ValueError: an empty (or whitespace-only) side, ``chosen == rejected``, or a non-finite margin;
            the message names the row and the fix.
    """
    for side, value in (("chosen", chosen), ("rejected", rejected)):
        if not value.strip():
            raise ValueError(
                f"row {row}: the {side!r} response is empty; drop the row or fill in the response "
                f"(prompt {prompt[:60]!r})"
            )
    if chosen == rejected:
        raise ValueError(
            f"row {row}: 'chosen' and 'rejected' are identical ({chosen[:60]!r}), so the row carries no "
            f"preference; drop it"
        )
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not math.isfinite(margin):
        raise ValueError(f"row {row}: 'margin' must be a finite number, got {margin!r}")
    return PreferencePair(prompt, chosen, rejected, float(margin))


def pairs_from_rows(rows: Iterable[Mapping[str, Any]], source: str = "rows") -> list[PreferencePair]:
    """Validate rows in either schema (see the module docstring) and return the pairs.

    Args:
        rows: mappings with ``prompt``/``chosen``/``rejected`` or hh-rlhf ``chosen``/``rejected``.
        source: named in error messages.

    Raises:
        ValueError: a missing column, an empty source, or a bad row (named by its index).
    """
    pairs: list[PreferencePair] = []
    schema = None
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{source}: row {i} is a {type(row).__name__}, expected a mapping of columns")
        missing = [c for c in ("chosen", "rejected") if c not in row]
        if missing:
            raise ValueError(
                f"{source}: row {i} lacks column(s) {missing} (it has {sorted(row)}); preference rows need "
                f"'prompt', 'chosen', 'rejected', or hh-rlhf dialogues in 'chosen' and 'rejected'"
            )
        row_schema = "explicit" if "prompt" in row else "hh"
        schema = schema or row_schema
        if row_schema != schema:
            raise ValueError(
                f"{source}: row {i} {'lacks' if row_schema == 'hh' else 'has'} a 'prompt' column, unlike "
                f"row 0; give every row a prompt, or none (hh-rlhf dialogues)"
            )
        chosen = _text(row["chosen"], i, "chosen")
        rejected = _text(row["rejected"], i, "rejected")
        margin = row.get("margin", 0.0)
        margin = 0.0 if margin is None else margin
        if schema == "explicit":
            prompt = _text(row["prompt"], i, "prompt")
        else:
            prompt, chosen_resp = split_hh_dialogue(chosen, i, "chosen")
            prompt_r, rejected_resp = split_hh_dialogue(rejected, i, "rejected")
            if prompt != prompt_r:
                raise ValueError(
                    f"{source}: row {i}: the 'chosen' and 'rejected' dialogues differ before their last "
                    f"assistant turn, so they do not share a prompt; fix or drop the row (or give explicit "
                    f"'prompt', 'chosen', 'rejected' columns)"
                )
            chosen, rejected = chosen_resp, rejected_resp
        pairs.append(validate_pair(prompt, chosen, rejected, i, margin))
    if not pairs:
        raise ValueError(f"{source}: no preference rows found; check the path, split or filter")
    return pairs


def load_preferences(
    source: str | os.PathLike | Sequence[Mapping[str, Any]] | Any,
    split: str = "train",
    data_dir: str | None = None,
    limit: int | None = None,
) -> list[PreferencePair]:
    """Load and validate preference pairs.

    Args:
        source: a local ``.jsonl``/``.json``/``.csv`` file, a Hugging Face hub dataset name in the
            hh-rlhf schema (e.g. ``"Anthropic/hh-rlhf"``; needs internet), a ``datasets.Dataset``, or
            a list of row dicts.
        split: split of a hub dataset (local files are read whole).
        data_dir: subset folder of a hub dataset (``"helpful-base"`` for hh-rlhf).
        limit: keep only the first ``limit`` rows (after loading, before validation).

    Returns:
        A list of :class:`PreferencePair`, in file order.

    Raises:
        FileNotFoundError: a path-like source that does not exist.
        ValueError: an unsupported extension, a missing column, an empty source, or a bad row.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = os.path.splitext(path)[1].lower()
        if ext in (".jsonl", ".json", ".csv"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"preference file {path!r} does not exist")
            import datasets

            builder = "csv" if ext == ".csv" else "json"
            # keep_in_memory: small files; avoids writing Arrow caches next to the user's data.
            dataset = datasets.load_dataset(builder, data_files=path, split="train", keep_in_memory=True)
            rows: Any = dataset
        elif os.path.exists(path):
            raise ValueError(f"preference file {path!r}: use a .jsonl, .json or .csv file")
        else:
            import datasets

            rows = datasets.load_dataset(path, data_dir=data_dir, split=split)
        name = path
    else:
        rows, name = source, type(source).__name__
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows)))) if hasattr(rows, "select") else list(rows)[:limit]
    if hasattr(rows, "column_names"):
        missing = [c for c in ("chosen", "rejected") if c not in rows.column_names]
        if missing:
            raise ValueError(
                f"{name}: missing column(s) {missing} (found {rows.column_names}); preference data needs "
                f"'prompt', 'chosen', 'rejected', or hh-rlhf dialogues in 'chosen' and 'rejected'"
            )
    return pairs_from_rows(rows, source=name)


def save_preferences(rows: Sequence[PreferencePair | Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write pairs (or row dicts) as jsonl, atomically (temporary file, then rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            data = asdict(row) if isinstance(row, PreferencePair) else dict(row)
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def split_by_prompt(
    pairs: Sequence[PreferencePair], eval_fraction: float, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split pairs into train / held-out so that no prompt appears in both.

    Several pairs may share a prompt (K samples per prompt give K(K-1)/2 pairs, Ouyang et al. 2022);
    a random row split would leak near-duplicates into the held-out set and inflate its accuracy.

    Args:
        pairs: all pairs.
        eval_fraction: share of distinct prompts held out, in ``[0, 1)``.
        seed: seed of the shuffle.

    Returns:
        ``(train_pairs, heldout_pairs)``; ``heldout_pairs`` is empty when ``eval_fraction == 0``.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    prompts = sorted({p.prompt for p in pairs})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(prompts))
    n_eval = int(round(eval_fraction * len(prompts)))
    if eval_fraction > 0 and n_eval == 0 and len(prompts) > 1:
        n_eval = 1
    held = {prompts[i] for i in order[:n_eval]}
    train = [p for p in pairs if p.prompt not in held]
    heldout = [p for p in pairs if p.prompt in held]
    if not train:
        raise ValueError(f"eval_fraction {eval_fraction} leaves no training pairs ({len(prompts)} prompts)")
    return train, heldout


def pairs_to_dataset(pairs: Sequence[PreferencePair]):
    """A ``datasets.Dataset`` with columns ``prompt``, ``chosen``, ``rejected``, ``margin``."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
            "margin": [float(p.margin) for p in pairs],
        }
    )
