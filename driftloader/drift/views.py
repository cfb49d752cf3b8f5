"""Fast read-only queries on quantile and category sketches, and the cache of a reference's side.

Every numeric test reads the same few things from the two quantile sketches: the quantile
function on the grid, CDF values, bin probabilities. They are answered from each sketch's
sorted view with numpy searches (the same searches DataSketches runs, so the same numbers),
each at most once per compare; the reference's side depends on the reference alone and is
cached per reference sketch (``quantile_reference``, ``category_reference``): a reference is
compared with many shards.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloader.sketches import CategoricalCounts, Quantiles

# W1 is integrated over ranks [1%, 99%]: the extreme quantiles of heavy-tailed features are
# noisy enough (lognormal: ~0.03 sigma at 20,000 samples) to push a negligible shift over the
# floor, and trimming 2% of the mass changes the W1 of a pure shift by only 2%.
W1_TRIM = 0.01
_F32_MAX = float(np.finfo(np.float32).max)


@functools.lru_cache(maxsize=8)
def grid_points(size: int) -> np.ndarray:
    """The ranks (i + 0.5) / size of the quantile grid (ascending; read-only, shared)."""
    u = (np.arange(size) + 0.5) / size
    u.flags.writeable = False
    return u


@functools.lru_cache(maxsize=8)
def w1_slice(size: int) -> slice:
    """The grid points with W1_TRIM < u < 1 - W1_TRIM (the grid is ascending)."""
    u = grid_points(size)
    inner = np.flatnonzero((u > W1_TRIM) & (u < 1.0 - W1_TRIM))
    return slice(int(inner[0]), int(inner[-1]) + 1) if inner.size else slice(0, 0)


def sketch_rank_error(q: Quantiles) -> float:
    """KLL rank error; zero while the sketch still holds every value (no compaction yet)."""
    return 0.0 if q.count <= q.k else q.rank_error


class SortedView:
    """``quantile`` and ``cdf`` of a quantile sketch by numpy search in its sorted view.

    Same answers as ``Quantiles.quantile`` / ``Quantiles.cdf``, which ask DataSketches for the
    same searches in the same view, but without a Python list in and out of every query.
    """

    __slots__ = ("items", "cum", "total", "ranks")

    def __init__(self, q: Quantiles) -> None:
        self.items, self.cum = q.sorted_view()  # distinct values, weight of the values <= each
        self.total = float(self.cum[-1]) if self.cum.size else 0.0
        # rank of "x < items[0]", then of each value: cdf(x) = ranks[number of values <= x]
        self.ranks = np.concatenate([[0], self.cum]) / self.total if self.cum.size else self.cum

    def quantile(self, u: Any) -> np.ndarray:
        """The first value whose cumulative weight exceeds ``floor(u * total)``, else the last
        value (DataSketches' non-inclusive quantile, the one ``Quantiles.quantile`` asks for)."""
        u = np.asarray(u, dtype=np.float64)
        if not self.cum.size:
            return np.full(u.shape, np.nan)
        return np.asarray(self.quantile32(u), dtype=np.float64)

    def quantile32(self, u: np.ndarray) -> np.ndarray:
        """``quantile`` as the sketch's float32 values (the sketch must not be empty)."""
        return self.items[self.quantile_index(u)]

    def quantile_index(self, u: np.ndarray) -> np.ndarray:
        """The index in ``items`` of ``quantile(u)`` (the sketch must not be empty)."""
        weight = np.floor(u * self.total).astype(np.int64)
        return np.minimum(self.cum.searchsorted(weight, "right"), self.cum.size - 1)

    def cdf(self, x: Any) -> np.ndarray:
        """Weight of the values <= x (x rounded to float32) / total weight: DataSketches'
        inclusive rank, as ``Quantiles.cdf`` asks; NaN for NaN x or if empty, 0 / 1 at -/+inf."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full(x.shape, np.nan)
        if not self.cum.size or not x.size:
            return out
        ok = ~np.isnan(x)
        out[ok] = self.cdf32(np.clip(x[ok], -_F32_MAX, _F32_MAX).astype(np.float32))
        out[np.isposinf(x)] = 1.0
        out[np.isneginf(x)] = 0.0
        return out

    def cdf32(self, points: np.ndarray) -> np.ndarray:
        """``cdf`` at float32 points (none NaN; the sketch must not be empty)."""
        return self.ranks[self.items.searchsorted(points, "right")]


def integral_error(values: np.ndarray, u: np.ndarray, eps: float) -> float:
    """Bound on the error of a quantile integral from the sketch's rank error eps.

    ``values`` is the sketch's quantile function on the grid ``u``. Each quantile is off by at
    most eps in rank, so the integral of |Q(u) - c| moves by at most eps * (mean of the top eps
    tail - mean of the bottom eps tail): large for heavy tails.
    """
    if eps == 0.0:
        return 0.0
    # u is ascending: u >= 1 - eps and u <= eps are its two ends
    top = values[u.searchsorted(1.0 - eps, "left") :]
    bottom = values[: u.searchsorted(eps, "right")]
    return eps * float(top.mean() - bottom.mean())


class NumericSide:
    """What the numeric tests read from one quantile sketch, each computed once."""

    __slots__ = ("count", "rank_error", "view", "values", "distinct", "own_cdf", "integral_error")

    def __init__(self, q: Quantiles, view: SortedView, u: np.ndarray) -> None:
        self.count = q.count
        self.rank_error = sketch_rank_error(q)
        self.view = view
        index = view.quantile_index(u)  # ascending, like u
        self.values = view.items[index].astype(np.float64)  # the quantile function on the grid
        # the distinct values among them and the sketch's CDF there: items are distinct, so the
        # CDF at items[i] is ranks[i + 1] (what cdf32 would find)
        index = index[np.concatenate([[True], index[1:] != index[:-1]])]
        self.distinct, self.own_cdf = view.items[index], view.ranks[index + 1]
        self.integral_error = integral_error(self.values, u, self.rank_error)


class ReferenceSide(NumericSide):
    """A reference sketch's side, plus its median and mean |x - median| (from the grid)."""

    __slots__ = ("center", "abs_dev")

    def __init__(self, q: Quantiles, view: SortedView, u: np.ndarray) -> None:
        super().__init__(q, view, u)
        self.center = float(view.quantile(0.5))
        self.abs_dev = float(np.abs(self.values - self.center).mean())


@dataclass
class ReferenceEntry:
    """What is cached of one non-empty reference sketch, valid while its ``state_key`` is
    ``key``: its sorted view, its sides by grid size and its bins by bin count."""

    key: bytes
    view: SortedView
    sides: dict[int, ReferenceSide] = field(default_factory=dict)
    bins: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def side(self, q: Quantiles, grid: int) -> ReferenceSide:
        out = self.sides.get(grid)
        if out is None:
            out = self.sides[grid] = ReferenceSide(q, self.view, grid_points(grid))
        return out

    def binned(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Interior edges at reference quantiles (ties collapsed; float32, as the sketches
        compare them) and the reference's probability of each bin."""
        out = self.bins.get(bins)
        if out is None:
            edges = quantile_edges(self.view, bins).astype(np.float32)
            out = self.bins[bins] = (edges, cdf_bins(self.view.cdf32(edges)))
        return out


class IdentityCache:
    """Values keyed by an object's identity, each dropped when its object is collected.

    Like a ``WeakKeyDictionary`` but needing no hashable key. Lock-free: every step is one dict
    operation, and an id is reused only after its object's drop callback has run.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, obj: Any) -> Any:
        item = self._entries.get(id(obj))
        return item[1] if item is not None and item[0]() is obj else None

    def put(self, obj: Any, value: Any) -> None:
        key, entries = id(obj), self._entries

        def drop(ref: weakref.ref) -> None:
            if entries.get(key, (None,))[0] is ref:
                entries.pop(key, None)

        entries[key] = (weakref.ref(obj, drop), value)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, obj: Any) -> bool:
        return self.get(obj) is not None


# Keyed by the reference's Quantiles object (weakly: an entry goes with its sketch) and checked
# against the sketch's exact state on every use, so a mutated sketch never reads a stale entry
# and a different sketch never reads another's. A reference rebuilt from JSON is a new object.
QUANTILE_REFERENCES = IdentityCache()


def quantile_reference(q: Quantiles) -> ReferenceEntry:
    """The cache entry of the (non-empty) reference sketch ``q``, rebuilt if ``q`` changed."""
    key = q.state_key()
    entry = QUANTILE_REFERENCES.get(q)
    if entry is None or entry.key != key:
        entry = ReferenceEntry(key, SortedView(q))
        QUANTILE_REFERENCES.put(q, entry)
    return entry


def bin_probs(q: Quantiles | SortedView, edges: np.ndarray) -> np.ndarray:
    """Probability of each bin (-inf, e0], (e0, e1], ..., (e_last, inf) under sketch ``q``."""
    return cdf_bins(q.cdf(edges))


def cdf_bins(cdf_at_edges: np.ndarray) -> np.ndarray:
    """Bin probabilities from the CDF at the interior edges."""
    cdf = np.concatenate([[0.0], cdf_at_edges, [1.0]])
    return np.clip(np.diff(cdf), 0.0, None)


def quantile_edges(qr: Quantiles | SortedView, bins: int) -> np.ndarray:
    """Interior bin edges at reference quantiles (ties collapsed)."""
    return np.unique(qr.quantile(np.arange(1, bins) / bins))


@dataclass
class CategoryReference:
    """A reference's category cells (cached like ``ReferenceEntry``, by ``state_key``)."""

    key: tuple
    cells: dict[str, int]  # category -> its cell: the reference's categories in sorted order
    r: np.ndarray  # the reference's count in each cell, then its ``other`` mass (read-only)


CATEGORY_REFERENCES = IdentityCache()


def category_reference(cr: CategoricalCounts) -> CategoryReference:
    """The cached cells of reference counts ``cr``, rebuilt if ``cr`` changed."""
    key = cr.state_key()
    entry = CATEGORY_REFERENCES.get(cr)
    if entry is None or entry.key != key:
        r_counts, r_other = cr.counts_and_other()
        keys = sorted(r_counts)
        r = np.array([r_counts[k] for k in keys] + [r_other])
        r.flags.writeable = False
        entry = CategoryReference(key, {k: i for i, k in enumerate(keys)}, r)
        CATEGORY_REFERENCES.put(cr, entry)
    return entry
