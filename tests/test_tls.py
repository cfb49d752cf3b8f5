"""S3 over https, as real S3 is spoken to: the threaded reader's presigned GETs and a glob's
presigned listing pages check the server with the CA bundle s3fs's client was given, and an
untrusted server is refused, naming the shard."""

from __future__ import annotations

import pytest

import driftloader as dl
from driftloader.errors import ShardReadError
from driftloader.reader import ReadStats, read_shard
from driftloader.sources import expand_urls

from .conftest import write_shard
from .test_sources import _new_bucket


def _presigned_gets(proxy) -> list:
    return [r for r in proxy.requests if r.method == "GET" and "X-Amz-Signature=" in r.target]


def _uploaded(tmp_path, s3fs_fresh, endpoint: str) -> tuple[str, list[dict]]:
    bucket = _new_bucket(endpoint, "tls", False)
    samples = []
    for i in range(3):
        path = tmp_path / f"shard-{i:04d}.tar"
        samples += write_shard(path, 20, seed=i, start=100 * i)
        s3fs_fresh.put(str(path), f"{bucket}/data/shard-{i:04d}.tar")
    return bucket, samples


def test_shards_are_listed_and_read_over_https_with_the_ca_bundle_given(
    tmp_path, s3_env, s3fs_fresh, s3_tls_proxy, tls_certificate
):
    bucket, samples = _uploaded(tmp_path, s3fs_fresh, s3_env)
    options = {
        "client_kwargs": {"endpoint_url": s3_tls_proxy.endpoint, "verify": tls_certificate[0]}
    }
    s3_tls_proxy.reset_stats()
    ds = dl.DriftDataset(f"s3://{bucket}/data/shard-*.tar", shuffle=False, storage_options=options)
    got = [(s["__key__"], s["x.npy"]) for s in ds]
    assert got == [(s["__key__"], s["x.npy"]) for s in samples]
    signed = _presigned_gets(s3_tls_proxy)
    assert any("list-type=2" in r.target for r in signed)  # the listing's pages
    assert any(r.range for r in signed)  # the shards' ranged GETs, in threads
    assert ds.stats.errors == 0


def test_an_untrusted_server_is_refused_naming_the_shard(
    tmp_path, s3_env, s3fs_fresh, s3_tls_proxy, tls_certificate, monkeypatch
):
    """The system's CA bundle does not hold the test certificate: the listing (botocore's)
    and the threaded reader both refuse the server, the reader's error naming the shard (a
    handshake refused is not asked again)."""
    bucket, _ = _uploaded(tmp_path, s3fs_fresh, s3_env)
    trusted = {
        "client_kwargs": {"endpoint_url": s3_tls_proxy.endpoint, "verify": tls_certificate[0]}
    }
    shards = expand_urls(f"s3://{bucket}/data/shard-*.tar", trusted)  # sizes and versions known
    for variable in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    untrusted = {"client_kwargs": {"endpoint_url": s3_tls_proxy.endpoint}}
    with pytest.raises(Exception, match="(?i)certificate"):
        expand_urls(f"s3://{bucket}/data/shard-*.tar", untrusted)
    with pytest.raises(ShardReadError, match="(?i)certificate") as caught:
        list(read_shard(shards[0], untrusted))  # sized and versioned: straight to its GETs
    assert shards[0].url in str(caught.value) and "AWS_CA_BUNDLE" in str(caught.value)
    assert "retr" not in str(caught.value)  # a certificate refused is not asked again


# -- through a company's forward proxy -------------------------------------------------------


