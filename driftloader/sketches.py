"""Mergeable streaming sketches: bounded-memory sufficient statistics for one feature.

Every sketch has the same small verbs (``update``, ``merge``, ``to_dict``, ``from_dict``,
``copy``) so profiles can hold, merge and store them without knowing their kind. Kinds are
looked up by name in ``SKETCHES`` when loading, never imported from a dotted path in data.

Example::

    >>> a = Moments().update(np.array([1.0, 2.0]))
    >>> b = Moments().update(np.array([3.0]))
    >>> a.merge(b).mean
    2.0
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import itertools
import math
import re
from collections.abc import Iterable
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

import datasketches as ds
import numpy as np

from driftloader.errors import IncompatibleSketchError, ProfileFormatError

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

FORMAT = 1

# Default KLL k, chosen by measurement (benchmarks/sketches.py, 10^6 values, 20 streams):
# kll_floats k=400 has a worst measured rank error of ~0.45% (a priori bound 0.68%) and
# serializes to ~6.5-6.8 KiB base64 up to 10^8 values, under the 8 KiB per-feature budget.
# kll_doubles fits only k~200 in that budget and then exceeds 1% rank error on some streams.
DEFAULT_QUANTILE_K = 400
DEFAULT_CATEGORICAL_CAP = 1024
DEFAULT_TOKEN_BUCKETS = 4096
DEFAULT_RESERVOIR_K = 256
HLL_LG_K = 12

_F32_MAX = float(np.finfo(np.float32).max)
_TOKEN_RE = re.compile(r"\w+|\x00")
_DOC_SEP = "\x00"
_U64 = np.uint64

SKETCHES: dict[str, type[Sketch]] = {}

S = TypeVar("S", bound="type[Sketch]")


def register_sketch(cls: S) -> S:
    """Class decorator: make a sketch kind loadable by its ``kind`` name."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"sketch class {cls.__name__} needs a non-empty str 'kind', got {kind!r}")
    if SKETCHES.get(kind, cls) is not cls:
        raise ValueError(f"sketch kind {kind!r} is already registered by {SKETCHES[kind].__name__}")
    SKETCHES[kind] = cls
    return cls


def sketch_from_dict(d: Any) -> Sketch:
    """Load any registered sketch from its ``to_dict`` form, resolving ``d["kind"]``."""
    if not isinstance(d, dict):
        raise ProfileFormatError(f"a sketch must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    cls = SKETCHES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProfileFormatError(f"unknown sketch kind {kind!r}; known kinds: {sorted(SKETCHES)}")
    return cls.from_dict(d)


# ---------------------------------------------------------------------------------------------
# helpers


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"expected base64 text, got {type(s).__name__}")
    return base64.b64decode(s.encode("ascii"), validate=True)


