"""The run directory: atomic writes, stage completion markers, the per-stage layout.

Every artifact of a pipeline run is written atomically (DESIGN section 6): to a temporary sibling
first, then moved into place with ``os.replace``, which is atomic on POSIX file systems. A run killed
at any moment therefore leaves each file either absent or complete, never half-written, and
``--resume`` can trust whatever it finds. Each finished stage writes a marker
``<run_dir>/<stage>/DONE.json`` last (with its summary line and wall time), so "is this stage done?"
is one ``os.path.exists``.

Layout of ``runs/<name>/`` (see the README for every file)::

    config.yaml          the whole config as run (all stages, after presets, YAML and CLI)
    sft/                 model/ (save_pretrained + tokenizer), train_log.csv, DONE.json
    preferences/         pairs.jsonl (+ .meta.json), DONE.json
    reward_model/        model/ (BradleyTerryRewardModel.save_pretrained), train_log.csv, metrics.json
    rl/                  checkpoint.zip (SB3), progress.csv, tensorboard/, policy/ (save_pretrained)
    evaluate/            metrics.json, samples.csv, samples.md
    plots/               *.png
    report.md
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textenv.atomic import atomic_dir  # noqa: F401  (re-exported: the pipeline's model folders)

STAGES = ("sft", "preferences", "reward-model", "rl", "evaluate")
"""Pipeline stages, in the order they run (InstructGPT, Ouyang et al. 2022, figure 2)."""
MARKER = "DONE.json"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, ``os.replace``)."""
    with atomic_file(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Open a temporary sibling of ``path`` for binary writing; fsync and rename it into place on success.

    Streams large artifacts (a 1.6 GB SB3 checkpoint of SmolLM2 + Adam) without holding them in memory::

        with atomic_file(run / "rl" / "checkpoint.zip") as fh:
            agent.save(fh)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (non-JSON values via ``str``)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically; ``columns`` defaults to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings ([] if the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def stage_dir(run_dir: str | os.PathLike, stage: str) -> Path:
    """``<run_dir>/<stage>`` with dashes turned into underscores (``reward-model`` -> ``reward_model``)."""
    return Path(run_dir) / stage.replace("-", "_")


def is_done(run_dir: str | os.PathLike, stage: str) -> bool:
    """Whether ``stage`` finished in ``run_dir`` (its marker exists)."""
    return (stage_dir(run_dir, stage) / MARKER).is_file()


def read_marker(run_dir: str | os.PathLike, stage: str) -> dict[str, Any]:
    """The marker of a finished stage (``{}`` if it has none)."""
    path = stage_dir(run_dir, stage) / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def mark_done(run_dir: str | os.PathLike, stage: str, summary: str, seconds: float, **extra: Any) -> None:
    """Write the completion marker of ``stage`` (last thing a stage does)."""
    atomic_write_json(stage_dir(run_dir, stage) / MARKER,
                      {"stage": stage, "summary": summary, "seconds": round(seconds, 2), **extra})


def clear_stage(run_dir: str | os.PathLike, stage: str) -> None:
    """Delete a stage's folder (a fresh, non-resumed run of that stage)."""
    shutil.rmtree(stage_dir(run_dir, stage), ignore_errors=True)


def require(run_dir: str | os.PathLike, stage: str, needed_by: str) -> Path:
    """The folder of a finished ``stage``, or a clear error naming the command that produces it.

    Raises:
        FileNotFoundError: the stage has not finished in this run directory.
    """
    if not is_done(run_dir, stage):
        raise FileNotFoundError(
            f"stage {needed_by!r} needs the output of stage {stage!r}, which has not finished in "
            f"{os.fspath(run_dir)!r}; run it first: python -m scripts.pipeline --run-dir {os.fspath(run_dir)} "
            f"--stages {stage} (or run the whole pipeline)"
        )
    return stage_dir(run_dir, stage)
