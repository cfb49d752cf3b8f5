"""S3 requests presigned by s3fs's client and sent from our threads with ``http.client``.

botocore's own request path costs ~1.3 ms of CPU a request in a fresh process (parameter
checks, endpoint rules, signing, events, aiohttp) and runs on s3fs's one event-loop thread;
presigning the same request costs 0.16-0.25 ms. Ranged reads of shards (``fetch_s3``) and
the pages of a long listing (``listing``) go this way when nothing but the client's
endpoint, region, addressing style, credentials and proxy shapes the request: no
request-payer or encryption settings (``serves``). What is signed, how https is checked
and which proxy carries it (a ``CONNECT`` tunnel for https) is what s3fs's client would do.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from fsspec.asyn import sync

from .fetch_http import send_get, timed_connection

PRESIGNED_S = 900  # how long a presigned URL is good for


def serves(fs: Any) -> bool:
    """True when a presigned request sends what s3fs's client would, the way it would: no
    request-payer or encryption settings (``requester_pays``, ``s3_additional_kwargs``), and
    no proxy but a plain-http one that tunnels (``HTTPS_PROXY=http://...``,
    ``config_kwargs={"proxies": ...}``; ``proxy_of``) with no client certificate for it."""
    if getattr(fs, "req_kw", None) or getattr(fs, "s3_additional_kwargs", None):
        return False
    client = sync(fs.loop, fs.set_session)
    config = _proxy_config(client)
    try:  # as botocore resolved them from its settings and the environment
        proxy = config.proxy_url_for(client.meta.endpoint_url)
        settings = config.settings or {}
    except AttributeError:  # not to be told: s3fs's client asks
        return False
    if not proxy:
        return True
    forwarding = settings.get("proxy_use_forwarding_for_https") or settings.get("proxy_client_cert")
    return proxy.startswith("http:") and not forwarding


def proxy_of(fs: Any, url: str) -> tuple[str, dict] | None:
    """(``host:port``, headers) of the proxy s3fs's client sends ``url``'s requests through
    (``Proxy-Authorization`` from the credentials in its URL), or None."""
    config = _proxy_config(sync(fs.loop, fs.set_session))
    proxy = config.proxy_url_for(url) if config is not None else None
    if not proxy:
        return None
    parts = urlsplit(proxy)
    where = parts.netloc.rpartition("@")[2]  # without its credentials; [brackets] kept
    return where if parts.port else f"{where}:80", config.proxy_headers_for(proxy)


def http_session(client: Any) -> Any:
    """The aiobotocore HTTP session of an S3 client: its proxies, CA bundle, certificate."""
    return getattr(getattr(client, "_endpoint", None), "http_session", None)


def _proxy_config(client: Any) -> Any:
    """botocore's ``ProxyConfiguration`` of an S3 client (None when it has none to show)."""
    return getattr(http_session(client), "_proxy_config", None)


def tls_context(fs: Any) -> ssl.SSLContext:
    """https checked as s3fs's client checks it: its CA bundle (``AWS_CA_BUNDLE``,
    ``REQUESTS_CA_BUNDLE``, ``ca_bundle``, ``verify="path"``) or none (``verify=False``), and
    its client certificate, as botocore resolved them."""
    session = http_session(sync(fs.loop, fs.set_session))
    verify = getattr(session, "_verify", True)
    if isinstance(verify, str):  # that bundle only, as botocore
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        folder = os.path.isdir(verify)
        context.load_verify_locations(None if folder else verify, verify if folder else None)
    else:
        context = ssl.create_default_context()
    if verify is False:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    certificate = getattr(session, "_cert_file", None)
    if certificate:
        context.load_cert_chain(certificate, getattr(session, "_key_file", None))
    return context


def signing_v4(client: Any) -> Any:
    """``client``, its presigned S3 URLs signed with SigV4, as its own requests are. botocore
    presigns S3 URLs with SigV2 in the regions that still take it (us-east-1, the default
    one) unless a signature version is configured, and S3 refuses SigV2 in the regions
    opened since 2014 and for the buckets made since June 2020."""
    client.meta.events.register_first(
        "choose-signer.s3", sigv4_query, unique_id="driftloader-sigv4-presign"
    )
    return client


def sigv4_query(signature_version: Any = None, signing_name: Any = None, **_: Any) -> Any:
    """botocore's ``choose-signer`` hook: a presigned S3 URL is signed with SigV4 (the
    operation's signer), before botocore's own hook turns it into SigV2."""
    if signature_version == "v4-query" and signing_name == "s3":
        return "s3v4-query"
    return None


class SignedGets:
    """GETs of S3 operations on one bucket, each presigned by s3fs's client (SigV4) and sent
    from the calling thread on a kept-alive connection of that thread's, with the client's
    timeouts and https checks. ``get`` gives the status and the whole body; a failure to
    connect or read raises ``OSError`` or ``http.client.HTTPException``. ``close`` closes
    every connection made."""

    def __init__(self, fs: Any, bucket: str) -> None:
        self.fs = fs
        sync(fs.loop, fs.set_session)
        self.client = signing_v4(sync(fs.loop, fs.get_s3, bucket))
        config = self.client.meta.config
        self.connect_timeout = float(getattr(config, "connect_timeout", None) or 60)
        self.read_timeout = float(getattr(config, "read_timeout", None) or 60)
        self._local = threading.local()
        self._made: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def get(self, method: str, params: dict) -> tuple[int, bytes]:
        url = sync(
            self.fs.loop,
            self.client.generate_presigned_url,
            method,
            Params=params,
            ExpiresIn=PRESIGNED_S,
        )
        parts = urlsplit(url)
        connection = self._connection(parts.scheme, parts.netloc)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        response = send_get(connection, target, {})
        try:
            return response.status, response.read()
        except BaseException:
            connection.close()
            raise

    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get((scheme, host))
        if connection is not None:
            return connection
        with self._lock:
            if scheme == "https" and self._tls is None:
                self._tls = tls_context(self.fs)
        connection = timed_connection(
            scheme,
            host,
            self.connect_timeout,
            self.read_timeout,
            self._tls,
            proxy_of(self.fs, f"{scheme}://{host}"),
        )
        with self._lock:
            self._made.append(connection)
        connections[(scheme, host)] = connection
        return connection

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for connection in made:
            connection.close()
