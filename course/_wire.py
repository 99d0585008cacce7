"""Plain data across the autograder's process boundary: JSON, with arrays as base64 bytes of a whitelisted dtype.

The grading child :func:`encode`\\ s whatever the student's functions returned: tensors and numpy arrays, numbers,
strings, ``None``, and dicts, lists and tuples of them. Anything else becomes an :class:`Unsupported` marker that
names its type, so a check can say what it got instead of crashing. The grader :func:`decode`\\ s strictly: never
pickle, never an object of the student's making; only JSON values, numpy arrays it builds itself from raw bytes,
and markers. A report that does not fit raises :class:`WireError`.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ARRAY = "__ndarray__"
UNSUPPORTED = "__unsupported__"
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"})
MAX_DEPTH = 32  # outputs are dicts of lists of tensors at most; deeper means something odd (or hostile)
MAX_DIMS = 32


class WireError(ValueError):
    """A report from the grading child that the grader cannot read back (wrong structure, dtype, size or depth)."""


@dataclass(frozen=True)
class Unsupported:
    """Stands for an output of a type the wire does not carry (a set, a model, a generator, ...)."""

    type_name: str


# ---------------------------------------------------------------------------------------- child side
def encode(obj: Any, depth: int = 0) -> Any:
    """``obj`` as JSON-ready data (runs in the grading child, on the student's outputs)."""
    if depth > MAX_DEPTH:
        return {UNSUPPORTED: f"structure nested more than {MAX_DEPTH} deep"}
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, np.generic):  # numpy scalars (np.float64 is also a float)
        return encode(obj.item(), depth + 1) if obj.dtype.kind in "biuf" else {UNSUPPORTED: type(obj).__name__}
    for plain in (int, float, str):  # subclasses: keep the value, drop the class (bool has none)
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, torch.Tensor):
        return _encode_tensor(obj)
    if isinstance(obj, np.ndarray):
        return _encode_array(obj)
    if isinstance(obj, dict):
        return {str(k): encode(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v, depth + 1) for v in obj]
    return {UNSUPPORTED: type(obj).__name__}


def _encode_tensor(t: torch.Tensor) -> Any:
    try:
        t = t.detach().cpu().resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            t = t.float()
        return _encode_array(t.numpy())
    except (RuntimeError, TypeError):  # sparse, meta, quantized, ... tensors
        return {UNSUPPORTED: f"Tensor ({t.layout}, {t.dtype})"}


def _encode_array(a: np.ndarray) -> Any:
    if a.dtype.name not in DTYPES:
        return {UNSUPPORTED: f"ndarray of {a.dtype.name}"}
    raw = a.astype(a.dtype.newbyteorder("="), copy=False).tobytes(order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {ARRAY: {"dtype": a.dtype.name, "shape": list(a.shape), "data": base64.b64encode(raw).decode()}}


# ---------------------------------------------------------------------------------------- grader side
def decode(obj: Any, depth: int = 0) -> Any:
    """The outputs described by ``obj`` (parsed JSON from the grading child), validated; raises :class:`WireError`."""
    if depth > MAX_DEPTH + 2:
        raise WireError(f"outputs nested more than {MAX_DEPTH} deep")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [decode(v, depth + 1) for v in obj]
    if type(obj) is dict:
        if set(obj) == {ARRAY}:
            return _decode_array(obj[ARRAY])
        if set(obj) == {UNSUPPORTED} and type(obj[UNSUPPORTED]) is str:
            return Unsupported(obj[UNSUPPORTED][:200])
        return {k: decode(v, depth + 1) for k, v in obj.items()}
    raise WireError(f"unexpected {type(obj).__name__} in the report")


def _decode_array(spec: Any) -> np.ndarray:
    if type(spec) is not dict or set(spec) != {"dtype", "shape", "data"}:
        raise WireError("malformed array (expected dtype, shape and data)")
    dtype, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if type(dtype) is not str or dtype not in DTYPES:
        raise WireError(f"array dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if type(shape) is not list or len(shape) > MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"malformed array shape {shape!r}")
    if type(data) is not str:
        raise WireError("array data is not a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"array data is not valid base64 ({exc})") from None
    if len(raw) != math.prod(shape) * np.dtype(dtype).itemsize:
        raise WireError(f"array of shape {tuple(shape)} and dtype {dtype} cannot hold {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
