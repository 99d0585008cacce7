"""Which class saved a fast agent's zip, checked before SB3's ``load`` builds anything.

SB3 records no algorithm class in a zip, and a fast agent's policy class (:class:`agents.LMActorCriticPolicy`)
is the one a plain ``PPO`` uses too, so without help ``PPO.load`` would silently rebuild a ``PPO`` whose
rollouts and updates ignore the agent's episodes and KL options. Every sequence-level agent
(:class:`agents.sequence_agent.SequenceAgent`) therefore saves two entries:

* ``agent_class`` (plain JSON text): read by :func:`check_saved_class` before anything is built, so loading
  with the wrong fast class (or a plain SB3 zip with a fast class) names the class to use instead;
* ``_load_guard``: a :class:`_LoadGuard` whose unpickling raises :class:`AgentClassMismatchError`, so
  ``PPO.load`` (or ``A2C.load``, ``MaskablePPO.load``...) on a fast agent's zip fails at once with that
  message, without patching SB3; the fast agents' own ``load`` hands SB3 a replacement through its
  ``custom_objects`` mechanism (:func:`guard_replacement`), so the guard never runs there.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

from stable_baselines3.common.save_util import open_path

GUARD_KEY = "_load_guard"
"""Entry of a fast agent's saved ``data`` that only the fast agents' own ``load`` may read (module docstring)."""


class AgentClassMismatchError(ValueError):
    """A saved agent was loaded with another class's ``load``; the message names the class to use.

    A ``ValueError`` rather than a ``TypeError`` on purpose: SB3's loader turns a ``TypeError`` raised
    while unpickling a saved entry into a warning, which would let ``PPO.load`` go on silently.
    """


def class_path(cls: type) -> str:
    """``module.QualName`` of ``cls``: what a fast agent's zip records as ``agent_class``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _use_instead(saved_by: str) -> str:
    module, _, name = saved_by.rpartition(".")
    return f"load it with {name}.load(...) (from {module} import {name})"


def _refuse_load(saved_by: str):
    """Unpickling hook of :class:`_LoadGuard`: reached only by a loader that is not the saving class's."""
    raise AgentClassMismatchError(
        f"this file was saved by {saved_by}; {_use_instead(saved_by)}, not with another "
        f"algorithm's load (e.g. stable_baselines3.PPO.load)"
    )


class _LoadGuard:
    """Saved with every fast agent; unpickling it raises :class:`AgentClassMismatchError` (see the module docstring)."""

    def __init__(self, saved_by: str):
        self.saved_by = saved_by  # SB3 also writes it in clear in the zip's JSON, next to the pickle

    def __reduce__(self):
        return _refuse_load, (self.saved_by,)

    def __copy__(self) -> _LoadGuard:
        return _LoadGuard(self.saved_by)  # copying an agent must not go through __reduce__

    def __deepcopy__(self, memo) -> _LoadGuard:
        return _LoadGuard(self.saved_by)


def _read_saved_data(path) -> dict[str, Any]:
    """The zip's ``data`` JSON as stored (no entry unpickled); a file object is rewound for SB3's own read."""
    owned = isinstance(path, (str, os.PathLike))
    file = open_path(path, "r", suffix="zip")
    start = None if owned else file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            return json.loads(archive.read("data")) if "data" in archive.namelist() else {}
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not a zip file written by an agent's save()") from e
    finally:
        if owned:
            file.close()
        else:
            file.seek(start)


def _saved_agent_class(data: dict[str, Any]) -> str | None:
    """The fast-agent class a zip's data records; ``None`` for a plain SB3 algorithm's zip."""
    if isinstance(data.get("agent_class"), str):
        return data["agent_class"]
    if "n_rounds" in data:  # a fast agent saved before zips recorded their class (issue 17)
        return "agents.critic_free.CriticFreePG" if "estimator" in data else "agents.rlhf_ppo.RLHFPPO"
    return None


def check_saved_class(path: str | os.PathLike | io.BufferedIOBase, cls: type) -> None:
    """Raise :class:`AgentClassMismatchError` unless the agent saved at ``path`` is exactly a ``cls``."""
    expected, saved_by = class_path(cls), _saved_agent_class(_read_saved_data(path))
    if saved_by is None:
        raise AgentClassMismatchError(
            f"{path} was not saved by {expected}: it records no textrlhf agent class, so a plain Stable-Baselines3 "
            f"/ sb3-contrib algorithm saved it (PPO, A2C, TRPO, MaskablePPO, ...); load it with that class's load, "
            f"e.g. stable_baselines3.PPO.load(path)"
        )
    if saved_by != expected:
        raise AgentClassMismatchError(f"{path} was saved by {saved_by}, not by {expected}; {_use_instead(saved_by)}")


def guard_replacement(cls: type) -> dict[str, Any]:
    """``custom_objects`` for SB3's ``load`` that replace the saved guard, so ``cls.load`` never trips it."""
    return {GUARD_KEY: _LoadGuard(class_path(cls))}
