"""Comparing a shard's profile with a reference profile: per-feature tests, multiple-testing
control and an effect-size floor.

A shard is flagged only when some test is significant after correction across *all* tests of
the shard (alpha split equally across features, then across each feature's tests) **and** that
test's effect size reaches its floor. Significance alone alarms on every
large shard (Evidently #50, alibi-detect #646); an effect threshold alone alarms on every small
one. Both together give: a 1,000-sample shard with a 0.25 sigma shift is flagged, a 50,000-sample
shard with a 0.05 sigma shift is not (``benchmarks/detection.py`` measures this).

Tests, per feature kind (every one is computed from the sketches, never from raw values):

* numeric (on finite values): ``ks`` Kolmogorov-Smirnov distance from the two quantile sketches,
  with both sketches' rank errors subtracted before the p-value (honest, as DataSketches does),
  effect Wasserstein-1 / reference std (its detail also carries PSI and Jensen-Shannon distance
  on reference-quantile bins); ``mean`` z-test from the exact moments, effect
  ``|mean shift| / reference std``; ``scale`` Brown-Forsythe-style test on the mean absolute
  deviation from the reference median (sketch error bound added to its variance), effect
  ``|log(spread ratio)|``. The moment tests carry the power on small shards: the honest sketch
  KS pays ~0.014 in critical distance for the rank errors.
* numeric, categorical and tokens: ``missing`` (and ``nan``, ``inf`` for numeric) rate change,
  exact conditional (hypergeometric) test; effect = absolute rate difference.
* categorical: ``chi2`` two-sample chi-square on the counts (rare categories merged, categories
  unseen in the reference pooled and reported); effect = Cohen's w, bias-corrected.
* tokens: ``chi2`` on hashed token-bucket counts (sparse buckets merged); effect = Cohen's w.

The shard ``score`` is ``max`` over tests of ``min(effect / floor, log(p) / log(cut))`` where
``cut`` is the largest raw p-value the correction rejects (``alpha / m`` for Bonferroni): it is
>= 1 exactly when the shard is drifted, grows with both evidence and effect, is 0 only when no
test shows anything, and is capped (finite, JSON-safe). Schema drift scores ``schema_score``.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from driftloader.errors import FingerprintMismatch
from driftloader.features import FeatureBatch
from driftloader.profile import Profile
from driftloader.sketches import (
    CategoricalCounts,
    HashedTokens,
    Moments,
    Quantiles,
    encode_float,
)
from driftloader.store import preprocessing_of

Correction = Literal["bonferroni", "bh"]
_TINY_P = 1e-300  # p-values are clipped here so that scores stay finite
# W1 is integrated over ranks [1%, 99%]: the extreme quantiles of heavy-tailed features are
# noisy enough (lognormal: ~0.03 sigma at 20,000 samples) to push a negligible shift over the
# floor, and trimming 2% of the mass changes the W1 of a pure shift by only 2%.
_W1_TRIM = 0.01


_BOOL_FIELDS = ("metadata",)


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of ``compare``. Defaults are measured by ``benchmarks/detection.py``.

    alpha: 0.01 family-wise over all tests of a shard (~60 for 18 numeric features, a category
        and a text; rate tests with no event on either side cannot reject and are not counted).
        Measured false alarms stay <= 1% of in-distribution shards; 0.05 would skip ~1 in 20.
    correction: "bonferroni" (valid under any dependence between tests; the tests of one feature
        are correlated) or "bh" (Benjamini-Hochberg: controls the false discovery rate, more
        power when many features drift at once; under no drift it also bounds false alarms).
    ks_floor: 0.1 in Wasserstein-1 / reference std, the effect of the KS test (significance comes
        from the KS distance). W1 of a shift of s sigma is s sigma for any shape, so the floor sits
        between 0.05 and 0.25 sigma like mean_floor; x1.3 spread of a normal has W1 ~ 0.24 sigma.
        Same value as Evidently's Wasserstein threshold.
    mean_floor: 0.1 reference standard deviations, half-way (geometrically) between 0.05 and 0.25
        sigma; the same value Evidently uses for Wasserstein / std.
    scale_floor: 0.1 in |log spread ratio|, i.e. spread changed by more than ~10%; x1.3 is 0.26.
    rate_floor: 0.005 absolute change of the missing / NaN / inf rate: 1% NaN where the reference
        has none must be caught (10 of 1,000 samples), 0.1% on a huge shard need not be.
    chi2_floor: 0.1 Cohen's w (sqrt of the chi-square distance between category distributions,
        bias-corrected). A location shift of delta sigma has w ~ delta, so 0.1 matches mean_floor;
        a class going 10% -> 17% has w ~ 0.23.
    token_floor: 0.1 Cohen's w over token buckets, for the same reason as chi2_floor.
    bins: 20 reference-quantile bins for PSI / Jensen-Shannon and for importance weights: every bin
        holds ~50 samples of a 1,000-sample shard, enough for a stable density ratio.
    grid: 2048 quantile points per sketch for KS and the spread integral; finer than any KLL
        sketch of default k resolves, so the grid adds no error of its own.
    min_samples: 50 finite values on both sides before distribution tests run: the asymptotic
        z and chi-square p-values are unreliable below that. Rate tests are exact and always run.
    min_expected: 5 expected counts per chi-square cell (the usual rule); sparser cells are pooled.
    token_dispersion: 1.0 divides the token chi-square. Tokens of one document are not independent
        in real text (bursty words); set 1.5-3 on such corpora. 1.0 assumes independent tokens.
    schema_score: 10.0, the score of a shard whose feature set differs from the reference: a
        feature appearing or vanishing is stronger evidence than any borderline test.
    score_cap: 1000.0 caps scores so they stay finite and plottable (JSON has no inf).
    metadata: True flags metadata drift: a shard whose metadata declares a ``source`` or a
        preprocessing fingerprint outside the reference's sets (``reference.meta["sources"]`` /
        ``["preprocessing"]``, recorded by ``ProfileStore.build_reference``). A shard without
        metadata, or a reference without these sets, is never flagged for it: unknown is not drift.
    """

    alpha: float = 0.01
    correction: Correction = "bonferroni"
    ks_floor: float = 0.1
    mean_floor: float = 0.1
    scale_floor: float = 0.1
    rate_floor: float = 0.005
    chi2_floor: float = 0.1
    token_floor: float = 0.1
    bins: int = 20
    grid: int = 2048
    min_samples: int = 50
    min_expected: float = 5.0
    token_dispersion: float = 1.0
    schema_score: float = 10.0
    score_cap: float = 1000.0
    metadata: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"DriftConfig.alpha must be in (0, 1), got {self.alpha!r}")
        if self.correction not in ("bonferroni", "bh"):
            raise ValueError(
                f"DriftConfig.correction must be 'bonferroni' or 'bh', got {self.correction!r}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("alpha", "correction"):
                continue
            if f.name in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ValueError(f"DriftConfig.{f.name} must be a bool, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"DriftConfig.{f.name} must be a positive number, got {value!r}")
        for name in ("bins", "grid", "min_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(
                    f"DriftConfig.{name} must be an int >= 2, got {getattr(self, name)!r}"
                )

    def floor(self, metric: str) -> float:
        """The effect floor of a test metric."""
        return self._floors()[metric]

    def _floors(self) -> dict[str, float]:
        return {
            "ks": self.ks_floor,
            "mean": self.mean_floor,
            "scale": self.scale_floor,
            "missing": self.rate_floor,
            "nan": self.rate_floor,
            "inf": self.rate_floor,
            "chi2": self.chi2_floor,
            "tokens": self.token_floor,
        }


@dataclass
class FeatureDrift:
    """The deciding test of one feature (the one with the highest score).

    ``p_value`` is multiplicity-adjusted (compare it with ``alpha``); ``detail["tests"]`` holds
    every test of the feature with its raw, weighted and adjusted p-values, effect and floor.
    """

    name: str
    kind: str
    metric: str
    value: float
    effect: float
    p_value: float
    drifted: bool
    detail: dict = field(default_factory=dict)
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no detail)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "value": encode_float(self.value),
            "effect": encode_float(self.effect),
            "p_value": encode_float(self.p_value),
            "score": encode_float(self.score),
            "drifted": self.drifted,
        }


