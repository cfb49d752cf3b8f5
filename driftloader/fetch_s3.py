"""Ranged ``GetObject`` requests on S3, each pinned: in threads to presigned URLs
(``S3ThreadFetcher``, the reader by default), or on s3fs's aiobotocore client and event loop
(``S3Fetcher``, when request-payer or encryption settings need that client).

No HEAD is sent: the object's size and version come from each response's ``Content-Range``,
``ETag`` and ``x-amz-version-id``. A response that ignored ``Range`` (status 200, the whole
object) is read on by the shard's next blocks in threads (as in ``fetch_http``), sliced to the
bytes asked for on the event loop. Stalls are cut after ``RetryPolicy.timeout`` seconds
without data, then retried from the byte reached (``fetch_async``).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fsspec.asyn import sync

from . import presign
from .errors import ShardReadError
from .fetch import ObjectHandle, RetryPolicy
from .fetch_async import AsyncFetcher, body_start, chunks, read_body, within
from .fetch_http import SMALL_BODY, ConnectionTimeoutError, HttpFetcher, PastTheEnd
from .shardversion import ShardVersion
from .sources import filesystem
from .transient import is_transient

try:
    from aiohttp import ClientResponse
except ImportError:  # aiobotocore on httpx alone
    ClientResponse = None  # type: ignore[assignment,misc]


class S3Fetcher(AsyncFetcher):
    """Ranged reads of S3 objects through s3fs's aiobotocore client and event loop."""

    def __init__(
        self, policy: RetryPolicy, on_retry: Callable[[], None], storage_options: dict | None
    ) -> None:
        super().__init__(policy, on_retry)
        self.fs = filesystem("s3://bucket", storage_options)

    def endpoint(self, handle: ObjectHandle) -> str:
        """The S3 endpoint every bucket is reached through (AWS's when none is set)."""
        return "s3://" + str(self.fs.client_kwargs.get("endpoint_url") or "aws")

    def _pin(self, handle: ObjectHandle) -> dict:
        version = handle.version
        if version is None:
            return {}
        if version.version_id and self.fs.version_aware:
            return {"VersionId": version.version_id}
        if version.etag:
            return {"IfMatch": f'"{version.etag}"'}
        return {}

    async def _get_once(
        self, handle: ObjectHandle, start: int, size: int, parts: list
    ) -> tuple[int | None, ShardVersion | None]:
        timeout = self.policy.timeout
        bucket, key, _ = self.fs.split_path(handle.shard.url)
        await self.fs.set_session()
        client = await self.fs.get_s3(bucket)
        request = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{start + size - 1}"}
        request.update(self._pin(handle))
        # the filesystem's request-payer and encryption settings GetObject takes (s3fs's own)
        request = self.fs._get_s3_method_kwargs(client.get_object, **request)
        try:
            response = await within(client.get_object(**request), timeout)
        except Exception as e:
            return _answer_refused(handle, e, start)
        body = response["Body"]
        try:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            skip, total = body_start(
                handle, status, response.get("ContentRange"), response.get("ContentLength"), start
            )
            handle.heard(total)
            await read_body(_reader(body), size, skip, parts, timeout)
        finally:
            body.close()
        version = ShardVersion.from_info(
            {"VersionId": response.get("VersionId"), "ETag": response.get("ETag")}
        )
        return total, version


