"""The two readers of ``http(s)://`` shards: in threads with ``http.client`` (``fetch_http``,
for storage options of only headers) and on aiohttp (``fetch_http_aio``, for the options only
aiohttp applies). Both resume at the byte after a stall and read a whole answer once; the threaded one
follows redirects without sending ``Authorization`` to another host, and asks again, uncounted,
on a kept-alive connection the server had closed."""

from __future__ import annotations

import http.server
import re
import threading

import pytest

from driftloader import fetch_http
from driftloader.reader import ReadStats, read_shards

from .conftest import write_shard
from .test_http_read import BLOCK, _public

AIOHTTP = {"client_kwargs": {}}  # an aiohttp setting: the aiohttp reader applies it


def _read_all(urls, options, **kwargs) -> list[list[tuple[str, bytes]]]:
    return [
        [(s["__key__"], s["bin"]) for s in samples]
        for _, samples in read_shards(urls, options, block_size=BLOCK, **kwargs)
    ]


def _served(proxy, bucket, s3fs_fresh, tmp_path, shards: int, samples: int):
    """``shards`` public shards served over HTTP through ``proxy``: (urls, expected)."""
    expected = [_public(s3fs_fresh, bucket, tmp_path, f"s{i}", samples, i) for i in range(shards)]
    proxy.reset_stats()
    return [f"{proxy.endpoint}/{bucket}/s{i}.tar" for i in range(shards)], expected


def test_the_threaded_reader_takes_only_the_options_it_applies():
    assert fetch_http.serves(None) and fetch_http.serves({})
    assert fetch_http.serves({"headers": {"Authorization": "Bearer t"}, "block_size": 0})
    assert not fetch_http.serves(AIOHTTP)
    assert not fetch_http.serves({"headers": {}, "client_kwargs": {"trust_env": True}})


