"""Profiling with its round trips overlapped (``profiling_io``): on the latency proxy in front
of moto, requests stay in flight, the profiles are those of one shard at a time, each
sidecar goes to its own shard, a run stopped by a bad shard stores exactly the shards before
it, and a retried task finds the shards its predecessor stored out of order."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import boto3
import pytest

from driftloader import profiling, profiling_io
from driftloader.errors import ShardReadError
from driftloader.features import featurizer_from
from driftloader.profiling import profile_shard, profile_shards
from driftloader.profiling_io import READ_AHEAD, STORE_BEHIND, stored_before
from driftloader.sources import expand_urls, stat_shards
from driftloader.store import ProfileStore

from .conftest import upload_shards

N_SHARDS = 12


def documents(store: ProfileStore, shards: list) -> dict[str, dict | None]:
    """Each shard's stored profile as JSON, without its creation time."""
    out = {}
    for shard in shards:
        document = store.read_json(store.profile_path(shard.url, shard.version))
        if document is not None:
            document.pop("created")
        out[shard.url] = document
    return out


def test_profiling_keeps_requests_in_flight_and_stores_one_shard_at_a_time_profiles(
    tmp_path: Path, s3_proxy, s3_bucket: str, s3fs_fresh
) -> None:
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    for i, source in ((3, "crawl-3"), (7, "crawl-7")):  # sidecars on two shards only
        s3fs_fresh.pipe(f"{s3_bucket}/data/shard-{i:03d}.tar.json", json.dumps({"source": source}))
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    shards = stat_shards(expand_urls(urls, options), options)
    alone = ProfileStore(f"s3://{s3_bucket}/alone", options)
    for shard in shards:  # one shard at a time, every round trip waited for
        profile_shard(shard, alone, storage_options=options)

    s3_proxy.latency_ms = 40
    s3_proxy.reset_stats()  # the shards known (no listing) and force (no check first): the
    store = ProfileStore(f"s3://{s3_bucket}/overlapped", options)  # profiling's requests only
    summary = profile_shards(shards, store, storage_options=options, progress=False, force=True)
    assert (summary.profiled, summary.samples, summary.failed) == (N_SHARDS, 8 * N_SHARDS, [])
    # 2 before: sidecar, shard, slot, profile and catalog row in turn
    assert s3_proxy.max_in_flight >= 4
    assert s3_proxy.max_in_flight <= 2 * READ_AHEAD + STORE_BEHIND + 1
    got, want = documents(store, shards), documents(alone, shards)
    assert got == want and None not in got.values()
    sources = {url: d["source"] for url, d in got.items()}
    assert sources[shards[3].url] == "crawl-3" and sources[shards[7].url] == "crawl-7"
    assert sum(s == "crawl-3" for s in sources.values()) == 1


def test_a_bad_shard_stops_the_run_with_the_shards_before_it_stored(
    tmp_path: Path, s3_proxy, s3_bucket: str, s3fs_fresh
) -> None:
    """Under on_error="raise" the run stops at the bad shard: the profiles of the shards
    before it, stored behind, are all in the store (waited for), and none after it."""
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    bad = 5
    s3fs_fresh.pipe(f"{s3_bucket}/data/shard-{bad:03d}.tar", b"not a tar" * 100)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.latency_ms = 30
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    with pytest.raises(ShardReadError, match=f"shard-{bad:03d}.tar"):
        profile_shards(urls, store, storage_options=options, progress=False)
    shards = stat_shards(expand_urls(urls, options), options)
    stored = documents(store, shards)
    assert [stored[s.url] is not None for s in shards] == [i < bad for i in range(N_SHARDS)]
    assert all(stored[s.url]["n"] == 8 for s in shards[:bad])


@pytest.mark.parametrize("threads", [STORE_BEHIND, 1])  # on object stores; on local files
def test_stored_before_finds_a_dead_runs_shards_stored_out_of_order(threads: int) -> None:
    """A run that died stored every shard before its first unstored one and some of the
    ``STORE_BEHIND`` from there; nothing past that window is asked about."""
    count = 6 * STORE_BEHIND
    stored = set(range(5)) | {6, 5 + STORE_BEHIND - 1}
    asked = []

    def ask(i: int):
        asked.append(i)
        if i == 2:
            raise OSError("store unreachable")
        return f"profile-{i}" if i in stored else None

    found = stored_before(range(count), ask, threads)
    assert set(found) == stored
    assert isinstance(found[2], OSError) and found[6] == "profile-6"
    last = 5 + STORE_BEHIND - 1
    assert max(asked) < last + 1 + 2 * STORE_BEHIND  # a window past the last stored one

    asked.clear()
    assert stored_before(range(count), lambda i: asked.append(i), threads) == {}
    assert sorted(asked) == list(range(STORE_BEHIND))  # a task that is not a retry: one window


def test_a_retried_task_writes_no_profile_twice(
    tmp_path: Path, s3_bucket: str, s3fs_fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task before it stored shards 0-3 and 5 (stored behind, out of order) and died: the
    retried task profiles 4 and 6 on, and writes no profile object a second time."""
    monkeypatch.setattr(profiling_io, "STORE_BEHIND", 3)
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh, count=9)
    shards = stat_shards(expand_urls(urls))
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    for i in (0, 1, 2, 3, 5):
        profile_shard(shards[i], store)
    featurizer = featurizer_from(None)
    args = (store.url, store.storage_options, featurizer, None, None, None, False)
    out = profiling._profile_chunk(profiling._profiled, shards, args)
    assert [e for _, _, e in out] == [None] * 9
    again = {o.url for _, o, _ in out if o.stored_before}
    assert again == {shards[i].url for i in (0, 1, 2, 3, 5)}
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    listed = client.list_object_versions(Bucket=s3_bucket, Prefix="drift/shards/")
    writes = [v["Key"] for v in listed.get("Versions", [])]
    assert len(writes) == len(set(writes)) == 9


def test_a_shard_reset_mid_read_is_resumed_and_profiled_as_if_whole(
    tmp_path: Path, s3_proxy, s3_bucket: str, s3fs_fresh
) -> None:
    """Read ahead through one reader, a shard whose response is cut short is asked again
    from the byte it stopped at; its profile is the one read in one go, and the shards
    read ahead of it are not disturbed."""
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    shards = stat_shards(expand_urls(urls, options), options)
    alone = ProfileStore(f"s3://{s3_bucket}/alone", options)
    for shard in shards:
        profile_shard(shard, alone, storage_options=options)
    s3_proxy.latency_ms = 20
    s3_proxy.reset_stats()
    shard_4 = r"shard-004\.tar(\?|$)"  # its bytes, not its sidecar
    cut = s3_proxy.add_fault("reset", method="GET", path=shard_4, after_bytes=3000)
    store = ProfileStore(f"s3://{s3_bucket}/overlapped", options)
    summary = profile_shards(shards, store, storage_options=options, progress=False, force=True)
    assert cut.fired == 1
    asked = [r.range for r in s3_proxy.requests if re.search(shard_4, r.target)]
    assert len(asked) == 2 and int(re.match(r"bytes=(\d+)-", asked[1])[1]) > 0  # resumed
    assert (summary.profiled, summary.samples, summary.failed) == (N_SHARDS, 8 * N_SHARDS, [])
    assert documents(store, shards) == documents(alone, shards)