@pytest.fixture
def forward_proxy(monkeypatch):
    from benchmarks.forward_proxy import ForwardProxy

    for variable in (
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(variable, raising=False)
    with ForwardProxy() as proxy:
        yield proxy


def test_https_through_a_proxy_goes_in_a_tunnel_from_the_threads(
    tmp_path, s3_env, s3fs_fresh, s3_tls_proxy, tls_certificate, forward_proxy, monkeypatch
):
    """``HTTPS_PROXY``: the listing's pages and the shards' GETs are still presigned and sent
    from our threads (before, s3fs's client read whenever a proxy was set), each connection a
    ``CONNECT`` tunnel through the proxy, checked with the CA bundle given."""
    bucket, samples = _uploaded(tmp_path, s3fs_fresh, s3_env)
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    options = {
        "client_kwargs": {"endpoint_url": s3_tls_proxy.endpoint, "verify": tls_certificate[0]}
    }
    s3_tls_proxy.reset_stats()
    ds = dl.DriftDataset(f"s3://{bucket}/data/shard-*.tar", shuffle=False, storage_options=options)
    assert [s["__key__"] for s in ds] == [s["__key__"] for s in samples]
    signed = _presigned_gets(s3_tls_proxy)
    assert any("list-type=2" in r.target for r in signed) and any(r.range for r in signed)
    port = s3_tls_proxy.endpoint.rsplit(":", 1)[1]
    assert forward_proxy.tunnels >= 2 and forward_proxy.forwarded == 0
    assert all(h.line.startswith(f"CONNECT 127.0.0.1:{port} ") for h in forward_proxy.heads)


def test_a_reset_inside_a_tunnel_is_read_again_from_the_byte_reached(
    tmp_path, s3_env, s3fs_fresh, s3_tls_proxy, tls_certificate, forward_proxy, monkeypatch
):
    """A connection reset mid-body over https through the proxy: the block is asked for again
    in a new tunnel from the byte reached, and every sample comes once."""
    bucket, samples = _uploaded(tmp_path, s3fs_fresh, s3_env)
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    options = {
        "client_kwargs": {"endpoint_url": s3_tls_proxy.endpoint, "verify": tls_certificate[0]}
    }
    shards = expand_urls(f"s3://{bucket}/data/shard-*.tar", options)
    tunnels = forward_proxy.tunnels
    rule = s3_tls_proxy.add_fault("reset", method="GET", ranged=True, after_bytes=20_000)
    stats = ReadStats()
    got = [s["__key__"] for shard in shards for s in read_shard(shard, options, stats=stats)]
    assert got == [s["__key__"] for s in samples]
    assert rule.fired == 1 and stats.retries >= 1
    assert forward_proxy.tunnels > tunnels + 1  # the read's tunnel, and a new one after the reset


def test_http_through_a_proxy_with_credentials_sends_them(
    tmp_path, s3_env, s3fs_fresh, forward_proxy
):
    """A proxy set in ``config_kwargs``, with credentials in its URL: plain-http requests go
    to it in absolute form from our threads, each connection's first with its
    ``Proxy-Authorization``, as botocore sends them."""
    bucket, samples = _uploaded(tmp_path, s3fs_fresh, s3_env)
    proxy = forward_proxy.url.replace("http://", "http://user:s%40cret@")
    options = {
        "client_kwargs": {"endpoint_url": s3_env},
        "config_kwargs": {"proxies": {"http": proxy}},
    }
    shards = expand_urls(f"s3://{bucket}/data/shard-*.tar", options)
    assert [s["__key__"] for s in read_shard(shards[1], options)] == [
        s["__key__"] for s in samples[20:40]
    ]
    ours = [h for h in forward_proxy.heads if "X-Amz-Signature=" in h.line]
    assert any("list-type=2" in h.line for h in ours)  # the glob's pages
    assert any("shard-0001.tar" in h.line for h in ours)  # the shard's GETs
    assert all(h.line.startswith(f"GET {s3_env}/") for h in ours)
    assert {h.authorization for h in forward_proxy.heads} == {"Basic dXNlcjpzQGNyZXQ="}


def test_a_proxy_spoken_to_over_https_leaves_reading_to_s3fs_s_client(s3_env):
    """Through an https proxy (TLS to the proxy, then TLS in its tunnel) http.client cannot
    go: s3fs's client reads and lists, as before."""
    from driftloader.fetch_s3 import threads_serve

    options = {"client_kwargs": {"endpoint_url": s3_env.replace("http:", "https:")}}
    assert threads_serve(options)
    options["config_kwargs"] = {"proxies": {"https": "https://127.0.0.1:9"}}
    assert not threads_serve(options)
    options["config_kwargs"] = {"proxies": {"https": "http://127.0.0.1:9"}}
    assert threads_serve(options)
