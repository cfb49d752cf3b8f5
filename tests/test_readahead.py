"""DriftDataset reads ahead across shards on the latency proxy in front of moto: requests in
flight across shard boundaries under the bound, gate-skipped shards never requested, no HEAD
per shard under a gate, and every sample exactly once through a reset mid-block."""

from __future__ import annotations

import io
import time

import pytest
import torch

import driftloader as dl
from driftloader.reader import ReadOptions

from .conftest import write_shard

BLOCK = 16 * 1024


def _upload(s3fs_fresh, bucket: str, tmp_path, name: str, n: int, seed: int, shift=0.0) -> tuple:
    local = tmp_path / f"{name}.tar"
    samples = write_shard(local, n, seed=seed, start=seed * 1000, shift=shift)
    s3fs_fresh.put(str(local), f"{bucket}/{name}.tar")
    return f"s3://{bucket}/{name}.tar", [s["__key__"] for s in samples]


def _plain(proxy, shards: list[tuple], read: ReadOptions) -> dl.DriftDataset:
    """A plain dataset over ``shards`` (``_upload``'s) through ``proxy``, read under ``read``."""
    options = {"client_kwargs": {"endpoint_url": proxy.endpoint}}
    urls = [url for url, _ in shards]
    return dl.DriftDataset(urls, shuffle=False, storage_options=options, read_options=read)


def _gets(proxy, name: str) -> list:
    return [r for r in proxy.requests if r.method == "GET" and f"/{name}.tar" in r.target]


def test_requests_in_flight_across_shard_boundaries_under_the_bound(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """Shards of one block each: two requests at once can only be two shards' (lookahead)."""
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"one-{i}", 3, i) for i in range(6)]
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    block = 64 * 1024
    read = ReadOptions(block_size=block, max_requests=2, max_inflight=2 * block)
    ds = dl.DriftDataset(
        [u for u, _ in shards], shuffle=False, storage_options=options, read_options=read
    )
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 40
    keys = [s["__key__"] for s in ds]
    assert keys == [k for _, ks in shards for k in ks]  # each once, in order
    # the proxy counts a request until its last byte is written: the next one asked for
    # after an answer was read may overlap it by one
    assert 2 <= s3_proxy.max_in_flight <= 2 + 1
    assert s3_proxy.counts.get("HEAD", 0) == 0
    assert block < ds.stats.inflight_peak_bytes <= 2 * block  # reported, within the bound


def test_the_default_bounds_keep_many_small_shards_in_flight(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """At 100 ms a request, the defaults keep the next 16 shards' requests in flight beside the
    current one's (8 shards and 16 requests before, in 64 MiB: too few to hide the latency)."""
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"small-{i}", 2, i) for i in range(20)]
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    ds = dl.DriftDataset([u for u, _ in shards], shuffle=False, storage_options=options)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 100
    keys = [s["__key__"] for s in ds]
    assert keys == [k for _, ks in shards for k in ks]
    assert 16 <= s3_proxy.max_in_flight <= ReadOptions().max_requests + 1


def test_read_options_are_checked_and_merged_with_the_keywords(tmp_path):
    path = tmp_path / "a.tar"
    write_shard(path, 2)
    ds = dl.DriftDataset(str(path), retries=2, read_options=ReadOptions(max_inflight=1 << 20))
    assert (ds.read_options.retries, ds.read_options.max_inflight) == (2, 1 << 20)
    with pytest.raises(ValueError, match=r"retries=2 and read_options\.retries=3 disagree"):
        dl.DriftDataset(str(path), retries=2, read_options=ReadOptions(retries=3))
    with pytest.raises(ValueError, match="max_requests=0"):
        ReadOptions(max_requests=0)
    with pytest.raises(ValueError, match="block_size=100"):
        dl.DriftDataset(str(path), block_size=100)


