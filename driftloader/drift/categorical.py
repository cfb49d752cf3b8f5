"""The drift tests of categorical and token features, each one function of a feature pair.

``missing`` is an exact rate test and always runs; ``chi2`` (categories) and ``tokens``
(hashed token buckets) run once both sides hold ``min_samples`` values. Their effect is
Cohen's w, bias-corrected (see ``stats.cohen_w``).
"""

from __future__ import annotations

import numpy as np

from driftloader.drift.config import DriftConfig
from driftloader.drift.stats import (
    Evidence,
    chi2_sf,
    cohen_w,
    js_distance,
    rate_test,
    two_sample_chi2,
)
from driftloader.drift.views import category_reference
from driftloader.profile import Profile
from driftloader.sketches import CategoricalCounts


class CategoricalPair:
    """A categorical feature's counts in the shard and in the reference."""

    def __init__(self, name: str, shard: Profile, reference: Profile, cfg: DriftConfig) -> None:
        self.name = name
        self.s, self.r = shard.categorical(name), reference.categorical(name)


class TokenPair:
    """A token feature's hashed counts in the shard and in the reference."""

    def __init__(self, name: str, shard: Profile, reference: Profile, cfg: DriftConfig) -> None:
        self.name = name
        self.s, self.r = shard.tokens(name), reference.tokens(name)


def missing_rate(pair: CategoricalPair | TokenPair, cfg: DriftConfig) -> Evidence:
    """Change of the missing-value rate."""
    return rate_test(pair.s.missing, pair.s.n, pair.r.missing, pair.r.n)


def category_table(
    cs: CategoricalCounts, cr: CategoricalCounts
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Aligned shard / reference counts: reference categories, then one pooled 'rest' cell
    (reference ``other`` mass + shard ``other`` + shard categories unseen in the reference)."""
    ref = category_reference(cr)
    s_counts, s_other = cs.counts_and_other()
    cells, unseen = [0] * len(ref.cells), {}
    for k, c in s_counts.items():
        i = ref.cells.get(k)
        if i is None:
            unseen[k] = c
        else:
            cells[i] = c
    return np.array([*cells, s_other + sum(unseen.values())]), ref.r, unseen


def chi2_test(pair: CategoricalPair, cfg: DriftConfig) -> Evidence | None:
    """Two-sample chi-square on the counts (rare categories merged, categories unseen in the
    reference pooled and reported); effect Cohen's w."""
    cs, cr = pair.s, pair.r
    if min(cs.present, cr.present) < cfg.min_samples:
        return None
    s, r, unseen = category_table(cs, cr)
    chi2, df, n_eff = two_sample_chi2(s, r, cfg.min_expected)
    if df == 0:
        return None
    p_s, p_r = s / max(s.sum(), 1), r / max(r.sum(), 1)
    top_unseen = dict(sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    detail = {
        "statistic": chi2,
        "df": df,
        "js": js_distance(p_s, p_r),
        "unseen_rate": sum(unseen.values()) / max(cs.present, 1),
        "unseen": top_unseen,
    }
    w = cohen_w(chi2, df, n_eff)
    return Evidence(w, w, chi2_sf(chi2, df), detail=detail)


def token_test(pair: TokenPair, cfg: DriftConfig) -> Evidence | None:
    """Chi-square on hashed token-bucket counts (sparse buckets merged, divided by
    ``token_dispersion``); effect Cohen's w."""
    ts, tr = pair.s, pair.r
    if min(ts.docs, tr.docs) < cfg.min_samples:
        return None
    chi2, df, n_eff = two_sample_chi2(ts.counts, tr.counts, cfg.min_expected)
    if df == 0:
        return None
    chi2 /= cfg.token_dispersion
    total_s, total_r = max(ts.counts.sum(), 1), max(tr.counts.sum(), 1)
    detail = {
        "statistic": chi2,
        "df": df,
        "js": js_distance(ts.counts / total_s, tr.counts / total_r),
        "tokens_per_doc": ts.tokens / max(ts.docs, 1),
    }
    w = cohen_w(chi2, df, n_eff)
    return Evidence(w, w, chi2_sf(chi2, df), detail=detail)
