"""A uniform, exactly mergeable sample of rows (bottom-k by seeded priority) for multivariate tests."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from driftloader.errors import IncompatibleSketchError
from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import check_int, read_int
from driftloader.sketches.hashing import U64, splitmix64

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

DEFAULT_RESERVOIR_K = 256


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
    sample of the union. Rows are kept sorted by priority, so merge order does not matter.
    """

    kind: ClassVar[str] = "reservoir"

    def __init__(self, k: int = DEFAULT_RESERVOIR_K, seed: int = 0) -> None:
        self.k = check_int("k", k, 1, 1 << 20)
        self.seed = check_int("seed", seed, 0, (1 << 63) - 1)
        self.seen = 0
        self.rows = np.empty((0, 0), dtype=np.float64)
        self.priorities = np.empty(0, dtype=np.float64)

    @property
    def n(self) -> int:  # type: ignore[override]
        return self.seen

    @property
    def width(self) -> int | None:
        """Number of columns, or None before the first non-empty update."""
        return self.rows.shape[1] if self.seen else None

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed}

    def update(self, batch: np.ndarray) -> Self:
        rows = np.ma.filled(np.ma.asarray(batch, dtype=np.float64), np.nan)
        if rows.ndim != 2:
            raise ValueError(
                f"Reservoir.update needs a 2-D array (rows = samples), got shape {rows.shape}"
            )
        if self.seen and rows.shape[0] and rows.shape[1] != self.rows.shape[1]:
            raise ValueError(
                f"rows have {rows.shape[1]} columns, this reservoir holds {self.rows.shape[1]}"
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
        if self.seen and other.rows.shape[1] != self.rows.shape[1]:
            raise IncompatibleSketchError(
                f"cannot merge reservoirs of width {self.rows.shape[1]} and {other.rows.shape[1]}: "
                "profiles must have the same numeric features"
            )
        self._keep(other.rows, other.priorities)
        self.seen += other.seen

    def _state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "width": self.width,
            "rows": _encode_rows(self.rows),
            "priorities": self.priorities.tolist(),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(read_int(params, "k", 1), read_int(params, "seed", 0))
        sk.seen = read_int(d, "seen")
        pri = np.asarray(d["priorities"], dtype=np.float64)
        rows = _decode_rows(d["rows"], d["width"], pri.size)
        if pri.ndim != 1 or pri.size > min(sk.k, sk.seen) or (sk.seen and pri.size == 0):
            raise ValueError(f"reservoir holds {pri.size} priorities for k={sk.k}, seen={sk.seen}")
        if np.any(~(pri >= 0) | ~(pri < 1)):
            raise ValueError("reservoir priorities must lie in [0, 1)")
        if sk.seen:
            sk.rows, sk.priorities = rows, pri
        return sk


def _encode_rows(rows: np.ndarray) -> list:
    """Rows as nested lists, NaN -> None and +-inf -> "inf" / "-inf" (vectorised)."""
    if np.isfinite(rows).all():
        return rows.tolist()
    out = rows.astype(object)
    out[np.isnan(rows)] = None
    out[np.isposinf(rows)] = "inf"
    out[np.isneginf(rows)] = "-inf"
    return out.tolist()


def _decode_rows(raw: Any, width: Any, m: int) -> np.ndarray:
    """Inverse of ``_encode_rows``; ValueError unless ``raw`` is ``m`` rows of ``width`` values."""
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
