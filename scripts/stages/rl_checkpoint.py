"""The RL stage's resume state: tensors and counters only, never a pickle.

SB3's ``.zip`` (``agent.save`` / ``Algo.load``) runs ``cloudpickle.loads`` on load, so a crafted
``checkpoint.zip`` in a run folder executed code on ``--resume``; it also pickled the policy's
absolute model path, so a copied run folder resumed against the *other* run's SFT model. The
pipeline therefore keeps its own data-only checkpoint, ``rl/checkpoint/`` (one folder, written with
``atomic_dir``: all three files or none)::

    policy.safetensors   policy.state_dict(): LM, value head, the KL coefficient buffer ``kl_beta``
    optimizer.pt         policy.optimizer.state_dict(), read back with torch.load(weights_only=True)
    state.json           format, algo, num_timesteps, iteration, n_updates, beta, seconds

On resume the agent is built exactly as a fresh run builds it (``agents.make_agent`` from this run
folder's ``sft/model``), then :func:`load_checkpoint` puts the weights, the optimizer state, the
counters and the KL coefficient back through public attributes. No random-generator state is kept:
the resumed run reseeds with ``seed + num_timesteps`` (fresh prompts, not a replay). SB3's ``.zip``
save/load stays available on the agents for interop; the pipeline never loads one.

REINFORCE's running return baseline (``agents.critic_free``) is not part of the agent's public
state, so a resumed ``reinforce`` run restarts it from its first batch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

from scripts.run_dir import RunDirError, atomic_dir, check_safetensors

CHECKPOINT = "checkpoint"
WEIGHTS, OPTIMIZER, STATE = "policy.safetensors", "optimizer.pt", "state.json"
FORMAT = "textrlhf-rl-checkpoint-v1"
STATE_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "algo": (str,),
    "num_timesteps": (int,),
    "iteration": (int,),
    "n_updates": (int,),
    "beta": (float, int, type(None)),
    "seconds": (float, int),
}
"""Keys of ``state.json`` and their JSON types."""
PICKLE_SUFFIXES = (".zip", ".pkl", ".pickle")
"""Files in ``rl/`` that are (or may be) pickles: never loaded; their presence alone is reported."""


def _restart_hint(folder: Path) -> str:
    return (
        f"delete {folder} and run again with --resume to restart RL from the SFT model "
        f"(or restore the folder from a backup)"
    )


def _same_number(a: float | None, b: float | None) -> bool:
    """Both missing, or equal (NaN equals NaN: a sequence-level agent's beta before its first rollout)."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def save_checkpoint(agent, folder: Path, algo: str, iteration: int, seconds: float) -> dict[str, Any]:
    """Write the resume state of ``agent`` to ``folder`` atomically; returns the ``state.json`` content.

    Args:
        agent: an agent built by ``agents.make_agent`` (any registered algorithm).
        folder: ``rl/checkpoint``.
        algo: the ``--algo`` name (a resume with another algorithm is refused).
        iteration: finished iterations (rollout + update), the ``progress.csv`` row count it matches.
        seconds: the stage's wall time so far (a resumed stage reports the total).
    """
    import torch
    from safetensors.torch import save_model

    beta = getattr(agent.policy, "kl_beta", None)
    state = {
        "format": FORMAT,
        "algo": algo,
        "num_timesteps": int(agent.num_timesteps),
        "iteration": int(iteration),
        "n_updates": int(agent._n_updates),
        "beta": float(beta) if beta is not None else None,
        "seconds": round(float(seconds), 2),
    }
    with atomic_dir(folder) as tmp:
        save_model(agent.policy, os.fspath(tmp / WEIGHTS))  # handles the LM's tied embedding / head weights
        torch.save(agent.policy.optimizer.state_dict(), tmp / OPTIMIZER)
        (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    return state


def read_state(folder: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder, checked key by key; the other two files checked present and whole.

    Raises:
        RunDirError: missing, not JSON, another format, a key missing or of the wrong type, or truncated weights.
    """
    path = folder / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing (an incomplete checkpoint); {_restart_hint(folder)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is corrupt (not JSON: {exc}); {_restart_hint(folder)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunDirError(f"{path} is not a {FORMAT} checkpoint (format {found!r}); {_restart_hint(folder)}")
    bad = [
        k for k, types in STATE_TYPES.items() if not isinstance(state.get(k), types) or isinstance(state.get(k), bool)
    ]
    if bad:
        raise RunDirError(f"{path} is corrupt (missing or mistyped {bad}); {_restart_hint(folder)}")
    check_safetensors(folder / WEIGHTS, _restart_hint(folder))  # now, not after minutes of model loading
    if not (folder / OPTIMIZER).is_file():
        raise RunDirError(f"{folder / OPTIMIZER} is missing (an incomplete checkpoint); {_restart_hint(folder)}")
    return state


def load_checkpoint(agent, folder: Path, state: dict[str, Any]) -> None:
    """Put a checkpoint's weights, optimizer state, counters and KL coefficient into a freshly built agent.

    Only data is read: safetensors for the weights and ``torch.load(weights_only=True)`` for the
    optimizer state (tensors, numbers and strings; anything else is refused by torch).

    Raises:
        RunDirError: a file is missing, truncated, or does not fit the agent.
    """
    import torch
    from safetensors.torch import load_model

    fix = _restart_hint(folder)
    check_safetensors(folder / WEIGHTS, fix)
    try:
        load_model(agent.policy, folder / WEIGHTS, strict=True, device=str(agent.device))
    except RuntimeError as exc:
        raise RunDirError(
            f"{folder / WEIGHTS} does not fit the {state['algo']} policy built from sft/model "
            f"({' '.join(str(exc).split())[:300]}); {fix}"
        ) from None
    try:
        optimizer_state = torch.load(folder / OPTIMIZER, map_location=agent.device, weights_only=True)
        agent.policy.optimizer.load_state_dict(optimizer_state)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise RunDirError(
            f"{folder / OPTIMIZER} is missing, truncated or does not fit the optimizer "
            f"({' '.join(str(exc).split())[:300]}); {fix}"
        ) from None
    beta = getattr(agent.policy, "kl_beta", None)
    if not _same_number(float(beta) if beta is not None else None, state["beta"]):
        raise RunDirError(
            f"{folder} is inconsistent: {STATE} says beta {state['beta']} but {WEIGHTS} holds {float(beta)}; {fix}"
        )
    agent.num_timesteps = state["num_timesteps"]
    agent._n_updates = state["n_updates"]  # SB3's update counter (train/n_updates), part of its public state
    buffer = getattr(agent, "rollout_buffer", None)
    if hasattr(buffer, "bind"):  # generic SB3 agents: the buffer's KL controller restarts from policy.kl_beta
        buffer.bind(agent)
    if hasattr(agent, "kl_controller"):  # the sequence-level agents rebuild theirs from policy.kl_beta on first use
        agent.kl_controller = None


def progress_rows(path: Path, iteration: int) -> list[dict[str, str]]:
    """The ``progress.csv`` rows a resume at ``iteration`` keeps: exactly iterations 1..iteration, complete.

    Rows newer than the checkpoint are dropped (the resumed run redoes those iterations). A missing
    file is accepted with a printed note (only a person deletes it: the stage creates it before its
    first checkpoint); a truncated or gappy one is refused, so no row is ever lost silently.

    Raises:
        RunDirError: unreadable header, a row cut short, or iterations missing / repeated.
    """
    if not path.is_file():
        if iteration:
            print(f"[rl] note: {path} is missing; iterations 1-{iteration} will have no rows", flush=True)
        return []
    fix = (
        f"restore {path} from a backup, or delete it to continue without the rows of iterations 1-{iteration}, "
        f"or restart RL with --stages rl"
    )
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows, header = list(reader), reader.fieldnames or []
    if not {"iteration", "timesteps"} <= set(header):
        raise RunDirError(f"{path} is corrupt (header {header[:4]} lacks iteration/timesteps); {fix}")
    kept = []
    for line, row in enumerate(rows, start=2):
        try:
            it = int(row["iteration"])
        except (TypeError, ValueError):
            raise RunDirError(f"{path} line {line} is corrupt (iteration {row['iteration']!r}); {fix}") from None
        if it > iteration:
            continue
        if None in row or None in row.values():
            raise RunDirError(
                f"{path} line {line} (iteration {it}) is truncated: it has "
                f"{sum(v is not None for v in row.values())} of {len(header)} columns; {fix}"
            )
        kept.append(row)
    found = [int(r["iteration"]) for r in kept]
    if found != list(range(1, iteration + 1)):
        missing = sorted(set(range(1, iteration + 1)) - set(found))
        raise RunDirError(
            f"{path} does not match the checkpoint at iteration {iteration}: iterations "
            f"{missing[:10] or 'repeated'} missing (a truncated or edited file); {fix}"
        )
    return kept


def no_pickle_note(folder: Path, has_checkpoint: bool) -> None:
    """Report pickles in ``rl/`` without ever loading them; without a data checkpoint, refuse to go on.

    Raises:
        RunDirError: only pickles to resume from (an SB3 ``checkpoint.zip`` of an older version): the
            stage would otherwise restart and delete them.
    """
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        return
    if has_checkpoint:
        print(f"[rl] note: ignoring {pickles} in {folder}: the pipeline never loads pickles", flush=True)
        return
    raise RunDirError(
        f"{folder} holds {pickles} but no data-only checkpoint ({CHECKPOINT}/); the pipeline never unpickles "
        f"(loading a pickle can run arbitrary code), so it cannot resume from them. Move them out of {folder} "
        f"and run again to restart RL from the SFT model (load them with SB3 yourself only if you trust them)"
    )