@pytest.mark.parametrize("options", [None, AIOHTTP], ids=["threads", "aiohttp"])
def test_both_readers_ask_again_after_a_rate_limit_or_a_request_timeout(
    options, s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """429 (a hub's or a CDN's rate limit) and 408 are asked again, counted, as 5xx are: they
    failed the shard."""
    urls, expected = _served(s3_proxy, s3_bucket, s3fs_fresh, tmp_path, shards=2, samples=30)
    s3_proxy.add_fault("status", method="GET", status=429, times=1)
    s3_proxy.add_fault("status", method="GET", status=408, nth=3, times=1)
    stats = ReadStats()
    assert _read_all(urls, options, backoff=0.01, stats=stats) == expected
    assert stats.retries == 2


@pytest.mark.parametrize("options", [None, AIOHTTP], ids=["threads", "aiohttp"])
def test_both_readers_resume_at_the_byte_after_a_stall(
    options, s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    urls, expected = _served(s3_proxy, s3_bucket, s3fs_fresh, tmp_path, shards=2, samples=30)
    s3_proxy.add_fault("stall", method="GET", from_byte=BLOCK, after_bytes=3000, seconds=8)
    stats = ReadStats()
    got = _read_all(urls, options, timeout=1, backoff=0.01, stats=stats)
    assert got == expected and stats.retries == 1  # each sample once
    gets = [r for r in s3_proxy.requests if r.method == "GET"]
    stalled = next(r for r in gets if r.fault == "stall")
    start, end = (int(x) for x in stalled.range[6:].split("-"))
    again = [r.range for r in gets if r.target == stalled.target and r.range.endswith(f"-{end}")]
    assert again == [stalled.range, f"bytes={start + 3000}-{end}"]


@pytest.mark.parametrize("options", [None, AIOHTTP], ids=["threads", "aiohttp"])
def test_both_readers_read_a_whole_answer_once_per_shard(
    options, s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    urls, expected = _served(s3_proxy, s3_bucket, s3fs_fresh, tmp_path, shards=3, samples=40)
    s3_proxy.ranges = False
    assert _read_all(urls, options) == expected
    assert s3_proxy.counts["GET"] == 3


class _Origin(http.server.ThreadingHTTPServer):
    """Serves one file's byte ranges on keep-alive connections; ``/moved/...`` redirects to
    ``moved_to``; with ``close_after`` it closes each connection after its answer without
    saying so (as a server whose idle timeout is shorter than the client's); with
    ``refuse_data_after`` its redirect target answers 403 once after that many answers."""

    daemon_threads = True

    def __init__(self, data: bytes, close_after: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data, self.close_after = data, close_after
        self.moved_to = ""
        self.refuse_data_after: int | None = None  # /data/ answers 403 after this many
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization) of each request
        self.connections = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def process_request(self, request, client_address):
        self.connections += 1
        super().process_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: _Origin = self.server  # type: ignore[assignment]
        server.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", server.moved_to + self.path.removeprefix("/moved"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        served = sum(path.startswith("/data/") for path, _ in server.seen)
        if server.refuse_data_after is not None and served > server.refuse_data_after:
            server.refuse_data_after = None  # once: the next redirect's target serves
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = server.data
        first, last = re.match(r"bytes=(\d+)-(\d+)", self.headers["Range"]).groups()
        start, end = int(first), min(int(last), len(data) - 1)
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start : end + 1])
        self.close_connection = server.close_after


def test_redirects_are_followed_and_authorization_stays_with_its_host(tmp_path):
    samples = write_shard(tmp_path / "s.tar", 40, seed=2)
    origin = _Origin((tmp_path / "s.tar").read_bytes())
    port = origin.server_address[1]
    origin.moved_to = f"http://localhost:{port}/data"  # another host name: another host
    try:
        options = {"headers": {"Authorization": "Bearer secret"}}
        got = _read_all([f"http://127.0.0.1:{port}/moved/s.tar"], options)
    finally:
        origin.shutdown()
    assert got == [[(s["__key__"], s["bin"]) for s in samples]]
    moved = [auth for path, auth in origin.seen if path.startswith("/moved/")]
    data = [auth for path, auth in origin.seen if path.startswith("/data/")]
    # the shard's first request is redirected; its next blocks go straight there
    assert len(moved) == 1 and len(data) > 2
    assert set(moved) == {"Bearer secret"} and set(data) == {None}


def test_a_redirect_target_that_refuses_sends_the_shard_back_to_its_own_url(tmp_path):
    """A signed CDN URL that expired (403) while the shard is read: the shard's own URL is
    asked again, and redirects to a fresh one."""
    samples = write_shard(tmp_path / "s.tar", 40, seed=2)
    origin = _Origin((tmp_path / "s.tar").read_bytes())
    port = origin.server_address[1]
    origin.moved_to = f"http://localhost:{port}/data"
    origin.refuse_data_after = 2  # the redirect target answers 403 from its third request
    try:
        got = _read_all([f"http://127.0.0.1:{port}/moved/s.tar"], None, max_requests=1)
    finally:
        origin.shutdown()
    assert got == [[(s["__key__"], s["bin"]) for s in samples]]
    paths = [path.split("/")[1] for path, _ in origin.seen]
    assert paths[:4] == ["moved", "data", "data", "data"] and paths[4] == "moved"


def test_a_connection_the_server_closed_is_asked_again_uncounted(tmp_path):
    samples = write_shard(tmp_path / "s.tar", 40, seed=3)
    origin = _Origin((tmp_path / "s.tar").read_bytes(), close_after=True)
    port = origin.server_address[1]
    stats = ReadStats()
    try:
        got = _read_all([f"http://127.0.0.1:{port}/s.tar"], None, max_requests=1, stats=stats)
    finally:
        origin.shutdown()
    assert got == [[(s["__key__"], s["bin"]) for s in samples]]
    assert len(origin.seen) > 2 and origin.connections == len(origin.seen)
    assert stats.retries == 0
