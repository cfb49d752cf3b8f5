"""A fast origin for the read-path benchmarks: the files of one folder over HTTP/1.1, with
``Range`` (206 and ``Content-Range``), keep-alive and ``sendfile``, in a process of its own.

moto serves about 60-80 MB/s on these machines, below what driftloader reads from local files,
so every row measured behind it is capped by moto, not by the reader. Behind
``latency_proxy.py``, this origin gives the proxy's latency and per-connection bandwidth without
that cap, so the reader's own cost at a latency can be set against its local rate. It is a
benchmark tool, loopback only, and serves ``GET`` and ``HEAD`` of plain file names. It also
answers S3's ListObjectsV2 (``GET /<any bucket>?list-type=2``: the file names as keys, pages
from ``start-after`` or a continuation token) and a bucket's versioning (never versioned),
each page at once, as S3 does, where moto builds each page's XML in ~0.1-0.5 s::

    python benchmarks/file_origin.py --root /tmp/tars --port 8123 --lifetime 3600
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import re
import zlib
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _etag(name: str) -> str:
    """A file's ETag, in its listing and its answers: a hash of its name (files here are
    written once)."""
    return f"{zlib.crc32(name.encode()):08x}"


class FileOrigin:
    """Serves the files directly under ``root`` (no subfolders, no listing)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._keys: list[str] | None = None  # the file names, sorted: listed once
        self._sizes: dict[str, int] = {}

    def _size(self, name: str) -> int:
        return self._sizes[name]

    async def serve(self, port: int, lifetime_s: float) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        async with server:
            await asyncio.sleep(lifetime_s)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not await self._answer(head.decode("latin-1"), writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, head: str, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to close after it."""
        line, *lines = head.split("\r\n")
        method, target, _ = (line.split(" ") + ["", "", ""])[:3]
        headers = dict(
            (k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines if h)
        )
        where, _, query = target.partition("?")
        if method == "GET" and query and "/" not in where.strip("/"):  # /<bucket>?...
            return await self._bucket(query, writer)
        name = target.lstrip("/").split("?")[0]
        path = self.root / name.split("/", 1)[-1]  # S3's path style: /<any bucket>/<name>
        if method not in ("GET", "HEAD") or path.parent != self.root or not path.is_file():
            status = "404 Not Found" if method in ("GET", "HEAD") else "405 Method Not Allowed"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            return True
        size = path.stat().st_size
        start, end = 0, size - 1
        ranged = _RANGE.match(headers.get("range", ""))
        if ranged:
            start = int(ranged[1])
            end = min(int(ranged[2]), size - 1) if ranged[2] else size - 1
            if start >= size:
                writer.write(
                    f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                await writer.drain()
                return True
        length = end - start + 1
        lines = [
            "HTTP/1.1 206 Partial Content" if ranged else "HTTP/1.1 200 OK",
            f"Content-Length: {length}",
            "Content-Type: application/x-tar",
            "Accept-Ranges: bytes",
            f'ETag: "{_etag(path.name)}"',  # as the listing gives it
        ]
        if ranged:
            lines.append(f"Content-Range: bytes {start}-{end}/{size}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if method == "GET":
            with open(path, "rb") as f:
                await asyncio.get_running_loop().sendfile(writer.transport, f, start, length)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _bucket(self, query: str, writer: asyncio.StreamWriter) -> bool:
        """A bucket request: its versioning (never versioned) or a ListObjectsV2 page."""
        asked = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if "versioning" in asked:
            body = '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>'
        else:
            body = self._page(asked)
        data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {len(data)}"
        writer.write(head.encode() + b"\r\n\r\n" + data)
        await writer.drain()
        return True

    def _page(self, asked: dict[str, str]) -> str:
        if self._keys is None:
            with os.scandir(self.root) as entries:
                self._sizes = {e.name: e.stat().st_size for e in entries if e.is_file()}
            self._keys = sorted(self._sizes)
        keys, prefix = self._keys, asked.get("prefix", "")
        after = asked.get("continuation-token") or asked.get("start-after") or ""
        start = max(bisect.bisect_right(keys, after), bisect.bisect_left(keys, prefix))
        most = int(asked.get("max-keys", 1000))
        end = start
        while end < len(keys) and end - start < most and keys[end].startswith(prefix):
            end += 1
        more = end < len(keys) and keys[end].startswith(prefix)
        items = "".join(
            f"<Contents><Key>{escape(k)}</Key><LastModified>2026-01-01T00:00:00.000Z"
            f'</LastModified><ETag>"{_etag(k)}"</ETag><Size>{self._size(k)}</Size>'
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for k in keys[start:end]
        )
        token = f"<NextContinuationToken>{escape(keys[end - 1])}</NextContinuationToken>"
        return (
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>origin</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{end - start}"
            f"</KeyCount><MaxKeys>{most}</MaxKeys><IsTruncated>{str(more).lower()}"
            f"</IsTruncated>{items}{token if more else ''}</ListBucketResult>"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the folder whose files are served")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=3600, help="seconds before it exits")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        parser.error(f"--root {args.root} is not a folder")
    asyncio.run(FileOrigin(Path(args.root)).serve(args.port, args.lifetime))


if __name__ == "__main__":
    main()
