"""Ranged GETs over HTTP(S), many at once on fsspec's aiohttp session and event loop.

fsspec's ``cat_file`` returns a range's bytes without the answer's headers, so a reader on it
learns a shard's size only when a block comes back short: the shard's blocks go one round trip
after another. Here the first answer's ``Content-Range`` tells the size as its headers arrive,
as on S3, and the next blocks are asked for then; no HEAD is sent. The filesystem's own
settings (``storage_options``: headers, auth, client kwargs) go with every request. A server
that ignores ``Range`` (200, the whole object) is sliced to the bytes asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ShardReadError
from .fetch import ObjectHandle, RetryPolicy
from .fetch_async import AsyncFetcher, body_start, read_body, within
from .shardversion import ShardVersion
from .sources import filesystem


class HttpFetcher(AsyncFetcher):
    """Ranged reads of ``http://`` and ``https://`` shards on fsspec's ``HTTPFileSystem``."""

    def __init__(
        self, policy: RetryPolicy, on_retry: Callable[[], None], storage_options: dict | None
    ) -> None:
        super().__init__(policy, on_retry)
        self.fs = filesystem("https://host", storage_options)

    async def _get_once(
        self, handle: ObjectHandle, start: int, size: int, parts: list
    ) -> tuple[int | None, ShardVersion | None]:
        timeout = self.policy.timeout
        session = await self.fs.set_session()
        options = dict(self.fs.kwargs)
        headers = dict(options.pop("headers", None) or {})
        headers["Range"] = f"bytes={start}-{start + size - 1}"
        url = self.fs.encode_url(handle.shard.url)
        response = await within(session.get(url, headers=headers, **options), timeout)
        try:
            status = response.status
            if status == 416:
                return None, None  # at or past the end: nothing more to read
            if status == 404:
                raise ShardReadError(handle.url, "shard does not exist")
            if status in (401, 403):
                raise ShardReadError(handle.url, f"permission denied (HTTP {status})")
            response.raise_for_status()  # 5xx are retried (``is_transient``), the rest fail
            content_range = response.headers.get("Content-Range")
            skip, total = body_start(handle, status, content_range, response.content_length, start)
            handle.heard(total)
            await read_body(response.content.read, size, skip, parts, timeout)
        finally:
            response.release()
        return total, None
