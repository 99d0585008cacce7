"""The run directory: atomic writes, stage completion markers, the per-stage layout, typed errors.

Every artifact of a pipeline run is written atomically (docs/design.md section 6): to a temporary sibling
first (``.<name>.tmp-<pid>``, or ``.<name>.tmp-<random>`` for folders), then moved into place with
``os.replace``, which is atomic on POSIX file systems. A run killed at any moment therefore leaves
each file either absent or complete, never half-written, plus perhaps a stale temporary sibling,
which ``--resume`` deletes first (:func:`remove_stale_temporaries`; a folder caught between the two
renames of ``atomic_dir`` is put back). Each finished stage writes a marker
``<run_dir>/<stage>/DONE.json`` last (with its summary line and wall time).

Everything inside a run folder is found relative to the run folder, and no file in it records an
absolute path that is read back: a run folder can be copied or moved and resumed there (the RL
checkpoint holds tensors and counters only; the agent is rebuilt from this folder's ``sft/model``).

A stage that runs invalidates every later stage (:func:`invalidate_after`): their ``DONE.json`` and
RL's resume state are removed first, so ``--resume`` never mixes a new SFT model with an old RL one.

Missing or damaged contents (a corrupt ``DONE.json``, a missing ``sft/model``, a truncated
``model.safetensors``) raise :class:`RunDirError`, whose message names the file and the fix; the
pipeline prints it as one line and exits with status 2.

Layout of ``runs/<name>/`` (docs/pipeline.md, "The run directory", describes every file)::

    config.yaml          the whole config as run (all stages, after presets, YAML and CLI); its run_dir is
                         informational: a resumed run uses the folder it was found in
    sft/                 model/ (save_pretrained + tokenizer), train_log.csv, DONE.json
    preferences/         pairs.jsonl (+ .meta.json), DONE.json
    reward_model/        model/ (BradleyTerryRewardModel.save_pretrained), train_log.csv, metrics.json
    rl/                  checkpoint/ (data only: policy.safetensors, optimizer.pt, state.json; never a pickle),
                         progress.csv, tensorboard/, log.txt, policy/ (save_pretrained)
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
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textrlhf.atomic import atomic_dir  # noqa: F401  (re-exported: the pipeline's model folders)

STAGES = ("sft", "preferences", "reward-model", "rl", "evaluate")
"""Pipeline stages, in the order they run (InstructGPT, Ouyang et al. 2022, figure 2)."""
MARKER = "DONE.json"
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "sft": ("model", "model/tokenizer_config.json"),
    "preferences": ("pairs.jsonl",),
    "reward-model": ("model", "model/reward_model.json"),
    "rl": ("policy",),
    "evaluate": ("metrics.json",),
}
"""What later stages read from a finished stage (folders are model folders, checked by :func:`check_model_dir`)."""
RESUME_STATE = {"rl": "checkpoint"}
"""Per stage, what ``--resume`` continues from besides ``DONE.json`` (removed when the stage is invalidated)."""


class RunDirError(Exception):
    """A run folder's contents are missing or damaged; the message names the file and the fix.

    ``scripts.pipeline.main`` prints it as one line (no traceback) and exits with status 2.
    """


class StageNotDoneError(RunDirError, FileNotFoundError):
    """A stage's input stage has not finished (also a ``FileNotFoundError``: its outputs do not exist)."""


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, ``os.replace``)."""
    with atomic_file(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Open a temporary sibling of ``path`` for binary writing; fsync and rename it into place on success.

    Streams large artifacts without holding them in memory::

        with atomic_file(run / "rl" / "samples.bin") as fh:
            fh.write(chunk)
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


def read_marker(run_dir: str | os.PathLike, stage: str) -> dict[str, Any]:
    """The marker of a finished stage (``{}`` if it has none).

    Raises:
        RunDirError: the marker exists but is not a JSON object (a damaged file, never written so by us).
    """
    path = stage_dir(run_dir, stage) / MARKER
    if not path.is_file():
        return {}
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        marker, why = None, f"not JSON: {exc}"
    else:
        why = f"a JSON {type(marker).__name__}, not an object"
    if not isinstance(marker, dict):
        raise RunDirError(
            f"{path} is corrupt ({why}); delete it and run again with --resume: stage {stage!r} "
            f"is redone (and the stages after it)"
        )
    return marker


def is_done(run_dir: str | os.PathLike, stage: str) -> bool:
    """Whether ``stage`` finished in ``run_dir`` (its marker exists; a corrupt one raises :class:`RunDirError`)."""
    if not (stage_dir(run_dir, stage) / MARKER).is_file():
        return False
    read_marker(run_dir, stage)  # a corrupt marker must not count as done (nor be skipped silently)
    return True


def mark_done(run_dir: str | os.PathLike, stage: str, summary: str, seconds: float, **extra: Any) -> None:
    """Write the completion marker of ``stage`` (last thing a stage does)."""
    atomic_write_json(
        stage_dir(run_dir, stage) / MARKER, {"stage": stage, "summary": summary, "seconds": round(seconds, 2), **extra}
    )


def clear_stage(run_dir: str | os.PathLike, stage: str) -> None:
    """Delete a stage's folder (a fresh, non-resumed run of that stage)."""
    shutil.rmtree(stage_dir(run_dir, stage), ignore_errors=True)


def rerun_hint(run_dir: str | os.PathLike, stage: str) -> str:
    """The command that redoes ``stage`` (the fix part of error messages)."""
    return (
        f"rerun it: python -m scripts.pipeline --run-dir {os.fspath(run_dir)} --stages {stage} "
        f"(later stages are redone too)"
    )


