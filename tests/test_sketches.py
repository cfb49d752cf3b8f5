"""Sketch conformance suite: every registered kind opts into ``SketchContract``."""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from typing import Any, ClassVar

import datasketches as ds
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloader.errors import IncompatibleSketchError, ProfileFormatError
from driftloader.sketches import (
    SKETCHES,
    CategoricalCounts,
    HashedTokens,
    Moments,
    Quantiles,
    Reservoir,
    Sketch,
    bigram_hash,
    register_sketch,
    sketch_from_dict,
    token_hash,
)
from driftloader.sketches.encoding import encode_array
from driftloader.sketches.reservoir import float32_values

# The contract's tests run on every subclass (one executor per kind), by design.
_OK = [HealthCheck.differing_executors]
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=_OK)
FEW = settings(max_examples=5, deadline=None, suppress_health_check=_OK)


def json_round_trip(sketch: Sketch) -> Sketch:
    return sketch_from_dict(json.loads(json.dumps(sketch.to_dict(), allow_nan=False)))


class SketchContract:
    """Laws every sketch kind must satisfy. Subclasses give data, construction and checks."""

    sketch_cls: ClassVar[type[Sketch]]
    data: ClassVar[st.SearchStrategy]  # a strategy for one batch of input

    def make(self) -> Sketch:
        return self.sketch_cls()

    def make_incompatible(self) -> Sketch:
        """A sketch of the same kind whose parameters differ."""
        raise NotImplementedError

    def concat(self, a: Any, b: Any) -> Any:
        return np.concatenate([a, b])

    def sketch(self, *batches: Any) -> Sketch:
        sk = self.make()
        for batch in batches:
            sk.update(batch)
        return sk

    def assert_equivalent(self, a: Sketch, b: Sketch) -> None:
        """Same answers (exactly, or within the sketch's error bound)."""
        assert a.to_dict() == b.to_dict()

    def assert_same_answers(self, a: Sketch, b: Sketch) -> None:
        """Exactly the same state (a JSON round trip must lose nothing)."""
        assert a.to_dict() == b.to_dict()

    def check_exact(self, sk: Sketch, data: Any) -> None:
        """Compare the sketch's answers with an exact computation over ``data``."""
        raise NotImplementedError

    # -- the laws ------------------------------------------------------------------------------

    @SETTINGS
    @given(data=st.data())
    def test_matches_exact(self, data: st.DataObject) -> None:
        a, b = data.draw(self.data), data.draw(self.data)
        sk = self.sketch(a, b)
        assert sk.n == len(a) + len(b)
        self.check_exact(sk, self.concat(a, b))

    @SETTINGS
    @given(data=st.data())
    def test_json_round_trip(self, data: st.DataObject) -> None:
        sk = self.sketch(data.draw(self.data))
        back = json_round_trip(sk)
        assert type(back) is type(sk)
        self.assert_same_answers(back, sk)
        self.assert_equivalent(back, sk)

    @SETTINGS
    @given(data=st.data())
    def test_merge_with_empty_is_noop(self, data: st.DataObject) -> None:
        sk = self.sketch(data.draw(self.data))
        before = sk.to_dict()
        assert sk.merge(self.make()) is sk
        assert sk.to_dict() == before
        self.assert_equivalent(self.make().merge(sk), sk)

    @SETTINGS
    @given(data=st.data())
    def test_merge_commutative(self, data: st.DataObject) -> None:
        a, b = data.draw(self.data), data.draw(self.data)
        self.assert_equivalent(
            self.sketch(a).merge(self.sketch(b)), self.sketch(b).merge(self.sketch(a))
        )

    @SETTINGS
    @given(data=st.data())
    def test_merge_associative(self, data: st.DataObject) -> None:
        a, b, c = (data.draw(self.data) for _ in range(3))
        left = self.sketch(a).merge(self.sketch(b)).merge(self.sketch(c))
        right = self.sketch(a).merge(self.sketch(b).merge(self.sketch(c)))
        self.assert_equivalent(left, right)

    @SETTINGS
    @given(data=st.data())
    def test_merge_equals_union(self, data: st.DataObject) -> None:
        a, b = data.draw(self.data), data.draw(self.data)
        merged = self.sketch(a).merge(self.sketch(b))
        union = self.concat(a, b)
        assert merged.n == self.sketch(union).n
        self.check_exact(merged, union)

    @SETTINGS
    @given(data=st.data())
    def test_merge_many_equals_merge(self, data: st.DataObject) -> None:
        parts = [data.draw(self.data) for _ in range(3)]
        one_by_one = self.make()
        for p in parts:
            one_by_one.merge(self.sketch(p))
        many = self.sketch(parts[0]).merge_many([self.sketch(p) for p in parts[1:]])
        self.assert_equivalent(one_by_one, many)

    @FEW
    @given(data=st.data())
    def test_copy_is_independent(self, data: st.DataObject) -> None:
        sk = self.sketch(data.draw(self.data))
        dup = sk.copy()
        before = dup.to_dict()
        sk.merge(self.sketch(data.draw(self.data)))
        assert dup.to_dict() == before

    def test_registered(self) -> None:
        assert SKETCHES[self.sketch_cls.kind] is self.sketch_cls

    @FEW
    @given(data=st.data())
    def test_incompatible_merges_raise(self, data: st.DataObject) -> None:
        sk = self.sketch(data.draw(self.data))
        other_kind = Moments() if self.sketch_cls is not Moments else Quantiles()
        with pytest.raises(IncompatibleSketchError, match=self.sketch_cls.kind):
            sk.merge(other_kind)
        with pytest.raises(IncompatibleSketchError):
            sk.merge(self.make_incompatible())

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda d: [],
            lambda d: {**d, "kind": "nope"},
            lambda d: {**d, "format": 99},
            lambda d: {k: v for k, v in d.items() if k not in ("n", "seen")},
            lambda d: {**d, "params": "k=3"},
            lambda d: {**d, ("n" if "n" in d else "seen"): -1},
        ],
    )
    @FEW
    @given(data=st.data())
    def test_from_dict_rejects_garbage(self, mutate: Any, data: st.DataObject) -> None:
        good = self.sketch(data.draw(self.data)).to_dict()
        with pytest.raises(ProfileFormatError):
            self.sketch_cls.from_dict(mutate(good))
        with pytest.raises(ProfileFormatError):
            sketch_from_dict(mutate(good))