@pytest.fixture
def gated_on_s3(s3_proxy, s3_bucket, s3fs_fresh, s3_env, tmp_path):
    """On moto: reference shards, clean and drifted shards, all profiled (through moto
    directly) in a local store with reference "ref"; the proxy's counts zeroed."""
    from driftloader.profiling import profile_shards
    from driftloader.store import ProfileStore

    ref = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"ref-{i}", 300, i)[0] for i in range(3)]
    clean = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"clean-{i}", 60, 10 + i) for i in range(3)]
    drifted = [
        _upload(s3fs_fresh, s3_bucket, tmp_path, f"drift-{i}", 60, 30 + i, shift=2.0)
        for i in range(2)
    ]
    store = ProfileStore(str(tmp_path / "store"))
    direct = {"client_kwargs": {"endpoint_url": s3_env}}
    urls = ref + [u for u, _ in clean + drifted]
    profile_shards(urls, store, progress=False, storage_options=direct)
    store.build_reference("ref", ref, storage_options=direct)
    # the order read: drifted shards between clean ones
    order = [clean[0], drifted[0], clean[1], drifted[1], clean[2]]
    s3_proxy.reset_stats()
    return store, order


def test_a_gate_skipped_shard_is_never_requested_and_no_head_is_sent(gated_on_s3, s3_proxy):
    store, order = gated_on_s3
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.latency_ms = 20
    ds = dl.DriftDataset(
        [u for u, _ in order],
        shuffle=False,
        storage_options=options,
        store=store,
        reference="ref",
        policy="skip",
        read_options=dl.ReadOptions(block_size=BLOCK, lookahead=4),
    )
    keys = [s["__key__"] for s in ds]
    assert keys == [k for u, ks in order if "clean" in u for k in ks]
    assert _gets(s3_proxy, "drift-0") == [] and _gets(s3_proxy, "drift-1") == []
    assert all(_gets(s3_proxy, f"clean-{i}") for i in range(3))
    assert s3_proxy.counts.get("HEAD", 0) == 0  # versions from one listing, not a HEAD each
    rows = {r["url"].rsplit("/", 1)[-1]: r["action"] for r in ds.drift_report()}
    assert rows["drift-0.tar"] == rows["drift-1.tar"] == "skipped"


def test_every_sample_once_through_a_reset_mid_block(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"r-{i}", 12, i) for i in range(3)]
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.reset_stats()
    # 2,000 bytes: the next shards' first requests are 4 KiB probes
    s3_proxy.add_fault("reset", method="GET", ranged=True, nth=3, after_bytes=2000)
    read = ReadOptions(block_size=BLOCK, backoff=0.01)
    ds = dl.DriftDataset(
        [u for u, _ in shards], shuffle=False, storage_options=options, read_options=read
    )
    keys = [s["__key__"] for s in ds]
    assert keys == [k for _, ks in shards for k in ks]
    assert ds.stats.retries == 1 and ds.stats.errors == 0
    assert [r.fault for r in s3_proxy.requests].count("reset") == 1


def test_a_gated_glob_is_stat_without_a_head_per_shard(gated_on_s3, s3_proxy, s3_bucket):
    """Construction under a gate: the glob's listing and one listing for the versions (with,
    the first time a process lists the bucket, its versioning asked and a plain listing made
    at the same time: see test_sources), never a HEAD per shard, whatever the number of
    shards."""
    store, order = gated_on_s3
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    ds = dl.DriftDataset(
        f"s3://{s3_bucket}/clean-*.tar", storage_options=options, store=store, reference="ref"
    )
    assert len(ds.shards) == 3 and all(s.version.startswith("v:") for s in ds.shards)
    assert s3_proxy.counts.get("HEAD", 0) == 0
    assert s3_proxy.counts["GET"] <= 4  # listings (and the bucket's versioning) only


def test_a_shards_next_blocks_are_asked_for_before_the_reader_reaches_it(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """No listing tells the sizes (a plain dataset): the first answer of a shard read ahead
    tells it, and its next blocks are requested (within the bounds) while the shard before is
    still read, not one round trip after the reader gets to it."""
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"multi-{i}", 40, i) for i in range(2)]
    read = ReadOptions(block_size=BLOCK, max_requests=16, max_inflight=64 * BLOCK, lookahead=1)
    ds = _plain(s3_proxy, shards, read)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 20
    keys, asked_for_second = [], None
    for sample in ds:
        keys.append(sample["__key__"])
        if len(keys) == 1:
            time.sleep(1.0)  # the second shard's first answer arrives meanwhile
        if len(keys) == 41:  # the first sample of the second shard
            asked_for_second = len(_gets(s3_proxy, "multi-1"))
    assert keys == [k for _, ks in shards for k in ks]
    # the first block only, before: the next one was asked for once the reader parsed it.
    # How many more depends on when shard 0's own requests free their slots: 7 to 10 were
    # seen, 7 with the tests' other process busy.
    assert asked_for_second >= 4


