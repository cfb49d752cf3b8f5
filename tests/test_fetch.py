"""Reading S3 shards through the fault proxy in front of moto: requests in flight, no HEAD,
resumes at the byte, stalls, servers that ignore Range, and reads pinned to one version."""

from __future__ import annotations

import pytest

from driftloader.errors import ShardReadError
from driftloader.reader import ReadStats, read_shard, read_shards
from driftloader.sources import Shard, stat_shards

from .conftest import write_shard

BLOCK = 16 * 1024


@pytest.fixture
def proxied(s3_proxy, s3_bucket, s3fs_fresh, tmp_path):
    """Three shards on moto; returns (urls, expected keys per shard, storage options)."""
    urls, expected = [], []
    for i in range(3):
        local = tmp_path / f"s{i}.tar"
        samples = write_shard(local, 12, seed=i, start=i * 1000)
        s3fs_fresh.put(str(local), f"{s3_bucket}/s{i}.tar")
        urls.append(f"s3://{s3_bucket}/s{i}.tar")
        expected.append([(s["__key__"], s["bin"]) for s in samples])
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.reset_stats()
    return urls, expected, options


def _read_all(shards, options, **kwargs) -> list[list[tuple[str, bytes]]]:
    return [
        [(s["__key__"], s["bin"]) for s in samples]
        for _, samples in read_shards(shards, options, block_size=BLOCK, **kwargs)
    ]


def test_requests_stay_in_flight_under_the_bound_with_no_head(proxied, s3_proxy):
    urls, expected, options = proxied
    shards = stat_shards([Shard(u) for u in urls], options)
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 40
    stats = ReadStats()
    bound = 4 * BLOCK
    read = _read_all(shards, options, max_inflight=bound, max_requests=3, stats=stats)
    assert read == expected
    assert s3_proxy.counts.get("HEAD", 0) == 0  # sizes and versions known: no HEAD
    # the proxy counts a request until its last byte is sent: one answered (or cancelled
    # past a shard's end-of-archive marker) may overlap the next one asked for by at most one
    assert 2 <= s3_proxy.max_in_flight <= 3 + 1
    assert 2 * BLOCK < stats.inflight_peak_bytes <= bound


def test_no_head_when_nothing_is_known_either(proxied, s3_proxy):
    urls, expected, options = proxied
    assert _read_all(urls, options) == expected
    assert s3_proxy.counts.get("HEAD", 0) == 0 and s3_proxy.counts["GET"] >= 3


def test_a_reset_mid_block_resumes_at_the_byte(proxied, s3_proxy):
    urls, expected, options = proxied
    # 2,000 bytes: the next shards' first requests are 4 KiB probes
    s3_proxy.add_fault("reset", method="GET", ranged=True, nth=2, after_bytes=2000)
    stats = ReadStats()
    assert _read_all(urls, options, backoff=0.01, stats=stats) == expected  # each sample once
    assert stats.retries == 1
    gets = [r for r in s3_proxy.requests if r.method == "GET"]
    failed = next(i for i, r in enumerate(gets) if r.fault == "reset")
    # retried at once, in the same block (bytes that reached us before the reset are kept;
    # the kernel may drop those still unread when the reset arrives)
    start, end = (int(x) for x in gets[failed].range[6:].split("-"))
    again = [r for r in gets[failed + 1 :] if r.range.endswith(f"-{end}")][0]
    assert start <= int(again.range[6:].split("-")[0]) < end


@pytest.mark.parametrize("status", [503, 429])
def test_5xx_and_429_are_retried_and_counted(proxied, s3_proxy, status):
    """S3's SlowDown is a 503; S3-compatible stores (and CDNs) limit rates with 429."""
    urls, expected, options = proxied
    s3_proxy.add_fault("status", method="GET", status=status, times=2)
    stats = ReadStats()
    assert _read_all(urls, options, backoff=0.01, stats=stats) == expected
    assert stats.retries == 2


