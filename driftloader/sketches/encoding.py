"""JSON-safe encodings shared by the sketch kinds: floats, base64, and argument checks.

Sketches serialize to JSON objects (``to_dict``); these helpers keep NaN / inf, binary blobs and
user arguments honest on the way in and out.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np


def encode_float(x: float) -> float | str | None:
    """A JSON-safe float: NaN -> None, +-inf -> "inf" / "-inf", finite floats unchanged."""
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def decode_float(v: Any) -> float:
    """Inverse of ``encode_float``; raises ValueError on anything else."""
    if v is None:
        return math.nan
    if v in ("inf", "-inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"not an encoded float: {v!r}")
    return float(v)


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_base64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"expected base64 text, got {type(s).__name__}")
    return base64.b64decode(s.encode("ascii"), validate=True)


def split_masked(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a float array or masked array into (float64 data, missing mask)."""
    data = np.asarray(np.ma.getdata(batch), dtype=np.float64).ravel()
    mask = np.ma.getmaskarray(batch).ravel() if np.ma.isMaskedArray(batch) else None
    if mask is None:
        mask = np.zeros(data.shape, dtype=bool)
    return data, mask


def split_objects(batch: Any) -> tuple[np.ndarray, int]:
    """Flatten an object array; return (present values, number missing (None))."""
    values = np.asarray(batch, dtype=object).ravel()
    missing = np.equal(values, None)
    return values[~missing], int(missing.sum())


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Validate an integer constructor argument, naming the bad value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def read_int(d: dict, key: str, low: int = 0) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"field {key!r} must be an int >= {low}, got {v!r}")
    return v
