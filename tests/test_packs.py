"""Packs: profiling stores one pack of merged profiles per task, and ``build_reference`` reads
the packs that cover its shards instead of every profile (against the moto S3 server)."""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from driftloader.packs import PACK_FORMAT, plan, read_packs
from driftloader.profile import Profile
from driftloader.profiling import profile_shards
from driftloader.reference import merge_reference
from driftloader.sources import Shard, expand_urls, stat_shards
from driftloader.store import ProfileStore

from .conftest import write_shard

N = 16


def put_shards(tmp_path: Path, fs, bucket: str, count: int = N, samples: int = 4) -> str:
    for i in range(count):
        write_shard(tmp_path / f"s-{i:02d}.tar", samples, seed=i, start=i * 100)
        fs.put(str(tmp_path / f"s-{i:02d}.tar"), f"{bucket}/data/s-{i:02d}.tar")
    return f"s3://{bucket}/data/s-{{00..{count - 1:02d}}}.tar"


def current(urls: str, store: ProfileStore) -> list[Shard]:
    return stat_shards(expand_urls(urls, store.storage_options), store.storage_options)


def per_profile(store: ProfileStore, urls: str) -> Profile:
    """The reference merged from each shard's own stored profile, in one merge."""
    shards = current(urls, store)
    return merge_reference("expected", shards, store.fetch_profiles(shards))


def assert_same_reference(got: Profile, expected: Profile) -> None:
    """Counts, categories and metadata bit for bit; moments to rounding; KLL quantiles within
    the sketches' rank error (KLL merged in another order compacts differently)."""
    assert got.n == expected.n
    assert {k: got.meta[k] for k in ("count", "shards", "sources", "preprocessing")} == {
        k: expected.meta[k] for k in ("count", "shards", "sources", "preprocessing")
    }
    assert got.kinds == expected.kinds
    for name, kind in got.kinds.items():
        if kind == "categorical":
            assert got.categorical(name).counts() == expected.categorical(name).counts()
        if kind == "numeric":
            (gm, gq), (em, eq) = got.numeric(name), expected.numeric(name)
            assert gm.n == em.n and gm.mean == pytest.approx(em.mean, rel=1e-12, abs=1e-12)
            assert gq.count == eq.count
            if eq.count:
                at = eq.quantile(np.linspace(0.05, 0.95, 7))
                bound = gq.rank_error + eq.rank_error + 1e-12
                assert np.all(np.abs(gq.cdf(at) - eq.cdf(at)) <= bound), name


@pytest.fixture
def s3_store(s3_proxy, s3_bucket: str, s3fs_fresh):
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    return ProfileStore(f"s3://{s3_bucket}/drift", options), s3_proxy, s3fs_fresh, s3_bucket


def test_reference_from_packs_reads_a_pack_per_task_not_a_profile_per_shard(
    s3_store, tmp_path: Path
) -> None:
    store, proxy, fs, bucket = s3_store
    urls = put_shards(tmp_path, fs, bucket)
    with ThreadPoolExecutor(2) as pool:  # 8 tasks of 2 shards: 8 packs
        profile_shards(urls, store, progress=False, executor=pool)
    assert len(read_packs(store)) == 8
    fresh = ProfileStore(store.url, store.storage_options)
    proxy.reset_stats()
    ref = fresh.build_reference("v1", urls)
    assert fresh.reads == 8  # the packs: none of the 16 profiles
    assert proxy.counts.get("GET", 0) <= 12  # listings + 8 packs (was 16 profiles + listings)
    assert_same_reference(ref, per_profile(store, urls))


def test_a_pack_covering_an_overwritten_shard_is_not_used(s3_store, tmp_path: Path) -> None:
    store, _, fs, bucket = s3_store
    urls = put_shards(tmp_path, fs, bucket, count=4)
    profile_shards(urls, store, progress=False)  # one pack of the 4 shards
    old = {s.url: s.version for s in current(urls, store)}
    write_shard(tmp_path / "new.tar", 7, seed=99, start=900, shift=3.0)
    fs.put(str(tmp_path / "new.tar"), f"{bucket}/data/s-02.tar")  # a new version of s-02
    profile_shards(urls, store, progress=False)  # profiles only s-02 (a pack of 1)
    shards = current(urls, store)
    assert {s.url: s.version != old[s.url] for s in shards}[f"s3://{bucket}/data/s-02.tar"]
    packs, loose = plan(store, read_packs(store), shards, None)
    assert [len(p.covers) for p in packs] == [1] and len(loose) == 3  # the old pack: unused
    ref = ProfileStore(store.url, store.storage_options).build_reference("v1", urls)
    assert ref.n == 3 * 4 + 7  # the new s-02, not the old one the first pack holds
    assert_same_reference(ref, per_profile(store, urls))


def test_a_shard_profiled_again_is_never_taken_from_the_older_pack(tmp_path: Path) -> None:
    for i in range(4):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False, metadata=lambda url: {"preprocessing": "a"})
    again = str(tmp_path / "s-{0,3}.tar")  # s-0 profiled again, other metadata (same bytes)
    profile_shards(
        again, store, progress=False, force=True, metadata=lambda url: {"preprocessing": "b"}
    )
    ref = store.build_reference("v1", urls)
    assert ref.meta["preprocessing"] == ["a", "b"]  # the pack of s-0..2 would say ["a"] only
    assert_same_reference(ref, per_profile(store, urls))


