"""JSON fields on hostile input: numbers too large for a float are counted errors (issue 15,
item 5), and distinct keys cannot make features grow without bound (issue 15, item 6)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from driftloader.features import (
    CallableFeaturizer,
    DefaultFeaturizer,
    FeatureSpec,
    FeatureWarning,
)
from driftloader.profiling import ShardProfiler

URL = "file:///data/shard-000001.tar"
HUGE = "1" + "0" * 400  # an integer JSON allows and no float can hold


def sample(i: int, url: str = URL, **fields: object) -> dict:
    return {"__key__": f"s{i:04d}", "__url__": url, **fields}


def test_json_integer_too_large_for_a_float_is_a_counted_error() -> None:
    samples = [
        sample(0, json=f'{{"a": {HUGE}, "b": 1}}'.encode()),
        sample(1, json=b'{"a": 2, "b": 3}'),
    ]
    featurizer = DefaultFeaturizer()
    batch = featurizer(samples)  # raised OverflowError before
    assert featurizer.errors == 1
    assert batch["json.a"].values.tolist() == [None, 2.0]
    assert batch["json.b"].values.tolist() == [1.0, 3.0]
    spec = FeatureSpec({"json.a": "numeric"}).featurizer()
    assert spec(samples)["json.a"].values.tolist() == [None, 2.0] and spec.errors == 1
    as_category = FeatureSpec({"json.a": "categorical"}).featurizer()
    assert as_category(samples)["json.a"].values.tolist() == [HUGE, "2"]
    huge_row = CallableFeaturizer(lambda s: {"x": int(HUGE)})
    assert huge_row([sample(0)])["x"].values.tolist() == [None] and huge_row.errors == 1


def test_profiling_a_shard_with_a_huge_json_integer_counts_it() -> None:
    profiler = ShardProfiler(URL, batch_size=4)
    profiler.add_many(
        [sample(i, json=f'{{"a": {HUGE if i == 3 else i}}}'.encode()) for i in range(8)]
    )
    profile = profiler.finish()
    assert profile.n == 8 and profile.errors == 1
    moments, _ = profile.numeric("json.a")
    assert moments.count == 7


def distinct_key_samples(n: int, keys: int, url: str = URL) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        sample(i, url, json=json.dumps({f"k{i}_{j}": float(rng.random()) for j in range(keys)}))
        for i in range(n)
    ]


def test_distinct_json_keys_are_capped_per_field_and_shard_with_one_warning() -> None:
    featurizer = DefaultFeaturizer(max_keys=50)
    samples = distinct_key_samples(40, 10)
    with pytest.warns(FeatureWarning, match="'json'.*more than 50") as caught:
        first = featurizer(samples[:20])
        second = featurizer(samples[20:])
    assert len([w for w in caught if issubclass(w.category, FeatureWarning)]) == 1
    keyed = [n for n in {*first, *second} if n.startswith("json.k")]
    assert len(keyed) == 50  # the first 50 names of the shard, in sample order
    assert sorted(keyed) == sorted(f"json.k{i}_{j}" for i in range(5) for j in range(10))
    assert "json.other_keys" not in first or first["json.other_keys"].values[:5].tolist() == [0] * 5
    assert second["json.other_keys"].values.tolist() == [10.0] * 20
    names = second["json.other_keys.names"].values.tolist()
    assert names[0] == " ".join(f"k20_{j}" for j in range(10))
    # a new shard admits its own first names again, without a second warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureWarning)
        other = featurizer(distinct_key_samples(2, 10, url="file:///data/shard-000002.tar"))
    assert len([n for n in other if n.startswith("json.k")]) == 20


def test_profile_size_and_feature_count_stay_bounded_with_distinct_keys() -> None:
    # before: 1,000 samples x 100 distinct keys made 100,000 features (57 s, 1.7 GB, 158 MB)
    profiler = ShardProfiler(URL, batch_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        profiler.add_many(distinct_key_samples(400, 50))
        profile = profiler.finish()
    assert profile.n == 400
    assert len(profile.kinds) <= DefaultFeaturizer().options.max_keys + 2
    # bounded by the cap: 20,000 distinct names would have made ~70 MB of sketches
    assert len(profile.to_json()) < 2_000_000
    assert profile.kinds["json.other_keys.names"] == "tokens"
