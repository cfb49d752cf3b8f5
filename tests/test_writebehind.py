"""The gate's catalog rows are written behind the samples: never between two samples, always
before the pass ends, in order per key, and a failed write is raised, not lost."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from driftloader.dataset import DriftDataset
from driftloader.profiling import profile_shards
from driftloader.sources import expand_urls, stat_shards
from driftloader.store import ProfileStore
from driftloader.writebehind import WriteBehind

from .conftest import closed_on_fsspecs_loop, write_shard

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")


def test_writes_of_one_key_keep_their_order_and_flush_waits_for_all() -> None:
    writes, done = WriteBehind(threads=4, limit=3), []
    gate = threading.Event()

    def write(key: str, i: int) -> None:
        if i == 0:
            gate.wait(5)  # the first write of "a" is slow: the second must wait for it
        done.append((key, i))

    writes.submit("a", write, "a", 0)
    writes.submit("a", write, "a", 1)
    writes.submit("b", write, "b", 0)
    assert writes.pending >= 2
    gate.set()
    writes.flush()
    assert writes.pending == 0
    assert done.index(("a", 0)) < done.index(("a", 1))
    assert sorted(done) == [("a", 0), ("a", 1), ("b", 0)]


def test_a_failed_write_is_raised_by_flush_and_bounds_are_checked() -> None:
    writes = WriteBehind()

    def fail() -> None:
        raise OSError("the store refused the row")

    writes.submit("a", fail)
    with pytest.raises(OSError, match="refused the row"):
        writes.flush()
    writes.flush()  # raised once, then the queue is empty
    with pytest.raises(ValueError, match="limit"):
        WriteBehind(threads=1, limit=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_with_threads_of_its_own(tmp_path: Path) -> None:
    writes = WriteBehind()
    writes.submit("a", (tmp_path / "parent").write_text, "1")
    writes.flush()
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool threads do not exist here
        try:
            writes.submit("a", (tmp_path / "child").write_text, "2")
            writes.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and (tmp_path / "child").read_text() == "2"


def decided(store: ProfileStore) -> int:
    """Catalog rows that hold a gate's decision (profiling wrote rows without one)."""
    return sum(row.policy == "skip" for row in store.catalog())


def test_catalog_rows_are_written_behind_the_samples_and_before_the_pass_ends(
    tmp_path: Path, s3_env: str, s3_proxy, s3_bucket: str
) -> None:
    """Every catalog PUT stalls 2 s at the store: the samples of the next shards still come at
    once (no row is in the store yet when the third shard starts), and when the pass ends
    every row is there."""
    ds, direct = _with_catalog_puts_stalled(tmp_path, s3_env, s3_proxy, s3_bucket)
    n, rows_when_third_shard_starts = _at_third_shard(ds, lambda: decided(direct))
    assert n == 60
    assert rows_when_third_shard_starts == 0  # the two rows decided so far are still on their way
    assert decided(direct) == 3  # all written when the pass ended
    assert sorted(r["action"] for r in ds.drift_report()) == ["passed"] * 3


def test_finished_writes_are_forgotten_not_held_until_flush() -> None:
    """A check over a million shards writes a million keys before its one flush: each
    finished write must be let go, or their futures alone take a gigabyte."""
    writes = WriteBehind(threads=2, limit=8)
    for i in range(500):
        writes.submit(f"shard-{i}", lambda: None)
    assert len(writes._pending) <= 8 and len(writes._last) <= 8  # 500 keys before
    writes.flush()
    assert not writes._pending and not writes._last


def test_the_profiles_a_first_pass_makes_are_stored_behind_the_samples(
    tmp_path: Path, s3_env: str, s3_proxy, s3_bucket: str
) -> None:
    """No shard is profiled yet: the gate profiles each as it is read and stores the profile
    (four requests: a slot, the profile, the catalog row read and written). Every profile
    PUT stalls 2 s at the store: the next shards' samples still come at once, and when the
    pass ends every profile is stored."""
    urls = [str(tmp_path / f"shard-{i}.tar") for i in range(3)]
    for i, url in enumerate(urls):
        write_shard(url, 20, seed=i)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    reference = ProfileStore(str(tmp_path / "reference"))
    profile_shards(urls, reference, progress=False)
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    store.put_reference("ref", reference.build_reference("ref", urls))
    direct = ProfileStore(f"s3://{s3_bucket}/drift", {"client_kwargs": {"endpoint_url": s3_env}})
    s3_proxy.add_fault("stall", method="PUT", path="/shards/", times=None, seconds=2.0)
    shards = stat_shards(expand_urls(urls))

    ds = DriftDataset(urls, store=store.url, reference="ref", policy="monitor",
                      storage_options=options, shuffle=False)  # fmt: skip
    n, stored_when_third_shard_starts = _at_third_shard(
        ds, lambda: sum(p is not None for p in direct.fetch_profiles(shards))
    )
    assert n == 60
    assert stored_when_third_shard_starts == 0  # the two profiles made so far are on their way
    assert all(p is not None for p in direct.fetch_profiles(shards))  # all, when the pass ended
    assert sorted(r["action"] for r in ds.drift_report()) == ["passed"] * 3


