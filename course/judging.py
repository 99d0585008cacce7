"""What the autograder's checks are made of: readable failures and the comparisons of the judges.

The judges run in the grader, on outputs read back from the student's process: numpy arrays, numbers,
strings, ``None``, dicts and lists, and :class:`course._wire.Unsupported` markers. The expected values are
whatever the grader computed (tensors, arrays, numbers). Every helper here fails with :class:`CheckFailed`
and a reason a student can act on, and passes only on positive evidence (``nan`` never passes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from course._wire import Unsupported


class CheckFailed(AssertionError):
    """A check's readable reason for failing."""


def require(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def func(module, name: str):
    """The student's function ``name`` (a readable failure if it is missing); used by probes."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CheckFailed(f"no function {name!r} in {getattr(module, '__file__', module)}")
    return fn


def type_name(value: Any) -> str:
    """How a reason names the type of an output read back from the student's process."""
    if isinstance(value, Unsupported):
        return value.type_name
    if isinstance(value, np.ndarray):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def entry(got: Any, key: str, what: str | None = None) -> Any:
    """``got[key]`` of a probe's dict of outputs; fails if the student's process reported no such entry."""
    if not isinstance(got, dict) or key not in got:
        raise CheckFailed(f"{what or key}: no output reported")
    return got[key]


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array; fails unless it is numeric (a tensor, a number or a list of numbers)."""
    if value is None:
        raise CheckFailed(f"{what}: got None (did you forget to return?)")
    if isinstance(value, torch.Tensor):  # the grader's own expected values
        value = value.detach().cpu().double().numpy()
    if isinstance(value, (str, bytes, dict, Unsupported)):
        raise CheckFailed(f"{what}: expected a tensor, got {type_name(value)}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged lists
        raise CheckFailed(f"{what}: expected a tensor, got {type_name(value)}") from None
    if array.dtype.kind not in "biuf":  # strings, objects: np.asarray would happily parse "1.5"
        raise CheckFailed(f"{what}: expected a tensor, got {type_name(value)}")
    return array.astype(np.float64)


def number(value: Any, what: str) -> float:
    """``value`` as a float; fails unless it is one number (a Python number or a one-element tensor)."""
    if isinstance(value, bool):
        raise CheckFailed(f"{what}: expected a number, got bool")
    array = as_array(value, what)
    if array.size != 1:
        raise CheckFailed(f"{what}: expected a number, got a tensor of shape {tuple(array.shape)}")
    return float(array.reshape(-1)[0])


def assert_close(got: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail with "<what> differ from the reference at [i, j]: got x, expected y" (worst entry first)."""
    got_a, exp_a = as_array(got, what), as_array(expected, f"{what} (expected)")
    if got_a.shape != exp_a.shape:
        raise CheckFailed(f"{what}: shape {tuple(got_a.shape)}, expected {tuple(exp_a.shape)}")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got_a - exp_a)
        bad = ~(diff <= atol + rtol * np.abs(exp_a))  # nan counts as bad
    if bad.any():
        worst = np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0)
        flat = int(worst.reshape(-1).argmax())
        idx = [int(i) for i in np.unravel_index(flat, got_a.shape)] if got_a.ndim else []
        g, e = got_a.reshape(-1)[flat], exp_a.reshape(-1)[flat]
        where = f" at {idx}" if idx else ""
        raise CheckFailed(
            f"{what} differ from the reference{where}: got {g:.6g}, expected {e:.6g} "
            f"({int(bad.sum())} of {bad.size} entries off)"
        )


def compare_all(got: Any, expected: dict) -> None:
    """The default judge: ``assert_close(got[what], value, what)`` for each ``what: value`` of ``expected``."""
    if not isinstance(expected, dict):
        raise TypeError(
            f"compare_all needs a dict of expected outputs, got {type(expected).__name__} "
            f"(give the check a judge= of its own)"
        )
    for what, value in expected.items():
        assert_close(entry(got, what), value, what)