# ---------------------------------------------------------------------------------------------
# numeric data

_SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, None])
_NUMBERS = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), _SPECIAL), min_size=0, max_size=60
)


def masked(values: list) -> np.ma.MaskedArray:
    data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.ma.masked_array(data, mask=[v is None for v in values])


def finite(batch: np.ma.MaskedArray) -> np.ndarray:
    data = batch.compressed()
    return data[np.isfinite(data)]


class TestMoments(SketchContract):
    sketch_cls = Moments
    data = _NUMBERS.map(masked)

    def concat(self, a: Any, b: Any) -> Any:
        return np.ma.concatenate([a, b])

    def make_incompatible(self) -> Sketch:
        return Quantiles()  # Moments has no parameters; another kind is the only mismatch

    def assert_equivalent(self, a: Sketch, b: Sketch) -> None:
        for key in ("n", "count", "missing", "nan", "posinf", "neginf", "min", "max"):
            assert getattr(a, key) == getattr(b, key), key
        for key in ("mean", "var"):
            assert getattr(a, key) == pytest.approx(
                getattr(b, key), rel=1e-9, abs=1e-6, nan_ok=True
            )

    def check_exact(self, sk: Sketch, data: Any) -> None:
        raw = data.compressed()
        x = finite(data)
        assert (sk.missing, sk.count) == (int(data.mask.sum()), x.size)
        assert (sk.nan, sk.posinf, sk.neginf) == (
            int(np.isnan(raw).sum()),
            int(np.isposinf(raw).sum()),
            int(np.isneginf(raw).sum()),
        )
        if not x.size:
            assert sk.min is None and sk.max is None and math.isnan(sk.mean)
            return
        assert (sk.min, sk.max) == (x.min(), x.max())
        assert sk.mean == pytest.approx(x.mean(), rel=1e-9, abs=1e-6)
        assert sk.var == pytest.approx(x.var(), rel=1e-9, abs=1e-6)
        assert sk.std == pytest.approx(x.std(), rel=1e-9, abs=1e-6)
        if x.size > 1:
            assert sk.sample_var == pytest.approx(x.var(ddof=1), rel=1e-9, abs=1e-6)

    def test_large_offset_is_accurate(self) -> None:
        rng = np.random.default_rng(1)
        x = 1e9 + rng.standard_normal(100_000)
        parts = np.array_split(x, 7)
        streamed = Moments()
        for p in parts:
            streamed.update(p)
        merged = Moments().merge_many([Moments().update(p) for p in parts])
        noise = x - 1e9
        for sk in (streamed, merged):
            assert sk.var == pytest.approx(noise.var(), rel=1e-6)
            assert sk.mean - 1e9 == pytest.approx(noise.mean(), abs=1e-6)

    def test_counts_nan_inf_and_missing(self) -> None:
        batch = np.ma.masked_array(
            [1.0, np.nan, np.inf, -np.inf, 3.0, 7.0], mask=[0, 0, 0, 0, 0, 1]
        )
        sk = Moments().update(batch)
        assert (sk.n, sk.count, sk.nan, sk.posinf, sk.neginf, sk.missing) == (6, 2, 1, 1, 1, 1)
        assert (sk.mean, sk.var, sk.min, sk.max) == (2.0, 1.0, 1.0, 3.0)
        json.dumps(sk.to_dict(), allow_nan=False)

    def test_empty(self) -> None:
        sk = Moments()
        assert sk.n == 0 and sk.min is None and math.isnan(sk.var)
        json.dumps(sk.to_dict(), allow_nan=False)

    def test_overflowing_squares_stay_json_safe(self) -> None:
        sk = Moments().update(np.array([-1e300, 1e300]))
        back = json_round_trip(sk)
        assert back.var == sk.var == math.inf

    def test_a_batch_gives_numpys_two_pass_mean_and_m2_bit_for_bit(self) -> None:
        rng = np.random.default_rng(5)
        for n in (1, 2, 7, 8, 9, 255, 256, 1000):
            for scale in (1e-3, 1.0, 1e9, 1e99, 1e120, 1e160):
                x = rng.standard_normal(n) * scale + scale
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # and no overflow warning, however large
                    sk = Moments().update(x)
                mean = float(x[0] + (x - x[0]).mean())
                with np.errstate(over="ignore"):
                    m2 = float(np.square(x - mean).sum())
                assert (sk.mean, sk._m2, sk.min, sk.max) == (mean, m2, x.min(), x.max())


