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
    """Bytes as base64 text (for binary payloads inside JSON)."""
    return base64.b64encode(data).decode("ascii")


def from_base64(s: Any) -> bytes:
    """Inverse of ``to_base64``; ValueError (binascii.Error) on anything but base64 text."""
    if not isinstance(s, str):
        raise ValueError(f"expected base64 text, got {type(s).__name__}")
    return base64.b64decode(s.encode("ascii"), validate=True)


# Typed arrays inside JSON: {"dtype": "<f8", "shape": [rows, cols], "data": base64 of the
# little-endian bytes in C order}. Only these dtypes are ever read (never an object dtype).
ARRAY_DTYPES = ("<f4", "<f8", "<u1", "<u2", "<u4", "<u8")


def encode_array(values: np.ndarray, dtype: str) -> dict[str, Any]:
    """``values`` as a typed array of ``dtype`` (one of ``ARRAY_DTYPES``; the caller checks the
    conversion is lossless, e.g. with ``smallest_uint_dtype``)."""
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"dtype must be one of {ARRAY_DTYPES}, got {dtype!r}")
    data = np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()
    return {"dtype": dtype, "shape": list(np.shape(values)), "data": to_base64(data)}


def array_header(d: Any, dtypes: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The (dtype, shape) of an encoded array, after checking its form and that the base64 text
    has exactly the length those imply: cheap, so loading can defer ``decode_array``."""
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise ValueError(f"a typed array needs exactly 'dtype', 'shape' and 'data', got {d!r:.80}")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if dtype not in dtypes:
        raise ValueError(f"array dtype must be one of {dtypes}, got {dtype!r}")
    if not isinstance(shape, list) or any(
        isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in shape
    ):
        raise ValueError(f"array shape must be a list of ints >= 0, got {shape!r}")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if not isinstance(data, str) or len(data) != 4 * math.ceil(nbytes / 3):
        raise ValueError(f"array data must be base64 text of {nbytes} bytes for shape {shape}")
    return dtype, tuple(shape)


def decode_array(d: Any, dtypes: tuple[str, ...], as_dtype: Any) -> np.ndarray:
    """Inverse of ``encode_array``: a new, writable array of ``as_dtype``."""
    dtype, shape = array_header(d, dtypes)
    raw = np.frombuffer(from_base64(d["data"]), dtype=np.dtype(dtype))
    return raw.astype(as_dtype).reshape(shape)  # astype copies: writable, native order


def smallest_uint_dtype(values: np.ndarray) -> str:
    """The narrowest unsigned dtype holding every value (values must be >= 0)."""
    top = int(values.max()) if values.size else 0
    for dtype in ("<u1", "<u2", "<u4"):
        if top <= np.iinfo(np.dtype(dtype)).max:
            return dtype
    return "<u8"


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
