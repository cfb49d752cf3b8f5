"""A uniform, exactly mergeable sample of rows (bottom-k by seeded priority) for multivariate tests.

The reservoir keeps float32 values by design, as the quantile sketches do: a row is rounded to
float32 when it enters (finite values beyond float32's range saturate at its largest finite
value, so they stay finite), so 256 rows of a 64-value float64 field cost what float32 ones do
and keep a profile within 8 KiB per feature. Priorities hash the row as given (before rounding).

Stored (format 2) as typed arrays: rows as little-endian float32 (a lossless round trip, since
they hold float32 values), priorities as float64, each base64 inside the JSON with its shape.
Loading checks the arrays' headers and decodes them on first use, so a profile loaded only to be
compared never decodes its reservoir. Profiles written before rows were rounded (format 2 rows
stored as float64, or format 1 rows as JSON numbers) still load; their rows are rounded to
float32 when decoded, so merging them with new ones gives what a fresh profile would.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from driftloader.errors import IncompatibleSketchError, ProfileFormatError
from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import (
    array_header,
    check_int,
    decode_array,
    encode_array,
    read_int,
)
from driftloader.sketches.hashing import U64, splitmix64

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

DEFAULT_RESERVOIR_K = 256
_ROW_DTYPES = ("<f4", "<f8")
_PRIORITY_DTYPES = ("<f8",)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_values(rows: np.ndarray) -> np.ndarray:
    """``rows`` rounded to the nearest float32, as float64; finite values beyond float32's range
    saturate at +-3.4e38 instead of becoming infinite. NaN and +-inf are kept."""
    finite = np.isfinite(rows)
    saturated = np.where(finite, np.clip(rows, -_FLOAT32_MAX, _FLOAT32_MAX), rows)
    return saturated.astype(np.float32).astype(np.float64)


def _row_priorities(rows: np.ndarray, seed: int, start: int) -> np.ndarray:
    """Uniform [0, 1) priorities from a seeded hash of (seed, stream index, row content).

    Deterministic (reproducible runs), independent across shards that share a seed (content
    differs), and distinct for duplicate rows (index differs).
    """
    clean = np.where(np.isnan(rows), np.nan, rows) + 0.0  # one NaN payload, -0.0 -> 0.0
    bits = np.ascontiguousarray(clean, dtype=np.float64).view(U64)
    index = np.arange(start, start + rows.shape[0], dtype=U64)
    h = splitmix64(index ^ splitmix64(np.full(rows.shape[0], seed, dtype=U64)))
    for j in range(bits.shape[1]):  # a loop over columns, vectorised over rows
        h = splitmix64(h ^ bits[:, j])
    return (h >> U64(11)).astype(np.float64) * 2.0**-53


@register_sketch
class Reservoir(Sketch):
    """A uniform sample of at most ``k`` rows (bottom-k by seeded random priority).

    Keeping the ``k`` smallest priorities makes merging exact: the union's bottom-k is a uniform
    sample of the union. Rows are kept sorted by priority, so merge order does not matter. Rows
    hold float32 values (rounded on entry, see ``float32_values``) in a float64 array.
    """

    kind: ClassVar[str] = "reservoir"
    format: ClassVar[int] = 2
    reads: ClassVar[tuple[int, ...]] = (1, 2)

    def __init__(self, k: int = DEFAULT_RESERVOIR_K, seed: int = 0) -> None:
        self.k = check_int("k", k, 1, 1 << 20)
        self.seed = check_int("seed", seed, 0, (1 << 63) - 1)
        self.seen = 0
        self._rows = np.empty((0, 0), dtype=np.float64)
        self._priorities = np.empty(0, dtype=np.float64)
        self._encoded: dict[str, Any] | None = None  # rows and priorities as loaded, not decoded
        self._width: int | None = None  # the width of the encoded rows

    @property
    def n(self) -> int:  # type: ignore[override]
        return self.seen

    @property
    def rows(self) -> np.ndarray:
        """The sampled rows (one per sample, sorted by priority)."""
        self._decode()
        return self._rows

    @rows.setter
    def rows(self, rows: np.ndarray) -> None:
        """Set the rows, rounded to float32 values (``float32_values``)."""
        self._decode()
        self._rows = float32_values(rows)

    @property
    def priorities(self) -> np.ndarray:
        """Each row's priority in [0, 1), ascending."""
        self._decode()
        return self._priorities

    @priorities.setter
    def priorities(self, priorities: np.ndarray) -> None:
        self._decode()
        self._priorities = priorities

    @property
    def decoded(self) -> bool:
        """False while the rows loaded from JSON are still encoded (until first used)."""
        return self._encoded is None

    @property
    def width(self) -> int | None:
        """Number of columns, or None before the first non-empty update."""
        if not self.seen:
            return None
        return self._width if self._encoded is not None else self._rows.shape[1]

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed}

    def update(self, batch: np.ndarray) -> Self:
        rows = np.ma.filled(np.ma.asarray(batch, dtype=np.float64), np.nan)
        if rows.ndim != 2:
            raise ValueError(
                f"Reservoir.update needs a 2-D array (rows = samples), got shape {rows.shape}"
            )
        if self.seen and rows.shape[0] and rows.shape[1] != self.width:
            raise ValueError(
                f"rows have {rows.shape[1]} columns, this reservoir holds {self.width}"
            )
        if rows.shape[0]:
            self._keep(rows, _row_priorities(rows, self.seed, self.seen))
            self.seen += rows.shape[0]
        return self

    def _keep(self, rows: np.ndarray, priorities: np.ndarray) -> None:
        if self.seen:
            rows = np.concatenate([self.rows, rows])
            priorities = np.concatenate([self.priorities, priorities])
        order = np.argsort(priorities, kind="stable")[: self.k]
        self.rows, self.priorities = rows[order], priorities[order]

    def _merge(self, other: Reservoir) -> None:
        if self.seen and other.width != self.width:
            raise IncompatibleSketchError(
                f"cannot merge reservoirs of width {self.width} and {other.width}: "
                "profiles must have the same numeric features"
            )
        self._keep(other.rows, other.priorities)
        self.seen += other.seen

    def _state(self) -> dict[str, Any]:
        if self._encoded is not None and self._encoded["rows"]["dtype"] == "<f4":
            return {"seen": self.seen, **self._encoded}  # as loaded: nothing to encode
        if not self.seen:
            return {"seen": 0, "rows": None, "priorities": None}
        return {  # decodes (and rounds) rows loaded as float64 first
            "seen": self.seen,
            "rows": encode_array(self.rows, "<f4"),  # float32 values: exact
            "priorities": encode_array(self.priorities, "<f8"),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(read_int(params, "k", 1), read_int(params, "seed", 0))
        sk.seen = read_int(d, "seen")
        if d["format"] == 1:
            pri = np.asarray(d["priorities"], dtype=np.float64)
            sk._set_checked(_decode_rows(d["rows"], d["width"], pri.size), pri)
        elif sk.seen:
            sk._width = _check_headers(d["rows"], d["priorities"], sk.k, sk.seen)
            sk._encoded = {"rows": d["rows"], "priorities": d["priorities"]}
        elif d["rows"] is not None or d["priorities"] is not None:
            raise ValueError("an empty reservoir holds no rows")
        return sk

    def _decode(self) -> None:
        """Decode the rows and priorities kept encoded since loading (once)."""
        encoded = self._encoded
        if encoded is None:
            return
        try:
            rows = decode_array(encoded["rows"], _ROW_DTYPES, np.float64)
            self._set_checked(
                rows, decode_array(encoded["priorities"], _PRIORITY_DTYPES, np.float64)
            )
        except ValueError as e:  # binascii.Error is a ValueError
            raise ProfileFormatError(f"malformed reservoir sketch: {e}") from e
        # marked decoded only once the rows are set: another thread decoding the same
        # sketch meanwhile sets the same rows, and none reads them unset
        self._encoded = None

    def _set_checked(self, rows: np.ndarray, pri: np.ndarray) -> None:
        if pri.ndim != 1 or pri.size > min(self.k, self.seen) or (self.seen and pri.size == 0):
            raise ValueError(
                f"reservoir holds {pri.size} priorities for k={self.k}, seen={self.seen}"
            )
        if rows.shape[0] != pri.size:
            raise ValueError(f"reservoir holds {rows.shape[0]} rows for {pri.size} priorities")
        if np.any(~(pri >= 0) | ~(pri < 1)):
            raise ValueError("reservoir priorities must lie in [0, 1)")
        if self.seen:  # rows stored as float64 before rows were rounded: rounded now
            self._rows, self._priorities = float32_values(rows), pri


def _check_headers(rows: Any, priorities: Any, k: int, seen: int) -> int:
    """The width of format-2 rows, after checking both arrays' headers agree with k and seen."""
    _, shape = array_header(rows, _ROW_DTYPES)
    _, (m, *rest) = array_header(priorities, _PRIORITY_DTYPES)
    if len(shape) != 2 or rest or shape[0] != m or not 0 < m <= min(k, seen):
        raise ValueError(
            f"reservoir arrays of shapes {shape} and {[m, *rest]} do not fit k={k}, seen={seen}"
        )
    return shape[1]


def _decode_rows(raw: Any, width: Any, m: int) -> np.ndarray:
    """Format-1 rows (nested lists, NaN as null, +-inf as "inf" / "-inf") as an array;
    ValueError unless ``raw`` is ``m`` rows of ``width`` values."""
    if width is None:
        if raw:
            raise ValueError("reservoir rows given without a width")
        return np.empty((0, 0), dtype=np.float64)
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"reservoir width must be an int >= 0, got {width!r}")
    if (
        not isinstance(raw, list)
        or len(raw) != m
        or any(not isinstance(row, list) or len(row) != width for row in raw)
    ):
        raise ValueError(f"reservoir rows must be a list of {m} lists of {width} values")
    cells = list(itertools.chain.from_iterable(raw))
    if set(map(type, cells)) <= _PLAIN_CELLS:  # the common case: numbers and nulls only
        return np.array(raw, dtype=np.float64).reshape(m, width)  # None -> NaN
    bad = [v for v in cells if type(v) not in _PLAIN_CELLS and v not in ("inf", "-inf")]
    if bad:
        raise ValueError(f"reservoir cells must be numbers, null or 'inf'/'-inf', got {bad[0]!r}")
    return np.array(raw, dtype=np.float64).reshape(m, width)  # "inf", "-inf" parse


# JSON numbers load as int or float (never bool: True is checked apart); null loads as None.
_PLAIN_CELLS = {int, float, type(None)}