# ---------------------------------------------------------------------------------------------
# quantiles


class TestQuantiles(SketchContract):
    sketch_cls = Quantiles
    data = st.lists(st.one_of(st.floats(-1e3, 1e3, width=32), _SPECIAL), max_size=800).map(masked)

    def make(self) -> Sketch:
        return Quantiles(k=64)  # small k so hypothesis data reaches estimation mode

    def make_incompatible(self) -> Sketch:
        return Quantiles(k=128)

    def concat(self, a: Any, b: Any) -> Any:
        return np.ma.concatenate([a, b])

    def assert_equivalent(self, a: Sketch, b: Sketch) -> None:
        assert (a.n, a.count, a.min, a.max) == (b.n, b.count, b.min, b.max)
        if a.count:
            grid = np.linspace(a.min, a.max, 25)
            tol = a.rank_error + b.rank_error
            assert np.all(np.abs(a.cdf(grid) - b.cdf(grid)) <= tol)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        x = finite(data).astype(np.float32).astype(np.float64)
        assert sk.count == x.size
        if not x.size:
            assert np.isnan(sk.quantile([0.5])).all() and sk.min is None
            return
        assert (sk.min, sk.max) == (x.min(), x.max())
        qs = np.linspace(0, 1, 21)
        ranks = np.searchsorted(np.sort(x), sk.quantile(qs), side="right") / x.size
        lower = np.searchsorted(np.sort(x), sk.quantile(qs), side="left") / x.size
        tol = 1.5 * sk.rank_error + 1.0 / x.size  # the bound holds with 99% confidence
        assert np.all((ranks >= qs - tol) & (lower <= qs + tol))
        points = np.unique(x)[:: max(1, x.size // 30)]
        exact_cdf = np.searchsorted(np.sort(x), points, side="right") / x.size
        assert np.all(np.abs(sk.cdf(points) - exact_cdf) <= 1.5 * sk.rank_error)

    def test_rank_error_at_default_k_on_large_stream(self) -> None:
        rng = np.random.default_rng(7)
        x = rng.lognormal(0, 1, 200_000)
        sk = Quantiles()
        for p in np.array_split(x, 20):
            sk.update(p)
        qs = np.linspace(0.01, 0.99, 99)
        exact = (
            np.searchsorted(np.sort(x.astype(np.float32)), sk.quantile(qs), side="right") / x.size
        )
        assert np.abs(exact - qs).max() <= 0.01
        assert sk.rank_error <= 0.01

    def test_cdf_is_vectorised_and_keeps_shape(self) -> None:
        sk = Quantiles().update(np.arange(10.0))
        out = sk.cdf(np.array([[4.0, np.nan], [np.inf, -np.inf]]))
        assert out.shape == (2, 2)
        assert out[0, 0] == pytest.approx(0.5) and np.isnan(out[0, 1])
        assert (out[1, 0], out[1, 1]) == (1.0, 0.0)
        assert sk.cdf([3.0, 3.0, 1.0]).tolist() == pytest.approx([0.4, 0.4, 0.2])

    def test_ignores_non_finite_but_counts_them_in_n(self) -> None:
        sk = Quantiles().update(np.ma.masked_array([1.0, np.nan, np.inf, 2.0], mask=[0, 0, 0, 1]))
        assert (sk.n, sk.count) == (4, 1)

    def test_bad_ranks_and_k(self) -> None:
        with pytest.raises(ValueError, match="1.5"):
            Quantiles().update(np.ones(3)).quantile([1.5])
        with pytest.raises(ValueError, match="k"):
            Quantiles(k=2)

    def test_serialized_size_is_bounded(self) -> None:
        rng = np.random.default_rng(3)
        q, m = Quantiles(), Moments()
        for _ in range(10):
            chunk = rng.standard_normal(100_000)
            q.update(chunk)
            m.update(chunk)
        assert len(json.dumps([q.to_dict(), m.to_dict()])) <= 8192

    def test_bad_base64_raises_format_error(self) -> None:
        d = Quantiles().update(np.ones(3)).to_dict()
        with pytest.raises(ProfileFormatError):
            Quantiles.from_dict({**d, "sketch": "%%%"})
        with pytest.raises(ProfileFormatError):
            Quantiles.from_dict({**d, "sketch": "AAAA"})


# ---------------------------------------------------------------------------------------------
# categorical counts

_WORDS = st.sampled_from(["a", "b", "c", "dd", "é", "", None])


def objects(values: list) -> np.ndarray:
    return np.array(values, dtype=object)


class TestCategoricalExact(SketchContract):
    sketch_cls = CategoricalCounts
    data = st.lists(_WORDS, max_size=50).map(objects)

    def make_incompatible(self) -> Sketch:
        return CategoricalCounts(cap=7)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        truth = Counter(v for v in data.tolist() if v is not None)
        assert sk.exact and sk.counts() == dict(truth)
        assert sk.missing == sum(v is None for v in data.tolist())
        assert (sk.other, sk.distinct) == (0, float(len(truth)))


class TestCategoricalCapped(SketchContract):
    sketch_cls = CategoricalCounts
    data = st.lists(st.one_of(st.none(), st.integers(0, 40).map(str)), max_size=80).map(objects)

    def make(self) -> Sketch:
        return CategoricalCounts(cap=4)

    def make_incompatible(self) -> Sketch:
        return CategoricalCounts(cap=1024)

    def assert_same_answers(self, a: Sketch, b: Sketch) -> None:
        # the frequent-items blob is not canonical (hash-map order), its answers are
        assert (a.n, a.missing, a.exact, a.other, a.distinct) == (
            b.n,
            b.missing,
            b.exact,
            b.other,
            b.distinct,
        )
        assert a.counts() == b.counts()

    def assert_equivalent(self, a: Sketch, b: Sketch) -> None:
        assert (a.n, a.missing, a.exact) == (b.n, b.missing, b.exact)
        if a.exact:
            assert a.counts() == b.counts()
        else:
            assert a.distinct == pytest.approx(b.distinct, rel=0.05, abs=1)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        truth = Counter(v for v in data.tolist() if v is not None)
        present = sum(truth.values())
        counts = sk.counts()
        assert sum(counts.values()) + sk.other == present == sk.n - sk.missing
        assert sk.exact == (len(truth) <= 4)
        assert len(counts) <= 4
        eps = ds.frequent_strings_sketch.get_epsilon_for_lg_size(3)
        for key, c in counts.items():
            assert 0 <= truth[key] - c <= eps * present + 1
        assert sk.distinct == pytest.approx(len(truth), rel=0.05, abs=1)

    def test_switches_past_cap_and_keeps_heavy_hitters(self) -> None:
        values = ["hot"] * 500 + [f"v{i}" for i in range(2000)] + [None] * 3
        sk = CategoricalCounts(cap=16).update(objects(values))
        assert not sk.exact and sk.missing == 3 and sk.n == 2503
        assert (
            sk.counts()["hot"] >= 500 - ds.frequent_strings_sketch.get_epsilon_for_lg_size(5) * 2500
        )
        assert sk.distinct == pytest.approx(2001, rel=0.05)
        back = json_round_trip(sk)
        assert back.counts() == sk.counts() and back.distinct == sk.distinct

    def test_exact_merge_past_cap_switches(self) -> None:
        a = CategoricalCounts(cap=3).update(objects(["a", "b", "c"]))
        b = CategoricalCounts(cap=3).update(objects(["d", "a"]))
        assert a.exact and b.exact
        merged = a.merge(b)
        assert not merged.exact and merged.counts()["a"] == 2 and merged.n == 5

    def test_accepts_unicode_arrays_and_mixed_types(self) -> None:
        assert CategoricalCounts().update(np.array(["x", "y", "x"])).counts() == {"x": 2, "y": 1}
        assert CategoricalCounts().update(objects(["1", 1, None])).counts() == {"1": 2}

    def test_bad_cap(self) -> None:
        with pytest.raises(ValueError, match="0"):
            CategoricalCounts(cap=0)


# ---------------------------------------------------------------------------------------------
# hashed tokens

_TEXTS = st.lists(
    st.one_of(st.none(), st.text(alphabet="ab cD,é1_-\n", max_size=30)), max_size=30
).map(objects)


def reference_token_counts(texts: list, buckets: int, ngrams: int) -> np.ndarray:
    """A slow, obviously correct reference: per document, per token."""
    counts = np.zeros(buckets, dtype=np.int64)
    for text in texts:
        if text is None:
            continue
        hashes = [token_hash(t) for t in re.findall(r"\w+", text.lower())]
        for h in hashes:
            counts[h % buckets] += 1
        if ngrams == 2:
            for h1, h2 in zip(hashes, hashes[1:]):  # noqa: B905
                counts[int(bigram_hash(np.array([h1]), np.array([h2]))[0]) % buckets] += 1
    return counts


class TestHashedTokens(SketchContract):
    sketch_cls = HashedTokens
    data = _TEXTS

    def make(self) -> Sketch:
        return HashedTokens(buckets=64, ngrams=2)

    def make_incompatible(self) -> Sketch:
        return HashedTokens(buckets=64, ngrams=1)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        texts = data.tolist()
        assert np.array_equal(sk.counts, reference_token_counts(texts, 64, 2))
        assert sk.docs == sum(t is not None for t in texts)
        assert sk.missing == sum(t is None for t in texts)
        assert sk.tokens == sum(len(re.findall(r"\w+", t.lower())) for t in texts if t is not None)


class TestHashedUnigrams(TestHashedTokens):
    def make(self) -> Sketch:
        return HashedTokens(buckets=4096)

    def make_incompatible(self) -> Sketch:
        return HashedTokens(buckets=1024)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        assert np.array_equal(sk.counts, reference_token_counts(data.tolist(), 4096, 1))
        assert sk.counts.sum() == sk.tokens

    def test_hash_is_stable_across_processes(self) -> None:
        # pinned values: changing the hash silently breaks every stored token profile
        assert token_hash("hello") == 9022087748821825191
        assert int(bigram_hash(np.array([1]), np.array([2]))[0]) == 17777092870885729523

    def test_counts_stored_sparse_or_dense_and_format_1_loads(self) -> None:
        few = HashedTokens(4096).update(objects(["one two two three"]))
        many = HashedTokens(8).update(objects([" ".join(f"w{i}" for i in range(300))]))
        assert few.to_dict()["buckets_used"]["dtype"] == "<u2" and "counts" not in few.to_dict()
        assert many.to_dict()["counts"]["dtype"] == "<u1"
        for sk in (few, many):
            assert np.array_equal(json_round_trip(sk).counts, sk.counts)
            nz = np.flatnonzero(sk.counts)
            old = {
                **{k: v for k, v in sk.to_dict().items() if k != "counts"},
                "format": 1,
                "buckets_used": nz.tolist(),
                "bucket_counts": sk.counts[nz].tolist(),
            }
            assert np.array_equal(HashedTokens.from_dict(old).counts, sk.counts)
        with pytest.raises(ProfileFormatError):
            HashedTokens.from_dict({**many.to_dict(), "counts": few.to_dict()["bucket_counts"]})

    def test_case_and_punctuation(self) -> None:
        a = HashedTokens().update(objects(["Hello, WORLD!"]))
        b = HashedTokens().update(objects(["hello world"]))
        assert np.array_equal(a.counts, b.counts) and a.tokens == 2

    def test_bigrams_do_not_span_documents(self) -> None:
        split = HashedTokens(64, 2).update(objects(["a", "b"]))
        joined = HashedTokens(64, 2).update(objects(["a b"]))
        assert split.counts.sum() == 2 and joined.counts.sum() == 3

    @given(
        st.lists(st.one_of(st.none(), st.text(alphabet="ab cD,\x00é1İ", max_size=20)), max_size=20),
        st.sampled_from([1, 2]),
    )
    def test_document_buckets_split_the_counts_by_document(self, texts, ngrams) -> None:
        docs = objects(texts)
        doc, bucket = HashedTokens(64, ngrams).document_buckets(docs)
        total = HashedTokens(64, ngrams).update(docs).counts
        assert np.array_equal(np.bincount(bucket, minlength=64), total)
        for i, text in enumerate(texts):  # each document's share is its own counts
            own = HashedTokens(64, ngrams).update(docs[i : i + 1]).counts
            assert np.array_equal(np.bincount(bucket[doc == i], minlength=64), own), text


# ---------------------------------------------------------------------------------------------
# reservoir

_ROWS = st.integers(0, 120).flatmap(
    lambda n: st.lists(
        st.lists(st.one_of(st.floats(-100, 100), st.just(math.nan)), min_size=3, max_size=3),
        min_size=n,
        max_size=n,
    )
)


def rows(values: list) -> np.ndarray:
    return np.array(values, dtype=np.float64).reshape(-1, 3)


def row_keys(x: np.ndarray) -> set[bytes]:
    clean = np.where(np.isnan(x), np.nan, x) + 0.0
    return {r.tobytes() for r in np.ascontiguousarray(clean)}


class TestReservoir(SketchContract):
    sketch_cls = Reservoir
    data = _ROWS.map(rows)

    def make(self) -> Sketch:
        return Reservoir(k=16, seed=3)

    def make_incompatible(self) -> Sketch:
        return Reservoir(k=16, seed=4)

    def assert_equivalent(self, a: Sketch, b: Sketch) -> None:
        assert a.seen == b.seen and a.rows.shape == b.rows.shape
        np.testing.assert_array_equal(a.rows, b.rows)

    def check_exact(self, sk: Sketch, data: Any) -> None:
        assert sk.seen == len(data)
        assert sk.rows.shape[0] == min(16, len(data))
        assert row_keys(sk.rows) <= row_keys(float32_values(data))  # rounded on entry
        assert np.all(np.diff(sk.priorities) >= 0)

    def test_merge_equals_union(self) -> None:  # type: ignore[override]
        # bottom-k of the union, not the same rows (priorities depend on the stream index)
        super().test_merge_equals_union()

    def test_uniform_inclusion(self) -> None:
        n, k, trials = 1000, 50, 200
        hits = np.zeros(n)
        for seed in range(trials):
            sk = Reservoir(k=k, seed=seed)
            for part in np.array_split(np.arange(n, dtype=np.float64).reshape(-1, 1), 4):
                sk.merge(Reservoir(k=k, seed=seed).update(part))
            hits[sk.rows[:, 0].astype(int)] += 1
        per_decile = hits.reshape(10, -1).sum(axis=1) / (trials * k)
        assert np.all(np.abs(per_decile - 0.1) < 0.02)

    def test_reproducible(self) -> None:
        x = np.random.default_rng(0).standard_normal((500, 2))
        a, b = Reservoir(8, seed=1).update(x), Reservoir(8, seed=1).update(x)
        np.testing.assert_array_equal(a.rows, b.rows)
        assert not np.array_equal(a.rows, Reservoir(8, seed=2).update(x).rows)

    def test_duplicate_rows_are_independent(self) -> None:
        sk = Reservoir(k=10).update(np.zeros((1000, 1)))
        assert len(set(sk.priorities.tolist())) == 10

    def test_width_mismatch(self) -> None:
        a = Reservoir(4).update(np.ones((5, 2)))
        with pytest.raises(IncompatibleSketchError, match="width"):
            a.merge(Reservoir(4).update(np.ones((5, 3))))
        with pytest.raises(ValueError, match="columns"):
            a.update(np.ones((2, 3)))
        with pytest.raises(ValueError, match="2-D"):
            a.update(np.ones(3))

    def test_non_finite_json(self) -> None:
        sk = Reservoir(4).update(np.array([[np.nan, np.inf, -np.inf]]))
        back = json_round_trip(sk)
        np.testing.assert_array_equal(back.rows, sk.rows)

    def test_bad_rows_raise(self) -> None:
        d = format_1(Reservoir(4).update(np.ones((2, 2))))
        cells = ("x", "nan", True, {"v": 1}, [1.0], 10**400)
        for bad in (*([[1.0, c], [1.0, 2.0]] for c in cells), [[1.0]], "rows"):
            with pytest.raises(ProfileFormatError):
                Reservoir.from_dict({**d, "rows": bad})
        good = Reservoir(4).update(np.ones((2, 2))).to_dict()
        rows = good["rows"]
        for bad in (
            [[1.0, 1.0], [1.0, 1.0]],  # format 1 rows in a format 2 sketch
            {**rows, "dtype": "|O"},
            {**rows, "dtype": "<i8"},
            {**rows, "shape": [2, 3]},
            {**rows, "shape": [2, -2]},
            {**rows, "data": rows["data"] + "AAAA"},
            {**rows, "extra": 1},
        ):
            with pytest.raises(ProfileFormatError):
                Reservoir.from_dict({**good, "rows": bad})

    def test_format_1_still_loads(self) -> None:
        sk = Reservoir(4, seed=2).update(np.array([[np.nan, np.inf, -np.inf], [1.5, 2.0, 3.0]]))
        old = Reservoir.from_dict(format_1(sk))
        np.testing.assert_array_equal(old.rows, sk.rows)
        np.testing.assert_array_equal(old.priorities, sk.priorities)
        assert old.to_dict() == sk.to_dict() and old.to_dict()["format"] == 2

    def test_rows_are_kept_and_stored_as_float32_values(self) -> None:
        big = float(np.finfo(np.float32).max)
        x = np.array([[0.0, 0.1, 1e300], [1.0, np.nan, -1e300], [2.0, 2.0**100, -np.inf]])
        sk = Reservoir(8).update(x)
        order = sk.rows[:, 0].astype(int)  # rows are sorted by priority
        expected = np.array(
            [[0.0, float(np.float32(0.1)), big], [1.0, np.nan, -big], [2.0, 2.0**100, -np.inf]]
        )
        np.testing.assert_array_equal(sk.rows, expected[order])  # saturated, not infinite
        assert sk.to_dict()["rows"]["dtype"] == "<f4"
        back = json_round_trip(sk)
        assert back.to_dict() == sk.to_dict()
        np.testing.assert_array_equal(back.rows, sk.rows)
        assert back.rows.dtype == np.float64 and back.rows.flags.writeable

    def test_float64_rows_stored_before_rounding_load_rounded(self) -> None:
        """Reservoirs written when rows were kept as float64 (format 2 with "<f8" rows, and
        format 1) load with their rows rounded: the same sketch as one made today."""
        x = np.random.default_rng(7).standard_normal((6, 2))
        x[:, 0] = np.arange(6)
        sk = Reservoir(4, seed=5).update(x)
        unrounded = x[sk.rows[:, 0].astype(int)]  # the rows as they were kept before
        np.testing.assert_array_equal(float32_values(unrounded), sk.rows)
        assert not np.array_equal(unrounded, sk.rows)
        old_2 = {**sk.to_dict(), "rows": encode_array(unrounded, "<f8")}
        old_1 = format_1(sk)
        old_1["rows"] = unrounded.tolist()
        later = np.random.default_rng(8).standard_normal((6, 2))
        merged = sk.copy().merge(Reservoir(4, seed=5).update(later)).to_dict()
        for old in (Reservoir.from_dict(old_2), Reservoir.from_dict(old_1)):
            np.testing.assert_array_equal(old.rows, sk.rows)
            assert old.to_dict() == sk.to_dict()
            assert old.merge(Reservoir(4, seed=5).update(later)).to_dict() == merged
        undecoded = Reservoir.from_dict(old_2)
        assert undecoded.to_dict()["rows"]["dtype"] == "<f4"  # written again as float32


def format_1(sk: Reservoir) -> dict:
    """The format-1 dict (rows as JSON numbers) of reservoir ``sk``, as driftloader wrote it
    before typed arrays."""
    rows = sk.rows.astype(object)
    rows[np.isnan(sk.rows)] = None
    rows[np.isposinf(sk.rows)] = "inf"
    rows[np.isneginf(sk.rows)] = "-inf"
    return {
        "kind": "reservoir",
        "format": 1,
        "params": sk.params(),
        "seen": sk.seen,
        "width": sk.width,
        "rows": rows.tolist(),
        "priorities": sk.priorities.tolist(),
    }


# ---------------------------------------------------------------------------------------------
# registry


def test_every_registered_kind_has_a_contract_suite() -> None:
    covered = {cls.sketch_cls for cls in SketchContract.__subclasses__()}
    assert set(SKETCHES.values()) <= covered


def test_registry_refuses_duplicates_and_unknown_kinds() -> None:
    class Fake(Moments):
        kind = "moments"

    with pytest.raises(ValueError, match="moments"):
        register_sketch(Fake)
    with pytest.raises(ProfileFormatError, match="os.system"):
        sketch_from_dict({"kind": "os.system", "format": 1})
    with pytest.raises(ProfileFormatError):
        sketch_from_dict("moments")