def _split_masked(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a float array or masked array into (float64 data, missing mask)."""
    data = np.asarray(np.ma.getdata(batch), dtype=np.float64).ravel()
    mask = np.ma.getmaskarray(batch).ravel() if np.ma.isMaskedArray(batch) else None
    if mask is None:
        mask = np.zeros(data.shape, dtype=bool)
    return data, mask


def _split_objects(batch: Any) -> tuple[np.ndarray, int]:
    """Flatten an object array; return (present values, number missing (None))."""
    values = np.asarray(batch, dtype=object).ravel()
    missing = np.equal(values, None)
    return values[~missing], int(missing.sum())


def _want_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Validate an integer constructor argument, naming the bad value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def _get_int(d: dict, key: str, low: int = 0) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"field {key!r} must be an int >= {low}, got {v!r}")
    return v


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finalizer: a fast, well-mixed deterministic 64-bit hash."""
    with np.errstate(over="ignore"):
        x = (x + _U64(0x9E3779B97F4A7C15)).astype(_U64)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def token_hash(token: str) -> int:
    """Deterministic 64-bit hash of a token (blake2b; stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def bigram_hash(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Deterministic 64-bit hash of token pairs from their token hashes (vectorised)."""
    a = np.asarray(first, dtype=_U64)
    b = np.asarray(second, dtype=_U64)
    return _splitmix64(_splitmix64(a) ^ (b * _U64(0x2545F4914F6CDD1D)))


# ---------------------------------------------------------------------------------------------
# base class


class Sketch(abc.ABC):
    """A mergeable summary of a stream of values with bounded memory.

    Subclasses implement ``update``, ``params``, ``_merge`` (other is compatible and non-empty),
    ``_state`` and ``_from_state``; the base class does compatibility checks and the JSON envelope.
    """

    kind: ClassVar[str]
    n: int

    @abc.abstractmethod
    def update(self, batch: np.ndarray) -> Self:
        """Add a batch of values (vectorised); returns self."""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Parameters that must be equal for two sketches to merge."""

    @abc.abstractmethod
    def _merge(self, other: Self) -> None:
        """Merge a compatible, non-empty sketch of the same class into self."""

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-safe state besides kind, format and params."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        """Rebuild from ``params`` and ``_state`` output; may raise KeyError/TypeError/ValueError."""

    def merge(self, other: Sketch) -> Self:
        """Merge ``other`` into self in place; an empty ``other`` is a no-op."""
        self._check_compatible(other)
        if other.n:
            self._merge(other)  # type: ignore[arg-type]
        return self

    def merge_many(self, others: Iterable[Sketch]) -> Self:
        """Merge several sketches into self; kinds may override with a vectorised version."""
        for other in others:
            self.merge(other)
        return self

    def _check_compatible(self, other: Sketch) -> None:
        if type(other) is not type(self) or other.params() != self.params():
            raise IncompatibleSketchError(
                f"cannot merge {self.kind}{self.params()} with "
                f"{getattr(other, 'kind', type(other).__name__)}"
                f"{other.params() if isinstance(other, Sketch) else ''}: kinds and parameters "
                "must match (build both with the same ProfileConfig)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with ``kind`` and ``format``; ``json.dumps(allow_nan=False)`` works."""
        return {"kind": self.kind, "format": FORMAT, "params": self.params(), **self._state()}

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        """Rebuild a sketch from ``to_dict`` output; ProfileFormatError on malformed input."""
        if not isinstance(d, dict):
            raise ProfileFormatError(
                f"{cls.kind} sketch must be a JSON object, got {type(d).__name__}"
            )
        if d.get("kind") != cls.kind:
            raise ProfileFormatError(f"expected a {cls.kind!r} sketch, got kind {d.get('kind')!r}")
        if d.get("format") != FORMAT:
            raise ProfileFormatError(
                f"unknown {cls.kind} sketch format {d.get('format')!r} (this driftloader reads format "
                f"{FORMAT}); upgrade driftloader or rebuild the profile"
            )
        params = d.get("params")
        if not isinstance(params, dict):
            raise ProfileFormatError(f"{cls.kind} sketch has no 'params' object")
        try:
            return cls._from_state(params, d)
        except ProfileFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError) as e:
            raise ProfileFormatError(f"malformed {cls.kind} sketch: {type(e).__name__}: {e}") from e

    def copy(self) -> Self:
        """An independent copy (through the JSON form, so it is exactly what a reload gives)."""
        return type(self).from_dict(self.to_dict())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args}; n={self.n})"