def _with_catalog_puts_stalled(tmp_path: Path, s3_env: str, s3_proxy, s3_bucket: str) -> tuple:
    """(a skip-gated dataset over three profiled local shards of 20 with its store on S3
    behind ``s3_proxy``, where every catalog PUT stalls 2 s; that store seen directly)."""
    urls = [str(tmp_path / f"shard-{i}.tar") for i in range(3)]
    for i, url in enumerate(urls):
        write_shard(url, 20, seed=i)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    profile_shards(urls, store, progress=False)
    store.build_reference("ref", urls)
    direct = ProfileStore(f"s3://{s3_bucket}/drift", {"client_kwargs": {"endpoint_url": s3_env}})
    s3_proxy.add_fault("stall", method="PUT", path="/catalog/", times=None, seconds=2.0)
    ds = DriftDataset(urls, store=store.url, reference="ref", policy="skip",
                      storage_options=options, shuffle=False)  # fmt: skip
    return ds, direct


def _at_third_shard(ds: DriftDataset, measure) -> tuple[int, int]:
    """The samples of a pass over three shards of 20, and what ``measure()`` gives at the
    first sample of the third shard."""
    seen, n = None, 0
    for _ in ds:
        n += 1
        if n == 41:
            seen = measure()
    return n, seen


def test_a_verdict_on_a_shard_whose_profile_is_still_being_written_uses_that_profile(
    tmp_path: Path, s3_env: str, s3_proxy, s3_bucket: str
) -> None:
    """A shard met again before the profile the gate made of it is stored (resampled draws;
    every profile PUT stalls 2 s here) is decided from that profile, not profiled again
    (which would make its weights depend on how fast the store is)."""
    from driftloader.gate import ShardGate, store_behind
    from driftloader.profiling import profile_shard

    url = str(tmp_path / "shard-0.tar")
    write_shard(url, 20, seed=0)
    reference = ProfileStore(str(tmp_path / "reference"))
    profile_shards([url], reference, progress=False)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    store.put_reference("ref", reference.build_reference("ref", [url]))
    s3_proxy.add_fault("stall", method="PUT", path="/shards/", times=None, seconds=2.0)
    (shard,) = stat_shards(expand_urls([url]))
    gate = ShardGate(store, "ref", "reweight")
    store_behind(gate, shard, profile_shard(shard, None, featurizer=gate.featurizer))
    verdict = gate.verdict(shard)  # the PUT is still stalled
    assert verdict.n == 20 and verdict.stored is not None  # before: n None, profiled again
    assert store.get_profile(shard.url, shard.version) is None
    gate.flush()
    assert store.get_profile(shard.url, shard.version).n == 20 and not gate._unstored


def test_a_pass_closed_on_fsspecs_loop_thread_does_not_wait_there(
    tmp_path: Path, s3_env: str, s3_proxy, s3_bucket: str
) -> None:
    """A pass left unfinished is closed wherever the garbage collector finalizes it, fsspec's
    loop thread included. Before, the close waited there for the catalog rows on their way
    and for the reads running, which need that thread to finish: the process hung. Now the
    rows finish on their own, and the reads close their shard when they end. Catalog PUTs
    stall 2 s here: a row is on its way when the pass is closed, and it is in the store
    afterwards."""
    ds, direct = _with_catalog_puts_stalled(tmp_path, s3_env, s3_proxy, s3_bucket)
    samples = iter(ds)
    for _ in range(21):  # into the second shard: the first one's row is on its way, stalled
        next(samples)
    assert closed_on_fsspecs_loop(samples), "closing the pass on fsspec's loop thread hung"
    deadline = time.monotonic() + 30
    while decided(direct) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert decided(direct) == 1  # the row on its way when the pass was closed was written