def test_a_shards_second_block_is_asked_for_once_the_first_answers_headers_arrive(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """A shard of unknown size: the first answer's ``Content-Range`` tells the size as soon as
    its headers arrive, and the next blocks are asked for then, not after the first block's
    whole body (at 0.2 MB/s the second half of a 128 KiB block comes ~0.33 s after its first)."""
    url, names = _upload(s3fs_fresh, s3_bucket, tmp_path, "slow", 40, 3)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    block = 8 * BLOCK
    read = ReadOptions(block_size=block, max_requests=16, max_inflight=8 * block, lookahead=0)
    ds = dl.DriftDataset([url], shuffle=False, storage_options=options, read_options=read)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 50
    s3_proxy.mbps = 0.2
    try:
        keys = [s["__key__"] for s in ds]
    finally:
        s3_proxy.mbps = None
    assert keys == names
    gets = sorted(_gets(s3_proxy, "slow"), key=lambda r: r.started)
    assert len(gets) >= 3
    # before: the second request left once the first block's body had all arrived (>= 0.3 s)
    assert gets[1].started - gets[0].started < 0.2


def test_the_shard_being_read_keeps_the_window_while_the_next_shards_sizes_are_unknown(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """Shards of many blocks, named without a listing: the next shards are first asked for a
    small probe, so the shard being read takes the window once its first answer tells its
    size. Before, each of the next shards took a whole block, and the shard being read kept
    one request in flight until the reader reached them: its requests left one round trip
    apart (a 28 MB shard at 100 ms read at 15.7k samples/s instead of 27.7k)."""
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"wide-{i}", 40, i) for i in range(8)]
    read = ReadOptions(block_size=BLOCK, max_requests=16, max_inflight=8 * BLOCK, lookahead=7)
    ds = _plain(s3_proxy, shards, read)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 100
    keys = [s["__key__"] for s in ds]
    assert keys == [k for _, ks in shards for k in ks]
    first = sorted(_gets(s3_proxy, "wide-0"), key=lambda r: r.started)
    assert len(first) >= 5  # 40 samples are several blocks
    # its continuation leaves together once the first answer's headers arrive
    starts = [r.started for r in first[1:]]
    assert sum(1 for t in starts if t - starts[0] < 0.05) >= 3
    ahead = _gets(s3_proxy, "wide-3")
    probe = min(ahead, key=lambda r: r.started)
    start, end = (int(v) for v in probe.range.split("=")[1].split("-"))
    assert start == 0 and end + 1 < BLOCK  # a probe, not a whole block


class _Recorder:
    """A fetcher that records what is asked and answers nothing (the futures stay pending)."""

    local = False

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []

    def submit(self, handle, offset: int, size: int):
        from concurrent.futures import Future

        self.asked.append((handle.shard.url, offset, size))
        return Future()


def _recorded(shards: int, block: int, bound: int, **limits) -> tuple:
    """A ``ReadAhead`` over ``shards`` S3 shards whose requests a ``_Recorder`` records:
    (read-ahead, recorder, handles)."""
    from driftloader.fetch import ObjectHandle, ReadAhead
    from driftloader.sources import Shard

    fetcher = _Recorder()
    ahead = ReadAhead(block, bound, None, **limits)
    handles = [ObjectHandle(Shard(f"s3://b/{i}.tar"), fetcher) for i in range(shards)]
    for handle in handles:
        ahead.add(handle)
    return ahead, fetcher, handles