@dataclass
class ShardDrift:
    """Result of comparing one shard profile with a reference.

    ``score`` is >= 1 exactly when ``drifted``; ``schema`` lists features ``missing`` from the
    shard, ``new`` in it, or whose ``kind`` changed, and under ``"metadata"`` the shard's
    ``source`` / ``preprocessing`` not seen in the reference (``{"source": "new-src"}``).
    """

    url: str | None
    version: str | None
    n: int
    drifted: bool
    score: float
    features: list[FeatureDrift]
    schema: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list[FeatureDrift]:
        """The ``k`` features with the highest score (most drifted first)."""
        return sorted(self.features, key=lambda f: (-f.score, -f.effect, f.name))[:k]

    def to_dict(self) -> dict[str, Any]:
        """The ``check --json`` shape: url, version, n, drifted, score, features, schema."""
        return {
            "url": self.url,
            "version": self.version,
            "n": self.n,
            "drifted": self.drifted,
            "score": encode_float(self.score),
            "features": [f.to_dict() for f in self.top(len(self.features))],
            "schema": {
                k: dict(v) if isinstance(v, dict) else list(v) for k, v in self.schema.items()
            },
        }


@dataclass
class _Test:
    """One hypothesis test of one feature (internal)."""

    feature: str
    kind: str
    metric: str
    value: float
    effect: float
    p: float
    testable: bool = True  # False when the test can never reject (excluded from the count)
    pw: float = 1.0  # weighted p-value (see _weigh), the input of the correction
    detail: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# multiple testing


