"""An S3 endpoint that drops packets (a firewall, a wrong host) fails fast, naming what to set.

The endpoint is a real listening socket whose accept queue is full: the kernel then drops new
connection attempts, so a client waits for its connect timeout exactly as it does against a
firewalled host. Before the fix, reading four shards from it took about 45 s (five retries of a
5 s connect timeout) and a glob raised botocore's bare ``ConnectTimeoutError``. The tests check
the bound by its parts (the connect timeout, the tries counted in the error), not by the clock:
on a loaded machine setting up the client alone can take seconds.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

import driftloader as dl
from driftloader.errors import ShardReadError, StorageUnreachable
from driftloader.sources import filesystem

from .conftest import write_shard


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


def test_connections_to_s3_time_out_in_seconds(dropping_endpoint):
    for fs in (filesystem("s3://data/x.tar"), dl.ProfileStore("s3://data/store").fs):
        assert fs.config_kwargs["connect_timeout"] <= 3  # botocore's default is 60 s


def test_reading_shards_from_a_dropping_endpoint_fails_after_one_retry(dropping_endpoint):
    dataset = dl.DriftDataset("s3://data/x-{000..003}.tar")
    with pytest.raises(ShardReadError, match=r"s3://data/x-00\d\.tar.*AWS_ENDPOINT_URL") as caught:
        next(iter(dataset))
    message = str(caught.value)
    assert "(1 retry)" in message and "never reached" in message  # was "(5 retries)"


def test_a_glob_on_a_dropping_endpoint_names_the_endpoint(dropping_endpoint):
    with pytest.raises(StorageUnreachable, match=r"s3://data/x-\*\.tar.*AWS_ENDPOINT_URL"):
        dl.DriftDataset("s3://data/x-*.tar")


def test_a_store_on_a_dropping_endpoint_names_the_endpoint(dropping_endpoint):
    with pytest.raises(StorageUnreachable, match=r"store s3://data/store.*AWS_ENDPOINT_URL"):
        dl.ProfileStore("s3://data/store").references()


def test_an_endpoint_that_answered_does_not_vouch_for_another(
    s3_bucket, s3_endpoint, s3fs_fresh, tmp_path, dropping_endpoint
):
    """The one-retry rule is per endpoint: a process that already read from one S3 endpoint
    (here moto, named in storage_options) still fails fast on a dead one."""
    write_shard(tmp_path / "a.tar", 3)
    s3fs_fresh.put(str(tmp_path / "a.tar"), f"{s3_bucket}/a.tar")
    moto = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    assert len(list(dl.read_shard(f"s3://{s3_bucket}/a.tar", moto))) == 3
    with pytest.raises(ShardReadError, match=r"\(1 retry\).*never reached"):
        next(iter(dl.DriftDataset("s3://data/x-{000..003}.tar")))