def test_read_ahead_asks_for_probes_ahead_and_whole_tails():
    """The scheduling alone: while the first shard's size is unknown the next shards get a
    probe each, and no more even when their probes tell their sizes first; once the first
    shard's size is known, its next blocks come before any later shard's; a last piece of at
    most a quarter block is asked for with the block before it."""
    block = 64 * 1024
    ahead, fetcher, handles = _recorded(4, block, 8 * block, lookahead=3, max_requests=32)
    probe = ahead.probe_size
    assert fetcher.asked == [("s3://b/0.tar", 0, block)] + [
        (f"s3://b/{i}.tar", 0, probe) for i in (1, 2, 3)
    ]
    fetcher.asked.clear()
    handles[1].heard(3 * block)  # a probe's headers before the first shard's: it waits
    ahead._fill()
    assert fetcher.asked == []
    handles[0].heard(5 * block + block // 8)  # its first answer's headers
    ahead._fill()
    # 5 blocks' worth left, in 4 requests: the last one has the eighth of a block too; then,
    # in read order, the next shard's blocks after its probe, as far as the bound allows
    assert fetcher.asked == [
        ("s3://b/0.tar", block, block),
        ("s3://b/0.tar", 2 * block, block),
        ("s3://b/0.tar", 3 * block, block),
        ("s3://b/0.tar", 4 * block, block + block // 8),
        ("s3://b/1.tar", probe, block),
        ("s3://b/1.tar", probe + block, block),
    ]
    assert ahead.inflight <= 8 * block


def test_the_shard_being_read_is_never_left_without_a_request():
    """The next shards' probes, asked for while the first shard's size was unknown, hold all
    the room its block freed; its last 1.2 blocks did not fit, so it asked for nothing and its
    reader ended it there, a good shard reported truncated. Now it asks for the room left."""
    from driftloader.fetch import Piece

    block = 64 * 1024
    ahead, fetcher, handles = _recorded(30, block, 4 * block, lookahead=32, max_requests=48)
    probe = ahead.probe_size
    assert ahead.inflight == block + 24 * probe == 4 * block  # the probes took the rest
    first = ahead.plans[0].requests[0].future
    first.set_result(Piece(bytes(block), total=block * 22 // 10))
    blocks = ahead.blocks(handles[0])
    assert next(blocks) == bytes(block)
    fetcher.asked.clear()
    ahead._fill()  # as the reader does before waiting for the shard's next bytes
    assert fetcher.asked == [("s3://b/0.tar", block, block)]  # the room left: one block
    assert ahead.inflight <= 4 * block


def test_every_member_comes_once_in_order_under_any_bounds(tmp_path):
    """150 seeded corpora of local shards (members of 0 bytes to three blocks, ustar, pax and
    GNU headers), each read under random bounds: blocks of 4-64 KiB, 1-8 blocks in flight, 1-48
    requests, 0-32 shards ahead. Every member comes once, in order. Before the read-ahead
    always gave the shard being read a request, a good shard of trial 53 was reported
    truncated in each of 4 runs."""
    import random
    import tarfile

    rng = random.Random(1)
    formats = [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]
    for trial in range(150):
        block = rng.choice([4096, 8192, 16384, 65536])
        urls, keys = [], []
        for shard in range(rng.randint(1, 40)):
            path = tmp_path / f"t{trial}_{shard}.tar"
            with tarfile.open(path, "w", format=rng.choice(formats)) as tar:
                for i in range(rng.randint(1, 12)):
                    info = tarfile.TarInfo(f"k{shard}_{i}.bin")
                    info.size = rng.choice([0, 1, 100, 511, 512, 513, 5000, block - 1, block])
                    info.size = rng.choice([info.size, 3 * block + 7])
                    tar.addfile(info, io.BytesIO(bytes([i]) * info.size))
                    keys.append(f"k{shard}_{i}")
            urls.append(str(path))
        bound = rng.choice([None, block, 2 * block, 3 * block + 100, 8 * block])
        read = ReadOptions(
            block_size=block,
            max_inflight=bound,
            max_requests=rng.choice([1, 2, 3, 48]),
            lookahead=rng.choice([0, 1, 2, 8, 32]),
        )
        got = [s["__key__"] for s in dl.DriftDataset(urls, shuffle=False, read_options=read)]
        assert got == keys, (trial, read)


class _Bound(torch.utils.data.IterableDataset):
    """Yields, from each DataLoader worker, the bytes in flight its reader would allow
    (``local``: for local files)."""

    def __init__(self, local: bool = False, **options) -> None:
        self.local, self.options = local, options

    def __iter__(self):
        read = ReadOptions(**self.options)
        yield read.local_inflight_bound() if self.local else read.inflight_bound()


def test_the_default_bytes_in_flight_are_split_among_dataloader_workers():
    """A process's rate is what the bytes in flight must cover, and each of its N workers reads
    1/N of it: 256 MiB alone, 128 MiB each of 2 (before: 128 MiB each, whatever N), at least
    four blocks each; a bound given is kept."""
    from torch.utils.data import DataLoader

    assert ReadOptions().inflight_bound() == 256 << 20
    assert list(DataLoader(_Bound(), batch_size=None, num_workers=2)) == [128 << 20] * 2
    four_blocks = list(DataLoader(_Bound(block_size=32 << 20), batch_size=None, num_workers=4))
    assert four_blocks == [128 << 20] * 4  # 64 MiB each would be 2 blocks
    given = list(DataLoader(_Bound(max_inflight=8 << 20), batch_size=None, num_workers=2))
    assert given == [8 << 20] * 2


def test_local_files_are_read_ahead_under_a_small_bound():
    """Local files have no latency to hide: 32 MiB a process (at least two blocks a worker),
    where remote shards keep 256 MiB; a bound given holds for both."""
    from torch.utils.data import DataLoader

    assert ReadOptions().local_inflight_bound() == 32 << 20
    assert list(DataLoader(_Bound(local=True), batch_size=None, num_workers=2)) == [16 << 20] * 2
    assert list(DataLoader(_Bound(local=True), batch_size=None, num_workers=4)) == [16 << 20] * 4
    assert ReadOptions(max_inflight=8 << 20).local_inflight_bound() == 8 << 20


def test_local_shards_are_read_ahead_under_the_local_bound(tmp_path):
    """Local shards were read ahead under the remote bound (256 MiB): a pass of 312 MB took
    50-58k page faults where 32 MiB took 9-19k, and read 61k samples/s with two workers
    where 16 MiB each read 75k. Here 60 MiB of shards in 4 MiB blocks: before, up to 48
    requests' worth of them were in flight at once."""
    import tarfile

    payload = bytes(1 << 20)
    urls = []
    for shard in range(20):
        path = tmp_path / f"big-{shard}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(3):
                info = tarfile.TarInfo(f"s{shard}_{i}.bin")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        urls.append(str(path))
    ds = dl.DriftDataset(urls, shuffle=False, read_options=ReadOptions(block_size=4 << 20))
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [
        f"s{shard}_{i}" for shard in range(20) for i in range(3)
    ]
    assert all(s["bin"] == payload for s in samples)
    assert 4 << 20 <= ds.stats.inflight_peak_bytes <= 32 << 20


def test_a_pass_left_early_returns_without_waiting_for_a_stalled_read_ahead(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """The next shard's first block is asked for ahead and stalls at the store. Leaving the
    pass (a ``break``, or the garbage collector closing it) cancels what has not started and
    lets a read that has run on: before, the close waited for it, for as long as the read's
    own timeout (here 60 s), and on fsspec's loop thread a read that needed that thread
    hung the process."""
    shards = [_upload(s3fs_fresh, s3_bucket, tmp_path, f"left-{i}", 5, i) for i in range(2)]
    s3_proxy.add_fault("stall", method="GET", path="/left-1.tar", seconds=120)
    ds = _plain(s3_proxy, shards, ReadOptions(block_size=BLOCK, timeout=60))
    samples = iter(ds)
    next(samples)

    def stalled() -> bool:  # the read ahead reached the store (not only the first shard's)
        return any(r.fault == "stall" for r in s3_proxy.requests)

    deadline = time.monotonic() + 30
    while not stalled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stalled()
    started = time.monotonic()
    samples.close()
    assert time.monotonic() - started < 30  # a hang guard: it waited the read's 60 s before