def adjust_pvalues(
    p_values: Sequence[float] | np.ndarray, method: Correction = "bonferroni"
) -> np.ndarray:
    """Multiplicity-adjusted p-values: reject test i at level alpha iff ``adjusted[i] <= alpha``.

    "bonferroni": ``min(1, m p)``. "bh": Benjamini-Hochberg step-up,
    ``min over j >= rank(i) of m p_(j) / j``, capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if method not in ("bonferroni", "bh"):
        raise ValueError(f"method must be 'bonferroni' or 'bh', got {method!r}")
    if m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    out = np.empty(m)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# basic tests


def _rate_test(
    feature: str, kind: str, metric: str, x_s: int, n_s: int, x_r: int, n_r: int
) -> _Test:
    """Exact conditional test that two event rates are equal (hypergeometric, two-sided).

    Given ``x_s + x_r`` events, under H0 the shard's share is hypergeometric. With no event at all
    the test cannot reject and is excluded from the multiplicity count (Tarone).
    """
    rate_s = x_s / n_s if n_s else 0.0
    rate_r = x_r / n_r if n_r else 0.0
    total = x_s + x_r
    detail = {"shard_rate": rate_s, "reference_rate": rate_r, "shard_count": x_s}
    if total == 0 or n_s == 0 or n_r == 0:
        return _Test(feature, kind, metric, 0.0, 0.0, 1.0, testable=False, detail=detail)
    # unfrozen calls: the same numbers as stats.hypergeom(M, n, N).cdf, without the ~0.5 ms freeze
    args = (n_s + n_r, total, n_s)
    cdf, sf = stats.hypergeom.cdf(x_s, *args), stats.hypergeom.sf(x_s - 1, *args)
    p = min(1.0, 2.0 * min(float(cdf), float(sf)))
    diff = rate_s - rate_r
    return _Test(feature, kind, metric, diff, abs(diff), p, detail=detail)


# The survival functions below call the scipy.special functions behind scipy.stats' ``sf`` of
# ``norm``, ``kstwobign`` and ``chi2`` directly (same numbers, ~50 us less per call), with
# stats' own value at the lower end of the support (x <= 0 -> 1).


def _z_p(z: float) -> float:
    """Two-sided normal p-value (``2 * stats.norm.sf(|z|)``)."""
    return float(2.0 * special.ndtr(-abs(z))) if math.isfinite(z) else 0.0


def _kolmogorov_sf(x: float) -> float:
    """``stats.kstwobign.sf(x)``: the asymptotic KS distribution's survival function."""
    return 1.0 if x <= 0.0 else float(special.kolmogorov(x))


def _chi2_sf(x: float, df: int) -> float:
    """``stats.chi2.sf(x, df)`` for ``df >= 1``."""
    return 1.0 if x <= 0.0 else float(special.chdtrc(df, x))


def _ratio_z(diff: float, se: float) -> float:
    """diff / se, with 0/0 -> 0 and x/0 -> inf (a constant reference that moved)."""
    if se > 0:
        return diff / se
    return 0.0 if diff == 0 else math.inf


def _chi2_2xk(s: np.ndarray, r: np.ndarray, min_expected: float) -> tuple[float, int, float]:
    """Two-sample chi-square on count vectors; cells with few expected counts are pooled.

    Returns (statistic, degrees of freedom, effective n = n_s n_r / (n_s + n_r)).
    """
    s, r = np.asarray(s, dtype=np.float64), np.asarray(r, dtype=np.float64)
    n_s, n_r = s.sum(), r.sum()
    if n_s == 0 or n_r == 0:
        return 0.0, 0, 0.0
    tot = s + r
    share = min(n_s, n_r) / (n_s + n_r)
    keep = tot * share >= min_expected
    if (~keep).any():
        s = np.append(s[keep], s[~keep].sum())
        r = np.append(r[keep], r[~keep].sum())
        tot = s + r
    live = tot > 0
    s, r, tot = s[live], r[live], tot[live]
    if s.size < 2:
        return 0.0, 0, 0.0
    e_s, e_r = tot * n_s / (n_s + n_r), tot * n_r / (n_s + n_r)
    chi2 = float((np.square(s - e_s) / e_s).sum() + (np.square(r - e_r) / e_r).sum())
    return chi2, s.size - 1, float(n_s * n_r / (n_s + n_r))


def _cohen_w(chi2: float, df: int, n_eff: float) -> float:
    """Bias-corrected Cohen's w = sqrt(max(chi2 - df, 0) / n): a chi-square distance free of n."""
    return math.sqrt(max(chi2 - df, 0.0) / n_eff) if n_eff > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# numeric features
#
# Every numeric test reads the same few things from the two quantile sketches: the quantile
# function on the grid, CDF values, bin probabilities. They are answered from each sketch's
# sorted view with numpy searches (the same searches DataSketches runs, so the same numbers),
# each at most once per compare; the reference's side depends on the reference alone and is
# cached per reference sketch (``_reference_entry``): a reference is compared with many shards.

_F32_MAX = float(np.finfo(np.float32).max)


@functools.lru_cache(maxsize=8)
def _grid_points(size: int) -> np.ndarray:
    """The ranks (i + 0.5) / size of the quantile grid (ascending; read-only, shared)."""
    u = (np.arange(size) + 0.5) / size
    u.flags.writeable = False
    return u


@functools.lru_cache(maxsize=8)
def _w1_slice(size: int) -> slice:
    """The grid points with _W1_TRIM < u < 1 - _W1_TRIM (the grid is ascending)."""
    u = _grid_points(size)
    inner = np.flatnonzero((u > _W1_TRIM) & (u < 1.0 - _W1_TRIM))
    return slice(int(inner[0]), int(inner[-1]) + 1) if inner.size else slice(0, 0)


def _grid(cfg: DriftConfig) -> np.ndarray:
    return _grid_points(cfg.grid)


def _rank_error(q: Quantiles) -> float:
    """KLL rank error; zero while the sketch still holds every value (no compaction yet)."""
    return 0.0 if q.count <= q.k else q.rank_error


class _SortedView:
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


def _integral_error(values: np.ndarray, u: np.ndarray, eps: float) -> float:
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