# ---------------------------------------------------------------------------------------------
# moments


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
        data, mask = _split_masked(batch)
        self.n += data.size
        self.missing += int(mask.sum())
        present = data[~mask] if mask.any() else data
        finite = np.isfinite(present)
        if not finite.all():
            self.nan += int(np.isnan(present).sum())
            self.posinf += int(np.isposinf(present).sum())
            self.neginf += int(np.isneginf(present).sum())
            present = present[finite]
        if present.size:
            shift = present[0]
            mean = float(shift + (present - shift).mean())
            with np.errstate(over="ignore"):  # squares of |x| > 1e154 overflow to inf, kept as inf
                m2 = float(np.square(present - mean).sum())
            self._add(present.size, mean, m2, float(present.min()), float(present.max()))
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
            setattr(sk, key, _get_int(d, key))
        if sk.count + sk.missing + sk.nan + sk.posinf + sk.neginf != sk.n:
            raise ValueError(f"moments counts do not add up to n={sk.n}")
        sk._mean, sk._m2 = decode_float(d["mean"]), decode_float(d["m2"])
        if sk.count:
            sk.min, sk.max = decode_float(d["min"]), decode_float(d["max"])
        return sk


# ---------------------------------------------------------------------------------------------
# quantiles


@register_sketch
class Quantiles(Sketch):
    """Approximate quantiles and CDF of the finite values (Apache DataSketches KLL, float32).

    Non-finite and masked values are ignored here (``Moments`` counts them) but do count in ``n``.
    Values are stored as float32: ample for ranks, and it doubles ``k`` for the same bytes.
    """

    kind: ClassVar[str] = "quantiles"

    def __init__(self, k: int = DEFAULT_QUANTILE_K) -> None:
        self.k = _want_int("k", k, 8, 65535)
        self.n = 0
        self._sk = ds.kll_floats_sketch(self.k)

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def update(self, batch: np.ndarray) -> Self:
        data, mask = _split_masked(batch)
        self.n += data.size
        values = data[~mask & np.isfinite(data)]
        if values.size:
            self._sk.update(np.clip(values, -_F32_MAX, _F32_MAX).astype(np.float32))
        return self

    def _merge(self, other: Quantiles) -> None:
        self.n += other.n
        if not other._sk.is_empty():
            self._sk.merge(other._sk)

    def _check_compatible(self, other: Sketch) -> None:
        if type(other) is not Quantiles or other.k != self.k:  # the cheap test first: profiles
            super()._check_compatible(other)  # merge thousands of these one at a time

    @property
    def count(self) -> int:
        """Number of values in the sketch (finite, not missing)."""
        return int(self._sk.n)

    @property
    def rank_error(self) -> float:
        """A priori normalized rank error bound for single quantile / CDF queries (99% conf.)."""
        return float(self._sk.normalized_rank_error(False))

    @property
    def min(self) -> float | None:
        return None if self._sk.is_empty() else float(self._sk.get_min_value())

    @property
    def max(self) -> float | None:
        return None if self._sk.is_empty() else float(self._sk.get_max_value())

    def quantile(self, qs: Any) -> np.ndarray:
        """Values at normalized ranks ``qs`` in [0, 1] (same shape as ``qs``; NaN if empty)."""
        q = np.asarray(qs, dtype=np.float64)
        if q.size and not (np.all(q >= 0) and np.all(q <= 1)):
            raise ValueError(f"quantile ranks must be in [0, 1], got {qs!r}")
        if self._sk.is_empty() or not q.size:
            return np.full(q.shape, np.nan)
        return np.asarray(self._sk.get_quantiles(q.ravel().tolist()), dtype=np.float64).reshape(
            q.shape
        )

    def cdf(self, xs: Any) -> np.ndarray:
        """Fraction of values <= x for each x (same shape as ``xs``; NaN for NaN x or if empty)."""
        x = np.asarray(xs, dtype=np.float64)
        out = np.full(x.shape, np.nan)
        if self._sk.is_empty() or not x.size:
            return out
        ok = ~np.isnan(x)
        points = np.clip(x[ok], -_F32_MAX, _F32_MAX).astype(np.float32)
        uniq, inv = np.unique(points, return_inverse=True)
        fractions = np.asarray(self._sk.get_cdf(uniq.tolist(), inclusive=True)[:-1])
        out[ok] = fractions[inv.ravel()]
        out[np.isposinf(x)] = 1.0
        out[np.isneginf(x)] = 0.0
        return out

    def sorted_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct retained values in ascending order (float32) and the total weight of the
        values <= each (int64, the last one is ``count``); empty arrays if the sketch is empty.

        DataSketches answers ``quantile`` and ``cdf`` by binary search in this view, so a caller
        with many queries can search it with numpy instead and get the same answers.
        """
        if self._sk.is_empty():
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        # A serialized KLL ends with its retained items, level by level from level 0; an item of
        # level h weighs 2^h. Before them: an 8-byte preamble (a one-item sketch), else a 20-byte
        # one (level count at byte 18), each level's start (uint32), min and max. Reading that
        # is ~5x faster than iterating the sketch and asking get_cdf for the weights (below).
        retained, n, blob = self._sk.num_retained, self._sk.n, self._sk.serialize()
        items = weights = None
        if retained == 1 and len(blob) == 12:
            items, weights = np.frombuffer(blob, np.float32, 1, 8), np.ones(1, dtype=np.int64)
        elif len(blob) > 20 and len(blob) == 28 + 4 * blob[18] + 4 * retained:
            starts = np.frombuffer(blob, np.uint32, blob[18], 20).astype(np.int64)
            sizes = np.diff(np.append(starts, starts[0] + retained))
            if (sizes >= 0).all():
                weights = np.repeat(np.left_shift(1, np.arange(sizes.size, dtype=np.int64)), sizes)
                items = np.frombuffer(blob, np.float32, retained, len(blob) - 4 * retained)
        if items is not None and int(weights.sum()) == n:
            order = np.argsort(items, kind="stable")
            values, cum = items[order], np.cumsum(weights[order])
            last = np.append(values[1:] != values[:-1], True)  # the last of equal values
            return values[last], cum[last]
        # A layout this does not know. (The iterator's weights are wrong for a merged sketch
        # whose lowest levels are empty, datasketches 5.2: they come from get_cdf instead.)
        values = np.unique(np.array([v for v, _ in self._sk], dtype=np.float32))
        ranks = np.asarray(self._sk.get_cdf(values.tolist(), inclusive=True)[:-1])
        return values, np.rint(ranks * n).astype(np.int64)  # exact below 2^51 values

    def state_key(self) -> bytes:
        """Bytes that change whenever the answers of ``quantile`` / ``cdf`` may (``n`` and the
        KLL blob): a cheap cache key for results derived from this sketch, not a storage format."""
        return self.n.to_bytes(8, "little") + self._sk.serialize()

    def _state(self) -> dict[str, Any]:
        return {"n": self.n, "sketch": _b64(self._sk.serialize())}

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(_get_int(params, "k", 8))
        sk.n = _get_int(d, "n")
        try:
            sk._sk = ds.kll_floats_sketch.deserialize(_unb64(d["sketch"]))
        except binascii.Error as e:
            raise ValueError(f"bad base64 in quantiles sketch: {e}") from e
        if sk._sk.k != sk.k or sk._sk.n > sk.n:
            raise ValueError(
                f"KLL blob (k={sk._sk.k}, n={sk._sk.n}) does not match k={sk.k}, n={sk.n}"
            )
        return sk


# ---------------------------------------------------------------------------------------------
# categorical counts


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
        self.cap = _want_int("cap", cap, 1, 1 << 20)
        self.n = 0
        self.missing = 0
        self._exact: dict[str, int] | None = {}
        self._freq: ds.frequent_strings_sketch | None = None
        self._hll: ds.hll_sketch | None = None

    def params(self) -> dict[str, Any]:
        return {"cap": self.cap}

    def update(self, batch: np.ndarray) -> Self:
        present, missing = _split_objects(batch)
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
            "frequent": _b64(self._freq.serialize()) if sketched else None,  # type: ignore[union-attr]
            "hll": _b64(self._hll.serialize_compact()) if sketched else None,  # type: ignore[union-attr]
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(_get_int(params, "cap", 1))
        sk.n, sk.missing = _get_int(d, "n"), _get_int(d, "missing")
        if d["counts"] is not None:
            sk._exact = _load_counts(d["counts"], sk.cap)
            total = sum(sk._exact.values())
        else:
            sk._exact = None
            sk._freq = ds.frequent_strings_sketch.deserialize(_unb64(d["frequent"]))
            sk._hll = ds.hll_sketch.deserialize(_unb64(d["hll"]))
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


# ---------------------------------------------------------------------------------------------
# hashed tokens


def _tokenize_batch(texts: np.ndarray) -> list[str]:
    """All lowercase ``\\w+`` tokens of the texts, with a NUL token between documents."""
    return _TOKEN_RE.findall(_DOC_SEP.join(map(str, texts)).lower())


def _hashed(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every token, True where it is a word rather than a document separator),
    hashing each distinct token once."""
    uniq, inv = np.unique(tokens, return_inverse=True)
    inv = inv.ravel()
    hashes = np.fromiter((token_hash(t) for t in uniq.tolist()), dtype=_U64, count=uniq.size)
    is_word = inv != 0 if uniq[0] == _DOC_SEP else np.ones(inv.size, dtype=bool)
    return hashes[inv], is_word


