"""Tests of drift.compare, multiple-testing control and importance weights (fast, real profiles)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from driftloader.drift import (
    DriftConfig,
    ShardDrift,
    adjust_pvalues,
    compare,
    effective_sample_size,
    importance_weights,
    rejection_cut,
)
from driftloader.errors import FingerprintMismatch
from driftloader.features import Column, FeatureBatch
from driftloader.profile import Profile

FP = "test-featurizer"
CLASSES = np.array([f"c{i}" for i in range(10)], dtype=object)
VOCAB = np.array([f"w{i:04d}" for i in range(500)], dtype=object)
ZIPF = 1.0 / np.arange(1, 501)
ZIPF /= ZIPF.sum()


def make_batch(
    g: np.random.Generator,
    n: int,
    shift: float = 0.0,
    nan_rate: float = 0.0,
    class_p: np.ndarray | None = None,
    word_p: np.ndarray | None = None,
) -> FeatureBatch:
    """Three numeric features (normal, lognormal, poisson), a 10-class category and a text."""
    a = g.standard_normal(n)
    b = g.normal(5.0, 2.0, n) + shift * 2.0
    b = np.where(g.random(n) < nan_rate, np.nan, b)
    c = g.poisson(3.0, n).astype(np.float64)
    cls = CLASSES[g.choice(10, size=n, p=np.full(10, 0.1) if class_p is None else class_p)]
    lengths = 1 + g.poisson(9, n)
    ids = g.choice(VOCAB.size, size=int(lengths.sum()), p=ZIPF if word_p is None else word_p)
    docs = np.split(VOCAB[ids], np.cumsum(lengths)[:-1])
    texts = np.array([" ".join(d) for d in docs], dtype=object)
    return {
        "a": Column("numeric", np.ma.masked_array(a)),
        "b": Column("numeric", np.ma.masked_array(b)),
        "c": Column("numeric", np.ma.masked_array(c)),
        "cls": Column("categorical", cls),
        "txt.tokens": Column("tokens", texts),
    }


def profile(batch: FeatureBatch, url: str = "shard", fingerprint: str = FP) -> Profile:
    return Profile(fingerprint, url=url, version="v1").update(batch)


@pytest.fixture(scope="module")
def reference() -> Profile:
    """A reference of 20,000 in-distribution samples."""
    return profile(make_batch(np.random.default_rng(1), 20_000), url="ref")


def shard(seed: int, n: int = 1000, **kwargs) -> tuple[FeatureBatch, Profile]:
    batch = make_batch(np.random.default_rng(seed), n, **kwargs)
    return batch, profile(batch, url=f"shard-{seed}")


def test_identical_distribution_not_flagged(reference: Profile) -> None:
    for seed in range(100, 106):
        result = compare(shard(seed)[1], reference)
        assert not result.drifted, result.top(3)
        assert result.score < 1.0
        assert not result.schema


def test_clear_shift_flagged_with_right_top_feature(reference: Profile) -> None:
    result = compare(shard(7, shift=0.5)[1], reference)
    assert result.drifted
    top = result.top(1)[0]
    assert (top.name, top.kind) == ("b", "numeric") and top.metric in ("mean", "ks")
    assert top.effect == pytest.approx(0.5, abs=0.1)  # |shift| / std, or W1 / std
    assert top.p_value <= 0.01
    assert result.score >= 1.0
    assert [f.name for f in result.features if f.drifted] == ["b"]


def test_quarter_sigma_shift_at_1000_flagged(reference: Profile) -> None:
    assert all(compare(shard(s, shift=0.25)[1], reference).drifted for s in range(20, 25))


def test_large_shard_negligible_shift_not_flagged(reference: Profile) -> None:
    result = compare(shard(8, n=50_000, shift=0.05)[1], reference)
    mean = next(f for f in result.features if f.name == "b").detail["tests"]["mean"]
    assert mean["p_adjusted"] < 0.01  # significant, so only the effect floor keeps it unflagged
    assert mean["effect"] < DriftConfig().mean_floor
    assert not result.drifted


def test_nan_rate_flagged(reference: Profile) -> None:
    result = compare(shard(9, nan_rate=0.01)[1], reference)
    assert result.drifted
    top = result.top(1)[0]
    assert (top.name, top.metric) == ("b", "nan")
    assert top.value == pytest.approx(0.01, abs=0.006)


def test_few_nans_not_flagged(reference: Profile) -> None:
    batch, _ = shard(10)
    values = batch["b"].values.copy()
    values[:2] = np.nan
    assert not compare(profile({**batch, "b": Column("numeric", values)}), reference).drifted


def test_categorical_shift_flagged_and_unseen_reported(reference: Profile) -> None:
    p = np.full(10, 0.83 / 9)
    p[3] = 0.17
    batch, _ = shard(11, class_p=p)
    cls = batch["cls"].values.copy()
    cls[:5] = "never-seen"
    result = compare(profile({**batch, "cls": Column("categorical", cls)}), reference)
    top = result.top(1)[0]
    assert result.drifted and (top.name, top.metric) == ("cls", "chi2")
    assert top.effect >= DriftConfig().chi2_floor
    chi2 = top.detail["tests"]["chi2"]
    assert chi2["unseen"] == {"never-seen": 5}
    assert chi2["unseen_rate"] == pytest.approx(0.005)


def test_token_shift_flagged(reference: Profile) -> None:
    word_p = ZIPF.copy()
    word_p[np.arange(4, 50, 5)] *= 2
    word_p /= word_p.sum()
    result = compare(shard(12, word_p=word_p)[1], reference)
    top = result.top(1)[0]
    assert result.drifted and (top.name, top.metric) == ("txt.tokens", "tokens")


def test_schema_drift_flagged_not_a_crash(reference: Profile) -> None:
    batch, _ = shard(13)
    del batch["c"]
    batch["extra"] = Column("numeric", np.ma.masked_array(np.ones(1000)))
    result = compare(profile(batch), reference)
    assert result.drifted and result.score >= 1.0
    assert result.schema == {"missing": ["c"], "new": ["extra"]}
    assert {(f.name, f.metric) for f in result.features if f.drifted} == {
        ("c", "schema"),
        ("extra", "schema"),
    }
    json.dumps(result.to_dict(), allow_nan=False)


def test_fingerprint_mismatch_raises(reference: Profile) -> None:
    other = profile(make_batch(np.random.default_rng(14), 200), fingerprint="other-featurizer")
    with pytest.raises(FingerprintMismatch, match="featurized"):
        compare(other, reference)


def test_adjust_pvalues_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # BH: sorted 0.005, 0.01, 0.03, 0.04 -> x4/rank: 0.02, 0.02, 0.04, 0.04 -> running min from top
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_pvalues([0.5, 0.9], "bonferroni"), [1.0, 1.0])
    assert adjust_pvalues([], "bh").size == 0
    with pytest.raises(ValueError, match="holm"):
        adjust_pvalues(p, "holm")  # type: ignore[arg-type]


def test_bh_matches_scipy() -> None:
    p = np.random.default_rng(0).random(50) ** 3
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), stats.false_discovery_control(p))


def test_ks_from_sketches_matches_exact(reference: Profile) -> None:
    batch, prof = shard(15, shift=0.3)
    ks = next(f for f in compare(prof, reference).features if f.name == "b").detail["tests"]["ks"]
    ref_b = make_batch(np.random.default_rng(1), 20_000)["b"].values.data
    exact = stats.ks_2samp(batch["b"].values.data, ref_b).statistic
    assert ks["value"] == pytest.approx(exact, abs=0.015)


def test_importance_weights_fix_the_mean(reference: Profile) -> None:
    errors = []
    for seed in range(30, 35):
        batch, prof = shard(seed, shift=0.5)
        drift = compare(prof, reference)
        w = importance_weights(batch, prof, reference, drift)
        assert w.shape == (1000,) and w.mean() == pytest.approx(1.0)
        assert w.min() > 0 and effective_sample_size(w) > 500
        b = batch["b"].values.data
        errors.append(abs((w * b).sum() / w.sum() - 5.0) / 2.0)
        assert abs(b.mean() - 5.0) / 2.0 > 0.4  # unweighted: still shifted
    assert max(errors) < 0.05


def test_importance_weights_ones_when_not_drifted(reference: Profile) -> None:
    batch, prof = shard(40)
    drift = compare(prof, reference)
    assert not drift.drifted
    np.testing.assert_array_equal(importance_weights(batch, prof, reference, drift), np.ones(1000))


def test_importance_weights_downweight_nan_and_overrepresented_class(reference: Profile) -> None:
    p = np.full(10, 0.5 / 9)
    p[0] = 0.5
    batch, prof = shard(41, nan_rate=0.05, class_p=p)
    w = importance_weights(batch, prof, reference, compare(prof, reference))
    cls, b = batch["cls"].values, batch["b"].values.data
    assert w[cls == "c0"].mean() < 0.5 * w[cls != "c0"].mean()
    assert w[np.isnan(b)].mean() < 0.5 * w[~np.isnan(b)].mean()


def test_importance_weights_undo_a_shift_in_word_frequencies(reference: Profile) -> None:
    boosted = np.arange(4, 50, 5)  # ten words of frequency ranks 5, 10, ..., 50, twice as often
    p = ZIPF.copy()
    p[boosted] *= 2
    batch, prof = shard(42, word_p=p / p.sum())
    drift = compare(prof, reference)
    assert [f.name for f in drift.features if f.drifted] == ["txt.tokens"]
    w = importance_weights(batch, prof, reference, drift)
    words = [doc.split() for doc in batch["txt.tokens"].values]
    hits = np.array([sum(x in set(VOCAB[boosted]) for x in doc) for doc in words], dtype=float)
    lengths = np.array([len(doc) for doc in words], dtype=float)
    expected = ZIPF[boosted].sum()
    raw, weighted = hits.sum() / lengths.sum(), (w * hits).sum() / (w * lengths).sum()
    assert raw > 1.6 * expected  # the shift is there ...
    assert abs(weighted - expected) < 0.4 * (raw - expected)  # ... and mostly undone
    assert effective_sample_size(w) > 500


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)


def test_to_dict_shape(reference: Profile) -> None:
    result = compare(shard(16, shift=0.5)[1], reference)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert {"url", "version", "n", "drifted", "score", "features"} <= set(d)
    assert (d["url"], d["version"], d["n"], d["drifted"]) == ("shard-16", "v1", 1000, True)
    assert isinstance(d["score"], float)
    assert all({"name", "metric", "value", "drifted"} <= set(f) for f in d["features"])
    assert d["features"][0]["name"] == "b"
    assert {f["name"] for f in d["features"]} == {"a", "b", "c", "cls", "txt.tokens"}


def test_score_is_at_least_one_iff_drifted(reference: Profile) -> None:
    results: list[ShardDrift] = [compare(shard(s, shift=0.15)[1], reference) for s in range(50, 56)]
    for r in results:
        assert r.drifted == (r.score >= 1.0)
        for f in r.features:
            assert f.drifted == (f.score >= 1.0)


def test_bh_correction_option(reference: Profile) -> None:
    result = compare(shard(17, shift=0.5)[1], reference, DriftConfig(correction="bh"))
    assert result.drifted and result.top(1)[0].name == "b"


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.5}, {"correction": "holm"}, {"bins": 1}, {"ks_floor": -1.0}],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DriftConfig(**kwargs)


def test_rejection_cut_by_hand_and_consistent_with_adjusted() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert rejection_cut(p, "bonferroni", 0.05) == pytest.approx(0.0125)
    assert rejection_cut(p, "bh", 0.05) == pytest.approx(0.05)  # all four pass step-up
    assert rejection_cut(p, "bh", 0.01) == pytest.approx(0.0025)  # none passes
    q = np.random.default_rng(1).random(200) ** 4
    for method in ("bonferroni", "bh"):
        cut = rejection_cut(q, method, 0.01)
        np.testing.assert_array_equal(q <= cut, adjust_pvalues(q, method) <= 0.01)


def test_kind_change_is_schema_drift(reference: Profile) -> None:
    batch, _ = shard(18)
    batch["c"] = Column("categorical", np.full(1000, "x", dtype=object))
    result = compare(profile(batch), reference)
    assert result.drifted and result.schema == {"kind": ["c"]}
    entry = next(f for f in result.features if f.name == "c")
    assert (entry.metric, entry.kind, entry.detail["reference_kind"]) == (
        "schema",
        "categorical",
        "numeric",
    )


# ---------------------------------------------------------------------------------------------
# the registry of drift tests


@pytest.fixture
def extra_test():
    """Registers a numeric test 'range' (max of the shard beyond the reference's) for one test."""
    from driftloader.drift import DRIFT_TESTS, DriftTest, Evidence, register_test

    def range_test(pair, cfg: DriftConfig) -> Evidence | None:
        if not pair.ms.count or not pair.mr.count:
            return None
        beyond = max(pair.ms.max - pair.mr.max, 0.0) / pair.mr.std
        return Evidence(beyond, beyond, 0.0 if beyond > 0 else 1.0)

    test = register_test(DriftTest("numeric", "range", range_test, floor=0.5))
    yield test
    DRIFT_TESTS.remove(test)


def test_a_registered_test_runs_with_its_floor(reference: Profile, extra_test) -> None:
    batch, _ = shard(19)
    b = batch["b"].values.copy()
    b[0] = 25.0  # one outlier, 6 sigma beyond the reference max: no other test fires on it
    prof = profile({**batch, "b": Column("numeric", b)})
    result = compare(prof, reference)
    rng = next(f for f in result.features if f.name == "b").detail["tests"]["range"]
    assert rng["floor"] == 0.5 and rng["drifted"] and result.drifted
    assert DriftConfig().floor("range") == 0.5
    assert "range" in next(f for f in result.features if f.name == "a").detail["tests"]
    raised = DriftConfig(floors={"range": 1e9})
    assert raised.floor("range") == 1e9 and not compare(prof, reference, raised).drifted


def test_floors_override_named_fields_and_config_stays_hashable() -> None:
    cfg = DriftConfig(ks_floor=0.3, floors={"mean": 0.2})
    assert (cfg.floor("ks"), cfg.floor("mean"), cfg.floor("nan")) == (0.3, 0.2, 0.005)
    assert hash(cfg) == hash(DriftConfig(ks_floor=0.3, floors={"mean": 0.2})) != hash(DriftConfig())
    with pytest.raises(ValueError, match="floors"):
        DriftConfig(floors={"mean": 0})
    with pytest.raises(KeyError, match="nope"):
        DriftConfig().floor("nope")


def test_register_test_refuses_duplicates_and_bad_floors() -> None:
    from driftloader.drift import DriftTest, register_test
    from driftloader.drift.numeric import ks_test

    for bad in (
        DriftTest("numeric", "ks", ks_test, floor="ks_floor"),  # already there
        DriftTest("numeric", "nan2", ks_test, floor="no_such_field"),
        DriftTest("numeric", "nan2", ks_test, floor=-1.0),
        DriftTest("image", "nan2", ks_test, floor=0.1),  # no such feature kind
        DriftTest("categorical", "ks", ks_test, floor=0.3),  # ks has another floor
    ):
        with pytest.raises(ValueError):
            register_test(bad)