class _NumericSide:
    """What the numeric tests read from one quantile sketch, each computed once."""

    __slots__ = ("count", "rank_error", "view", "values", "distinct", "own_cdf", "integral_error")

    def __init__(self, q: Quantiles, view: _SortedView, u: np.ndarray) -> None:
        self.count = q.count
        self.rank_error = _rank_error(q)
        self.view = view
        index = view.quantile_index(u)  # ascending, like u
        self.values = view.items[index].astype(np.float64)  # the quantile function on the grid
        # the distinct values among them and the sketch's CDF there: items are distinct, so the
        # CDF at items[i] is ranks[i + 1] (what cdf32 would find)
        index = index[np.concatenate([[True], index[1:] != index[:-1]])]
        self.distinct, self.own_cdf = view.items[index], view.ranks[index + 1]
        self.integral_error = _integral_error(self.values, u, self.rank_error)


class _ReferenceSide(_NumericSide):
    """A reference sketch's side, plus its median and mean |x - median| (from the grid)."""

    __slots__ = ("center", "abs_dev")

    def __init__(self, q: Quantiles, view: _SortedView, u: np.ndarray) -> None:
        super().__init__(q, view, u)
        self.center = float(view.quantile(0.5))
        self.abs_dev = float(np.abs(self.values - self.center).mean())


