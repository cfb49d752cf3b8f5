"""Ranged GETs over HTTP(S), many at once on fsspec's aiohttp session and event loop: the
reader of ``http(s)://`` shards whose ``storage_options`` need aiohttp (``client_kwargs``, auth
objects, ssl settings); ``fetch_http`` reads the rest in threads, with a copy less.

fsspec's ``cat_file`` returns a range's bytes without the answer's headers, so a reader on it
learns a shard's size only when a block comes back short: the shard's blocks go one round trip
after another. Here the first answer's ``Content-Range`` tells the size as its headers arrive,
as on S3, and the next blocks are asked for then; no HEAD is sent. The filesystem's own
settings (``storage_options``: headers, auth, client kwargs) go with every request.

A server without Range support (``python -m http.server`` is one) answers every ranged GET
with the whole shard (200). Asking it for each block would send the shard from byte 0 for
each: n blocks, n^2/2 blocks' bytes. Instead such an answer is kept open (``_Stream``) and the
shard's blocks are read on from it in order, one block at a time: one GET and the shard's
bytes once. An answer that fails midway is dropped; the next block asks again and reads the
new answer on from its own byte (the failed block's retry, if behind it by then, reads its
block from an answer of its own, up to that block's end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from .errors import ShardReadError
from .fetch import ObjectHandle, RetryPolicy
from .fetch_async import AsyncFetcher, body_start, chunks, read_body, within
from .shardversion import ShardVersion
from .sources import filesystem


class _Stream:
    """A shard's answer that ignored Range (the whole shard), read on in order by its blocks
    (one at a time: ``lock``, which queues them in the order they asked)."""

    def __init__(self) -> None:
        self.response: Any = None  # None: none open (not yet, or dropped after a failure)
        self.at = 0  # bytes of its body consumed
        self.lock = asyncio.Lock()

    def take(self, response: Any, start: int) -> None:
        """Keep ``response`` (a whole answer) unless the one open can serve ``start``."""
        if self.response is not None and self.at <= start:
            response.release()
            return
        self.drop()
        self.response, self.at = response, 0

    def drop(self) -> None:
        if self.response is not None:
            self.response.release()
            self.response = None


class AioHttpFetcher(AsyncFetcher):
    """Ranged reads of ``http://`` and ``https://`` shards on fsspec's ``HTTPFileSystem``."""

    def __init__(
        self, policy: RetryPolicy, on_retry: Callable[[], None], storage_options: dict | None
    ) -> None:
        super().__init__(policy, on_retry)
        self.fs = filesystem("https://host", storage_options)

    async def _get_once(
        self, handle: ObjectHandle, start: int, size: int, parts: list
    ) -> tuple[int | None, ShardVersion | None]:
        stream = handle.state
        if isinstance(stream, _Stream):
            async with stream.lock:
                return await self._read_on(handle, stream, start, size, parts)
        response, skip, total = await self._request(handle, start, size)
        if response is None:
            return None, None  # at or past the end: nothing more to read
        if response.status == 200 and (total is None or total > start + size):
            stream = handle.state
            if not isinstance(stream, _Stream):
                stream = handle.state = _Stream()
            async with stream.lock:
                stream.take(response, start)
                handle.heard(total)  # the next blocks queue for the lock meanwhile
                return await self._read_on(handle, stream, start, size, parts)
        return await self._read_whole(handle, response, skip, total, size, parts)

    async def _request(self, handle: ObjectHandle, start: int, size: int) -> tuple[Any, int, Any]:
        """(the answer, bytes of its body before ``start``, the shard's size) of a GET of
        ``size`` bytes from ``start``; (None, 0, None) past the end. Refusals are named."""
        session = await self.fs.set_session()
        options = dict(self.fs.kwargs)
        headers = dict(options.pop("headers", None) or {})
        headers["Range"] = f"bytes={start}-{start + size - 1}"
        url = self.fs.encode_url(handle.shard.url)
        response = await within(session.get(url, headers=headers, **options), self.policy.timeout)
        try:
            status = response.status
            if status == 416:
                response.release()
                return None, 0, None
            if status == 404:
                raise ShardReadError(handle.url, "shard does not exist")
            if status in (401, 403):
                raise ShardReadError(handle.url, f"permission denied (HTTP {status})")
            response.raise_for_status()  # 5xx, 408, 429 retried (``is_transient``), the rest fail
            content_range = response.headers.get("Content-Range")
            skip, total = body_start(handle, status, content_range, response.content_length, start)
        except BaseException:
            response.release()
            raise
        return response, skip, total

    async def _read_whole(
        self, handle: ObjectHandle, response: Any, skip: int, total, size: int, parts: list
    ) -> tuple[int | None, None]:
        """The block from an answer of its own (ranged, or a whole shard of one block)."""
        try:
            handle.heard(total)
            await read_body(chunks(response.content), size, skip, parts, self.policy.timeout)
        finally:
            response.release()
        return total, None

    async def _read_on(
        self, handle: ObjectHandle, stream: _Stream, start: int, size: int, parts: list
    ) -> tuple[int | None, None]:
        """The block from the shard's open whole answer (its lock held), asking again when
        there is none; a failure drops it. A block behind it (a failed block's retry, once a
        later block asked again) is read from an answer of its own: the open one goes on."""
        if stream.response is None or stream.at > start:
            response, skip, total = await self._request(handle, start, size)
            if response is None:
                return None, None
            if response.status != 200 or stream.response is not None:
                return await self._read_whole(handle, response, skip, total, size, parts)
            stream.response, stream.at = response, 0
        before = sum(map(len, parts))
        try:
            await read_body(
                stream.response.content.read, size, start - stream.at, parts, self.policy.timeout
            )
        except BaseException:
            stream.drop()  # where it stopped is not known: the next block asks again
            raise
        stream.at = start + sum(map(len, parts)) - before
        return handle.size, None

    def close_handle(self, handle: ObjectHandle) -> None:
        """Drop the shard's open whole answer, if any (``ReadAhead.release`` calls it when the
        shard is done; the loop's thread closes it)."""
        stream, handle.state = handle.state, None
        if isinstance(stream, _Stream):
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release
                self.fs.loop.call_soon_threadsafe(stream.drop)
