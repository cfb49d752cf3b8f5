"""The fast statistics of drift tests: p-values, multiple-testing control, chi-square, Jensen-Shannon.

Every function works on plain numbers and arrays (no sketches) and equals its scipy counterpart
exactly (``tests/test_drift_fastpath.py`` holds them to it): the survival functions call the
``scipy.special`` functions behind ``scipy.stats``' ``sf`` of ``norm``, ``kstwobign`` and
``chi2`` directly (same numbers, ~50 us less per call), with stats' own value at the lower end
of the support (x <= 0 -> 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from driftloader.drift.config import Correction


@dataclass
class Evidence:
    """What one hypothesis test found for one feature.

    ``value`` is the test's own statistic as reported (KS distance, rate difference, ...),
    ``effect`` what is compared with the floor, ``p`` the raw p-value. ``testable`` is False
    when the test can never reject (it is then left out of the multiplicity count).
    """

    value: float
    effect: float
    p: float
    testable: bool = True
    detail: dict = field(default_factory=dict)


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


def rate_test(x_s: int, n_s: int, x_r: int, n_r: int) -> Evidence:
    """Exact conditional test that two event rates are equal (hypergeometric, two-sided).

    Given ``x_s + x_r`` events, under H0 the shard's share is hypergeometric. With no event at all
    the test cannot reject and is excluded from the multiplicity count (Tarone).
    """
    rate_s = x_s / n_s if n_s else 0.0
    rate_r = x_r / n_r if n_r else 0.0
    total = x_s + x_r
    detail = {"shard_rate": rate_s, "reference_rate": rate_r, "shard_count": x_s}
    if total == 0 or n_s == 0 or n_r == 0:
        return Evidence(0.0, 0.0, 1.0, testable=False, detail=detail)
    from scipy import stats  # imported here: ~1 s, which a plain DriftDataset never needs

    # unfrozen calls: the same numbers as stats.hypergeom(M, n, N).cdf, without the ~0.5 ms freeze
    args = (n_s + n_r, total, n_s)
    cdf, sf = stats.hypergeom.cdf(x_s, *args), stats.hypergeom.sf(x_s - 1, *args)
    p = min(1.0, 2.0 * min(float(cdf), float(sf)))
    diff = rate_s - rate_r
    return Evidence(diff, abs(diff), p, detail=detail)


def normal_p(z: float) -> float:
    """Two-sided normal p-value (``2 * stats.norm.sf(|z|)``)."""
    return float(2.0 * special.ndtr(-abs(z))) if math.isfinite(z) else 0.0


def kolmogorov_sf(x: float) -> float:
    """``stats.kstwobign.sf(x)``: the asymptotic KS distribution's survival function."""
    return 1.0 if x <= 0.0 else float(special.kolmogorov(x))


def chi2_sf(x: float, df: int) -> float:
    """``stats.chi2.sf(x, df)`` for ``df >= 1``."""
    return 1.0 if x <= 0.0 else float(special.chdtrc(df, x))


def ratio_z(diff: float, se: float) -> float:
    """diff / se, with 0/0 -> 0 and x/0 -> inf (a constant reference that moved)."""
    if se > 0:
        return diff / se
    return 0.0 if diff == 0 else math.inf


def two_sample_chi2(s: np.ndarray, r: np.ndarray, min_expected: float) -> tuple[float, int, float]:
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


def cohen_w(chi2: float, df: int, n_eff: float) -> float:
    """Bias-corrected Cohen's w = sqrt(max(chi2 - df, 0) / n): a chi-square distance free of n."""
    return math.sqrt(max(chi2 - df, 0.0) / n_eff) if n_eff > 0 else 0.0


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q, base=2)`` of 1-D arrays: its operations in
    its order (so the same number) without its generality, a third of its time."""
    p, q = p / p.sum(keepdims=True), q / q.sum(keepdims=True)
    m = (p + q) / 2.0
    js = special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()
    js /= np.log(2)
    return float(np.sqrt(js / 2.0))