def test_a_retry_waits_what_retry_after_asks_within_a_bound():
    import datetime
    from email.utils import format_datetime

    from driftloader.fetch import Attempts, RetryPolicy
    from driftloader.fetch_http import HttpStatusError
    from driftloader.transient import MAX_RETRY_AFTER_S

    def pause(retry_after: str | None) -> float:
        tries = Attempts("https://cdn/s.tar", 0, 10, RetryPolicy(backoff=0.01), lambda: None)
        return tries.failed(HttpStatusError(429, "Too Many Requests", retry_after))

    assert pause(None) < 0.1 and pause("bogus") < 0.1
    assert pause("3") == 3.0
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=20)
    assert 15 < pause(format_datetime(soon, usegmt=True)) <= 20
    assert pause("86400") == MAX_RETRY_AFTER_S
    spent = Attempts("https://cdn/s.tar", 0, 10, RetryPolicy(retries=0), lambda: None)
    with pytest.raises(ShardReadError, match=r"429.*slow down.*max_requests"):
        spent.failed(HttpStatusError(429, "Too Many Requests"))
    with pytest.raises(ShardReadError, match="404"):  # not asked again
        Attempts("https://cdn/s.tar", 0, 10, RetryPolicy(), lambda: None).failed(
            HttpStatusError(404, "Not Found")
        )


def test_presigned_reads_are_signed_with_sigv4(proxied, s3_proxy):
    """botocore presigns with SigV2 in us-east-1 unless told otherwise, which S3 refuses for
    buckets made since June 2020 and in every region opened since 2014."""
    urls, expected, options = proxied
    assert _read_all(urls, options) == expected
    signed = [r.target for r in s3_proxy.requests if r.method == "GET" and "?" in r.target]
    assert signed and all("X-Amz-Algorithm=AWS4-HMAC-SHA256" in t for t in signed)
    assert not any("AWSAccessKeyId=" in t for t in signed)


def _wrong_region(region: str | None) -> str:
    named = f"<Region>{region}</Region>" if region else ""
    return (
        "<Error><Code>AuthorizationQueryParametersError</Code><Message>Error parsing the "
        f"X-Amz-Credential parameter; the region is wrong</Message>{named}</Error>"
    )


def test_a_url_signed_for_another_region_is_signed_again_for_the_one_s3_names(proxied, s3_proxy):
    """botocore signs presigned URLs for the client's region, and S3 refuses them for a
    bucket in another one, naming it: the bucket's URLs are signed again for that region and
    the read goes on, each sample once, no retry counted. Refused again, or with no region
    named, the error names the shard, the region signed for and what to set."""
    urls, expected, options = proxied
    refusal = {"method": "GET", "path": "Signature=", "status": 400}
    s3_proxy.add_fault("status", times=1, body=_wrong_region("eu-west-3"), **refusal)
    stats = ReadStats()
    assert _read_all(urls, options, stats=stats) == expected
    assert stats.retries == 0
    signed = [r for r in s3_proxy.requests if "Signature=" in r.target]
    refused = next(i for i, r in enumerate(signed) if r.fault == "status")
    assert "%2Fus-east-1%2Fs3%2F" in signed[refused].target  # the credential's region/service
    block = (signed[refused].target.split("?")[0], signed[refused].range)
    again = [r for r in signed[refused + 1 :] if (r.target.split("?")[0], r.range) == block]
    assert again and "%2Feu-west-3%2Fs3%2F" in again[0].target
    for region, said in (
        ("eu-west-3", r"though the URL was signed for the region it names \('eu-west-3'\)"),
        (None, r"signed for region 'us-east-1', not the bucket's.*region_name"),
    ):
        s3_proxy.clear_faults()
        s3_proxy.add_fault("status", times=None, body=_wrong_region(region), **refusal)
        with pytest.raises(ShardReadError, match=rf"s\d\.tar.*{said}"):
            _read_all(urls, options)


# request-payer or encryption settings: read on s3fs's aiobotocore client, which applies them
AIOBOTOCORE = {"s3_additional_kwargs": {"RequestPayer": "requester"}}