@dataclass
class _ReferenceEntry:
    """What is cached of one non-empty reference sketch, valid while its ``state_key`` is
    ``key``: its sorted view, its sides by grid size and its bins by bin count."""

    key: bytes
    view: _SortedView
    sides: dict[int, _ReferenceSide] = field(default_factory=dict)
    bins: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def side(self, q: Quantiles, grid: int) -> _ReferenceSide:
        out = self.sides.get(grid)
        if out is None:
            out = self.sides[grid] = _ReferenceSide(q, self.view, _grid_points(grid))
        return out

    def binned(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Interior edges at reference quantiles (ties collapsed; float32, as the sketches
        compare them) and the reference's probability of each bin."""
        out = self.bins.get(bins)
        if out is None:
            edges = _edges(self.view, bins).astype(np.float32)
            out = self.bins[bins] = (edges, _cdf_bins(self.view.cdf32(edges)))
        return out


class _IdentityCache:
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
_REFERENCE_SIDES = _IdentityCache()


def _reference_entry(q: Quantiles) -> _ReferenceEntry:
    """The cache entry of the (non-empty) reference sketch ``q``, rebuilt if ``q`` changed."""
    key = q.state_key()
    entry = _REFERENCE_SIDES.get(q)
    if entry is None or entry.key != key:
        entry = _ReferenceEntry(key, _SortedView(q))
        _REFERENCE_SIDES.put(q, entry)
    return entry


def _ks_test(
    name: str,
    s: _NumericSide,
    r: _ReferenceSide,
    binned: tuple[np.ndarray, np.ndarray],
    sd_r: float,
    cfg: DriftConfig,
) -> _Test:
    """KS distance from the two sketches; rank errors subtracted before the p-value.

    The effect is Wasserstein-1 (ranks 1%-99%) / reference std, not the KS distance: a shift of s sigma moves W1
    by exactly s sigma whatever the shape, while the KS distance of the same shift depends on the
    peak density (0.05 sigma shifts an exponential by D ~ 0.05, a normal by D ~ 0.02).
    """
    u = _grid(cfg)
    q_s, q_r = s.values, r.values
    # the largest CDF difference at the values of both sketches' grid quantiles (each distinct
    # value once: repeats do not change the max)
    d = max(
        float(np.abs(s.own_cdf - r.view.cdf32(s.distinct)).max()),
        float(np.abs(s.view.cdf32(r.distinct) - r.own_cdf).max()),
    )
    slack = s.rank_error + r.rank_error
    n_e = s.count * r.count / (s.count + r.count)
    root = math.sqrt(n_e)
    p = _kolmogorov_sf((root + 0.12 + 0.11 / root) * max(d - slack, 0.0))
    w1 = float(np.abs(q_s - q_r)[_w1_slice(u.size)].mean())
    effect = w1 / sd_r if sd_r > 0 else (0.0 if w1 == 0 else math.inf)
    detail = {"rank_error_slack": slack, "w1_std": effect, **_binned(s.view, *binned)}
    return _Test(name, "numeric", "ks", d, effect, p, detail=detail)


def _bin_probs(q: Quantiles | _SortedView, edges: np.ndarray) -> np.ndarray:
    """Probability of each bin (-inf, e0], (e0, e1], ..., (e_last, inf) under sketch ``q``."""
    return _cdf_bins(q.cdf(edges))


def _cdf_bins(cdf_at_edges: np.ndarray) -> np.ndarray:
    """Bin probabilities from the CDF at the interior edges."""
    cdf = np.concatenate([[0.0], cdf_at_edges, [1.0]])
    return np.clip(np.diff(cdf), 0.0, None)


def _edges(qr: Quantiles | _SortedView, bins: int) -> np.ndarray:
    """Interior bin edges at reference quantiles (ties collapsed)."""
    return np.unique(qr.quantile(np.arange(1, bins) / bins))


def _binned(s: _SortedView, edges: np.ndarray, p_r: np.ndarray) -> dict[str, float]:
    """PSI and Jensen-Shannon distance (base 2) on reference-quantile bins (float32 ``edges``,
    reference bin probabilities ``p_r``)."""
    p_s = _cdf_bins(s.cdf32(edges))
    eps = 1e-4
    a, b = (p_s + eps) / (1 + eps * p_s.size), (p_r + eps) / (1 + eps * p_r.size)
    return {"psi": float(((a - b) * np.log(a / b)).sum()), "js": _js_base2(a, b)}


def _js_base2(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q, base=2)`` of 1-D arrays: its operations in
    its order (so the same number) without its generality, a third of its time."""
    p, q = p / p.sum(keepdims=True), q / q.sum(keepdims=True)
    m = (p + q) / 2.0
    js = special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()
    js /= np.log(2)
    return float(np.sqrt(js / 2.0))


def _mean_test(name: str, ms: Moments, mr: Moments) -> _Test:
    """z-test of the means (moments are exact, so no sketch error here).

    The standard error uses the reference variance for both sides (the null says they are equal):
    studentizing by the shard's own variance gives skewed features a heavy-tailed statistic, since
    a shard that lacks tail values has both a low mean and a low variance.
    """
    diff = ms.mean - mr.mean
    se = math.sqrt(mr.sample_var * (1.0 / ms.count + 1.0 / mr.count))
    sd = mr.std
    value = diff / sd if sd > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    detail = {"shard_mean": ms.mean, "reference_mean": mr.mean, "reference_std": sd}
    return _Test(
        name, "numeric", "mean", value, abs(value), _z_p(_ratio_z(diff, se)), detail=detail
    )


def _scale_test(name: str, ms: Moments, s: _NumericSide, mr: Moments, r: _ReferenceSide) -> _Test:
    """Brown-Forsythe-style spread test: mean |x - reference median| of shard vs reference.

    Needs only finite variance (no normality, no kurtosis estimate), unlike an F-test. The
    variance of |x - c| is the reference's for both sides, as in ``_mean_test``. Mean |x - c|
    comes from the quantile function on the grid, its variance from the exact second moment.
    """
    center = r.center
    d_s = float(np.abs(s.values - center).mean())
    d_r = r.abs_dev
    second = mr.var + (mr.mean - center) ** 2
    v_r = max(second - d_r * d_r, 0.0)
    # the a priori (99%) sketch error bounds enter as extra variance (bound / 2.58 = one sd):
    # measured sketch errors are ~1/3 of the bound, so this is honest without costing much power
    sketch_var = (s.integral_error**2 + r.integral_error**2) / 2.58**2
    z = _ratio_z(d_s - d_r, math.sqrt(v_r * (1.0 / ms.count + 1.0 / mr.count) + sketch_var))
    ratio = d_s / d_r if d_r > 0 else (1.0 if d_s == 0 else math.inf)
    effect = abs(math.log(ratio)) if ratio > 0 else math.inf
    detail = {"spread_ratio": ratio, "std_ratio": ms.std / mr.std if mr.std > 0 else math.inf}
    return _Test(name, "numeric", "scale", ratio, effect, _z_p(z), detail=detail)


def _numeric_tests(name: str, shard: Profile, ref: Profile, cfg: DriftConfig) -> list[_Test]:
    ms, qs = shard.numeric(name)
    mr, qr = ref.numeric(name)
    tests = [
        _rate_test(name, "numeric", "missing", ms.missing, ms.n, mr.missing, mr.n),
        _rate_test(name, "numeric", "nan", ms.nan, ms.n, mr.nan, mr.n),
        _rate_test(
            name, "numeric", "inf", ms.posinf + ms.neginf, ms.n, mr.posinf + mr.neginf, mr.n
        ),
    ]
    if min(ms.count, mr.count, qs.count, qr.count) >= cfg.min_samples:
        entry = _reference_entry(qr)
        r = entry.side(qr, cfg.grid)
        s = _NumericSide(qs, _SortedView(qs), _grid(cfg))
        tests += [
            _ks_test(name, s, r, entry.binned(cfg.bins), mr.std, cfg),
            _mean_test(name, ms, mr),
            _scale_test(name, ms, s, mr, r),
        ]
    return tests


# ---------------------------------------------------------------------------------------------
# categorical and token features


@dataclass
class _CategoryReference:
    """A reference's category cells (cached like ``_ReferenceEntry``, by ``state_key``)."""

    key: tuple
    cells: dict[str, int]  # category -> its cell: the reference's categories in sorted order
    r: np.ndarray  # the reference's count in each cell, then its ``other`` mass (read-only)


_CATEGORY_REFERENCES = _IdentityCache()


def _category_reference(cr: CategoricalCounts) -> _CategoryReference:
    """The cached cells of reference counts ``cr``, rebuilt if ``cr`` changed."""
    key = cr.state_key()
    entry = _CATEGORY_REFERENCES.get(cr)
    if entry is None or entry.key != key:
        r_counts, r_other = cr.counts_and_other()
        keys = sorted(r_counts)
        r = np.array([r_counts[k] for k in keys] + [r_other])
        r.flags.writeable = False
        entry = _CategoryReference(key, {k: i for i, k in enumerate(keys)}, r)
        _CATEGORY_REFERENCES.put(cr, entry)
    return entry


def _category_table(
    cs: CategoricalCounts, cr: CategoricalCounts
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Aligned shard / reference counts: reference categories, then one pooled 'rest' cell
    (reference ``other`` mass + shard ``other`` + shard categories unseen in the reference)."""
    ref = _category_reference(cr)
    s_counts, s_other = cs.counts_and_other()
    cells, unseen = [0] * len(ref.cells), {}
    for k, c in s_counts.items():
        i = ref.cells.get(k)
        if i is None:
            unseen[k] = c
        else:
            cells[i] = c
    return np.array([*cells, s_other + sum(unseen.values())]), ref.r, unseen


def _categorical_tests(name: str, shard: Profile, ref: Profile, cfg: DriftConfig) -> list[_Test]:
    cs, cr = shard.categorical(name), ref.categorical(name)
    tests = [_rate_test(name, "categorical", "missing", cs.missing, cs.n, cr.missing, cr.n)]
    if min(cs.present, cr.present) < cfg.min_samples:
        return tests
    s, r, unseen = _category_table(cs, cr)
    chi2, df, n_eff = _chi2_2xk(s, r, cfg.min_expected)
    if df == 0:
        return tests
    p_s, p_r = s / max(s.sum(), 1), r / max(r.sum(), 1)
    top_unseen = dict(sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    detail = {
        "statistic": chi2,
        "df": df,
        "js": _js_base2(p_s, p_r),
        "unseen_rate": sum(unseen.values()) / max(cs.present, 1),
        "unseen": top_unseen,
    }
    w = _cohen_w(chi2, df, n_eff)
    p = _chi2_sf(chi2, df)
    tests.append(_Test(name, "categorical", "chi2", w, w, p, detail=detail))
    return tests


def _token_tests(name: str, shard: Profile, ref: Profile, cfg: DriftConfig) -> list[_Test]:
    ts, tr = shard.tokens(name), ref.tokens(name)
    tests = [_rate_test(name, "tokens", "missing", ts.missing, ts.n, tr.missing, tr.n)]
    if min(ts.docs, tr.docs) < cfg.min_samples:
        return tests
    tests += _token_chi2(name, ts, tr, cfg)
    return tests


def _token_chi2(name: str, ts: HashedTokens, tr: HashedTokens, cfg: DriftConfig) -> list[_Test]:
    chi2, df, n_eff = _chi2_2xk(ts.counts, tr.counts, cfg.min_expected)
    if df == 0:
        return []
    chi2 /= cfg.token_dispersion
    total_s, total_r = max(ts.counts.sum(), 1), max(tr.counts.sum(), 1)
    detail = {
        "statistic": chi2,
        "df": df,
        "js": _js_base2(ts.counts / total_s, tr.counts / total_r),
        "tokens_per_doc": ts.tokens / max(ts.docs, 1),
    }
    w = _cohen_w(chi2, df, n_eff)
    return [_Test(name, "tokens", "tokens", w, w, _chi2_sf(chi2, df), detail=detail)]


_TESTS = {"numeric": _numeric_tests, "categorical": _categorical_tests, "tokens": _token_tests}


# ---------------------------------------------------------------------------------------------
# compare


def _schema(profile: Profile, reference: Profile) -> dict[str, list[str]]:
    """Features missing from the shard, new in it, or of another kind."""
    mine, ref = set(profile.kinds), set(reference.kinds)
    kind = sorted(n for n in mine & ref if profile.kinds[n] != reference.kinds[n])
    out = {"missing": sorted(ref - mine), "new": sorted(mine - ref), "kind": kind}
    return {k: v for k, v in out.items() if v}


def rejection_cut(
    p_values: Sequence[float] | np.ndarray, method: Correction = "bonferroni", alpha: float = 0.01
) -> float:
    """The largest raw p-value rejected at family level ``alpha`` (``alpha / m`` if none is).

    Bonferroni: ``alpha / m``. BH: ``alpha k / m`` with ``k`` the number of rejections. A raw
    ``p <= cut`` exactly when its adjusted p-value is ``<= alpha``.
    """
    p = np.sort(np.asarray(p_values, dtype=np.float64))
    m = p.size
    if m == 0:
        return alpha
    if method == "bh":
        below = np.flatnonzero(p <= alpha * np.arange(1, m + 1) / m)
        return alpha * (below[-1] + 1 if below.size else 1) / m
    return alpha / m


def _test_score(effect: float, floor: float, p: float, cut: float, cfg: DriftConfig) -> float:
    """min(effect / floor, log p / log cut), capped: >= 1 iff both criteria pass.

    Both ratios are continuous (the second is 0 at p = 1), so the score ranks shards smoothly
    below the threshold too.
    """
    sig = math.log(max(p, _TINY_P)) / math.log(cut)
    return float(min(effect / floor if math.isfinite(effect) else math.inf, sig, cfg.score_cap))


def _feature_drift(
    tests: list[_Test], p_adj: list[float], cut: float, cfg: DriftConfig, floors: dict[str, float]
) -> FeatureDrift:
    """Summarise the tests of one feature; the deciding test is the one with the top score.

    ``floors`` is ``cfg``'s floor of each metric.
    """
    rows, best = {}, None
    for t, pa in zip(tests, p_adj, strict=True):
        floor = floors[t.metric]
        score = _test_score(t.effect, floor, t.pw, cut, cfg) if t.testable else 0.0
        drifted = score >= 1.0
        rows[t.metric] = {
            "value": t.value,
            "effect": t.effect,
            "floor": floor,
            "p_value": t.p,
            "p_weighted": t.pw,
            "p_adjusted": float(pa),
            "tested": t.testable,
            "drifted": drifted,
            "score": score,
            **t.detail,
        }
        if best is None or score > best[0]:
            best = (score, t, float(pa), drifted)
    score, t, pa, drifted = best  # type: ignore[misc]
    return FeatureDrift(
        t.feature, t.kind, t.metric, t.value, t.effect, pa, drifted, {"tests": rows}, score
    )


def _schema_drift(
    schema: dict[str, list[str]], cfg: DriftConfig, profile: Profile, reference: Profile
) -> list[FeatureDrift]:
    """One drifted entry per feature missing, new or of another kind (kind as in the shard)."""
    out = []
    for change, names in schema.items():
        for name in names:
            kind = profile.kinds.get(name) or reference.kinds[name]
            detail = {"change": change, "reference_kind": reference.kinds.get(name)}
            out.append(
                FeatureDrift(name, kind, "schema", 1.0, 1.0, 0.0, True, detail, cfg.schema_score)
            )
    return out


def _metadata_drift(
    profile: Profile, reference: Profile, cfg: DriftConfig
) -> tuple[list[FeatureDrift], dict[str, str]]:
    """Drifted entries (kind "metadata") for a declared source / preprocessing fingerprint that
    none of the reference's shards had. Undeclared (no metadata) or unrecorded is not drift."""
    meta = profile.meta.get("metadata")
    if not cfg.metadata or not isinstance(meta, dict):
        return [], {}
    declared = {
        "source": profile.source if "source" in meta else None,
        "preprocessing": preprocessing_of(profile),
    }
    recorded = {
        "source": reference.meta.get("sources"),
        "preprocessing": reference.meta.get("preprocessing"),
    }
    out, changed = [], {}
    for metric, value in declared.items():
        known = recorded[metric]
        if value is None or not isinstance(known, list) or not known or value in known:
            continue
        changed[metric] = value
        detail = {"shard": value, "reference": list(known)}
        out.append(
            FeatureDrift(
                f"metadata.{metric}",
                "metadata",
                metric,
                1.0,
                1.0,
                0.0,
                True,
                detail,
                cfg.schema_score,
            )
        )
    return out, changed


def _weigh(per_feature: list[list[_Test]]) -> list[_Test]:
    """Set each test's weighted p-value ``pw = p * F * k / m`` and return all tests, flattened.

    The family's alpha is split equally across the F features with a testable test, then across
    the k testable tests of each feature (weighted Bonferroni / BH, weights averaging 1): a
    categorical or token feature with one real test gets alpha / F, as a per-feature exact test
    would, instead of paying for the three tests of every numeric feature.
    """
    counts = [sum(t.testable for t in tests) for tests in per_feature]
    n_features, m = sum(k > 0 for k in counts), sum(counts)
    for tests, k in zip(per_feature, counts, strict=True):
        for t in tests:
            t.pw = min(t.p * n_features * k / m, 1.0) if t.testable else 1.0
    return [t for tests in per_feature for t in tests]


def compare(profile: Profile, reference: Profile, config: DriftConfig | None = None) -> ShardDrift:
    """Compare a shard's profile with a reference profile.

    Raises ``FingerprintMismatch`` when the two were featurized differently. Features missing
    from the shard or new in it are schema drift (reported, and the shard is drifted). A shard
    whose metadata declares a source or preprocessing fingerprint the reference never saw is
    metadata drift (``cfg.metadata``; a shard without metadata is not flagged for it).
    """
    cfg = config or DriftConfig()
    if profile.fingerprint != reference.fingerprint:
        raise FingerprintMismatch(
            f"shard {profile.url!r} was featurized with {profile.fingerprint!r} but reference with "
            f"{reference.fingerprint!r}: profile the shard with the reference's featurizer "
            "(or rebuild the reference) before comparing"
        )
    schema = _schema(profile, reference)
    common = sorted(
        n for n in set(profile.kinds) & set(reference.kinds) if n not in schema.get("kind", ())
    )
    per_feature = [_TESTS[profile.kinds[n]](n, profile, reference, cfg) for n in common]
    flat = _weigh(per_feature)
    testable = np.array([t.testable for t in flat], dtype=bool)
    weighted = [t.pw for t in flat if t.testable]
    p_adj = np.ones(len(flat))
    p_adj[testable] = adjust_pvalues(weighted, cfg.correction)
    cut = rejection_cut(weighted, cfg.correction, cfg.alpha)
    features, start, adjusted, floors = [], 0, p_adj.tolist(), cfg._floors()
    for tests in per_feature:
        features.append(
            _feature_drift(tests, adjusted[start : start + len(tests)], cut, cfg, floors)
        )
        start += len(tests)
    features += _schema_drift(schema, cfg, profile, reference)
    meta_features, meta_changed = _metadata_drift(profile, reference, cfg)
    features += meta_features
    report: dict = dict(schema)
    if meta_changed:
        report["metadata"] = meta_changed
    score = max((f.score for f in features), default=0.0)
    drifted = bool(report) or any(f.drifted for f in features)
    return ShardDrift(profile.url, profile.version, profile.n, drifted, score, features, report)


# ---------------------------------------------------------------------------------------------
# importance weights


def _smoothed(counts: np.ndarray, pseudo: float = 0.5) -> np.ndarray:
    """Probabilities with ``pseudo`` counts added to every cell (no zero in a ratio)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + pseudo) / (counts.sum() + pseudo * counts.size)


def _numeric_cells(m: Moments, q: Quantiles, edges: np.ndarray) -> np.ndarray:
    """Expected counts in the finite bins and one 'absent' cell (missing, NaN or inf)."""
    return np.append(_bin_probs(q, edges) * q.count, m.n - q.count)


def _numeric_log_ratio(
    values: np.ndarray, name: str, shard: Profile, reference: Profile, bins: int
) -> np.ndarray:
    """log p_ref(x) / p_shard(x) per sample, densities on reference-quantile bins."""
    mr, qr = reference.numeric(name)
    ms, qs = shard.numeric(name)
    if qr.count:  # the reference's bins are cached (the policy weighs every chunk of a shard)
        edges32, p_r = _reference_entry(qr).binned(bins)
        edges = edges32.astype(np.float64)
        cells_r = np.append(p_r * qr.count, mr.n - qr.count)
    else:
        edges = _edges(qr, bins)
        cells_r = _numeric_cells(mr, qr, edges)
    ratio = np.log(_smoothed(cells_r)) - np.log(_smoothed(_numeric_cells(ms, qs, edges)))
    data = np.ma.getdata(values).astype(np.float64).ravel()
    absent = np.ma.getmaskarray(values).ravel() | ~np.isfinite(data)
    cell = np.where(absent, edges.size + 1, np.searchsorted(edges, np.where(absent, 0.0, data)))
    return ratio[cell]


def _categorical_log_ratio(
    values: np.ndarray, name: str, shard: Profile, reference: Profile
) -> np.ndarray:
    """log p_ref(c) / p_shard(c) per sample; unknown categories share the 'other' cell."""
    cr, cs = reference.categorical(name), shard.categorical(name)
    (r_counts, r_other), (s_counts, s_other) = cr.counts_and_other(), cs.counts_and_other()
    keys = sorted(set(r_counts) | set(s_counts))
    index = {k: i for i, k in enumerate(keys)}
    r = [r_counts.get(k, 0) for k in keys] + [r_other, cr.missing]
    s = [s_counts.get(k, 0) for k in keys] + [s_other, cs.missing]
    ratio = np.log(_smoothed(np.array(r))) - np.log(_smoothed(np.array(s)))
    vals = np.asarray(values, dtype=object).ravel()
    absent = np.equal(vals, None)
    cell = np.full(vals.size, len(keys) + 1, dtype=np.intp)  # the 'missing' cell
    if (~absent).any():
        uniq, inv = np.unique(vals[~absent].astype(str), return_inverse=True)
        known = np.array([index.get(u, len(keys)) for u in uniq.tolist()], dtype=np.intp)
        cell[~absent] = known[inv.ravel()]
    return ratio[cell]


def _token_log_ratio(
    values: np.ndarray, name: str, shard: Profile, reference: Profile, z_min: float = 3.0
) -> np.ndarray:
    """log p_ref(doc) / p_shard(doc) per sample under a bag of hashed n-grams, as in DSIR data
    selection: the sum of the log-ratios of the buckets of the document's n-grams.

    Only buckets whose shares differ by ``z_min`` standard errors count: the other thousands
    add noise and no correction (on the detection benchmark's text shift this keeps an
    effective sample size of ~750 of 1,000 instead of ~400, for the same correction).
    A missing text scores 0.
    """
    tr, ts = reference.tokens(name), shard.tokens(name)
    n = np.asarray(values, dtype=object).size
    nr, ns = int(tr.counts.sum()), int(ts.counts.sum())
    if tr.params() != ts.params() or not nr or not ns:
        return np.zeros(n)
    pooled = (tr.counts + ts.counts) / (nr + ns)
    se = np.sqrt(pooled * (1 / nr + 1 / ns))
    z = np.abs(ts.counts / ns - tr.counts / nr) / np.where(se > 0, se, np.inf)
    ratio = np.where(z >= z_min, np.log(_smoothed(tr.counts)) - np.log(_smoothed(ts.counts)), 0.0)
    doc, bucket = tr.document_buckets(values)
    return np.bincount(doc, weights=ratio[bucket], minlength=n)


def importance_weights(
    batch: FeatureBatch,
    shard: Profile,
    reference: Profile,
    drift: ShardDrift,
    clip: tuple[float, float] = (0.1, 10.0),
    bins: int = 20,
) -> np.ndarray:
    """Per-sample weights estimating p_ref(x) / p_shard(x), mean 1 over the batch.

    Built from the sketches of the *drifted* numeric, categorical and token features only
    (schema drift is not reweighted), as a product over features (naive independence), clipped
    to ``clip`` so that a few samples cannot dominate. An undrifted shard gets all ones.
    """
    lo, hi = clip
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"clip must satisfy 0 < low <= 1 <= high, got {clip!r}")
    n = len(np.ravel(next(iter(batch.values())).values)) if batch else 0
    log_w = np.zeros(n)
    for f in drift.features:
        column = batch.get(f.name)
        if not f.drifted or f.metric == "schema" or column is None:
            continue
        if f.kind == "numeric" and column.kind == "numeric":
            log_w += _numeric_log_ratio(column.values, f.name, shard, reference, bins)
        elif f.kind == "categorical" and column.kind == "categorical":
            log_w += _categorical_log_ratio(column.values, f.name, shard, reference)
        elif f.kind == "tokens" and column.kind == "tokens":
            log_w += _token_log_ratio(column.values, f.name, shard, reference)
    if n:
        # The ratio is known only up to a constant (weights are normalised below): centre it first
        # so that clipping bounds the spread of the weights, not their common level. Otherwise
        # a shard drifted in many features saturates every weight at one bound and looks unweighted.
        log_w -= np.median(log_w)
    w = np.clip(np.exp(log_w), lo, hi)
    return w / w.mean() if n else w


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: how many unweighted samples they are worth."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float(np.square(w).sum())
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


__all__ = [
    "DriftConfig",
    "FeatureDrift",
    "ShardDrift",
    "adjust_pvalues",
    "rejection_cut",
    "compare",
    "effective_sample_size",
    "importance_weights",
]
