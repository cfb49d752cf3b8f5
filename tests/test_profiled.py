"""Which shards are profiled already, told by the catalog and a listing of the store's profiles
(``store.profiled``) instead of a GET of every profile: a re-run of ``profile`` over a corpus
must not download the corpus's profiles. A profile damaged or deleted since must still be found
so and profiled again (against the moto S3 server, through the counting proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloader import profiling
from driftloader.profiling import profile_shards
from driftloader.sources import expand_urls, stat_shards
from driftloader.store import ProfileStore, profiled

from .conftest import write_shard
from .test_packs import put_shards


def _profile_gets(proxy) -> int:
    """GETs of objects under the store's shards/ folder (not listings, whose path is the
    bucket's)."""
    return sum(1 for r in proxy.requests if r.method == "GET" and "/shards/" in r.target)


@pytest.fixture
def profiled_corpus(s3_proxy, s3_bucket: str, s3fs_fresh, tmp_path: Path):
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    urls = put_shards(tmp_path, s3fs_fresh, s3_bucket, count=6)
    profile_shards(urls, store, progress=False)
    shards = stat_shards(expand_urls(urls, options), options)
    fingerprint = store.get_profile(shards[0].url, shards[0].version).fingerprint
    fresh = ProfileStore(store.url, options)  # no cache of what the first one wrote
    s3_proxy.reset_stats()
    return fresh, shards, fingerprint, s3_proxy, s3fs_fresh


def test_profiled_shards_are_told_without_reading_their_profiles(profiled_corpus) -> None:
    store, shards, fingerprint, proxy, _ = profiled_corpus
    assert profiled(store, shards, fingerprint) == [True] * 6
    assert _profile_gets(proxy) == 0  # reading each, as has_profile does, is 6 GETs
    assert profiled(store, shards, "another featurizer") == [False] * 6


def test_a_profile_damaged_or_deleted_since_is_read_and_found_so(profiled_corpus) -> None:
    store, shards, fingerprint, proxy, fs = profiled_corpus
    damaged = store.profile_path(shards[1].url, shards[1].version)
    deleted = store.profile_path(shards[4].url, shards[4].version)
    store.write_bytes(damaged, b'{"format":1,"n":')
    fs.rm(deleted)
    proxy.reset_stats()
    with pytest.warns(RuntimeWarning, match=r"corrupt profile .*\.json"):
        found = profiled(store, shards, fingerprint)
    assert found == [True, False, True, True, False, True]
    assert _profile_gets(proxy) == 2  # only the damaged one, which the listing shows with
    # another size: read as has_profile reads it, its plain slot then its featurizer's; the
    # deleted one is not in the listing, so it is not read


def test_a_new_corpus_is_told_unprofiled_without_a_read(profiled_corpus, tmp_path) -> None:
    """Of a corpus never profiled, no profile is in the listing: none is asked for (two GETs
    a shard before, one for each of its profile's names)."""
    store, shards, fingerprint, proxy, fs = profiled_corpus
    bucket = store.url.split("/")[2]
    for i in range(6):
        write_shard(tmp_path / f"new-{i}.tar", 4, seed=50 + i)
        fs.put(str(tmp_path / f"new-{i}.tar"), f"{bucket}/fresh/new-{i}.tar")
    new = f"s3://{bucket}/fresh/new-{{0..5}}.tar"
    fresh = stat_shards(expand_urls(new, store.storage_options), store.storage_options)
    proxy.reset_stats()
    assert profiled(store, [*shards, *fresh], fingerprint) == [True] * 6 + [False] * 6
    assert _profile_gets(proxy) == 0


def test_a_rerun_of_profile_over_many_shards_profiles_only_the_damaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiling, "LISTED_FROM", 2)  # a corpus of 4 counts as many
    for i in range(4):
        write_shard(tmp_path / f"s-{i}.tar", 5, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..3}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    assert profile_shards(urls, store, progress=False).profiled == 4
    shard = stat_shards(expand_urls(urls))[2]
    Path(store.profile_path(shard.url, shard.version)).write_text("{]")
    with pytest.warns(RuntimeWarning, match=r"corrupt profile .*\.json"):
        summary = profile_shards(urls, store, progress=False)
    assert (summary.profiled, summary.skipped) == (1, 3)
    assert store.get_profile(shard.url, shard.version).n == 5  # repaired


def test_profiling_past_the_compaction_threshold_compacts_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog row lands per profiled shard; past ``COMPACT_OVER`` of them ``profile``
    compacts, as ``check`` does, so the next run reads the catalog in one request."""
    from driftloader import compaction

    monkeypatch.setattr(compaction, "COMPACT_OVER", 3)
    for i in range(5):
        write_shard(tmp_path / f"s-{i}.tar", 3, seed=i, start=i * 100)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(str(tmp_path / "s-{0..2}.tar"), store, progress=False)
    assert len(store.list_json(store.path("catalog"))) == 3  # 3 rows: not past the threshold
    profile_shards(str(tmp_path / "s-{0..4}.tar"), store, progress=False)
    assert store.list_json(store.path("catalog")) == []  # 5 rows folded into a compacted file
    rows = store.catalog()
    assert len(rows) == 5 and all(row.profile_bytes for row in rows)


def test_a_local_store_is_vouched_for_by_its_listing_without_a_read(tmp_path: Path) -> None:
    """On local files too the listing's sizes vouch: a profile overwritten in place with as many
    bytes of garbage is not read, so it is taken as whole (the documented limit: writes are
    atomic, and damage that changes the size, as in the tests above, is found)."""
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    shards = stat_shards(expand_urls(urls))
    fingerprint = store.get_profile(shards[0].url, shards[0].version).fingerprint
    path = Path(store.profile_path(shards[1].url, shards[1].version))
    path.write_bytes(b" " * path.stat().st_size)  # same size: not JSON, yet listed as whole
    assert profiled(store, shards, fingerprint) == [True, True, True]
    path.write_bytes(b" " * (path.stat().st_size + 1))
    with pytest.warns(RuntimeWarning, match=r"corrupt profile .*\.json"):
        assert profiled(store, shards, fingerprint) == [True, False, True]
