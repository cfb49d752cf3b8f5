"""A loopback HTTP proxy in front of an S3 server (moto) that adds latency, caps bandwidth and
injects faults, and counts what passes through it.

Real object storage answers in 20-100 ms and gives one connection 50-100 MB/s; moto on loopback
has neither, so a reader that waits for one request at a time looks fast there. Put this proxy in
front of moto to measure (benchmarks) and to test failure handling (tests, ``s3_proxy`` fixture):

    proxy = LatencyProxy("http://127.0.0.1:5000", latency_ms=40, mbps=50).start()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.endpoint})
    proxy.add_fault("reset", method="GET", ranged=True, after_bytes=100_000)
    ...
    proxy.ranges = False   # a server without Range support, faults still injected
    proxy.counts["HEAD"], proxy.max_in_flight, proxy.bytes_sent
    proxy.stop()

Each request head is parsed, the request is forwarded to the upstream on a connection of its own
(``Connection: close``), and the response is streamed back on the client's keep-alive
connection, paced to the bandwidth cap. Content-Length and chunked bodies are relayed as they
come; ``Expect: 100-continue`` is answered by the proxy. It listens on 127.0.0.1 only, forwards
only to a loopback upstream, and shuts itself down after ``lifetime_s``.

Command line: ``python benchmarks/latency_proxy.py --upstream URL --latency-ms 40 --mbps 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import re
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

FAULT_KINDS = ("reset", "status", "stall", "ignore_range")
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade"}
_CHUNK = 64 * 1024
_HEAD_LIMIT = 256 * 1024


@dataclass
class FaultRule:
    """One fault, applied to the requests it matches.

    kind: "reset" (send the head and ``after_bytes`` body bytes, then a TCP reset; before the
    head when ``after_bytes`` is None), "status" (answer ``status`` with ``body``, by default an
    S3 error naming the status, without asking upstream),
    "stall" (send nothing for ``seconds``, before the head or after ``after_bytes`` body bytes,
    then go on), "ignore_range" (drop the Range header: 200 with the whole object).
    Matching: ``method`` (exact, any if None), ``path`` (regex searched in the request target),
    ``ranged`` (True: only requests with a Range header; False: only without), ``from_byte``
    (only ranged requests whose range starts at or past it: a fault on a block further into an
    object, whatever order concurrent block requests arrive in). The rule fires on
    the ``nth`` matching request (1-based) and the ``times - 1`` after it (``times=None``: all).
    """

    kind: str
    method: str | None = None
    path: str | None = None
    ranged: bool | None = None
    from_byte: int | None = None
    nth: int = 1
    times: int | None = 1
    after_bytes: int | None = None
    status: int = 503
    body: str | None = None  # a "status" answer's body (else an S3 error naming the status)
    seconds: float = 1.0
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {FAULT_KINDS}")
        if self.nth < 1:
            raise ValueError(f"nth={self.nth} must be >= 1")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times={self.times} must be >= 1 or None")
        if self.after_bytes is not None and self.after_bytes < 0:
            raise ValueError(f"after_bytes={self.after_bytes} must be >= 0 or None")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError(f"status={self.status} must be an HTTP error status (400-599)")
        if self.seconds < 0:
            raise ValueError(f"seconds={self.seconds} must be >= 0")

    def take(self, method: str, target: str, ranged: bool, start: int | None = None) -> bool:
        """Count this request if it matches; True when the fault fires on it (``start``: the
        first byte its Range asks for)."""
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is not None and not re.search(self.path, target):
            return False
        if self.ranged is not None and self.ranged != ranged:
            return False
        if self.from_byte is not None and (start is None or start < self.from_byte):
            return False
        self.matched += 1
        last = None if self.times is None else self.nth + self.times - 1
        if self.matched < self.nth or (last is not None and self.matched > last):
            return False
        self.fired += 1
        return True


@dataclass
class RequestRecord:
    """One request seen by the proxy: what was asked, what was answered, which fault fired."""

    method: str
    target: str
    range: str | None
    status: int | None = None
    fault: str | None = None
    started: float = field(default_factory=time.monotonic)  # when its head was read


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class _Traffic:
    counts: collections.Counter = field(default_factory=collections.Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    connections: int = 0
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))


class ProxyClosed(Exception):
    """The client or the upstream went away in the middle of an exchange."""


def _parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    return "chunked" in (_header(headers, "transfer-encoding") or "").lower()


def _error_body(status: int) -> bytes:
    code = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}.get(status, "InjectedFault")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by latency_proxy</Message></Error>"
    ).encode()


async def _relay_chunked(reader: asyncio.StreamReader, sink) -> None:
    """Relay one chunked body (chunk framing and trailers included) to ``sink(bytes)``."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        await sink(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:
                trailer = await reader.readuntil(b"\r\n")
                await sink(trailer)
                if trailer == b"\r\n":
                    return
        await sink(await reader.readexactly(size + 2))