def test_the_s3_reader_is_chosen_by_the_settings(s3_env, monkeypatch):
    """Presigned GETs in threads, unless s3fs's client applies what they would not: request
    payer or encryption settings, or a proxy spoken to over https (configured or from the
    environment): then s3fs's aiobotocore client reads. A plain-http proxy, a CA bundle and
    verification off are applied in the threads."""
    from driftloader.fetch import RetryPolicy
    from driftloader.fetch_s3 import S3Fetcher, S3ThreadFetcher
    from driftloader.reader import _Fetchers

    proxy = {"http": "https://127.0.0.1:9", "https": "https://127.0.0.1:9"}
    from_env = {"client_kwargs": {"endpoint_url": "http://127.0.0.2:9"}}  # a new client
    for options, kind in (
        ({}, S3ThreadFetcher),
        ({"client_kwargs": {"verify": False}}, S3ThreadFetcher),  # applied: below
        (AIOBOTOCORE, S3Fetcher),
        ({"config_kwargs": {"proxies": proxy}}, S3Fetcher),
        (from_env, S3ThreadFetcher),
        ({"config_kwargs": {"proxies": {"http": "http://127.0.0.1:9"}}}, S3ThreadFetcher),
        ("HTTP_PROXY", S3Fetcher),  # the same settings, a proxy in the environment
    ):
        if options == "HTTP_PROXY":
            monkeypatch.setenv("HTTP_PROXY", "https://127.0.0.1:9")
            options = {**from_env, "anon": False}  # not the client made before the variable
        fetchers = _Fetchers(options, RetryPolicy(), lambda: None, None, 4)
        try:
            assert type(fetchers.for_shard(Shard("s3://b/x.tar"))) is kind, options
        finally:
            fetchers.close()


def test_https_is_checked_as_s3fs_s_client_checks_it(s3_env, tls_certificate, monkeypatch):
    """The threaded reader's https connections take the CA bundle botocore resolved
    (``AWS_CA_BUNDLE``, ``verify="path"``), that bundle only, or no check with
    ``verify=False``: a bundle ignored failed every read from a store with a private CA."""
    import ssl

    from driftloader.fetch import RetryPolicy
    from driftloader.fetch_s3 import S3ThreadFetcher

    def context(options: dict) -> ssl.SSLContext:
        fetcher = S3ThreadFetcher(RetryPolicy(), lambda: None, options)
        try:
            return fetcher._tls_context()
        finally:
            fetcher.close()

    bundle = tls_certificate[0]  # a self-signed CA certificate
    monkeypatch.setenv("AWS_CA_BUNDLE", bundle)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    checked = context({"client_kwargs": {"endpoint_url": "http://127.0.0.3:9"}})
    assert checked.verify_mode == ssl.CERT_REQUIRED and checked.check_hostname
    assert checked.cert_store_stats()["x509_ca"] == 1  # the bundle, not the system's
    unchecked = context({"client_kwargs": {"endpoint_url": "http://127.0.0.4:9", "verify": False}})
    assert unchecked.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize("client", [{}, AIOBOTOCORE], ids=["threads", "aiobotocore"])
def test_a_stall_times_out_is_counted_and_retried(client, proxied, s3_proxy):
    urls, expected, options = proxied
    options = {**options, **client}
    s3_proxy.add_fault("stall", method="GET", path=r"/s0\.tar", after_bytes=3000, seconds=8)
    stats = ReadStats()
    assert _read_all(urls, options, timeout=2, backoff=0.01, stats=stats) == expected
    assert stats.retries == 1
    gets = [r for r in s3_proxy.requests if r.method == "GET"]
    stalled = next(i for i, r in enumerate(gets) if r.fault == "stall")
    path = gets[stalled].target.split("?")[0]
    # the shard's next blocks may be asked for between the two: its size came in the headers
    again = next(
        r
        for r in gets[stalled + 1 :]
        if r.target.split("?")[0] == path and r.range.endswith("-16383")
    )
    assert (gets[stalled].range, again.range) == ("bytes=0-16383", "bytes=3000-16383")


def test_a_stall_that_lasts_fails_naming_url_time_and_byte(proxied, s3_proxy):
    urls, _, options = proxied
    s3_proxy.add_fault("stall", method="GET", after_bytes=3000, seconds=8, times=None)
    stats = ReadStats()  # each answer brings 3,000 more bytes, then stalls: 2 tries, 6,000
    with pytest.raises(
        ShardReadError,
        match=r"s0\.tar at byte 6000: timed out after 1\.5 s reading it \(1 retry\)",
    ):
        list(read_shard(urls[0], options, timeout=1.5, retries=1, backoff=0.01, stats=stats))
    assert stats.retries == 1


