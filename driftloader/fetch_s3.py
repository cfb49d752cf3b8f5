"""Ranged ``GetObject`` requests on S3, many at once on s3fs's event loop, each pinned.

No HEAD is sent: the object's size and version come from each response's ``Content-Range``,
``ETag`` and ``x-amz-version-id``. A response that ignored ``Range`` (status 200, the whole
object) is sliced to the bytes asked for. Stalls are cut after ``RetryPolicy.timeout`` seconds
without data, then retried from the byte reached (``fetch_async``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ShardReadError
from .fetch import ObjectHandle, RetryPolicy
from .fetch_async import AsyncFetcher, body_start, chunks, read_body, within
from .shardversion import ShardVersion
from .sources import filesystem

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