async def _relay_sized(reader: asyncio.StreamReader, length: int, sink) -> None:
    while length > 0:
        data = await reader.read(min(_CHUNK, length))
        if not data:
            raise ProxyClosed("body ended early")
        length -= len(data)
        await sink(data)


async def _relay_until_eof(reader: asyncio.StreamReader, sink) -> None:
    while data := await reader.read(_CHUNK):
        await sink(data)


class _ResponseWriter:
    """Writes one response body to the client: paced to the cap, with reset/stall faults."""

    def __init__(self, proxy: LatencyProxy, writer: asyncio.StreamWriter, fault: FaultRule | None):
        self.proxy = proxy
        self.writer = writer
        midway = fault is not None and fault.kind in ("reset", "stall")
        self.fault = fault if midway and fault.after_bytes is not None else None
        self.sent = 0
        self.started = time.monotonic()

    async def __call__(self, data: bytes) -> None:
        fault = self.fault
        if fault is not None and self.sent + len(data) >= fault.after_bytes:
            cut = fault.after_bytes - self.sent
            await self._send(data[:cut])
            self.fault = None
            if fault.kind == "reset":
                await self.proxy._reset(self.writer)
            await asyncio.sleep(fault.seconds)
            data = data[cut:]
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        for start in range(0, len(data), _CHUNK):
            piece = data[start : start + _CHUNK]
            self.writer.write(piece)
            await self.writer.drain()
            self.sent += len(piece)
            self.proxy._traffic.bytes_sent += len(piece)
            await self._pace()

    async def _pace(self) -> None:
        mbps = self.proxy.mbps
        if not mbps:
            return
        due = self.started + self.sent / (mbps * 1e6)
        ahead = due - time.monotonic()
        if ahead > 0.001:
            await asyncio.sleep(ahead)


class LoopbackServer:
    """An asyncio server on 127.0.0.1 (``port``, 0 for a free one; https with ``tls``) in a
    thread of its own, shut after ``lifetime_s``; subclasses serve ``_serve_connection``."""

    thread_name = "loopback-server"

    def __init__(self, lifetime_s: float, port: int = 0, tls: ssl.SSLContext | None = None):
        if lifetime_s <= 0:
            raise ValueError(f"lifetime_s={lifetime_s} must be > 0")
        self.lifetime_s, self.port, self.tls = lifetime_s, port, tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the server stops (``stop()``, or its lifetime ends)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def start(self):
        """Listen in a background thread; returns the server."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=self.thread_name, daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait for the thread to end."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._shutdown)
            thread.join(timeout=10)

    def __enter__(self):
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve_connection, "127.0.0.1", self.port, ssl=self.tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            loop.call_later(self.lifetime_s, self._shutdown)
        except BaseException as exc:  # reported to start()'s caller
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.set_exception_handler(_quiet_when_cancelled)
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._loop is not None:
            self._loop.stop()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError


def _quiet_when_cancelled(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """At shutdown, a connection accepted but not yet served is cancelled before its task
    starts, and asyncio's stream callback logs that as an error: say nothing of it."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


