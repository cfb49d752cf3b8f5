"""Reading shards over plain HTTP (``http://`` / ``https://``, fsspec's HTTPFileSystem) through
the fault proxy in front of moto, whose objects are served to anonymous GETs once public: the
size comes from the first answer's ``Content-Range`` (no HEAD), many requests are in flight at
once, and resets, 5xx, stalls, missing shards and servers that ignore Range are handled as on
S3."""

from __future__ import annotations

import pytest

import driftloader as dl
from driftloader.errors import ShardReadError
from driftloader.reader import ReadOptions, ReadStats, read_shard, read_shards

from .conftest import write_shard

BLOCK = 16 * 1024


def _public(s3fs_fresh, bucket: str, tmp_path, name: str, n: int, seed: int) -> list:
    local = tmp_path / f"{name}.tar"
    samples = write_shard(local, n, seed=seed, start=seed * 1000)
    s3fs_fresh.put(str(local), f"{bucket}/{name}.tar")
    s3fs_fresh.chmod(f"{bucket}/{name}.tar", acl="public-read")
    return [(s["__key__"], s["bin"]) for s in samples]


@pytest.fixture
def served(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    """Three shards served over HTTP through the proxy: (urls, expected samples per shard)."""
    expected = [_public(s3fs_fresh, s3_bucket, tmp_path, f"h{i}", 12, i) for i in range(3)]
    urls = [f"{s3_proxy.endpoint}/{s3_bucket}/h{i}.tar" for i in range(3)]
    s3_proxy.reset_stats()
    return urls, expected


def _read_all(urls, **kwargs) -> list[list[tuple[str, bytes]]]:
    return [
        [(s["__key__"], s["bin"]) for s in samples]
        for _, samples in read_shards(urls, None, block_size=BLOCK, **kwargs)
    ]


def _gets(proxy, name: str) -> list:
    return sorted(
        (r for r in proxy.requests if r.method == "GET" and f"/{name}.tar" in r.target),
        key=lambda r: r.started,
    )


def test_a_shards_second_block_is_asked_for_once_the_first_answers_headers_arrive(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """fsspec's ``cat_file`` hides the headers: a shard's size was known only once a block came
    back short, so its blocks went one after the other (~0.33 s apart here, at 0.2 MB/s)."""
    expected = _public(s3fs_fresh, s3_bucket, tmp_path, "slow", 40, 3)
    url = f"{s3_proxy.endpoint}/{s3_bucket}/slow.tar"
    block = 8 * BLOCK
    read = ReadOptions(block_size=block, max_requests=16, max_inflight=8 * block, lookahead=0)
    ds = dl.DriftDataset([url], shuffle=False, read_options=read)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 50
    s3_proxy.mbps = 0.2
    try:
        samples = [(s["__key__"], s["bin"]) for s in ds]
    finally:
        s3_proxy.mbps = None
    assert samples == expected
    gets = _gets(s3_proxy, "slow")
    assert len(gets) >= 3 and s3_proxy.counts.get("HEAD", 0) == 0
    assert gets[1].started - gets[0].started < 0.2


def test_many_small_http_shards_are_in_flight_at_once(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    """At 100 ms a request, the default bounds keep the next 16 shards' requests in flight (4
    before: ``cat_file`` ran in a pool of 4 threads, whatever ``max_requests`` said)."""
    expected = [_public(s3fs_fresh, s3_bucket, tmp_path, f"small-{i}", 2, i) for i in range(20)]
    urls = [f"{s3_proxy.endpoint}/{s3_bucket}/small-{i}.tar" for i in range(20)]
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 100
    assert _read_all(urls) == expected
    assert 16 <= s3_proxy.max_in_flight <= ReadOptions().max_requests + 1
    assert s3_proxy.counts.get("HEAD", 0) == 0


def test_a_reset_mid_block_resumes_at_the_byte(served, s3_proxy):
    urls, expected = served
    # 2,000 bytes: the next shards' first requests are 4 KiB probes
    s3_proxy.add_fault("reset", method="GET", ranged=True, nth=2, after_bytes=2000)
    stats = ReadStats()
    assert _read_all(urls, backoff=0.01, stats=stats) == expected  # each sample once
    assert stats.retries == 1
    gets = [r for r in s3_proxy.requests if r.method == "GET"]
    failed = next(i for i, r in enumerate(gets) if r.fault == "reset")
    start, end = (int(x) for x in gets[failed].range[6:].split("-"))
    # the shard's next blocks may be asked for before the retry: its size came in the headers
    target = gets[failed].target
    again = next(
        r for r in gets[failed + 1 :] if r.target == target and r.range.endswith(f"-{end}")
    )
    assert start <= int(again.range[6:].split("-")[0]) < end


def test_5xx_is_retried_and_counted(served, s3_proxy):
    urls, expected = served
    s3_proxy.add_fault("status", method="GET", status=503, times=2)
    stats = ReadStats()
    assert _read_all(urls, backoff=0.01, stats=stats) == expected
    assert stats.retries == 2


def test_a_stall_that_lasts_fails_naming_url_time_and_byte(served, s3_proxy):
    urls, _ = served
    s3_proxy.add_fault("stall", method="GET", after_bytes=3000, seconds=8, times=None)
    stats = ReadStats()  # each answer brings 3,000 more bytes, then stalls: 2 tries, 6,000
    with pytest.raises(
        ShardReadError, match=r"h0\.tar at byte 6000: timed out after 1\.5 s reading it \(1 retry\)"
    ):
        list(read_shard(urls[0], None, timeout=1.5, retries=1, backoff=0.01, stats=stats))
    assert stats.retries == 1


def test_a_missing_shard_is_named_and_not_retried(served, s3_proxy, s3_bucket):
    urls, _ = served
    missing = f"{s3_proxy.endpoint}/{s3_bucket}/nothing-here.tar"
    stats = ReadStats()
    with pytest.raises(ShardReadError, match=r"nothing-here\.tar.*does not exist"):
        list(read_shard(missing, None, backoff=0.01, stats=stats))
    assert stats.retries == 0


def test_a_server_ignoring_range_is_read_in_one_answer_per_shard(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """A server without Range support (``python -m http.server`` is one) answers every ranged
    GET with the whole shard. Its first answer is read on in order by the shard's next blocks:
    one GET and the shard's bytes once, not a GET per block each sending the shard from byte 0
    (n blocks cost n^2/2 blocks' bytes)."""
    expected = [_public(s3fs_fresh, s3_bucket, tmp_path, f"big-{i}", 40, i) for i in range(2)]
    urls = [f"{s3_proxy.endpoint}/{s3_bucket}/big-{i}.tar" for i in range(2)]
    size = sum((tmp_path / f"big-{i}.tar").stat().st_size for i in range(2))
    s3_proxy.reset_stats()
    s3_proxy.ranges = False
    stats = ReadStats()
    assert _read_all(urls, stats=stats) == expected
    assert size > 20 * BLOCK  # many blocks a shard
    assert s3_proxy.counts["GET"] == 2 and stats.retries == 0
    assert s3_proxy.bytes_sent < 1.1 * size


def test_a_reset_answer_that_ignored_range_is_asked_for_again_and_read_on(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """A reset in the middle of a whole-shard answer: the next block asks again and reads the
    new answer on from its byte, the failed block's retry (if behind it by then) reads up to its
    own block's end from an answer of its own; every sample comes once, in at most three GETs
    (a GET per block, each answered whole, was 26 GETs and 23 times the shard's bytes here).
    On loopback the proxy writes a whole answer into the socket before the early close of the
    retry's answer is seen, so up to 2.2 times the shard's bytes leave it."""
    expected = [_public(s3fs_fresh, s3_bucket, tmp_path, "big", 40, 1)]
    url = f"{s3_proxy.endpoint}/{s3_bucket}/big.tar"
    s3_proxy.reset_stats()
    s3_proxy.ranges = False
    s3_proxy.add_fault("reset", method="GET", nth=1, after_bytes=5 * BLOCK + 100)
    stats = ReadStats()
    assert _read_all([url], stats=stats, backoff=0.01) == expected
    assert stats.retries == 1 and s3_proxy.counts["GET"] <= 3
    assert s3_proxy.bytes_sent < 2.5 * (tmp_path / "big.tar").stat().st_size


def test_storage_options_headers_go_with_every_request(served, s3_proxy):
    """The filesystem's settings (``storage_options``, e.g. the headers a private server
    needs) go with each GET: here an ``If-Match`` that no version matches makes moto answer
    412, and the read fails at once, naming the shard."""
    urls, expected = served
    assert [(s["__key__"], s["bin"]) for s in read_shard(urls[0], {"headers": {}})] == expected[0]
    stats = ReadStats()
    with pytest.raises(ShardReadError, match=r"h0\.tar.*412"):
        list(read_shard(urls[0], {"headers": {"If-Match": '"nope"'}}, stats=stats))
    assert stats.retries == 0


def test_dataloader_workers_each_read_their_http_shards_once(served, s3_proxy):
    """Forked DataLoader workers make their own HTTP session and loop (the parent's read one
    first): every sample comes once."""
    from torch.utils.data import DataLoader

    urls, expected = served
    ds = dl.DriftDataset(urls, shuffle=False)
    assert sorted(s["__key__"] for s in ds) == sorted(k for shard in expected for k, _ in shard)
    keys = list(DataLoader(ds.map(lambda s: s["__key__"]), batch_size=None, num_workers=2))
    assert sorted(keys) == sorted(k for shard in expected for k, _ in shard)


def test_the_benchmarks_file_origin_serves_ranges_and_driftloader_reads_it(tmp_path):
    """``benchmarks/file_origin.py``, the fast origin of the read-path benchmarks (moto caps
    them below the local rate): ranges, whole answers, 416 past the end, 404 for anything but a
    file of its folder; and a shard read through it gives its samples."""
    import urllib.error
    import urllib.request

    from benchmarks.servers import Servers

    samples = write_shard(tmp_path / "s.tar", 30, seed=7)
    data = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "sub").mkdir()
    with Servers() as servers:
        origin = servers.files(tmp_path, lifetime_s=120)

        def get(path: str, range_: str | None = None):
            request = urllib.request.Request(f"{origin}/{path}")
            if range_:
                request.add_header("Range", range_)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, answer.headers.get("Content-Range"), answer.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("Content-Range"), b""

        assert get("s.tar") == (200, None, data)
        assert get("s.tar", "bytes=100-1123") == (
            206,
            f"bytes 100-1123/{len(data)}",
            data[100:1124],
        )
        assert get("s.tar", f"bytes={len(data) - 10}-") == (
            206,
            f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}",
            data[-10:],
        )
        assert get("s.tar", f"bytes={len(data)}-")[:2] == (416, f"bytes */{len(data)}")
        # a key's GET with a query (a presigned URL's signature) is the key's, not a listing
        assert get("bucket/s.tar?X-Amz-Signature=abc", "bytes=0-9") == (
            206,
            f"bytes 0-9/{len(data)}",
            data[:10],
        )
        assert get("missing.tar")[0] == get("sub")[0] == get("..%2Fs.tar")[0] == 404
        got = _read_all([f"{origin}/s.tar"])
        assert got == [[(s["__key__"], s["bin"]) for s in samples]]


def test_a_chunked_ranged_answer_is_read_whole_without_retries(tmp_path):
    """Bodies are taken chunk by chunk as the socket gives them (``readchunk``, no join per
    read); in a ``Transfer-Encoding: chunked`` answer, the end of an HTTP chunk that it reports
    is not the end of the body."""
    import asyncio
    import threading

    from aiohttp import web

    samples = write_shard(tmp_path / "c.tar", 30, seed=5)
    data = (tmp_path / "c.tar").read_bytes()

    async def ranged(request: web.Request) -> web.StreamResponse:
        first, _, last = request.headers["Range"].removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last), len(data) - 1)
        answer = web.StreamResponse(status=206)
        answer.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for at in range(start, end + 1, 3000):  # many small HTTP chunks
            await answer.write(data[at : min(at + 3000, end + 1)])
        await answer.write_eof()
        return answer

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/c.tar", ranged)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        stats = ReadStats()
        got = _read_all([f"http://127.0.0.1:{port}/c.tar"], stats=stats)
        assert got == [[(s["__key__"], s["bin"]) for s in samples]]
        assert stats.retries == 0
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
