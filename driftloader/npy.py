"""The one ``.npy`` parser of driftloader: strict, bounded, and never unpickling.

Both the featurizers and the ``decode`` stage read ``.npy`` fields through ``load_npy``. It
accepts format versions 1-3, checks the header literal (exactly ``descr``, ``fortran_order`` and
``shape``; non-negative int dimensions; at most ``MAX_HEADER`` bytes) and the data length
against the shape before touching the data, and refuses object dtypes (they would need pickle).

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.arange(3)); load_npy(buf.getvalue()).tolist()
[0, 1, 2]
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloader.errors import DriftloaderError

MAGIC = b"\x93NUMPY"
MAX_HEADER = 10_000
"""Longest header accepted, in bytes (numpy's own limit for untrusted headers)."""

NUMERIC_KINDS = "biuf"
"""dtype kinds ``load_npy(numeric_only=True)`` accepts: bool, signed, unsigned, float."""

_HEADER_KEYS = {"descr", "fortran_order", "shape"}
_CACHE_SIZE = 256


class NpyFormatError(DriftloaderError, ValueError):
    """Bytes that are not a valid, safe ``.npy`` file; the message says what is wrong."""


@dataclass(frozen=True)
class NpyHeader:
    """A parsed ``.npy`` header: dtype, shape, memory order and where the data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int
    count: int = field(init=False)  # number of elements
    nbytes: int = field(init=False)  # length of the data in bytes
    numeric: bool = field(init=False)  # a dtype of ``NUMERIC_KINDS``

    def __post_init__(self) -> None:  # computed once: every sample of a shard reuses them
        count = math.prod(self.shape)
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "nbytes", count * self.dtype.itemsize)
        object.__setattr__(self, "numeric", self.dtype.kind in NUMERIC_KINDS)


_headers: dict[tuple[bytes, int], NpyHeader] = {}
# the bytes up to the data of the last header parsed, and that header: a shard's arrays
# repeat one header, recognised by a prefix compare before any parsing
_last: tuple[bytes, NpyHeader | None] = (MAGIC, None)


def _buffer(raw: Any) -> bytes | bytearray | memoryview:
    if type(raw) is bytes or isinstance(raw, bytearray):
        return raw
    if isinstance(raw, memoryview):
        return raw.cast("B")
    raise NpyFormatError(f"expected .npy bytes, got {type(raw).__name__}")


def check_dtype(dtype: np.dtype, numeric_only: bool = False) -> np.dtype:
    """``dtype`` if allowed: never object (pickle); with ``numeric_only`` only ``NUMERIC_KINDS``."""
    if dtype.hasobject:
        raise NpyFormatError("object arrays are refused (they would need pickle)")
    if numeric_only and dtype.kind not in NUMERIC_KINDS:
        raise NpyFormatError(f"unsupported array dtype {dtype} (expected bool, int or float)")
    return dtype


def _literal(header: bytes, major: int) -> dict[str, Any]:
    try:
        meta = ast.literal_eval(header.decode("utf-8" if major >= 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise NpyFormatError(f"bad .npy header: {e}") from e
    if not isinstance(meta, dict) or set(meta) != _HEADER_KEYS:
        raise NpyFormatError(f"bad .npy header: {str(meta)[:200]!r}")
    return meta


def _parse_header(header: bytes, major: int, offset: int) -> NpyHeader:
    meta = _literal(header, major)
    shape, fortran = meta["shape"], meta["fortran_order"]
    if not isinstance(shape, tuple) or not all(
        type(d) is int and d >= 0
        for d in shape  # bool is an int: refuse it by type
    ):
        raise NpyFormatError(f"bad .npy shape {shape!r}")
    if not isinstance(fortran, bool):
        raise NpyFormatError(f"bad .npy fortran_order {fortran!r}")
    try:
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
    except (ValueError, TypeError) as e:
        raise NpyFormatError(f"bad .npy dtype {meta['descr']!r}: {e}") from e
    return NpyHeader(check_dtype(dtype), shape, fortran, offset)


def read_header(raw: Any) -> NpyHeader:
    """Parse and check the header of ``.npy`` bytes (headers are cached: shards repeat them)."""
    buf = _buffer(raw)
    if len(buf) < 10 or bytes(buf[:6]) != MAGIC:
        raise NpyFormatError("not an .npy file (bad magic)")
    major = buf[6]
    if major not in (1, 2, 3):
        raise NpyFormatError(f"unsupported .npy version {major}")
    start = 10 if major == 1 else 12
    if len(buf) < start:
        raise NpyFormatError("truncated .npy header")
    length = int.from_bytes(buf[8:start], "little")
    if length > MAX_HEADER:
        raise NpyFormatError(f".npy header of {length} bytes is over the {MAX_HEADER} limit")
    if len(buf) < start + length:
        raise NpyFormatError("truncated .npy header")
    key = (bytes(buf[start : start + length]), major)
    parsed = _headers.get(key)
    if parsed is None:
        parsed = _parse_header(key[0], major, start + length)
        if len(_headers) >= _CACHE_SIZE:
            _headers.clear()
        _headers[key] = parsed
    global _last
    _last = (bytes(buf[: start + length]), parsed)
    return parsed


def load_npy(raw: Any, *, numeric_only: bool = False, copy: bool = False) -> np.ndarray:
    """Decode ``.npy`` bytes like ``np.load(allow_pickle=False)``, strictly.

    Raises ``NpyFormatError`` (a ``ValueError``) for bad magic, versions, headers, shapes or
    dtypes, object dtypes, and data shorter than the shape says. ``numeric_only`` also refuses
    non-numeric dtypes (strings, complex, dates). Without ``copy`` the array is a read-only view
    of ``raw`` (zero-copy) where that is safe: C order, and the data aligned for its dtype;
    else (Fortran order, misaligned data) a copy. An ``np.ndarray`` passes through after the
    dtype check.
    """
    if isinstance(raw, np.ndarray):
        check_dtype(raw.dtype, numeric_only)
        return raw.copy() if copy else raw
    prefix, head = _last
    if head is None or type(raw) is not bytes or not raw.startswith(prefix):
        head = read_header(raw)  # its dtype is checked: never object
    if numeric_only and not head.numeric:
        check_dtype(head.dtype, numeric_only)
    buf = _buffer(raw)
    if len(buf) - head.data_offset < head.nbytes:
        raise NpyFormatError(
            f"truncated .npy data: {len(buf) - head.data_offset} bytes for {head.nbytes}"
        )
    if head.count == 0:
        return np.empty(head.shape, head.dtype)
    flat = np.frombuffer(buf, dtype=head.dtype, count=head.count, offset=head.data_offset)
    if head.fortran_order:
        return flat.reshape(head.shape[::-1]).T.copy(order="F")
    array = flat.reshape(head.shape)
    if copy or not array.flags.aligned:
        return array.copy()
    if array.flags.writeable:  # a view of a bytearray: never writes through
        array.flags.writeable = False
    return array