@register_sketch
class HashedTokens(Sketch):
    """Counts of hashed word unigrams (and bigrams with ``ngrams=2``) over ``buckets`` buckets.

    Tokens are lowercase ``\\w+`` words hashed with blake2b (deterministic, unlike ``hash()``);
    bigrams never span two documents. ``tokens`` counts words; ``counts`` also holds bigrams.
    """

    kind: ClassVar[str] = "tokens"

    def __init__(self, buckets: int = DEFAULT_TOKEN_BUCKETS, ngrams: int = 1) -> None:
        self.buckets = _want_int("buckets", buckets, 1, 1 << 24)
        self.ngrams = _want_int("ngrams", ngrams, 1, 2)
        self.n = 0
        self.docs = 0
        self.tokens = 0
        self.missing = 0
        self.counts = np.zeros(self.buckets, dtype=np.int64)

    def params(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "ngrams": self.ngrams}

    def update(self, batch: np.ndarray) -> Self:
        present, missing = _split_objects(batch)
        self.n += present.size + missing
        self.missing += missing
        self.docs += present.size
        tokens = _tokenize_batch(present) if present.size else []
        if tokens:
            self._count(np.array(tokens, dtype=object))
        return self

    def _count(self, tokens: np.ndarray) -> None:
        h, is_word = _hashed(tokens)
        self.tokens += int(is_word.sum())
        for grams in self._grams(h, is_word):
            if grams.size:
                self.counts += np.bincount(self._bucket(grams), minlength=self.buckets)

    def _grams(self, h: np.ndarray, is_word: np.ndarray) -> list[np.ndarray]:
        """Hashes of the unigrams, then of the bigrams (``ngrams=2``), in stream order."""
        grams = [h[is_word]]
        if self.ngrams == 2 and h.size > 1:
            pair = is_word[:-1] & is_word[1:]
            grams.append(bigram_hash(h[:-1][pair], h[1:][pair]))
        return grams

    def _bucket(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes % _U64(self.buckets)).astype(np.intp)

    def document_buckets(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(document, bucket) of every n-gram this sketch counts in ``texts`` (an object array,
        ``None`` = missing), with documents indexed by position in ``texts``: what a
        per-document score over buckets (a log-likelihood ratio) needs. Over all documents the
        buckets are exactly those ``update(texts)`` counts."""
        values = np.asarray(texts, dtype=object).ravel()
        present = np.flatnonzero(~np.equal(values, None))
        pieces = [str(t).lower() for t in values[present].tolist()]
        joined = _DOC_SEP.join(pieces)  # what update tokenizes (lowercasing commutes with join)
        found = [(m.group(), m.start()) for m in _TOKEN_RE.finditer(joined)]
        if not found:
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
        tokens, at = zip(*found)
        h, is_word = _hashed(np.array(tokens, dtype=object))
        # a document's tokens start at or after its first character (a NUL inside a text is a
        # separator token, as in update, but does not start a document)
        starts = np.cumsum([0] + [len(piece) + 1 for piece in pieces[:-1]])
        doc = present[np.searchsorted(starts, np.array(at), side="right") - 1]
        docs, buckets = [doc[is_word]], []
        for i, grams in enumerate(self._grams(h, is_word)):
            buckets.append(self._bucket(grams))
            if i:  # a bigram belongs to the document of its first word
                docs.append(doc[:-1][is_word[:-1] & is_word[1:]])
        return np.concatenate(docs), np.concatenate(buckets)

    def _merge(self, other: HashedTokens) -> None:
        self.n += other.n
        self.docs += other.docs
        self.tokens += other.tokens
        self.missing += other.missing
        self.counts += other.counts

    def _state(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.counts)
        return {
            "n": self.n,
            "docs": self.docs,
            "tokens": self.tokens,
            "missing": self.missing,
            "buckets_used": nz.tolist(),
            "bucket_counts": self.counts[nz].tolist(),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(_get_int(params, "buckets", 1), _get_int(params, "ngrams", 1))
        for key in ("n", "docs", "tokens", "missing"):
            setattr(sk, key, _get_int(d, key))
        if sk.docs + sk.missing != sk.n:
            raise ValueError(f"docs ({sk.docs}) + missing ({sk.missing}) != n ({sk.n})")
        idx = np.asarray(d["buckets_used"], dtype=np.int64)
        vals = np.asarray(d["bucket_counts"], dtype=np.int64)
        if idx.ndim != 1 or idx.shape != vals.shape or np.any(vals < 0):
            raise ValueError("'buckets_used' and 'bucket_counts' must be equal-length lists")
        if idx.size and (idx.min() < 0 or idx.max() >= sk.buckets):
            raise ValueError(f"bucket index out of range [0, {sk.buckets})")
        sk.counts[idx] = vals
        return sk


# ---------------------------------------------------------------------------------------------
# reservoir


def _row_priorities(rows: np.ndarray, seed: int, start: int) -> np.ndarray:
    """Uniform [0, 1) priorities from a seeded hash of (seed, stream index, row content).

    Deterministic (reproducible runs), independent across shards that share a seed (content
    differs), and distinct for duplicate rows (index differs).
    """
    clean = np.where(np.isnan(rows), np.nan, rows) + 0.0  # one NaN payload, -0.0 -> 0.0
    bits = np.ascontiguousarray(clean, dtype=np.float64).view(_U64)
    index = np.arange(start, start + rows.shape[0], dtype=_U64)
    h = _splitmix64(index ^ _splitmix64(np.full(rows.shape[0], seed, dtype=_U64)))
    for j in range(bits.shape[1]):  # a loop over columns, vectorised over rows
        h = _splitmix64(h ^ bits[:, j])
    return (h >> _U64(11)).astype(np.float64) * 2.0**-53


@register_sketch
class Reservoir(Sketch):
    """A uniform sample of at most ``k`` rows (bottom-k by seeded random priority).

    Keeping the ``k`` smallest priorities makes merging exact: the union's bottom-k is a uniform
    sample of the union. Rows are kept sorted by priority, so merge order does not matter.
    """

    kind: ClassVar[str] = "reservoir"

    def __init__(self, k: int = DEFAULT_RESERVOIR_K, seed: int = 0) -> None:
        self.k = _want_int("k", k, 1, 1 << 20)
        self.seed = _want_int("seed", seed, 0, (1 << 63) - 1)
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
        sk = cls(_get_int(params, "k", 1), _get_int(params, "seed", 0))
        sk.seen = _get_int(d, "seen")
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
