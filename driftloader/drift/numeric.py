"""The drift tests of numeric features, each one function of a ``NumericPair`` (see registry.py).

Rates (``missing``, ``nan``, ``inf``) use exact conditional tests and always run; the
distribution tests (``ks``, ``mean``, ``scale``) run once both sides hold ``min_samples``
finite values. The pair computes each sketch's sorted view and grid quantiles once, whatever
number of tests read them; the reference's side comes from the per-reference cache.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from driftloader.drift.config import DriftConfig
from driftloader.drift.stats import (
    Evidence,
    js_distance,
    kolmogorov_sf,
    normal_p,
    rate_test,
    ratio_z,
)
from driftloader.drift.views import (
    NumericSide,
    ReferenceEntry,
    ReferenceSide,
    SortedView,
    cdf_bins,
    grid_points,
    quantile_reference,
    w1_slice,
)
from driftloader.features.joint import JOINT_PREFIX
from driftloader.profile import Profile


class NumericPair:
    """A numeric feature's sketches in the shard and in the reference, and what the tests
    derive from them (each derived once, on first use)."""

    def __init__(self, name: str, shard: Profile, reference: Profile, cfg: DriftConfig) -> None:
        self.name, self.cfg = name, cfg
        self.ms, self.qs = shard.numeric(name)
        self.mr, self.qr = reference.numeric(name)
        counts = (self.ms.count, self.mr.count, self.qs.count, self.qr.count)
        self.enough = min(counts) >= cfg.min_samples  # for the distribution tests
        # A joint projection is missing whenever one of its coordinates is: the coordinates'
        # own rate tests name the cause, so a projection is tested on its distribution only.
        self.projection = name.startswith(JOINT_PREFIX)

    @functools.cached_property
    def reference_entry(self) -> ReferenceEntry:
        return quantile_reference(self.qr)

    @functools.cached_property
    def reference_side(self) -> ReferenceSide:
        return self.reference_entry.side(self.qr, self.cfg.grid)

    @functools.cached_property
    def shard_side(self) -> NumericSide:
        return NumericSide(self.qs, SortedView(self.qs), grid_points(self.cfg.grid))


def missing_rate(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """Change of the missing-value rate."""
    if pair.projection:
        return None
    return rate_test(pair.ms.missing, pair.ms.n, pair.mr.missing, pair.mr.n)


def nan_rate(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """Change of the NaN rate."""
    if pair.projection:
        return None
    return rate_test(pair.ms.nan, pair.ms.n, pair.mr.nan, pair.mr.n)


def inf_rate(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """Change of the +-inf rate."""
    if pair.projection:
        return None
    ms, mr = pair.ms, pair.mr
    return rate_test(ms.posinf + ms.neginf, ms.n, mr.posinf + mr.neginf, mr.n)


def ks_test(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """KS distance from the two sketches; rank errors subtracted before the p-value.

    The effect is Wasserstein-1 (ranks 1%-99%) / reference std, not the KS distance: a shift of
    s sigma moves W1 by exactly s sigma whatever the shape, while the KS distance of the same
    shift depends on the peak density (0.05 sigma shifts an exponential by D ~ 0.05, a normal
    by D ~ 0.02). The detail also carries PSI and Jensen-Shannon distance on
    reference-quantile bins.
    """
    if not pair.enough:
        return None
    s, r, sd_r = pair.shard_side, pair.reference_side, pair.mr.std
    # the largest CDF difference at the values of both sketches' grid quantiles (each distinct
    # value once: repeats do not change the max)
    d = max(
        float(np.abs(s.own_cdf - r.view.cdf32(s.distinct)).max()),
        float(np.abs(s.view.cdf32(r.distinct) - r.own_cdf).max()),
    )
    slack = s.rank_error + r.rank_error
    n_e = s.count * r.count / (s.count + r.count)
    root = math.sqrt(n_e)
    p = kolmogorov_sf((root + 0.12 + 0.11 / root) * max(d - slack, 0.0))
    w1 = float(np.abs(s.values - r.values)[w1_slice(cfg.grid)].mean())
    effect = w1 / sd_r if sd_r > 0 else (0.0 if w1 == 0 else math.inf)
    edges, p_r = pair.reference_entry.binned(cfg.bins)
    detail = {"rank_error_slack": slack, "w1_std": effect, **binned_distances(s.view, edges, p_r)}
    return Evidence(d, effect, p, detail=detail)


def binned_distances(s: SortedView, edges: np.ndarray, p_r: np.ndarray) -> dict[str, float]:
    """PSI and Jensen-Shannon distance (base 2) on reference-quantile bins (float32 ``edges``,
    reference bin probabilities ``p_r``)."""
    p_s = cdf_bins(s.cdf32(edges))
    eps = 1e-4
    a, b = (p_s + eps) / (1 + eps * p_s.size), (p_r + eps) / (1 + eps * p_r.size)
    return {"psi": float(((a - b) * np.log(a / b)).sum()), "js": js_distance(a, b)}


def mean_test(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """z-test of the means (moments are exact, so no sketch error here).

    The standard error uses the reference variance for both sides (the null says they are equal):
    studentizing by the shard's own variance gives skewed features a heavy-tailed statistic, since
    a shard that lacks tail values has both a low mean and a low variance.
    """
    if not pair.enough:
        return None
    ms, mr = pair.ms, pair.mr
    diff = ms.mean - mr.mean
    se = math.sqrt(mr.sample_var * (1.0 / ms.count + 1.0 / mr.count))
    sd = mr.std
    value = diff / sd if sd > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    detail = {"shard_mean": ms.mean, "reference_mean": mr.mean, "reference_std": sd}
    return Evidence(value, abs(value), normal_p(ratio_z(diff, se)), detail=detail)


def scale_test(pair: NumericPair, cfg: DriftConfig) -> Evidence | None:
    """Brown-Forsythe-style spread test: mean |x - reference median| of shard vs reference.

    Needs only finite variance (no normality, no kurtosis estimate), unlike an F-test. The
    variance of |x - c| is the reference's for both sides, as in ``mean_test``. Mean |x - c|
    comes from the quantile function on the grid, its variance from the exact second moment.
    """
    if not pair.enough:
        return None
    ms, mr, s, r = pair.ms, pair.mr, pair.shard_side, pair.reference_side
    center = r.center
    d_s = float(np.abs(s.values - center).mean())
    d_r = r.abs_dev
    second = mr.var + (mr.mean - center) ** 2
    v_r = max(second - d_r * d_r, 0.0)
    # the a priori (99%) sketch error bounds enter as extra variance (bound / 2.58 = one sd):
    # measured sketch errors are ~1/3 of the bound, so this is honest without costing much power
    sketch_var = (s.integral_error**2 + r.integral_error**2) / 2.58**2
    z = ratio_z(d_s - d_r, math.sqrt(v_r * (1.0 / ms.count + 1.0 / mr.count) + sketch_var))
    ratio = d_s / d_r if d_r > 0 else (1.0 if d_s == 0 else math.inf)
    effect = abs(math.log(ratio)) if ratio > 0 else math.inf
    detail = {"spread_ratio": ratio, "std_ratio": ms.std / mr.std if mr.std > 0 else math.inf}
    return Evidence(ratio, effect, normal_p(z), detail=detail)