def test_an_old_store_without_packs_builds_the_same_and_is_packed_for_next_time(
    s3_store, tmp_path: Path
) -> None:
    store, proxy, fs, bucket = s3_store
    urls = put_shards(tmp_path, fs, bucket, count=20)
    for shard in current(urls, store):  # profiles stored one by one (no packs), as before packs
        store.put_profile(per_shard_profile(shard, store))
    assert read_packs(store) == []
    first = ProfileStore(store.url, store.storage_options)
    ref = first.build_reference("v1", urls)
    assert first.reads == 20
    assert_same_reference(ref, per_profile(store, urls))
    again = ProfileStore(store.url, store.storage_options)
    proxy.reset_stats()
    second = again.build_reference("v2", urls)
    assert again.reads == 1  # the pack the first build wrote
    stored = again.get_reference("v1").to_dict()["features"]  # as built: queries sort KLLs
    assert second.to_dict()["features"] == stored  # the same chunks (80 samples: no KLL
    # compaction, whose random bit makes larger merges differ run to run, packs or not)


def per_shard_profile(shard: Shard, store: ProfileStore) -> Profile:
    from driftloader.profiling import profile_shard

    return profile_shard(shard, None, storage_options=store.storage_options)


def test_a_crash_while_writing_a_pack_leaves_no_pack_and_profiles_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    replace = os.replace

    def crash(src, dst):
        if f"{os.sep}packs{os.sep}" in str(dst):
            raise OSError("disk full")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.warns(RuntimeWarning, match="not their pack: disk full"):
        summary = profile_shards(urls, store, progress=False)
    monkeypatch.undo()
    assert summary.profiled == 3
    packs_dir = Path(store.path("packs"))
    assert not packs_dir.exists() or list(packs_dir.iterdir()) == []  # no temp file either
    assert store.build_reference("v1", urls).n == 12


def test_a_corrupt_pack_is_named_and_its_shards_read_one_by_one(tmp_path: Path) -> None:
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    (pack,) = Path(store.path("packs")).iterdir()
    document = json.loads(pack.read_text())
    assert document["format"] == PACK_FORMAT and len(document["covers"]) == 3
    pack.write_text(pack.read_text()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match=f"ignoring corrupt pack {pack}"):
        ref = store.build_reference("v1", urls)
    assert ref.n == 12


def test_packs_of_another_featurizer_are_not_used_for_the_stored_profiles(
    tmp_path: Path,
) -> None:
    from driftloader.features import FeatureSpec

    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    other = FeatureSpec({"cls": "categorical"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "profiled with featurizer ..."
        profile_shards(urls, store, progress=False, featurizer=other)
    assert {p.plain for p in read_packs(store)} == {True, False}
    ref = store.build_reference("v1", urls)  # the stored (first) profiles: the default's
    assert_same_reference(ref, per_profile(store, urls))
    assert "x.npy[0]" in ref.kinds
    by_spec = store.build_reference("v2", urls, featurizer=other)
    assert set(by_spec.kinds) == {"cls"} and by_spec.n == 12


def test_a_tree_build_on_an_executor_merges_the_packs_with_the_loose_profiles(
    tmp_path: Path,
) -> None:
    for i in range(20):
        write_shard(tmp_path / f"s-{i:02d}.tar", 4, seed=i, start=i * 100)
    store = ProfileStore(str(tmp_path / "store"))
    first = str(tmp_path / "s-{00..09}.tar")
    urls = str(tmp_path / "s-{00..19}.tar")
    with ThreadPoolExecutor(2) as pool:
        profile_shards(first, store, progress=False, executor=pool)  # 5 packs of 2 shards
        for shard in current(str(tmp_path / "s-{10..19}.tar"), store):
            store.put_profile(per_shard_profile(shard, store))  # 10 loose profiles
        fresh = ProfileStore(store.url)
        ref = fresh.build_reference("v1", urls, executor=pool)
    assert len(read_packs(store)) == 5  # tasks of 2 loose shards (< MIN_BUILD_PACK) write none
    assert fresh.reads == 5 + 10  # the 5 packs, then the 10 loose profiles in tasks
    assert_same_reference(ref, per_profile(store, urls))


def test_a_first_slot_taken_over_by_another_featurizer_retires_the_older_pack(
    tmp_path: Path,
) -> None:
    from driftloader.features import FeatureSpec
    from driftloader.reference import FeaturizerDisagreement

    for i in range(4):
        write_shard(tmp_path / f"s-{i}.tar", 4, seed=i, start=i * 100)
    store = ProfileStore(str(tmp_path / "store"))
    urls = str(tmp_path / "s-{0..2}.tar")
    profile_shards(urls, store, progress=False)  # a pack of s-0..2
    shard = current(str(tmp_path / "s-0.tar"), store)[0]
    Path(store.profile_path(shard.url, shard.version)).write_text("{")  # corrupt: a free slot
    other = FeatureSpec({"cls": "categorical"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pair = str(tmp_path / "s-{0,3}.tar")  # both first slots free: a plain pack of s-0, s-3
        profile_shards(pair, store, progress=False, featurizer=other)
        assert store.get_profile(shard.url, shard.version).kinds == {"cls": "categorical"}
        with pytest.raises(FeaturizerDisagreement):  # as from the profiles: s-0 is another's
            store.build_reference("v1", urls)
