"""compare's fast path gives exactly the numbers of the plain path, and its cache is never stale.

``compare`` answers quantile / CDF queries from each sketch's sorted view with numpy (instead of
one DataSketches call per query), caches the reference's side per reference sketch, and calls
the scipy.special functions behind scipy.stats' survival functions directly. These tests hold
all of that to the plain calls: DataSketches' own ``quantile`` / ``cdf``, scipy.stats, scipy's
Jensen-Shannon distance, and a fresh reference rebuilt from JSON (a cold cache).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from driftloader.drift import DriftConfig, ShardDrift, compare, importance_weights
from driftloader.drift import stats as fast
from driftloader.drift.views import CATEGORY_REFERENCES, QUANTILE_REFERENCES, SortedView
from driftloader.features import Column, FeatureBatch
from driftloader.profile import Profile
from driftloader.sketches import CategoricalCounts, Quantiles
from driftloader.sketches.quantiles import kll_sorted_view

FP = "fast-path"


def everything(result: ShardDrift) -> str:
    """Every number of a result: the summary and every test of every feature (NaN-safe)."""
    tests = [
        (f.name, f.metric, f.value, f.effect, f.p_value, f.score, f.detail) for f in result.features
    ]
    return repr((result.to_dict(), tests))


def batch(seed: int, n: int, shift: float = 0.0, cats: int = 5) -> FeatureBatch:
    """Numeric features of several shapes (ties, heavy tails, non-finite values, a constant),
    a categorical with ``cats`` classes and a text."""
    g = np.random.default_rng(seed)
    special = g.normal(shift, 1.0, n)
    special[g.random(n) < 0.01] = np.inf
    special[g.random(n) < 0.01] = np.nan
    words = np.array([f"w{i}" for i in range(50)], dtype=object)
    texts = np.array([" ".join(g.choice(words, 5)) for _ in range(n)], dtype=object)
    cls = np.array([f"c{i}" for i in g.integers(0, cats, n)], dtype=object)
    cls[g.random(n) < 0.02] = None
    return {
        "normal": Column("numeric", np.ma.masked_array(g.normal(shift, 1.0, n))),
        "poisson": Column(
            "numeric",
            np.ma.masked_array(g.poisson(3 + shift, n).astype(float), mask=g.random(n) < 0.05),
        ),
        "heavy": Column("numeric", np.ma.masked_array(g.lognormal(shift, 2.0, n) * 1e30)),
        "special": Column("numeric", np.ma.masked_array(special)),
        "const": Column("numeric", np.ma.masked_array(np.full(n, 1.0 + shift))),
        "cls": Column("categorical", cls),
        "txt": Column("tokens", texts),
    }


def make(seed: int, n: int, parts: int = 1, url: str = "p", **kwargs) -> Profile:
    """A profile of ``parts`` merged shards of ``n`` samples (merged KLLs have empty low levels)."""
    shards = [Profile(FP, url=url).update(batch(seed + i, n, **kwargs)) for i in range(parts)]
    return Profile.merged(shards) if parts > 1 else shards[0]


@pytest.fixture(scope="module")
def reference() -> Profile:
    return make(1, 2000, parts=5, url="ref")


def sketches() -> list[Quantiles]:
    """Quantile sketches of many sizes, k, shapes; merged and JSON round-tripped ones."""
    g = np.random.default_rng(0)
    out = []
    for n in (1, 2, 7, 50, 399, 400, 401, 1000, 30_000):
        for k in (8, 64, 400):
            out.append(Quantiles(k).update(g.normal(size=n)))
            out.append(Quantiles(k).update(np.round(g.normal(size=n) * 2)))  # ties
        merged = Quantiles()
        for _ in range(6):
            merged.merge(Quantiles().update(g.lognormal(0, 3, n)))
        out += [merged, Quantiles.from_dict(merged.to_dict())]
    out.append(Quantiles().update(np.array([-np.inf, np.nan, 3.0, 3.0, -0.0, 0.0, 1e39])))
    return out


def test_sorted_view_answers_exactly_like_datasketches() -> None:
    g = np.random.default_rng(1)
    u = np.concatenate([(np.arange(2048) + 0.5) / 2048, [0.0, 1.0, 0.5], g.random(300)])
    for q in sketches():
        view = SortedView(q)
        values, cum = q.sorted_view()
        assert cum[-1] == q.count and np.all(np.diff(values) > 0) and np.all(np.diff(cum) > 0)
        np.testing.assert_array_equal(view.quantile(u), q.quantile(u))
        grid = q.quantile(u)
        x = np.concatenate(
            [grid, np.nextafter(grid, np.inf), np.nextafter(grid, -np.inf), g.normal(size=50)]
        )
        x = np.concatenate([x, [np.inf, -np.inf, np.nan, 1e39, -1e39, 0.0, -0.0]])
        np.testing.assert_array_equal(view.cdf(x), q.cdf(x))
        assert float(view.quantile(0.5)) == float(q.quantile(0.5))


class _UnknownLayout:
    """A KLL sketch whose serialized bytes ``sorted_view`` cannot read (its fallback path)."""

    def __init__(self, sk) -> None:
        self._inner = sk

    def serialize(self) -> bytes:
        return b"\x05" * 40

    def __iter__(self):
        return iter(self._inner)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def test_sorted_view_fallback_for_an_unknown_layout() -> None:
    for q in sketches()[-8:]:
        odd = _UnknownLayout(Quantiles.from_dict(q.to_dict()).kll)
        for mine, theirs in zip(kll_sorted_view(odd), q.sorted_view(), strict=True):
            np.testing.assert_array_equal(mine, theirs)


def test_sorted_view_of_an_empty_sketch() -> None:
    q = Quantiles()
    values, cum = q.sorted_view()
    assert values.size == 0 and cum.size == 0
    view = SortedView(q)
    np.testing.assert_array_equal(view.quantile([0.1, 0.9]), q.quantile([0.1, 0.9]))
    np.testing.assert_array_equal(view.cdf([0.0, np.inf]), q.cdf([0.0, np.inf]))


def _plain_numeric(qs: Quantiles, qr: Quantiles, sd_r: float, cfg: DriftConfig) -> dict:
    """The KS / W1 / PSI / JS / spread numbers from DataSketches' queries and scipy, one query
    at a time (the formulas of compare, without its fast path)."""
    u = (np.arange(cfg.grid) + 0.5) / cfg.grid
    q_s, q_r = qs.quantile(u), qr.quantile(u)
    x = np.unique(np.concatenate([q_s, q_r]))
    inner = (u > 0.01) & (u < 0.99)
    edges = np.unique(qr.quantile(np.arange(1, cfg.bins) / cfg.bins))

    def probs(q: Quantiles) -> np.ndarray:
        return np.clip(np.diff(np.concatenate([[0.0], q.cdf(edges), [1.0]])), 0.0, None)

    p_s, p_r = probs(qs), probs(qr)
    a, b = (p_s + 1e-4) / (1 + 1e-4 * p_s.size), (p_r + 1e-4) / (1 + 1e-4 * p_r.size)
    center = float(qr.quantile(0.5))
    d_s = float(np.abs(q_s - center).mean())
    d_r = float(np.abs(q_r - center).mean())
    w1 = float(np.abs(q_s - q_r)[inner].mean())
    return {
        "ks": float(np.abs(qs.cdf(x) - qr.cdf(x)).max()),
        "w1_std": w1 / sd_r if sd_r > 0 else (0.0 if w1 == 0 else np.inf),
        "psi": float(((a - b) * np.log(a / b)).sum()),
        "js": float(jensenshannon(a, b, base=2)),
        "spread_ratio": d_s / d_r if d_r > 0 else (1.0 if d_s == 0 else np.inf),
    }


@pytest.mark.parametrize("cfg", [DriftConfig(), DriftConfig(grid=500, bins=7, min_samples=20)])
def test_numeric_tests_equal_the_plain_queries(reference: Profile, cfg: DriftConfig) -> None:
    for seed, shift in ((10, 0.0), (11, 0.3)):
        shard = make(seed, 1500, shift=shift)
        result = compare(shard, reference, cfg)
        checked = 0
        for f in result.features:
            tests = f.detail["tests"]
            if f.kind != "numeric" or "ks" not in tests:
                continue
            (_, qs), (mr, qr) = shard.numeric(f.name), reference.numeric(f.name)
            plain = _plain_numeric(qs, qr, mr.std, cfg)
            assert tests["ks"]["value"] == plain["ks"], f.name
            for key in ("w1_std", "psi", "js"):
                assert tests["ks"][key] == plain[key], (f.name, key)
            assert tests["scale"]["spread_ratio"] == plain["spread_ratio"], f.name
            checked += 1
        assert checked >= 3


def test_same_result_warm_cold_and_from_json(reference: Profile) -> None:
    """The cached reference side gives the numbers a fresh reference gives (twice, a copy, JSON)."""
    rebuilt = Profile.from_json(reference.to_json())  # new sketch objects: a cold cache
    for cfg in (DriftConfig(), DriftConfig(grid=300, bins=11), DriftConfig(correction="bh")):
        for seed, shift in ((20, 0.0), (21, 0.5)):
            shard = make(seed, 1000, shift=shift, cats=7)
            first = everything(compare(shard, reference, cfg))
            assert everything(compare(shard, reference, cfg)) == first
            assert everything(compare(shard, rebuilt, cfg)) == first
            assert everything(compare(shard, reference.copy(), cfg)) == first


def test_importance_weights_same_with_a_cold_cache(reference: Profile) -> None:
    data = batch(30, 1000, shift=0.7, cats=3)
    shard = Profile(FP, url="s").update(data)
    result = compare(shard, reference)
    assert result.drifted
    w = importance_weights(data, shard, reference, result)
    rebuilt = Profile.from_json(reference.to_json())
    np.testing.assert_array_equal(w, importance_weights(data, shard, rebuilt, result))


def test_a_mutated_reference_is_never_served_stale() -> None:
    """Updating or merging into a reference in place changes its results at once."""
    ref = make(40, 1500, parts=2, url="ref", cats=4)
    shard = make(41, 1000, shift=0.2, cats=4)
    before = everything(compare(shard, ref))
    for step in range(3):
        if step == 0:
            ref.update(batch(42, 700, shift=1.0, cats=6))
        elif step == 1:
            ref.merge(make(43, 900, shift=-0.5, cats=3))
        else:  # a categorical past its cap (a frequent-items sketch), mutated again
            ref.update(batch(44, 3000, cats=1500))
        after = everything(compare(shard, ref))
        assert after != before
        assert after == everything(compare(shard, Profile.from_json(ref.to_json())))
        before = after


def test_distinct_references_never_share_cache_entries() -> None:
    refs = [make(50 + i, 1000, parts=2, url=f"ref{i}", shift=0.2 * i) for i in range(3)]
    shard = make(60, 800, shift=0.1)
    fresh = [everything(compare(shard, Profile.from_json(r.to_json()))) for r in refs]
    assert len(set(fresh)) == 3
    for _ in range(2):
        for r, expected in zip(refs, fresh, strict=True):
            assert everything(compare(shard, r)) == expected


def test_reference_cache_goes_with_the_reference() -> None:
    ref = make(70, 600, url="ref")
    compare(make(71, 600), ref)
    q, c = ref.numeric("normal")[1], ref.categorical("cls")
    assert q in QUANTILE_REFERENCES and c in CATEGORY_REFERENCES
    size = len(QUANTILE_REFERENCES)
    del ref, q, c
    import gc

    gc.collect()
    assert len(QUANTILE_REFERENCES) < size


def test_categorical_query_helpers() -> None:
    exact = CategoricalCounts(cap=10).update(np.array(["a", "b", "a", None], dtype=object))
    sketched = CategoricalCounts(cap=4).update(
        np.array([f"k{i % 9}" for i in range(500)], dtype=object)
    )
    for c in (exact, sketched):
        assert c.counts_and_other() == (c.counts(), c.other)
    key = sketched.state_key()
    assert sketched.state_key() == key
    sketched.update(np.array(["k1"], dtype=object))
    assert sketched.state_key() != key


def test_p_values_equal_scipy_stats() -> None:
    for z in (0.0, -0.0, 1e-12, 0.3, -1.96, 5.0, 8.5, 37.0, 40.0, -60.0):
        assert fast.normal_p(z) == float(2.0 * stats.norm.sf(abs(z)))
    for x in (-1.0, 0.0, 1e-9, 0.05, 0.5, 1.0, 1.358, 3.0, 12.0):
        assert fast.kolmogorov_sf(x) == float(stats.kstwobign.sf(x))
    for df in (1, 2, 7, 150):
        for x in (0.0, 1e-6, 0.5, 3.84, 40.0, 1e4):
            assert fast.chi2_sf(x, df) == float(stats.chi2.sf(x, df))
    for x_s, n_s, x_r, n_r in ((3, 1000, 0, 20000), (0, 500, 40, 20000), (12, 1000, 90, 20000)):
        t = fast.rate_test(x_s, n_s, x_r, n_r)
        dist = stats.hypergeom(n_s + n_r, x_s + x_r, n_s)
        assert t.p == min(1.0, 2.0 * min(float(dist.cdf(x_s)), float(dist.sf(x_s - 1))))


def test_js_distance_equals_scipy() -> None:
    g = np.random.default_rng(2)
    for _ in range(500):
        n = int(g.integers(2, 40))
        p, q = g.random(n) * (g.random(n) < 0.8), g.random(n) * (g.random(n) < 0.8)
        p[0] = q[0] = 1.0  # never all zero
        assert fast.js_distance(p, q) == float(jensenshannon(p, q, base=2))