def test_a_server_ignoring_range_gives_each_sample_once(proxied, s3_proxy):
    """Each shard's whole answer is read on by its blocks (it was a GET per block, each
    answered with the whole shard: n blocks, n^2/2 blocks' bytes)."""
    urls, expected, options = proxied
    s3_proxy.add_fault("ignore_range", method="GET", times=None)
    assert _read_all(urls, options) == expected
    assert s3_proxy.counts["GET"] == 3


def test_reads_are_pinned_to_the_stat_version(proxied, s3fs_fresh, s3_bucket, tmp_path):
    """On a versioned bucket a shard overwritten after it was stat'ed is still read as the
    version the decision was made for (its VersionId)."""
    urls, expected, options = proxied
    (shard,) = stat_shards([Shard(urls[0])], options)
    other = tmp_path / "other.tar"
    write_shard(other, 7, seed=99)
    s3fs_fresh.put(str(other), f"{s3_bucket}/s0.tar")
    assert _read_all([shard], options) == expected[:1]


def test_an_overwritten_shard_without_versions_fails_naming_it(
    s3_proxy, s3_env, s3fs_fresh, tmp_path
):
    import boto3

    bucket = "unversioned-pin"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    local = tmp_path / "a.tar"
    write_shard(local, 10)
    s3fs_fresh.put(str(local), f"{bucket}/a.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    (shard,) = stat_shards([Shard(f"s3://{bucket}/a.tar")], options)
    assert shard.version.startswith("e:")
    write_shard(local, 12, seed=5)
    s3fs_fresh.put(str(local), f"{bucket}/a.tar")
    with pytest.raises(ShardReadError, match=r"a\.tar.*changed since its version e:"):
        list(read_shard(shard, options))


def test_an_overwritten_local_shard_fails_naming_it(tmp_path):
    path = tmp_path / "l.tar"
    write_shard(path, 5)
    (shard,) = stat_shards([Shard(str(path))])
    write_shard(path, 9, seed=4)
    with pytest.raises(ShardReadError, match=r"l\.tar: changed since its version was taken"):
        list(read_shard(shard))


def _closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_unreachable_endpoint_names_aws_endpoint_url(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{_closed_port()}")
    with pytest.raises(ShardReadError, match=r"s3://b/x\.tar.*cannot connect.*AWS_ENDPOINT_URL"):
        list(read_shard("s3://b/x.tar", retries=1, backoff=0.01))


def test_missing_credentials_say_where_they_come_from(s3_env, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(
        ShardReadError, match=r"no AWS credentials.*AWS_ACCESS_KEY_ID.*storage_options"
    ):
        list(read_shard("s3://b/y.tar", retries=0))


def test_a_refused_http_connection_is_not_a_missing_shard():
    url = f"http://{_closed_port()}/x.tar"
    with pytest.raises(ShardReadError, match=r"x\.tar.*(cannot connect|refused)") as caught:
        list(read_shard(url, retries=1, backoff=0.01))
    assert "does not exist" not in str(caught.value)


def test_attempts_resume_after_the_bytes_received_and_stop_at_the_limit():
    """The retry state both fetchers share: resume offset, counted retries, the final error."""
    from driftloader.fetch import Attempts, RetryPolicy

    retried = []
    tries = Attempts(
        "s3://b/x.tar", 1000, 500, RetryPolicy(retries=2, backoff=0.0), lambda: retried.append(1)
    )
    assert tries.remaining() == (1000, 500)
    tries.parts.append(b"a" * 120)
    assert tries.failed(ConnectionResetError()) == 0.0 and tries.remaining() == (1120, 380)
    tries.parts.append(b"b" * 80)
    tries.failed(TimeoutError())
    with pytest.raises(ShardReadError, match=r"x\.tar at byte 1200: read failed \(2 retries\)"):
        tries.failed(ConnectionResetError())
    with pytest.raises(ShardReadError, match=r"at byte 1200: read failed: FileNotFoundError"):
        Attempts("s3://b/x.tar", 1200, 1, RetryPolicy(), lambda: None).failed(FileNotFoundError())
    assert len(retried) == 2 and tries.piece(500, None).data == b"a" * 120 + b"b" * 80
