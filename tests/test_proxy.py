"""The benchmarks' latency/fault proxy in front of moto: latency, bandwidth cap, each fault, counts."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from benchmarks.latency_proxy import FaultRule, LatencyProxy

OBJECT = bytes(range(256)) * 1024  # 256 KiB


@pytest.fixture
def stored(s3_bucket: str) -> str:
    """One 256 KiB object in the bucket (written to moto directly); its bucket/key path."""
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="obj.bin", Body=OBJECT)
    return f"{s3_bucket}/obj.bin"


def client_through(proxy: LatencyProxy, **config) -> object:
    """A boto3 client on the proxy, one attempt only so faults reach the test."""
    config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    return boto3.client("s3", endpoint_url=proxy.endpoint, config=Config(**config))


def presigned(proxy: LatencyProxy, method: str, path: str) -> str:
    """The path and signed query of a presigned URL on the proxy, for plain HTTP clients."""
    bucket, key = path.split("/", 1)
    operation = {"GET": "get_object", "PUT": "put_object"}[method]
    url = client_through(proxy).generate_presigned_url(
        operation, Params={"Bucket": bucket, "Key": key}
    )
    return url.split(proxy.endpoint, 1)[1]


def raw_get(proxy: LatencyProxy, path: str) -> tuple[bytes, BaseException | None]:
    """GET the object on a plain socket; everything received, and the error that ended it."""
    received = bytearray()
    target = presigned(proxy, "GET", path)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
        try:
            while data := sock.recv(65536):
                received += data
                if len(received) >= len(OBJECT) and b"\r\n\r\n" in received:
                    head, _, body = bytes(received).partition(b"\r\n\r\n")
                    if len(body) >= len(OBJECT):
                        return bytes(received), None
        except OSError as exc:
            return bytes(received), exc
    return bytes(received), None


def test_proxy_relays_reads_and_writes_through_s3fs(s3_proxy, s3fs_proxy, s3_bucket):
    s3fs_proxy.pipe(f"{s3_bucket}/a.bin", OBJECT)
    assert s3fs_proxy.cat(f"{s3_bucket}/a.bin") == OBJECT
    assert s3fs_proxy.cat_file(f"{s3_bucket}/a.bin", start=1000, end=3000) == OBJECT[1000:3000]
    assert s3fs_proxy.ls(s3_bucket) == [f"{s3_bucket}/a.bin"]
    assert s3_proxy.counts["PUT"] == 1 and s3_proxy.counts["GET"] >= 2
    assert s3_proxy.bytes_received >= len(OBJECT)
    assert s3_proxy.bytes_sent >= len(OBJECT) + 2000


def test_boto3_put_with_expect_continue_and_chunked_body(s3_proxy, s3_bucket):
    """boto3 sends Expect: 100-continue on large PUTs; a chunked body is relayed as framed."""
    big = bytes(2 * 1024 * 1024)
    client = client_through(s3_proxy)
    client.put_object(Bucket=s3_bucket, Key="big.bin", Body=big)
    assert client.get_object(Bucket=s3_bucket, Key="big.bin")["Body"].read() == big
    conn = http.client.HTTPConnection("127.0.0.1", s3_proxy.port, timeout=5)
    target = presigned(s3_proxy, "PUT", f"{s3_bucket}/chunked.bin")
    conn.request("PUT", target, body=iter([b"abc", b"defg"]))
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert client.get_object(Bucket=s3_bucket, Key="chunked.bin")["Body"].read() == b"abcdefg"


def test_keep_alive_connection_serves_several_requests(s3_proxy, stored):
    conn = http.client.HTTPConnection("127.0.0.1", s3_proxy.port, timeout=5)
    target = presigned(s3_proxy, "GET", stored)
    for start in (0, 5000, 70000):
        conn.request("GET", target, headers={"Range": f"bytes={start}-{start + 99}"})
        response = conn.getresponse()
        assert response.status == 206
        assert response.read() == OBJECT[start : start + 100]
    assert s3_proxy.connections == 1 and s3_proxy.counts == {"GET": 3}


def test_latency_is_added_to_each_response(s3_proxy, s3fs_proxy, stored):
    s3fs_proxy.cat_file(stored, start=0, end=10)  # connection set up
    s3_proxy.latency_ms = 150
    started = time.monotonic()
    for _ in range(2):
        s3fs_proxy.cat_file(stored, start=0, end=10)
    assert time.monotonic() - started >= 2 * 0.150


def test_bandwidth_is_capped_per_connection(s3_proxy, s3fs_proxy, stored):
    s3_proxy.mbps = 1.0  # 256 KiB takes >= 0.26 s
    started = time.monotonic()
    assert s3fs_proxy.cat_file(stored) == OBJECT
    assert time.monotonic() - started >= len(OBJECT) / 1e6


def test_reset_after_n_bytes(s3_proxy, stored):
    s3_proxy.add_fault("reset", method="GET", after_bytes=10_000)
    received, error = raw_get(s3_proxy, stored)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == OBJECT[:10_000]
    assert isinstance(error, ConnectionResetError)


def test_reset_before_the_head_then_s3fs_retries(s3_proxy, s3fs_proxy, stored):
    rule = s3_proxy.add_fault("reset", method="GET")
    assert s3fs_proxy.cat_file(stored) == OBJECT
    assert rule.fired == 1 and s3_proxy.counts["GET"] == 2


@pytest.mark.parametrize("status", [500, 503])
def test_error_status(s3_proxy, stored, status):
    rule = s3_proxy.add_fault("status", status=status, path="obj.bin", nth=2)
    client = client_through(s3_proxy)
    bucket, key = stored.split("/")
    client.get_object(Bucket=bucket, Key=key)["Body"].read()  # the first one passes
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == OBJECT  # times=1
    assert rule.fired == 1 and [r.fault for r in s3_proxy.requests] == [None, "status", None]


def test_stall_times_out_a_client_with_a_read_timeout(s3_proxy, stored):
    s3_proxy.add_fault("stall", seconds=1.5)
    client = client_through(s3_proxy, read_timeout=0.3, connect_timeout=1)
    bucket, key = stored.split("/")
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.get_object(Bucket=bucket, Key=key)
    assert 0.3 <= time.monotonic() - started < 1.5


def test_stall_mid_body_then_the_rest(s3_proxy, stored):
    s3_proxy.add_fault("stall", seconds=0.3, after_bytes=1000)
    client = client_through(s3_proxy)
    bucket, key = stored.split("/")
    started = time.monotonic()
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == OBJECT
    assert time.monotonic() - started >= 0.3


def test_ignore_range_answers_the_whole_object(s3_proxy, s3fs_proxy, stored):
    s3_proxy.add_fault("ignore_range", ranged=True, times=None)
    client = client_through(s3_proxy)
    bucket, key = stored.split("/")
    response = client.get_object(Bucket=bucket, Key=key, Range="bytes=10-19")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["Body"].read() == OBJECT
    assert s3_proxy.requests[-1].range == "bytes=10-19"


def test_counts_requests_by_method_and_concurrency_through_s3fs(s3_proxy, s3fs_proxy, s3_bucket):
    paths = [f"{s3_bucket}/part-{i}.bin" for i in range(6)]
    for path in paths:
        s3fs_proxy.pipe(path, b"x" * 100)
    s3fs_proxy.info(paths[0])
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 100
    assert s3fs_proxy.cat(paths) == {path: b"x" * 100 for path in paths}  # gathered at once
    assert s3_proxy.counts == {"HEAD": 6, "GET": 6}  # s3fs's cat expands each path with a HEAD
    assert 2 <= s3_proxy.max_in_flight <= 6
    s3_proxy.reset_stats()
    assert s3fs_proxy.cat_ranges(paths, [0] * 6, [50] * 6) == [b"x" * 50] * 6
    assert s3_proxy.counts == {"GET": 6}
    assert 2 <= s3_proxy.max_in_flight <= 6
    s3_proxy.reset_stats()
    s3fs_proxy.cat_file(paths[0])
    deadline = time.monotonic() + 2  # the proxy counts an answer done after its last write
    while s3_proxy.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s3_proxy.max_in_flight == 1 and s3_proxy.in_flight == 0


def test_fault_rule_matches_method_path_range_and_nth():
    rule = FaultRule("status", method="GET", path=r"shard-\d+\.tar", ranged=True, nth=2, times=2)
    assert not rule.take("HEAD", "/b/shard-1.tar", True)
    assert not rule.take("GET", "/b/other", True)
    assert not rule.take("GET", "/b/shard-1.tar", False)
    fired = [rule.take("GET", "/b/shard-1.tar", True) for _ in range(4)]
    assert fired == [False, True, True, False] and rule.fired == 2
    further = FaultRule("reset", ranged=True, from_byte=4096)
    assert not further.take("GET", "/b/o", True, 0) and not further.take("GET", "/b/o", False)
    assert further.take("GET", "/b/o", True, 4096) and further.fired == 1


def test_refuses_bad_settings():
    with pytest.raises(ValueError, match="loopback"):
        LatencyProxy("http://10.1.2.3:9000")
    with pytest.raises(ValueError, match="fault kind"):
        FaultRule("explode")
    with pytest.raises(ValueError, match="latency_ms"):
        LatencyProxy("http://127.0.0.1:9000", latency_ms=-1)


def test_lifetime_bounds_the_proxy(s3_endpoint):
    proxy = LatencyProxy(s3_endpoint, lifetime_s=0.2).start()
    done = threading.Event()
    threading.Thread(target=lambda: (proxy.wait(5), done.set()), daemon=True).start()
    assert done.wait(5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