def _answer_refused(handle: ObjectHandle, e: Exception, start: int):
    """Map S3's refusals to what they mean for the shard; re-raise anything else."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        raise e
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in ("InvalidRange",) or status == 416:
        return None, None  # at or past the end: nothing more to read
    if code in ("NoSuchKey", "404") or status == 404 and code != "NoSuchVersion":
        raise ShardReadError(handle.url, "shard does not exist") from e
    if code == "NoSuchVersion":
        raise ShardReadError(
            handle.url, f"its version {handle.version} no longer exists in storage", start
        ) from e
    if code == "PreconditionFailed" or status == 412:
        raise ShardReadError(
            handle.url,
            f"changed since its version {handle.version} was taken (If-Match failed): "
            "its drift decision or pin no longer describes the bytes in storage",
            start,
        ) from e
    if code in ("AccessDenied", "403") or status == 403:
        raise ShardReadError(handle.url, f"permission denied: {e}") from e
    raise e


def _reader(body: Any) -> Callable[[int], Awaitable[bytes]]:
    """``read_body``'s reader of a GetObject body: the aiohttp stream's chunks as received when
    aiobotocore's body wraps an aiohttp response (its ``read(n)`` joins them into a copy), else
    its ``read`` (aiobotocore's httpx backend, whose streamed ``content`` raises if touched)."""
    raw = getattr(body, "raw_stream", None)
    if ClientResponse is not None and isinstance(raw, ClientResponse):
        return chunks(raw.content)
    return body.read


# ------------------------------------------------------------------------------ in threads

PRESIGN_AGAIN_S = 300  # how long a presigned URL is used: credentials that rotate sign the next


def threads_serve(storage_options: dict | None) -> bool:
    """True when ``S3ThreadFetcher`` sends what s3fs would, the way it would (``presign.serves``:
    no request-payer or encryption settings, no proxy but a plain-http one). Otherwise
    ``S3Fetcher`` reads, on s3fs's client, which applies them."""
    return presign.serves(filesystem("s3://bucket", storage_options))


class S3ThreadFetcher(HttpFetcher):
    """Ranged GETs of S3 objects in threads, through ``HttpFetcher``'s connections and body
    reads (a copy less than through aiobotocore), each to a URL that s3fs's client presigned:
    the client's endpoint, addressing style, region and credentials (refreshed as they
    rotate) sign it, with SigV4 (for the region S3 names when it refuses the client's);
    ``Range`` and ``If-Match`` go beside the signature. The size and version
    come from ``Content-Range``, ``ETag`` and ``x-amz-version-id`` as through aiobotocore, and
    S3's refusals are named the same way (``_answer_refused``)."""

    def __init__(
        self,
        policy: RetryPolicy,
        on_retry: Callable[[], None],
        storage_options: dict | None,
        threads: int = 32,
    ) -> None:
        super().__init__(policy, on_retry, None, threads)
        self.fs = filesystem("s3://bucket", storage_options)
        self._signed: dict[tuple[str, str], tuple[float, str]] = {}
        self.storage_options = storage_options
        self._regional: dict[str, Any] = {}  # bucket: the filesystem signing in its region
        self._asking = threading.Lock()

    endpoint = S3Fetcher.endpoint

    def _where(self, handle: ObjectHandle) -> tuple[str, dict]:
        version, headers, extra = handle.version, {}, {}
        if version is not None and version.version_id and self.fs.version_aware:
            extra["VersionId"] = version.version_id
        elif version is not None and version.etag:
            headers["If-Match"] = f'"{version.etag}"'
        key = (handle.shard.url, extra.get("VersionId", ""))
        now = time.monotonic()
        signed = self._signed.get(key)
        if signed is None or now - signed[0] > PRESIGN_AGAIN_S:
            path = handle.shard.url.split("?")[0]
            signer = self._regional.get(self.fs.split_path(path)[0], self.fs)
            url = sync(signer.loop, _presigned, signer, path, extra)
            self._signed[key] = signed = (now, url)
        return signed[1], headers

    def _tls_context(self) -> ssl.SSLContext:
        return presign.tls_context(self.fs)

    def _proxy(self, scheme: str, host: str) -> tuple[str, dict] | None:
        return presign.proxy_of(self.fs, f"{scheme}://{host}")

    def _request(self, handle: ObjectHandle, start: int, size: int) -> Any:
        """As ``HttpFetcher._request``. A URL that S3 refuses as signed for another region
        than the bucket's is signed again, for the region S3 names (botocore signs presigned
        URLs for the client's region: it does not follow S3's redirects as its requests
        do); refused again, or with no region named, the shard's error says what to set."""
        try:
            return super()._request(handle, start, size)
        except _OtherRegion as e:
            if not self._sign_in(handle, e.region):
                raise self._other_region(handle, e, start) from None
        try:
            return super()._request(handle, start, size)
        except _OtherRegion as e:
            raise self._other_region(handle, e, start) from None

    def _sign_in(self, handle: ObjectHandle, region: str | None) -> bool:
        """Sign the URLs of ``handle``'s bucket for ``region`` from now on, with a filesystem
        of the same settings in that region; False when S3 named no region."""
        if not region:
            return False
        bucket = self.fs.split_path(handle.shard.url)[0]
        with self._asking:
            signer = self._regional.get(bucket)
            if signer is None or signer.client_kwargs.get("region_name") != region:
                options = dict(self.storage_options or {})
                options["client_kwargs"] = {
                    **(options.get("client_kwargs") or {}),
                    "region_name": region,
                }
                self._regional[bucket] = filesystem("s3://bucket", options)
                self._signed.clear()
        return True

    def _other_region(self, handle: ObjectHandle, e: _OtherRegion, start: int) -> ShardReadError:
        bucket = self.fs.split_path(handle.shard.url)[0]
        signer = self._regional.get(bucket, self.fs)
        signed = signer.s3.meta.region_name if signer.s3 is not None else None
        if e.region and e.region == signed:  # not the region, then: credentials, endpoint
            why = f"though the URL was signed for the region it names ({signed!r})"
        else:
            where = repr(e.region) if e.region else "the bucket's region"
            why = (
                f"the URL was signed for region {signed!r}, not the bucket's; give {where} as "
                "storage_options={'client_kwargs': {'region_name': ...}}"
            )
        return ShardReadError(handle.url, f"the server answered {e}: {why}", start)

    def _send(self, connection: Any, target: str, headers: dict) -> Any:
        """As ``HttpFetcher._send``; a connection refused, a host not found or no connection in
        time is botocore's ``EndpointConnectionError`` or ``ConnectTimeoutError``, as through
        aiobotocore (``storage_hint`` then says where the endpoint comes from)."""
        try:
            return super()._send(connection, target, headers)
        except (ConnectionRefusedError, socket.gaierror) as e:
            from botocore.exceptions import EndpointConnectionError

            url = f"{connection.host}:{connection.port}"
            raise EndpointConnectionError(endpoint_url=url, error=e) from e
        except ConnectionTimeoutError as e:
            from botocore.exceptions import ConnectTimeoutError

            raise ConnectTimeoutError(endpoint_url=f"{connection.host}:{connection.port}") from e

    def _refuse(self, handle: ObjectHandle, answer: Any, start: int) -> None:
        response = answer.response
        small = response.length is None or response.length <= SMALL_BODY
        body = response.read(SMALL_BODY) if small else b""
        found = _CODE.search(body)
        code = found[1].decode() if found else ""
        error = _S3Refusal(
            response.status, response.reason, code, response.getheader("Retry-After")
        )
        if code in _OTHER_REGION or response.status == 301:
            named = _REGION.search(body)
            region = response.getheader("x-amz-bucket-region") or (named and named[1].decode())
            raise _OtherRegion(error, region or None)
        try:
            _answer_refused(handle, error, start)
        except _S3Refusal:
            if is_transient(error):  # 5xx, 429, SlowDown: retried
                raise
            raise ShardReadError(handle.url, f"the server answered {error}", start) from None
        raise PastTheEnd  # 416: at or past the end

    def _version(self, response: Any) -> ShardVersion | None:
        return ShardVersion.from_info(
            {
                "VersionId": response.getheader("x-amz-version-id"),
                "ETag": response.getheader("ETag"),
            }
        )


_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_REGION = re.compile(rb"<Region>([^<]*)</Region>")
_OTHER_REGION = frozenset(  # S3's answers to a request signed for, or sent to, another region
    {
        "AuthorizationHeaderMalformed",
        "AuthorizationQueryParametersError",
        "PermanentRedirect",
        "IllegalLocationConstraintException",
    }
)


async def _presigned(fs: Any, path: str, extra: dict) -> str:
    """A GET of ``path`` presigned by s3fs's client with SigV4, as its own requests are."""
    await fs.set_session()
    presign.signing_v4(await fs.get_s3(fs.split_path(path)[0]))
    return await fs._url(path, expires=presign.PRESIGNED_S, **extra)


class _OtherRegion(Exception):
    """S3 refused a presigned URL as signed for, or sent to, another region than the
    bucket's: ``region`` is the bucket's when the answer names it."""

    def __init__(self, error: Exception, region: str | None) -> None:
        super().__init__(str(error))
        self.region = region


class _S3Refusal(Exception):
    """An S3 error answer, shaped as botocore's ``ClientError`` for ``_answer_refused`` and
    ``is_transient``: ``response["Error"]["Code"]`` and the HTTP status."""

    def __init__(self, status: int, reason: str, code: str, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status} {reason}" + (f" ({code})" if code else ""))
        self.retry_after = retry_after  # its Retry-After header (``transient.retry_after``)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
