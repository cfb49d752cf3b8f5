"""A loopback forward proxy, as companies put between their machines and S3 (``HTTPS_PROXY``):
``CONNECT host:port`` opens a tunnel (https targets), and a request in absolute form
(``GET http://host:port/path``) is passed to its host (http targets). Both then relay bytes
both ways until either side closes. It counts what it was asked for, and keeps each tunnel's
and connection's first request line and ``Proxy-Authorization`` header:

    with ForwardProxy() as proxy:
        os.environ["HTTPS_PROXY"] = proxy.url
        ...
        proxy.tunnels, proxy.forwarded, proxy.heads

It listens on 127.0.0.1 only, goes only to loopback hosts, and stops after ``lifetime_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from benchmarks.latency_proxy import LoopbackServer

_HEAD_LIMIT = 64 * 1024


@dataclass
class Head:
    """A connection's first request: its line and its ``Proxy-Authorization`` (or None)."""

    line: str
    authorization: str | None


class ForwardProxy(LoopbackServer):
    thread_name = "forward-proxy"

    def __init__(self, lifetime_s: float = 600.0) -> None:
        super().__init__(lifetime_s)
        self.heads: list[Head] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tunnels(self) -> int:
        """``CONNECT`` requests tunnelled."""
        return sum(h.line.startswith("CONNECT ") for h in self.heads)

    @property
    def forwarded(self) -> int:
        """Connections whose first request came in absolute form and was passed on."""
        return len(self.heads) - self.tunnels

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _HEAD_LIMIT:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            authorization = next(
                (v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
                 if k.lower() == "proxy-authorization"),
                None,
            )  # fmt: skip
            self.heads.append(Head(lines[0], authorization))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
            else:
                parts = urlsplit(target)
                host, port = parts.hostname or "", str(parts.port or 80)
            if host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            up_reader, upstream = await asyncio.open_connection(host.strip("[]"), int(port))
            self._writers.add(upstream)
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # the request as it came: an HTTP/1.1 server takes the absolute form
                upstream.write(head)
            await asyncio.gather(_relay(reader, upstream), _relay(up_reader, writer))
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
