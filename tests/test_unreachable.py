"""An S3 endpoint that drops packets (a firewall, a wrong host) fails fast, naming what to set.

The endpoint is a real listening socket whose accept queue is full: the kernel then drops new
connection attempts, so a client waits for its connect timeout exactly as it does against a
firewalled host. Before the fix, reading four shards from it took about 45 s (five retries of a
5 s connect timeout) and a glob raised botocore's bare ``ConnectTimeoutError``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

import driftloader as dl
from driftloader.errors import DriftloaderError, ShardReadError

FAST = 15.0
"""Generous bound (s) for "fails within a few seconds": the old behaviour took 45 s or more."""


@pytest.fixture
def dropping_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_ENDPOINT_URL pointing at a port whose full accept queue drops new connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # completes in the background
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield endpoint
    finally:
        for sock in (*fillers, server):
            sock.close()


def test_reading_shards_from_a_dropping_endpoint_fails_fast(dropping_endpoint):
    dataset = dl.DriftDataset("s3://data/x-{000..003}.tar")
    start = time.monotonic()
    with pytest.raises(ShardReadError, match=r"s3://data/x-00\d\.tar.*AWS_ENDPOINT_URL") as caught:
        next(iter(dataset))
    assert time.monotonic() - start < FAST
    assert "never reached" in str(caught.value)


def test_a_glob_on_a_dropping_endpoint_names_the_endpoint(dropping_endpoint):
    start = time.monotonic()
    with pytest.raises(DriftloaderError, match=r"s3://data/x-\*\.tar.*AWS_ENDPOINT_URL"):
        dl.DriftDataset("s3://data/x-*.tar")
    assert time.monotonic() - start < FAST


def test_a_store_on_a_dropping_endpoint_fails_fast_naming_the_endpoint(dropping_endpoint):
    start = time.monotonic()
    with pytest.raises(DriftloaderError, match=r"AWS_ENDPOINT_URL"):
        dl.ProfileStore("s3://data/store").references()
    assert time.monotonic() - start < FAST
