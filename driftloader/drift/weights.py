"""Importance weights: per-sample estimates of p_ref(x) / p_shard(x) from the two profiles' sketches.

The weighting policies (reweight, resample) multiply each sample by its weight so a drifted
shard trains like the reference; ``effective_sample_size`` says what the weights cost.
"""

from __future__ import annotations

import numpy as np

from driftloader.drift.config import ShardDrift
from driftloader.drift.views import bin_probs, quantile_edges, quantile_reference
from driftloader.features import FeatureBatch
from driftloader.profile import Profile
from driftloader.sketches import Moments, Quantiles


def _smoothed(counts: np.ndarray, pseudo: float = 0.5) -> np.ndarray:
    """Probabilities with ``pseudo`` counts added to every cell (no zero in a ratio)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + pseudo) / (counts.sum() + pseudo * counts.size)


def _numeric_cells(m: Moments, q: Quantiles, edges: np.ndarray) -> np.ndarray:
    """Expected counts in the finite bins and one 'absent' cell (missing, NaN or inf)."""
    return np.append(bin_probs(q, edges) * q.count, m.n - q.count)


def _numeric_log_ratio(
    values: np.ndarray, name: str, shard: Profile, reference: Profile, bins: int
) -> np.ndarray:
    """log p_ref(x) / p_shard(x) per sample, densities on reference-quantile bins."""
    mr, qr = reference.numeric(name)
    ms, qs = shard.numeric(name)
    if qr.count:  # the reference's bins are cached (the policy weighs every chunk of a shard)
        edges32, p_r = quantile_reference(qr).binned(bins)
        edges = edges32.astype(np.float64)
        cells_r = np.append(p_r * qr.count, mr.n - qr.count)
    else:
        edges = quantile_edges(qr, bins)
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
