"""Approximate quantiles and CDF of a numeric stream (Apache DataSketches KLL, float32)."""

from __future__ import annotations

import binascii
from typing import Any, ClassVar

import datasketches as ds
import numpy as np

from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import check_int, from_base64, read_int, split_masked, to_base64

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

# Default KLL k, chosen by measurement (benchmarks/sketches.py, 10^6 values, 20 streams):
# kll_floats k=400 has a worst measured rank error of ~0.45% (a priori bound 0.68%) and
# serializes to ~6.5-6.8 KiB base64 up to 10^8 values, under the 8 KiB per-feature budget.
# kll_doubles fits only k~200 in that budget and then exceeds 1% rank error on some streams.
DEFAULT_QUANTILE_K = 400
_F32_MAX = float(np.finfo(np.float32).max)


@register_sketch
class Quantiles(Sketch):
    """Approximate quantiles and CDF of the finite values (Apache DataSketches KLL, float32).

    Non-finite and masked values are ignored here (``Moments`` counts them) but do count in ``n``.
    Values are stored as float32: ample for ranks, and it doubles ``k`` for the same bytes.
    """

    kind: ClassVar[str] = "quantiles"

    def __init__(self, k: int = DEFAULT_QUANTILE_K) -> None:
        self.k = check_int("k", k, 8, 65535)
        self.n = 0
        self._sk = ds.kll_floats_sketch(self.k)

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def update(self, batch: np.ndarray) -> Self:
        data, mask = split_masked(batch)
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

    @property
    def kll(self) -> ds.kll_floats_sketch:
        """The DataSketches KLL sketch itself (read it, do not update it: ``n`` would disagree)."""
        return self._sk

    def sorted_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct retained values in ascending order (float32) and the total weight of the
        values <= each (int64, the last one is ``count``); empty arrays if the sketch is empty.

        DataSketches answers ``quantile`` and ``cdf`` by binary search in this view, so a caller
        with many queries can search it with numpy instead and get the same answers.
        """
        return kll_sorted_view(self._sk)

    def state_key(self) -> bytes:
        """Bytes that change whenever the answers of ``quantile`` / ``cdf`` may (``n`` and the
        KLL blob): a cheap cache key for results derived from this sketch, not a storage format."""
        return self.n.to_bytes(8, "little") + self._sk.serialize()

    def _state(self) -> dict[str, Any]:
        return {"n": self.n, "sketch": to_base64(self._sk.serialize())}

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(read_int(params, "k", 8))
        sk.n = read_int(d, "n")
        try:
            sk._sk = ds.kll_floats_sketch.deserialize(from_base64(d["sketch"]))
        except binascii.Error as e:
            raise ValueError(f"bad base64 in quantiles sketch: {e}") from e
        if sk._sk.k != sk.k or sk._sk.n > sk.n:
            raise ValueError(
                f"KLL blob (k={sk._sk.k}, n={sk._sk.n}) does not match k={sk.k}, n={sk.n}"
            )
        return sk


def kll_sorted_view(kll: ds.kll_floats_sketch) -> tuple[np.ndarray, np.ndarray]:
    """``Quantiles.sorted_view`` of a DataSketches KLL float sketch."""
    if kll.is_empty():
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
    # A serialized KLL ends with its retained items, level by level from level 0; an item of
    # level h weighs 2^h. Before them: an 8-byte preamble (a one-item sketch), else a 20-byte
    # one (level count at byte 18), each level's start (uint32), min and max. Reading that
    # is ~5x faster than iterating the sketch and asking get_cdf for the weights (below).
    retained, n, blob = kll.num_retained, kll.n, kll.serialize()
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
    values = np.unique(np.array([v for v, _ in kll], dtype=np.float32))
    ranks = np.asarray(kll.get_cdf(values.tolist(), inclusive=True)[:-1])
    return values, np.rint(ranks * n).astype(np.int64)  # exact below 2^51 values
