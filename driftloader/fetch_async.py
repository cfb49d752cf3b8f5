"""Ranged requests as coroutines on an async fsspec filesystem's event loop: many at once, no
thread each: the readers of the settings only s3fs's aiobotocore client or fsspec's aiohttp
session apply (``fetch_s3``, ``fetch_http`` read the rest in threads). ``S3Fetcher``
(``fetch_s3``) and ``AioHttpFetcher`` (``fetch_http_aio``) read one try of
a request in ``_get_once``; what they share is here: the retry loop (resuming at the byte
reached), the stall deadline, where a ranged answer's body starts, and reading it.

The object's size comes from the first answer's ``Content-Range`` as soon as its headers
arrive (``ObjectHandle.heard``), so a shard's next blocks are asked for one round trip after
its first, with no HEAD.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from .errors import ShardReadError
from .fetch import Attempts, Fetcher, ObjectHandle, Piece, Stalled
from .shardversion import ShardVersion

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
READ_CHUNK = 1 << 20


class AsyncFetcher(Fetcher):
    """Ranged reads on ``self.fs``'s event loop; a subclass reads one try in ``_get_once``."""

    fs: Any  # an async fsspec filesystem (``fs.loop`` runs the requests)

    def submit(self, handle: ObjectHandle, offset: int, size: int) -> Future:
        return asyncio.run_coroutine_threadsafe(self._get(handle, offset, size), self.fs.loop)

    async def _get(self, handle: ObjectHandle, offset: int, size: int) -> Piece:
        tries = Attempts(
            handle.url, offset, size, self.policy, self.on_retry, self.endpoint(handle)
        )
        while True:
            start, left = tries.remaining()
            try:
                total, version = await self._get_once(handle, start, left, tries.parts)
                return tries.piece(total, version)
            except Exception as e:
                await asyncio.sleep(tries.failed(e))

    async def _get_once(
        self, handle: ObjectHandle, start: int, size: int, parts: list
    ) -> tuple[int | None, ShardVersion | None]:
        """Read ``size`` bytes from ``start`` into ``parts`` (fewer at the end of the object):
        (the object's size, its version), each None when the answer did not say."""
        raise NotImplementedError


_timeout = getattr(asyncio, "timeout", None)


async def within(awaitable: Awaitable, timeout: float) -> Any:
    """``awaitable``'s result, or ``Stalled`` after ``timeout`` seconds (``asyncio.timeout``
    where there is one, 3.11+: ``wait_for`` there made a task of every chunk's read)."""
    try:
        if _timeout is None:
            return await asyncio.wait_for(awaitable, timeout)
        async with _timeout(timeout):
            return await awaitable
    except asyncio.TimeoutError as e:
        raise Stalled(f"no data for {timeout:g} s") from e


def body_start(
    handle: ObjectHandle,
    status: int | None,
    content_range: str | None,
    length: int | None,
    start: int,
) -> tuple[int, int | None]:
    """(bytes of the body to skip, the object's size) of an answer to ``Range: bytes=start-``,
    from its status and ``Content-Range``: a 200 ignored the range (the whole object, from byte
    0, its size the body's ``length``)."""
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
        return start, length
    raise ShardReadError(
        handle.url, f"a ranged read answered {status} without Content-Range", start
    )


async def read_body(
    read: Callable[[int], Awaitable[bytes]], size: int, skip: int, parts: list, timeout: float
) -> None:
    """Append the body's bytes to ``parts`` after the first ``skip``, up to ``size`` of them;
    ``Stalled`` when no data comes for ``timeout`` seconds (the bytes that came stay).

    ``read(n)`` gives at most ``n`` bytes (``StreamReader.read``: nothing past the block is
    taken, so an answer kept open is read on from there), or the next chunk received whatever
    its length (``chunks``: no copy, for a body that ends with the block or is dropped after
    it); the bytes past ``skip + size`` are then dropped."""
    while size > 0:
        chunk = await within(read(min(READ_CHUNK, skip + size)), timeout)
        if not chunk:
            return
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        if len(chunk) > size:
            chunk = chunk[:size]
        parts.append(chunk)
        size -= len(chunk)


def chunks(content: Any) -> Callable[[int], Awaitable[bytes]]:
    """``read(n)`` for ``read_body`` over aiohttp's ``StreamReader`` ``content`` that gives
    each chunk as the socket delivered it, whole. ``content.read(n)`` joins the chunks
    buffered into one ``bytes`` (a copy of every byte, under the GIL, beside the block's own
    join); ``readchunk`` hands them over as they are. b"" at the end of the body."""

    async def read(_: int) -> bytes:
        while True:
            data, end_of_http_chunk = await content.readchunk()
            if data or not end_of_http_chunk:  # (b"", True) ends a chunk of a chunked body
                return data

    return read
