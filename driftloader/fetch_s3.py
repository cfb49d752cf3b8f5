"""Ranged ``GetObject`` requests on S3, many at once on s3fs's event loop, each pinned.

No HEAD is sent: the object's size and version come from each response's ``Content-Range``,
``ETag`` and ``x-amz-version-id``. A response that ignored ``Range`` (status 200, the whole
object) is sliced to the bytes asked for. Stalls are cut by ``asyncio.wait_for`` after
``RetryPolicy.timeout`` seconds without data, then retried from the byte reached.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import Future

from .errors import ShardReadError
from .fetch import Attempts, Fetcher, ObjectHandle, Piece, RetryPolicy, Stalled
from .shardversion import ShardVersion
from .sources import filesystem

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_READ_CHUNK = 1 << 20


class S3Fetcher(Fetcher):
    """Ranged reads of S3 objects through s3fs's aiobotocore client and event loop."""

    def __init__(
        self, policy: RetryPolicy, on_retry: Callable[[], None], storage_options: dict | None
    ) -> None:
        super().__init__(policy, on_retry)
        self.fs = filesystem("s3://bucket", storage_options)

    def endpoint(self, handle: ObjectHandle) -> str:
        """The S3 endpoint every bucket is reached through (AWS's when none is set)."""
        return "s3://" + str(self.fs.client_kwargs.get("endpoint_url") or "aws")

    def submit(self, handle: ObjectHandle, offset: int, size: int) -> Future:
        return asyncio.run_coroutine_threadsafe(self._get(handle, offset, size), self.fs.loop)

    async def _get(self, handle: ObjectHandle, offset: int, size: int) -> Piece:
        bucket, key, _ = self.fs.split_path(handle.shard.url)
        tries = Attempts(
            handle.url, offset, size, self.policy, self.on_retry, self.endpoint(handle)
        )
        while True:
            start, left = tries.remaining()
            try:
                total, version = await self._get_once(bucket, key, handle, start, left, tries.parts)
                return tries.piece(total, version)
            except Exception as e:
                await asyncio.sleep(tries.failed(e))

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
        self, bucket: str, key: str, handle: ObjectHandle, start: int, size: int, parts: list
    ) -> tuple[int | None, ShardVersion | None]:
        timeout = self.policy.timeout
        await self.fs.set_session()
        client = await self.fs.get_s3(bucket)
        request = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{start + size - 1}"}
        request.update(self._pin(handle))
        try:
            response = await _within(client.get_object(**request), timeout)
        except Exception as e:
            return _answer_refused(handle, e, start)
        body = response["Body"]
        try:
            skip, total = _where_body_starts(handle, response, start)
            handle.heard(total)
            while size > 0:
                chunk = await _within(body.read(_READ_CHUNK), timeout)
                if not chunk:
                    break
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                chunk = chunk[:size]
                parts.append(chunk)
                size -= len(chunk)
        finally:
            body.close()
        version = ShardVersion.from_info(
            {"VersionId": response.get("VersionId"), "ETag": response.get("ETag")}
        )
        return total, version


async def _within(awaitable, timeout: float):
    """``awaitable``'s result, or ``Stalled`` after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError as e:
        raise Stalled(f"no data for {timeout:g} s") from e


def _where_body_starts(handle: ObjectHandle, response: dict, start: int) -> tuple[int, int | None]:
    """(bytes of the body to skip, the object's size) from the status and ``Content-Range``."""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    content_range = response.get("ContentRange")
    if content_range:
        match = _CONTENT_RANGE.match(content_range)
        if match is None or int(match.group(1)) != start:
            raise ShardReadError(
                handle.url,
                f"the server answered the byte range with Content-Range {content_range!r}",
                start,
            )
        total = match.group(3)
        return 0, None if total == "*" else int(total)
    if status == 200:  # Range ignored: the whole object, from byte 0
        return start, response.get("ContentLength")
    raise ShardReadError(
        handle.url, f"a ranged read answered {status} without Content-Range", start
    )


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
