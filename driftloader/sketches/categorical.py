"""Value counts of a categorical stream: exact up to a cap, then frequent items plus an HLL count."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import datasketches as ds
import numpy as np

from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import check_int, from_base64, read_int, split_objects, to_base64

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

DEFAULT_CATEGORICAL_CAP = 1024
HLL_LG_K = 12


def _lg_map_size(cap: int) -> int:
    """log2 of the frequent-items map size whose capacity (0.75 * size) holds ``cap`` items."""
    return max(3, math.ceil(math.log2(cap / 0.75)))


def _batch_counts(values: np.ndarray) -> dict[str, int]:
    """Counts of the distinct values of a batch, without a Python loop per item."""
    try:
        uniq, counts = np.unique(values, return_counts=True)
    except TypeError:  # mixed types (e.g. str and int) cannot be sorted; compare as text
        uniq, counts = np.unique(values.astype(str), return_counts=True)
    return {str(u): int(c) for u, c in zip(uniq.tolist(), counts.tolist(), strict=True)}


@register_sketch
class CategoricalCounts(Sketch):
    """Value counts of a categorical stream: exact up to ``cap`` distinct values.

    Past ``cap`` it switches to a frequent-items sketch (heavy hitters with guaranteed lower
    bounds) plus an HLL distinct-count estimate; ``other`` holds the mass not attributed to the
    reported items, so ``sum(counts().values()) + other + missing == n`` always.
    """

    kind: ClassVar[str] = "categorical"

    def __init__(self, cap: int = DEFAULT_CATEGORICAL_CAP) -> None:
        self.cap = check_int("cap", cap, 1, 1 << 20)
        self.n = 0
        self.missing = 0
        self._exact: dict[str, int] | None = {}
        self._freq: ds.frequent_strings_sketch | None = None
        self._hll: ds.hll_sketch | None = None

    def params(self) -> dict[str, Any]:
        return {"cap": self.cap}

    def update(self, batch: np.ndarray) -> Self:
        present, missing = split_objects(batch)
        self.n += present.size + missing
        self.missing += missing
        if present.size:
            self._add(_batch_counts(present))
        return self

    def _add(self, counts: dict[str, int]) -> None:
        if self._exact is not None:
            exact = self._exact
            for key, c in counts.items():
                exact[key] = exact.get(key, 0) + c
            if len(exact) > self.cap:
                self._to_sketch()
            return
        for key, c in counts.items():
            self._freq.update(key, c)  # type: ignore[union-attr]
            self._hll.update(key)  # type: ignore[union-attr]

    def _to_sketch(self) -> None:
        """Switch from exact counts to frequent items + HLL (once the cap is exceeded)."""
        exact, self._exact = self._exact or {}, None
        self._freq = ds.frequent_strings_sketch(_lg_map_size(self.cap))
        self._hll = ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_4)
        self._add(exact)

    def _merge(self, other: CategoricalCounts) -> None:
        self.n += other.n
        self.missing += other.missing
        if other._exact is not None:
            self._add(other._exact)
            return
        if self._exact is not None:
            self._to_sketch()
        self._freq.merge(other._freq)  # type: ignore[union-attr]
        union = ds.hll_union(HLL_LG_K)
        union.update(self._hll)
        union.update(other._hll)
        self._hll = union.get_result(ds.tgt_hll_type.HLL_4)

    @property
    def exact(self) -> bool:
        """True while fewer than ``cap`` distinct values have been seen (counts are exact)."""
        return self._exact is not None

    @property
    def present(self) -> int:
        """Number of non-missing values."""
        return self.n - self.missing

    def counts(self) -> dict[str, int]:
        """Value -> count; exact, or past the cap the top ``cap`` items' guaranteed lower bounds."""
        if self._exact is not None:
            return dict(self._exact)
        items = self._freq.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES, 0)  # type: ignore[union-attr]
        items.sort(key=lambda t: (-t[2], t[0]))
        return {item: int(lower) for item, _, lower, _ in items[: self.cap] if lower > 0}

    @property
    def other(self) -> int:
        """Non-missing mass not attributed to any key of ``counts()`` (0 while exact)."""
        if self._exact is not None:
            return 0
        return self.present - sum(self.counts().values())

    def counts_and_other(self) -> tuple[dict[str, int], int]:
        """``(counts(), other)`` from one query of the sketch (``other`` alone redoes it)."""
        counts = self.counts()
        return counts, 0 if self._exact is not None else self.present - sum(counts.values())

    def state_key(self) -> tuple:
        """A value that changes whenever ``counts()`` / ``other`` may: a cheap cache key for
        results derived from them (compare with ``==``), not a storage format."""
        if self._exact is not None:
            return (self.n, self.missing, tuple(self._exact.items()))
        return (self.n, self.missing, self._freq.serialize())  # type: ignore[union-attr]

    @property
    def distinct(self) -> float:
        """Number of distinct values: exact while exact, else an HLL estimate."""
        if self._exact is not None:
            return float(len(self._exact))
        return float(self._hll.get_estimate())  # type: ignore[union-attr]

    def _state(self) -> dict[str, Any]:
        sketched = self._exact is None
        return {
            "n": self.n,
            "missing": self.missing,
            "counts": None if sketched else dict(self._exact),  # type: ignore[arg-type]
            "frequent": to_base64(self._freq.serialize()) if sketched else None,  # type: ignore[union-attr]
            "hll": to_base64(self._hll.serialize_compact()) if sketched else None,  # type: ignore[union-attr]
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(read_int(params, "cap", 1))
        sk.n, sk.missing = read_int(d, "n"), read_int(d, "missing")
        if d["counts"] is not None:
            sk._exact = _load_counts(d["counts"], sk.cap)
            total = sum(sk._exact.values())
        else:
            sk._exact = None
            sk._freq = ds.frequent_strings_sketch.deserialize(from_base64(d["frequent"]))
            sk._hll = ds.hll_sketch.deserialize(from_base64(d["hll"]))
            # a frequent-items blob whose map was purged empty serializes without its weight
            total = int(sk._freq.total_weight) if sk._freq.num_active_items else sk.present
        if total + sk.missing != sk.n:
            raise ValueError(f"categorical counts ({total}) + missing ({sk.missing}) != n ({sk.n})")
        return sk


def _load_counts(raw: Any, cap: int) -> dict[str, int]:
    if not isinstance(raw, dict) or len(raw) > cap:
        raise ValueError(f"'counts' must be an object of at most cap={cap} entries")
    for key, c in raw.items():
        if isinstance(c, bool) or not isinstance(c, int) or c <= 0:
            raise ValueError(f"count of {key!r} must be a positive int, got {c!r}")
    return dict(raw)