class LatencyProxy(LoopbackServer):
    """The proxy: start() runs it in a thread of its own; settings and faults change live."""

    thread_name = "latency-proxy"

    def __init__(
        self,
        upstream: str,
        latency_ms: float = 0.0,
        mbps: float | None = None,
        lifetime_s: float = 3600.0,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream {upstream!r} must be http://HOST:PORT")
        if not _is_loopback(parts.hostname):
            raise ValueError(
                f"upstream {upstream!r} is not on loopback; the proxy forwards only there"
            )
        super().__init__(lifetime_s, port, tls)  # tls: clients speak https (real S3's way)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.latency_ms = latency_ms
        self.mbps = mbps
        self.faults: list[FaultRule] = []
        self.ranges = True  # False: a server without Range support (every answer is whole)
        self.ignored_params: set[str] = set()  # query parameters a server would not honour
        self._traffic = _Traffic()
        self._lock = threading.Lock()

    # --- settings, faults and counts (any thread) ---
    @property
    def latency_ms(self) -> float:
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"latency_ms={value} must be >= 0")
        self._latency_ms = float(value)

    @property
    def mbps(self) -> float | None:
        return self._mbps

    @mbps.setter
    def mbps(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"mbps={value} must be > 0 or None (uncapped)")
        self._mbps = value

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _honoured(self, target: str) -> str:
        """``target`` without the query parameters in ``ignored_params``."""
        path, _, query = target.partition("?")
        if not self.ignored_params or not query:
            return target
        kept = [p for p in query.split("&") if p.partition("=")[0] not in self.ignored_params]
        return f"{path}?{'&'.join(kept)}" if kept else path

    def add_fault(self, kind: str, **match) -> FaultRule:
        """Add a ``FaultRule(kind, **match)``; returns it (its ``fired`` counts its uses)."""
        rule = FaultRule(kind, **match)
        with self._lock:
            self.faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    @property
    def counts(self) -> dict[str, int]:
        """Requests by method since the last ``reset_stats()``."""
        return dict(self._traffic.counts)

    @property
    def in_flight(self) -> int:
        return self._traffic.in_flight

    @property
    def max_in_flight(self) -> int:
        """Most requests in flight at once (received, response not fully sent)."""
        return self._traffic.max_in_flight

    @property
    def bytes_sent(self) -> int:
        """Response body bytes sent to clients."""
        return self._traffic.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Request body bytes received from clients."""
        return self._traffic.bytes_received

    @property
    def connections(self) -> int:
        """Client connections accepted."""
        return self._traffic.connections

    @property
    def requests(self) -> list[RequestRecord]:
        """The requests seen (the last 100,000), oldest first."""
        return list(self._traffic.log)

    def reset_stats(self) -> None:
        """Zero the counts, bytes and log (requests in flight stay counted)."""
        traffic = self._traffic
        traffic.counts.clear()
        traffic.log.clear()
        traffic.max_in_flight = traffic.in_flight
        traffic.bytes_sent = traffic.bytes_received = traffic.connections = 0

    # --- serving (event loop thread) ---
    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        self._traffic.connections += 1
        try:
            keep_alive = True
            while keep_alive:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                keep_alive = await self._serve_request(head, reader, writer)
        except (ProxyClosed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown: end quietly (asyncio logs a cancelled connection task otherwise)
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the client connection must close after it."""
        line, headers = _parse_head(head)
        method, target, version = (line.split(" ", 2) + ["", ""])[:3]
        request = _Request(method.upper(), target, version, headers)
        record = RequestRecord(request.method, target, request.header("range"))
        fault = self._match_fault(request)
        record.fault = fault.kind if fault else None
        traffic = self._traffic  # one object for the proxy's life; reset_stats() zeroes it
        traffic.counts[request.method] += 1
        traffic.log.append(record)
        traffic.in_flight += 1
        traffic.max_in_flight = max(traffic.max_in_flight, traffic.in_flight)
        try:
            body = await self._read_request_body(request, reader, writer)
            if self._latency_ms:
                await asyncio.sleep(self._latency_ms / 1000)
            if fault is not None and fault.after_bytes is None:
                if fault.kind == "reset":
                    await self._reset(writer)
                if fault.kind == "stall":
                    await asyncio.sleep(fault.seconds)
            if fault is not None and fault.kind == "status":
                record.status = fault.status
                return await self._answer_error(request, writer, fault.status, fault.body)
            return await self._forward(request, body, writer, fault, record)
        finally:
            traffic.in_flight -= 1

    def _match_fault(self, request: _Request) -> FaultRule | None:
        asked = request.header("range")
        start = re.match(r"bytes=(\d+)-", asked or "")
        start = int(start[1]) if start else None
        with self._lock:
            fired = [
                r
                for r in self.faults
                if r.take(request.method, request.target, asked is not None, start)
            ]
        return fired[0] if fired else None

    async def _read_request_body(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        """The request body as the client framed it (chunked framing kept)."""
        length = int(request.header("content-length") or 0)
        chunked = _is_chunked(request.headers)
        if not (length or chunked):
            return b""
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        parts: list[bytes] = []

        async def keep(data: bytes) -> None:
            parts.append(data)
            self._traffic.bytes_received += len(data)

        if chunked:
            await _relay_chunked(reader, keep)
        else:
            await _relay_sized(reader, length, keep)
        return b"".join(parts)

    async def _answer_error(
        self, request: _Request, writer: asyncio.StreamWriter, status: int, body: str | None = None
    ) -> bool:
        data = body.encode() if body is not None else _error_body(status)
        writer.write(
            f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
        )
        if request.method != "HEAD":
            writer.write(data)
        await writer.drain()
        return not self._client_closes(request)

    async def _forward(
        self,
        request: _Request,
        body: bytes,
        writer: asyncio.StreamWriter,
        fault: FaultRule | None,
        record: RequestRecord,
    ) -> bool:
        drop = set(_HOP_HEADERS)
        if not self.ranges or (fault is not None and fault.kind == "ignore_range"):
            drop.add("range")
        lines = [f"{request.method} {self._honoured(request.target)} {request.version}"]
        lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in drop]
        lines.append("Connection: close")
        up_reader, up_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port, limit=_HEAD_LIMIT
        )
        try:
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            raw = await up_reader.readuntil(b"\r\n\r\n")
            status_line, headers = _parse_head(raw)
            status = int(status_line.split(" ", 2)[1])
            record.status = status
            return await self._relay_response(
                request, status_line, status, headers, up_reader, writer, fault
            )
        finally:
            up_writer.transport.abort()

    async def _relay_response(
        self,
        request: _Request,
        status_line: str,
        status: int,
        headers: list[tuple[str, str]],
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: FaultRule | None,
    ) -> bool:
        no_body = request.method == "HEAD" or status in (204, 304) or status < 200
        chunked = _is_chunked(headers)
        length = _header(headers, "content-length")
        until_eof = not no_body and not chunked and length is None
        keep_alive = not until_eof and not self._client_closes(request)
        out = [status_line] + [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_HEADERS]
        if not keep_alive:
            out.append("Connection: close")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        sink = _ResponseWriter(self, writer, fault)
        if no_body:
            await writer.drain()
        elif chunked:
            await _relay_chunked(up_reader, sink)
        elif until_eof:
            await _relay_until_eof(up_reader, sink)
        else:
            await _relay_sized(up_reader, int(length), sink)
        return keep_alive

    @staticmethod
    def _client_closes(request: _Request) -> bool:
        connection = (request.header("connection") or "").lower()
        return connection == "close" or (
            request.version == "HTTP/1.0" and connection != "keep-alive"
        )

    @staticmethod
    async def _reset(writer: asyncio.StreamWriter) -> None:
        """Flush what was written, then close with a TCP reset (RST, not FIN)."""
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        raise ProxyClosed("connection reset by an injected fault")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the S3 server")
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--mbps", type=float, default=50.0, help="MB/s per connection; 0: uncapped")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="seconds before it exits")
    args = parser.parse_args(argv)
    proxy = LatencyProxy(
        args.upstream, args.latency_ms, args.mbps or None, args.lifetime, args.port
    ).start()
    print(proxy.endpoint, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        proxy.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