def require(run_dir: str | os.PathLike, stage: str, needed_by: str) -> Path:
    """The folder of a finished ``stage`` whose outputs (:data:`STAGE_OUTPUTS`) are present and intact.

    Raises:
        StageNotDoneError: the stage has not finished in this run directory.
        RunDirError: it is marked done but an output is missing or damaged.
    """
    if not is_done(run_dir, stage):
        raise StageNotDoneError(
            f"stage {needed_by!r} needs the output of stage {stage!r}, which has not finished in "
            f"{os.fspath(run_dir)!r}; run it first: python -m scripts.pipeline --run-dir {os.fspath(run_dir)} "
            f"--stages {stage} (or run the whole pipeline)"
        )
    folder = stage_dir(run_dir, stage)
    for name in STAGE_OUTPUTS[stage]:
        path = folder / name
        if not path.exists():
            raise RunDirError(
                f"{path} is missing although stage {stage!r} is marked done (needed by {needed_by!r}); "
                + rerun_hint(run_dir, stage)
            )
        if path.is_dir():
            check_model_dir(path, rerun_hint(run_dir, stage))
    return folder


def check_model_dir(path: Path, fix: str) -> None:
    """A saved model folder has ``config.json`` and complete safetensors weights (headers only are read).

    Raises:
        RunDirError: naming the missing or truncated file and ``fix``.
    """
    weights = sorted(path.glob("*.safetensors"))
    missing = ([] if (path / "config.json").is_file() else ["config.json"]) + ([] if weights else ["*.safetensors"])
    if missing:
        raise RunDirError(f"{path} lacks {', '.join(missing)} (an incomplete model folder); {fix}")
    for file in weights:
        check_safetensors(file, fix)


def check_safetensors(path: Path, fix: str) -> None:
    """The file is a complete safetensors file: its JSON header parses and its size matches the header.

    Catches a truncated or damaged download/copy before a loader fails with a message that names
    neither the file nor the fix.

    Raises:
        RunDirError: naming the file, what is wrong, and ``fix``.
    """
    if not path.is_file():
        raise RunDirError(f"{path} is missing; {fix}")
    size = path.stat().st_size
    why = None
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little") if size >= 8 else -1
        if n < 0 or 8 + n > size:
            why = f"{size} bytes, shorter than its header"
        else:
            try:
                header = json.loads(fh.read(n))
                end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                why = f"unreadable header: {exc}"
            else:
                if size != 8 + n + end:
                    why = f"{size} bytes where its header describes {8 + n + end}"
    if why is not None:
        raise RunDirError(f"{path} is truncated or corrupt ({why}); {fix}")


def invalidate_after(run_dir: str | os.PathLike, stage: str) -> list[str]:
    """Before ``stage`` runs: remove every later stage's ``DONE.json`` and resume state (:data:`RESUME_STATE`).

    A later stage was built from this stage's old outputs; without this, ``--resume`` would skip it (or
    continue RL from a checkpoint trained against the old SFT model) and mix old and new. The later
    stages' other files stay until they rerun (a fresh stage clears its folder).

    Returns:
        The later stages that had a marker or resume state, now out of date.
    """
    invalidated = []
    for later in STAGES[STAGES.index(stage) + 1 :]:
        folder = stage_dir(run_dir, later)
        marker, state = folder / MARKER, folder / RESUME_STATE.get(later, MARKER)
        if marker.exists() or state.exists():
            invalidated.append(later)
        marker.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)
    return invalidated


_STALE_TMP = re.compile(r"^\..+\.tmp-[^/]+$|^.+\.tmp-\d+$")  # atomic_file / atomic_dir / write_pairs temporaries
_STALE_OLD = re.compile(r"^\.(?P<name>.+)\.old-\d+$")  # atomic_dir's previous folder, between its two renames


def _clean(folder: Path, names: list[str], root: Path, done: list[str]) -> list[str]:
    """Remove (or restore) the stale temporaries among ``names`` in ``folder``; returns the other names."""
    kept = []
    for name in sorted(names):
        path, old = folder / name, _STALE_OLD.match(name)
        if old and not (folder / old["name"]).exists():
            os.replace(path, folder / old["name"])
            done.append(f"restored {(folder / old['name']).relative_to(root)}")
        elif old or _STALE_TMP.match(name):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            done.append(f"removed {path.relative_to(root)}")
        else:
            kept.append(name)
    return kept


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[str]:
    """Delete temporaries left by a killed process's atomic writes; put back a folder caught mid-swap.

    ``atomic_dir`` renames the old folder to ``.<name>.old-<pid>`` before renaming the new one into
    place: killed in between, ``<name>`` is missing and the old folder is restored (the complete
    previous version), never deleted. Only the run folder's own entries are visited (its top level,
    the stage folders and ``plots/``), and only call this when no other process writes to ``run_dir``.

    Returns:
        What was done, one ``"removed <relative path>"`` / ``"restored <relative path>"`` per entry.
    """
    root, done = Path(run_dir), []
    owned = {stage_dir(root, s).name for s in STAGES} | {"plots"}
    for name in _clean(root, os.listdir(root), root, done):
        if name in owned and (root / name).is_dir():
            for folder, dirs, files in os.walk(root / name):
                kept = set(_clean(Path(folder), dirs + files, root, done))
                dirs[:] = [d for d in dirs if d in kept]  # never walk into what was just moved or removed
    return done
