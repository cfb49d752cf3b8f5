"""Commands that make a request or two for every shard make them many at once, not one after
another: 150 ms away (the latency proxy in front of moto), the profile GETs (or tag PUTs) of one
command start together. One after another, 100k shards at 40 ms took over an hour."""

from __future__ import annotations

import pytest

from driftloader.profiling import profile_shards
from driftloader.report import shard_rows
from driftloader.store import ProfileStore
from driftloader.validate import ensure_rules, validate_shards
from driftloader.versions import snapshot

from .conftest import closed_on_fsspecs_loop, write_shard

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")
SHARDS = 12
LATENCY_MS = 150


@pytest.fixture
def stored(s3_proxy, s3_bucket, tmp_path):
    """Local shards whose profiles (and reference "r") are stored on S3 behind the proxy."""
    urls = [str(tmp_path / f"s-{i:02d}.tar") for i in range(SHARDS)]
    for i, url in enumerate(urls):
        write_shard(url, 20, seed=i)
    store = ProfileStore(
        f"s3://{s3_bucket}/drift", {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    )
    profile_shards(urls, store, progress=False)
    store.build_reference("r", urls[:2])
    s3_proxy.latency_ms = LATENCY_MS
    s3_proxy.reset_stats()
    return urls, store


def _profile_reads(proxy) -> list[float]:
    """When each GET of a stored shard profile started."""
    return [r.started for r in proxy.requests if r.method == "GET" and "/shards/" in r.target]


def _started_together(starts: list[float]) -> None:
    """The last SHARDS requests started within 0.75 s: one after another, each starts 150 ms
    or more after the last (1.65 s from first to last); many at once, in a wave or two."""
    last = starts[-SHARDS:]
    assert len(last) == SHARDS and last[-1] - last[0] < 0.75, [round(t - last[0], 3) for t in last]


def test_validate_reads_the_stored_profiles_in_batches(stored, s3_proxy):
    urls, store = stored
    ensure_rules(store, "r")
    results = validate_shards(urls, store, "r", record=False)
    assert [r.url for r in results] == urls and all(r.n == 20 for r in results)
    _started_together(_profile_reads(s3_proxy))  # profiling first finds them stored, then these
    validate_shards(urls, store, "r")  # and the rows are written
    rows = {r.url: r for r in store.catalog()}
    assert all(rows[u].validation_reference == "r" for u in urls)


def test_report_compares_unchecked_shards_from_profiles_read_in_batches(stored, s3_proxy):
    """Right after a reference is built no shard has a result: the report compares each
    stored profile."""
    urls, store = stored
    rows = shard_rows(store, "r")
    assert sorted(r.url for r in rows) == sorted(urls)
    assert all(r.score is not None and r.action == "compared" and r.n == 20 for r in rows)
    _started_together(_profile_reads(s3_proxy))


def test_a_snapshot_reads_the_profiles_it_summarises_in_batches(stored, s3_proxy):
    urls, store = stored
    manifest = snapshot(urls, store)
    assert [e["profile"]["n"] for e in manifest["shards"]] == [20] * SHARDS
    _started_together(_profile_reads(s3_proxy))


def test_quarantine_tags_the_drifted_shards_many_at_once(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    """Tagging is a get and a put of each drifted object's tags: one shard after another,
    10k drifted shards at 40 ms took ~13 minutes."""
    from driftloader.sources import expand_urls, stat_shards
    from driftloader.versions import QUARANTINE_TAG, quarantine

    urls = [f"s3://{s3_bucket}/data/shard-{i:06d}.tar" for i in range(SHARDS)]
    s3fs_fresh.pipe({u.removeprefix("s3://"): b"x" * 10 for u in urls})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(str(tmp_path / "store"))
    for shard in stat_shards(expand_urls(urls, options), options):
        store.record(shard.url, shard.version, {"reference": "r", "drifted": True, "score": 2.0})
    s3_proxy.latency_ms = LATENCY_MS
    s3_proxy.reset_stats()
    result = quarantine(store, "r", storage_options=options)
    assert sorted(result.tagged) == urls and not result.untagged
    assert all(s3fs_fresh.get_tags(u.removeprefix("s3://")) == {QUARANTINE_TAG: "r"} for u in urls)
    puts = [r.started for r in s3_proxy.requests if r.method == "PUT" and "tagging" in r.target]
    _started_together(puts)


def test_an_equalized_plan_reads_the_undecided_shards_profiles_many_at_once(stored, s3_proxy):
    """``plan()`` (equalize) decides every shard from the store; with no decision recorded
    yet, from each stored profile."""
    from driftloader import DriftDataset

    urls, store = stored
    ds = DriftDataset(urls, store=store, reference="r", policy="skip", equalize=True)
    s3_proxy.reset_stats()
    plan = ds.plan()
    assert [row["n"] for row in plan] == [20] * SHARDS
    _started_together(_profile_reads(s3_proxy))


def test_validate_lists_the_folder_of_its_s3_shards_once(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    """``validate`` stats its shards, then profiles those not profiled yet: the versions it
    just listed are the ones profiled (before, profiling listed the folder again)."""
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 20, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s-{i}.tar"), f"{s3_bucket}/data/s-{i}.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    urls = [f"s3://{s3_bucket}/data/s-{i}.tar" for i in range(3)]
    profile_shards(urls[:2], store, storage_options=options, progress=False)
    store.build_reference("r", urls[:2])
    s3_proxy.reset_stats()
    results = validate_shards(urls, store, "r", storage_options=options)
    assert [r.url for r in results] == urls and all(r.n == 20 for r in results)
    lists = [r.target for r in s3_proxy.requests if "prefix=data%2F" in r.target]
    assert len(lists) == 1, lists  # before: 2


def test_the_report_reads_the_profiles_its_plots_overlay_at_once(s3_proxy, s3_bucket, tmp_path):
    """The feature plots overlay each feature's most drifted shards; their profiles are read
    together (one after another they were a round trip each, 600 ms away here)."""
    from driftloader.check import check_shards
    from driftloader.report import render_report

    urls = [str(tmp_path / f"s-{i}.tar") for i in range(6)]
    for i, url in enumerate(urls):
        write_shard(url, 200, seed=i, shift=0.0 if i < 2 else 0.5 + 0.25 * i)
    store = ProfileStore(
        f"s3://{s3_bucket}/drift", {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    )
    profile_shards(urls, store, progress=False)
    store.build_reference("r", urls[:2])
    check_shards(urls, store, "r")  # every row has a result: the report compares none
    s3_proxy.latency_ms = 600
    s3_proxy.reset_stats()
    html = render_report(store, "r", top_features=3)
    assert "s-5.tar" in html and "none loaded" not in html
    reads = _profile_reads(s3_proxy)
    assert len(reads) >= 3 and reads[-1] - reads[0] < 0.6, [round(t - reads[0], 2) for t in reads]


def test_validate_of_a_snapshot_profiles_the_pinned_versions(s3_env, s3fs_fresh, tmp_path):
    """A snapshot pins each shard's version in a versioned bucket; a shard rewritten since
    is validated at the pinned version, which is the one profiled (before: profiling took
    the URLs, so the latest version, and the pinned one had no profile)."""
    from driftloader.versions import snapshot, write_manifest

    from .test_sources import _new_bucket

    bucket = _new_bucket(s3_env, "pins", True)
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 20, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s-{i}.tar"), f"{bucket}/data/s-{i}.tar")
    urls = [f"s3://{bucket}/data/s-{i}.tar" for i in range(3)]
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls[:2], store, progress=False)
    store.build_reference("r", urls[:2])
    manifest = str(tmp_path / "pinned.json")
    write_manifest(snapshot(urls), manifest)
    write_shard(tmp_path / "new.tar", 30, seed=9)  # s-2 rewritten after the snapshot
    s3fs_fresh.put(str(tmp_path / "new.tar"), f"{bucket}/data/s-2.tar")
    results = validate_shards(manifest, store, "r")
    assert [r.n for r in results] == [20, 20, 20], [r.to_dict() for r in results]


def test_validate_of_a_snapshot_checks_its_pins_once(s3_proxy, s3_env, s3fs_fresh, tmp_path):
    """Validating a pinned manifest checks the pins with one listing of the object versions:
    the shards it has just stat'ed go to profiling as they are (before: profiling listed the
    versions again, a second round trip per folder page before any shard was read)."""
    from driftloader.versions import snapshot, write_manifest

    from .test_sources import _listing_kind, _new_bucket

    bucket = _new_bucket(s3_env, "pinonce", True)
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 20, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s-{i}.tar"), f"{bucket}/data/s-{i}.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    urls = [f"s3://{bucket}/data/s-{i}.tar" for i in range(3)]
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, storage_options=options, progress=False)
    store.build_reference("r", urls[:2], storage_options=options)
    manifest = str(tmp_path / "pinned.json")
    write_manifest(snapshot(urls, storage_options=options), manifest)
    s3_proxy.reset_stats()
    results = validate_shards(manifest, store, "r", storage_options=options)
    assert [r.n for r in results] == [20, 20, 20]
    bucket_requests = [
        r for r in s3_proxy.requests if r.target.split("?")[0] in (f"/{bucket}", f"/{bucket}/")
    ]
    assert [_listing_kind(r.target) for r in bucket_requests] == ["versions"]


def test_chunks_of_profiles_left_early_on_fsspecs_loop_thread_do_not_hang(stored, s3_proxy):
    """``fetch_profile_chunks`` reads the next chunk while the caller works on this one. A
    caller that stops early leaves the generator to the garbage collector, which may close it
    on fsspec's loop thread: it waited there for the chunk being read, which needs that
    thread, and the process hung."""
    from driftloader.sources import expand_urls, stat_shards

    urls, store = stored
    s3_proxy.latency_ms = 0
    s3_proxy.add_fault("stall", method="GET", path="/shards/", nth=3, times=None, seconds=5)
    chunks = store.fetch_profile_chunks(stat_shards(expand_urls(urls)), size=2)
    assert all(p is not None for p in next(chunks))  # the next chunk is being read, stalled
    assert closed_on_fsspecs_loop(chunks), "closing the chunks on fsspec's loop thread hung"
