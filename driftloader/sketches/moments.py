"""Exact moments of a numeric stream: count, missing / NaN / inf counts, mean, variance, min, max."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np

from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import decode_float, encode_float, read_int, split_masked

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self


def _combine(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[float, float]:
    """Chan et al. parallel combination of (count, mean, M2) pairs."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


def _combine_many(stats: np.ndarray) -> tuple[float, float]:
    """Mean and M2 of the union of non-empty parts, rows (count, mean, M2) (exact, vectorised)."""
    c, means, m2s = stats[:, 0], stats[:, 1], stats[:, 2]
    mean = float(means[0] + ((means - means[0]) * c).sum() / c.sum())
    return mean, float(m2s.sum() + (c * np.square(means - mean)).sum())


_NO_OVERFLOW = 1e100  # no square of a difference below it overflows, nor any sum of them
_COUNTS = attrgetter("n", "missing", "nan", "posinf", "neginf", "count")
_STATS = attrgetter("count", "_mean", "_m2", "min", "max")


@register_sketch
class Moments(Sketch):
    """Count, missing / NaN / inf counts, mean, variance, min and max of a numeric stream.

    Mean and M2 are combined with Chan et al.'s parallel formula from per-batch two-pass
    statistics, so large offsets (1e9 + noise) keep full precision.
    """

    kind: ClassVar[str] = "moments"

    def __init__(self) -> None:
        self.n = 0
        self.count = 0
        self.missing = 0
        self.nan = 0
        self.posinf = 0
        self.neginf = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None

    def params(self) -> dict[str, Any]:
        return {}

    def update(self, batch: np.ndarray) -> Self:
        data, mask = split_masked(batch)
        self.n += data.size
        missing = int(np.count_nonzero(mask))
        self.missing += missing
        present = data[~mask] if missing else data
        finite = np.isfinite(present)
        if not finite.all():
            self.nan += int(np.isnan(present).sum())
            self.posinf += int(np.isposinf(present).sum())
            self.neginf += int(np.isneginf(present).sum())
            present = present[finite]
        if present.size:
            # NumPy's float64 mean (the same pairwise sum, divided by the count) and the rest
            # without a call of Python code each: a batch of a few values spent most of its
            # 11 us there
            shift = present[0]
            mean = float(shift + (present - shift).sum() / present.size)
            lo, hi = float(present.min()), float(present.max())
            ordinary = hi - mean < _NO_OVERFLOW and mean - lo < _NO_OVERFLOW
            # squares past 1.8e308 overflow: kept as inf, without a warning
            with contextlib.nullcontext() if ordinary else np.errstate(over="ignore"):
                m2 = float(np.square(present - mean).sum())
            self._add(present.size, mean, m2, lo, hi)
        return self

    def _add(self, count: int, mean: float, m2: float, lo: float, hi: float) -> None:
        if self.count:
            self._mean, self._m2 = _combine(self.count, self._mean, self._m2, count, mean, m2)
            self.min, self.max = min(self.min, lo), max(self.max, hi)  # type: ignore[type-var]
        else:
            self._mean, self._m2, self.min, self.max = mean, m2, lo, hi
        self.count += count

    def _add_counts(self, other: Moments) -> None:
        self.n += other.n
        self.missing += other.missing
        self.nan += other.nan
        self.posinf += other.posinf
        self.neginf += other.neginf

    def _merge(self, other: Moments) -> None:
        self._add_counts(other)
        if other.count:
            self._add(other.count, other._mean, other._m2, other.min, other.max)  # type: ignore[arg-type]

    def merge_many(self, others: Iterable[Sketch]) -> Self:
        """Vectorised merge of many Moments: one weighted mean and one M2 sum over all parts."""
        parts: list[Moments] = [self]
        for other in others:
            if type(other) is not Moments:
                self._check_compatible(other)
            parts.append(other)  # type: ignore[arg-type]
        ints = np.array(list(map(_COUNTS, parts)))
        live = [p for p in parts if p.count]
        if live:  # combine before self's counts change: self is one of the parts
            stats = np.array(list(map(_STATS, live)), dtype=np.float64)
            self._mean, self._m2 = _combine_many(stats)
            self.min, self.max = float(stats[:, 3].min()), float(stats[:, 4].max())
        self.n, self.missing, self.nan, self.posinf, self.neginf, self.count = (
            int(v) for v in ints.sum(axis=0)
        )
        return self

    @property
    def mean(self) -> float:
        """Mean of the finite values (NaN when there are none)."""
        return self._mean if self.count else math.nan

    @property
    def var(self) -> float:
        """Population variance of the finite values (NaN when there are none)."""
        return max(self._m2, 0.0) / self.count if self.count else math.nan

    @property
    def sample_var(self) -> float:
        """Sample (n-1) variance of the finite values (NaN with fewer than two)."""
        return max(self._m2, 0.0) / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.var)

    def _state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "count": self.count,
            "missing": self.missing,
            "nan": self.nan,
            "posinf": self.posinf,
            "neginf": self.neginf,
            "mean": encode_float(self._mean),
            "m2": encode_float(self._m2),
            "min": None if self.min is None else encode_float(self.min),
            "max": None if self.max is None else encode_float(self.max),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls()
        for key in ("n", "count", "missing", "nan", "posinf", "neginf"):
            setattr(sk, key, read_int(d, key))
        if sk.count + sk.missing + sk.nan + sk.posinf + sk.neginf != sk.n:
            raise ValueError(f"moments counts do not add up to n={sk.n}")
        sk._mean, sk._m2 = decode_float(d["mean"]), decode_float(d["m2"])
        if sk.count:
            sk.min, sk.max = decode_float(d["min"]), decode_float(d["max"])
        return sk
