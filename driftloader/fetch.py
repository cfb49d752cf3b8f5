"""Fetching shard bytes: ranged block requests, kept in flight under a memory bound, pinned.

A ``ReadAhead`` is given shards in the order they will be read. It keeps ranged requests for
the current shard's next blocks and the following shards' first blocks in flight, never more
than ``max_inflight`` bytes requested and not yet consumed (``local_inflight`` for local
files; at least one block). Blocks come back to the reader strictly in order, whatever order
the requests finish in.

Each request is served by the fetcher of the shard's protocol:

- ``HttpFetcher`` (``fetch_http``): ranged GETs for ``http(s)://`` in threads, one per request
  in flight, each body read straight into the block's ``bytes``; the size from the first
  answer's ``Content-Range``, no HEAD;
- ``S3ThreadFetcher`` (``fetch_s3``): the same, to URLs s3fs's client presigned; the size and
  version from the response's ``Content-Range``, ``ETag`` and ``x-amz-version-id``;
- ``S3Fetcher`` and ``AioHttpFetcher`` (``fetch_http_aio``): the same on s3fs's aiobotocore
  client and fsspec's aiohttp session, for settings only those clients apply;
- ``LocalFetcher``: ``os.pread`` in a small thread pool;
- ``FsspecFetcher``: ``fs.cat_file(path, start, end)`` (or a user ``opener``) in threads, one
  per request allowed in flight (``max_requests``).

Every read is pinned to one version of the shard: the version it was stat'ed at (S3
``VersionId``, else ``If-Match`` on its ETag; a local file's size and mtime are checked when it
is opened), else the version the first response reports. A block that comes from another
version fails the shard, naming it: new bytes are never read under an old version. Transient
failures (resets, 5xx, stalls past ``timeout``) are retried with backoff, resuming at the byte
where the failed response stopped; each retry is counted in ``ReadStats.retries``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ShardReadError
from .shardversion import ShardVersion
from .sources import Shard, filesystem, is_connect_failure, local_path, redact, storage_hint
from .transient import is_transient, retry_after, slow_down_hint


class Stalled(TimeoutError):
    """No data came for ``RetryPolicy.timeout`` seconds (raised by our own deadline)."""


@dataclass
class RetryPolicy:
    """How often and how long: ``retries`` per request, ``timeout`` seconds without data."""

    retries: int = 5
    backoff: float = 0.2
    timeout: float = 20.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), jittered."""
        return self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())


@dataclass
class Piece:
    """Bytes of one block, with what the response said about the object."""

    data: bytes
    total: int | None = None
    version: ShardVersion | None = None


class ObjectHandle:
    """One shard being read: where it is, its size, and the version its reads are pinned to."""

    def __init__(self, shard: Shard, fetcher: Fetcher) -> None:
        self.shard = shard
        self.url = redact(shard.url)
        self.fetcher = fetcher
        self.size: int | None = shard.size
        self.version: ShardVersion | None = shard.parsed_version
        self.lock = threading.Lock()
        self.state: Any = None  # the fetcher's per-object state (an open file, a bucket/key)
        self.on_size: Callable[[], None] | None = None  # called once the size is first known

    def heard(self, total: int | None) -> None:
        """The size an answer's headers report, before its body arrives, so that the next
        blocks can be asked for at once. A disagreement is left to ``learn``, which checks the
        whole answer and its version."""
        if total is None or self.size is not None:
            return
        with self.lock:
            sized = self.size is None
            if sized:
                self.size = total
        if sized:
            self._sized()

    def learn(self, piece: Piece, offset: int) -> None:
        """Take the size and version a response reports; fail if they disagree with ours."""
        sized = False
        with self.lock:
            if piece.version is not None:
                if self.version is None:
                    self.version = piece.version
                elif piece.version != self.version and piece.version.kind == self.version.kind:
                    raise ShardReadError(
                        self.url,
                        f"changed while it was read: version {self.version} was read so far, "
                        f"storage now returns {piece.version}; read it again",
                        offset,
                    )
            if piece.total is not None:
                if self.size is None:
                    self.size, sized = piece.total, True
                elif piece.total != self.size:
                    raise ShardReadError(
                        self.url,
                        f"changed: it is {piece.total} bytes, its version {self.version} "
                        f"had {self.size}",
                        offset,
                    )
        if sized:
            self._sized()

    def _sized(self) -> None:
        """The size is known now, from whichever answer told it first: the reader may ask for
        the next blocks."""
        if self.on_size is not None:
            self.on_size()


class Fetcher:
    """Ranged reads of objects of one kind; ``submit`` returns a future of a ``Piece``."""

    local = False  # its reads have no latency to hide (the read-ahead's local bound applies)

    def __init__(self, policy: RetryPolicy, on_retry: Callable[[], None]) -> None:
        self.policy = policy
        self.on_retry = on_retry

    def submit(self, handle: ObjectHandle, offset: int, size: int) -> Future:
        raise NotImplementedError

    def endpoint(self, handle: ObjectHandle) -> str:
        """Where ``handle``'s requests go (a key of ``ANSWERED``): scheme and host."""
        parts = urlsplit(handle.shard.url)
        return f"{parts.scheme or 'file'}://{parts.netloc}"

    def close(self) -> None:
        """Release threads and files."""

    def _retrying(self, handle: ObjectHandle, offset: int, size: int, read_once) -> Piece:
        """Call ``read_once(offset, size, parts)`` until ``size`` bytes or EOF, resuming at the
        byte where a transient failure stopped it (``parts`` keeps what arrived)."""
        tries = Attempts(
            handle.url, offset, size, self.policy, self.on_retry, self.endpoint(handle)
        )
        while True:
            start, left = tries.remaining()
            try:
                piece = read_once(start, left, tries.parts)
                return tries.piece(piece.total, piece.version)
            except Exception as e:
                time.sleep(tries.failed(e))


ANSWERED: set[str] = set()
"""Endpoints (``Fetcher.endpoint``) that have answered in this process. Before the first answer a failed
connection is retried once (a wrong or firewalled endpoint fails in seconds); after it, as often
as any transient failure (a blip during a long run)."""
FIRST_CONTACT_RETRIES = 1


class Attempts:
    """One ranged request's tries, shared by the threaded and the async fetchers: the bytes
    that arrived so far (``parts``: a retry resumes after them), the retries counted, and the
    pause before the next one."""

    def __init__(
        self,
        url: str,
        offset: int,
        size: int,
        policy: RetryPolicy,
        on_retry: Callable[[], None],
        endpoint: str = "",
    ) -> None:
        self.url, self.offset, self.size = url, offset, size
        self.policy, self.on_retry = policy, on_retry
        self.endpoint = endpoint
        self.parts: list[bytes] = []
        self.attempt = 0

    def remaining(self) -> tuple[int, int]:
        """``(offset, size)`` still to read: after the bytes that arrived."""
        got = sum(map(len, self.parts))
        return self.offset + got, self.size - got

    def failed(self, e: Exception) -> float:
        """Count a failed try and return the seconds to wait before the next; raise the
        ``ShardReadError`` (at the byte reached) when it is not transient or retries are spent."""
        at = self.remaining()[0]
        unanswered = self.endpoint not in ANSWERED and is_connect_failure(e)
        limit = (
            min(self.policy.retries, FIRST_CONTACT_RETRIES) if unanswered else self.policy.retries
        )
        if not is_transient(e) or self.attempt >= limit:
            error = explain_storage_error(self.url, e, at, self.attempt, self.policy, unanswered)
            raise error from e
        self.attempt += 1
        self.on_retry()
        return max(self.policy.pause(self.attempt), retry_after(e))

    def piece(self, total: int | None, version: ShardVersion | None) -> Piece:
        """The bytes read, in one piece, with what the last answer said about the object."""
        ANSWERED.add(self.endpoint)
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        return Piece(data, total, version)


def explain_storage_error(
    url: str,
    e: BaseException,
    at: int,
    retries: int,
    policy: RetryPolicy,
    unanswered: bool = False,
) -> ShardReadError:
    """The ``ShardReadError`` for a read that failed for good: timeouts say how long and where,
    connection and credential failures say where the endpoint and credentials come from."""
    if isinstance(e, ShardReadError):
        return e
    tried = f" ({retries} {'retry' if retries == 1 else 'retries'})" if retries else ""
    if isinstance(e, Stalled):
        return ShardReadError(url, f"timed out after {policy.timeout:g} s reading it{tried}", at)
    never = "; storage was never reached from this process" if unanswered else ""
    hint = storage_hint(e) or slow_down_hint(e)
    return ShardReadError(url, f"read failed{tried}: {e!r}{never}{hint}", at)


def shut_pool(pool: ThreadPoolExecutor) -> None:
    """Stop ``pool`` without joining its threads. A pass abandoned mid-shard is closed where
    the garbage collector finalizes it, which in CPython <= 3.12 can be inside a thread's start
    or stop with ``threading``'s shutdown-locks lock held; a join takes that lock, so it would
    hang. The reads still running end on their own (``ReadAhead.release`` closes their shard
    after them)."""
    pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------ local files


class LocalFetcher(Fetcher):
    """Local files: ``os.pread`` on one descriptor per shard, in a small thread pool.

    The file's size and mtime are checked at open against the shard's ``s:`` version.
    """

    local = True

    def __init__(self, policy: RetryPolicy, on_retry: Callable[[], None], threads: int = 2):
        super().__init__(policy, on_retry)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="driftloader-read")

    def submit(self, handle: ObjectHandle, offset: int, size: int) -> Future:
        return self.pool.submit(self._read, handle, offset, size)

    def _open(self, handle: ObjectHandle) -> int:
        with handle.lock:
            if handle.state is None:
                handle.state = _open_local(handle)
            return handle.state[0]

    def _read(self, handle: ObjectHandle, offset: int, size: int) -> Piece:
        fd = self._open(handle)
        data = os.pread(fd, size, offset)
        return Piece(data, handle.state[1], None)

    def close_handle(self, handle: ObjectHandle) -> None:
        with handle.lock:
            if handle.state is not None:
                os.close(handle.state[0])
                handle.state = None

    def close(self) -> None:
        shut_pool(self.pool)


def _open_local(handle: ObjectHandle) -> tuple[int, int]:
    path = local_path(handle.shard.url)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise ShardReadError(handle.url, "shard does not exist") from e
    except IsADirectoryError as e:
        raise ShardReadError(handle.url, "is a folder, not a tar shard") from e
    except PermissionError as e:
        raise ShardReadError(handle.url, f"permission denied: {e}") from e
    st = os.fstat(fd)
    now = ShardVersion.from_info({"size": st.st_size, "mtime": st.st_mtime})
    expected = handle.version
    if expected is not None and expected.kind == "size_mtime" and now != expected:
        os.close(fd)
        raise ShardReadError(
            handle.url,
            f"changed since its version was taken: it was {expected}, it is now {now}; "
            "its drift decision or pin no longer describes these bytes",
        )
    if handle.version is None:
        handle.version = now
    return fd, st.st_size


# ----------------------------------------------------------------------------------- fsspec


class FsspecFetcher(Fetcher):
    """Any fsspec filesystem (or a user ``opener``): ranged reads in threads.

    ``cat_file(path, start, end)`` must return exactly the bytes asked for (fewer only at the
    end); a longer answer (a server that ignored ``Range``) is refused naming the URL.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        on_retry: Callable[[], None],
        storage_options: dict | None,
        opener: Callable[..., Any] | None = None,
        threads: int = 4,  # requests at once: ``read_shards`` gives its ``max_requests``
    ) -> None:
        super().__init__(policy, on_retry)
        self.storage_options = storage_options
        self.opener = opener
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="driftloader-read")

    def submit(self, handle: ObjectHandle, offset: int, size: int) -> Future:
        if handle.size is None and handle.state is None and self.opener is None:
            handle.state = self.pool.submit(self._size, handle)
        return self.pool.submit(self._retrying, handle, offset, size, self._reader(handle))

    def _size(self, handle: ObjectHandle) -> None:
        """Ask for the size of a shard named without it, beside its first block: ranged reads
        here say nothing of the object, so its next blocks would otherwise be asked for one
        at a time until one came back short (a 1 GB shard: 128 round trips). A failure is
        left to the reads, which name it."""
        with contextlib.suppress(Exception):
            fs, path = self._located(handle)
            handle.heard(fs.size(path))

    def _located(self, handle: ObjectHandle) -> tuple[Any, str]:
        """The shard's filesystem and its path there."""
        fs = filesystem(handle.shard.url, self.storage_options)
        return fs, fs._strip_protocol(handle.shard.url)

    def _reader(self, handle: ObjectHandle) -> Callable[[int, int, list], Piece]:
        if self.opener is not None:
            return self._opened(handle)
        fs, path = self._located(handle)
        kwargs = _pinned(handle)

        def with_cat(start: int, size: int, parts: list) -> Piece:
            try:
                data = fs.cat_file(path, start=start, end=start + size, **kwargs)
            except FileNotFoundError as e:
                raise ShardReadError(handle.url, "shard does not exist") from e
            if len(data) > size:
                raise ShardReadError(
                    handle.url,
                    f"the server ignored the byte range: asked for {size} bytes, got {len(data)}",
                    start,
                )
            parts.append(data)
            return Piece(b"")

        return with_cat

    def _opened(self, handle: ObjectHandle) -> Callable[[int, int, list], Piece]:
        """Reads through the user's opener: ``ReadOptions`` says what path it is given."""
        try:
            path = self._located(handle)[1]
        except ValueError:  # a protocol fsspec does not know: the opener's own
            path = handle.shard.url
        kwargs = _pinned(handle)

        def with_opener(start: int, size: int, parts: list) -> Piece:
            try:
                file = self.opener(path, "rb", **kwargs)
            except FileNotFoundError as e:
                raise ShardReadError(handle.url, "shard does not exist") from e
            try:
                if handle.size is None:  # the next blocks can go out at once, not one by one
                    handle.heard(_file_size(file))
                if start:
                    file.seek(start)
                while size > 0:
                    chunk = file.read(size)
                    if not chunk:
                        break
                    parts.append(chunk)
                    size -= len(chunk)
            finally:
                with contextlib.suppress(Exception):
                    file.close()
            return Piece(b"")

        return with_opener

    def close(self) -> None:
        shut_pool(self.pool)


def _pinned(handle: ObjectHandle) -> dict:
    """The keywords that pin a read to the shard's version, where fsspec takes one."""
    version = handle.version
    return {"version_id": version.version_id} if version and version.version_id else {}


def _file_size(file: Any) -> int | None:
    """The size of an opened file: its ``size`` (fsspec files), its descriptor's, or the end
    a seek finds; None if it tells none of these."""
    size = getattr(file, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    with contextlib.suppress(Exception):
        return os.fstat(file.fileno()).st_size
    with contextlib.suppress(Exception):
        if file.seekable():
            here = file.tell()
            end = file.seek(0, os.SEEK_END)
            file.seek(here)
            return end
    return None


# -------------------------------------------------------------------------------- read-ahead


@dataclass
class _Request:
    offset: int
    size: int
    future: Future


class _Plan:
    """A shard's requests: those in flight, in order, and the next offset to ask for."""

    def __init__(self, handle: ObjectHandle) -> None:
        self.handle = handle
        self.requests: deque[_Request] = deque()
        self.next_offset = 0
        self.finished = False  # EOF seen or the consumer is done with it
        self.running: list[Future] = []  # cancelled too late: the file closes after them

    def wants_more(self) -> bool:
        """Another block can be asked for: the size is known and not reached, or it is not
        known and nothing is in flight (one block at a time until an answer tells the size or
        comes back short)."""
        if self.finished:
            return False
        size = self.handle.size
        if size is None:
            return not self.requests
        return self.next_offset < size

    def requested(self) -> bool:
        """Every byte of the shard is asked for (or it needs no more)."""
        size = self.handle.size
        return self.finished or (size is not None and self.next_offset >= size)


def _learn(handle: ObjectHandle, offset: int, future: Future) -> None:
    """A shard's size from its first answer as soon as it arrives, so that its next blocks are
    asked for while earlier shards are read, not one round trip after the reader reaches it.
    A failure or a disagreement is left to the reader, which learns from the answer again."""
    if future.cancelled() or future.exception() is not None:
        return
    with contextlib.suppress(ShardReadError):
        handle.learn(future.result(), offset)


def _after_all(futures: list[Future], then: Callable[[], None]) -> None:
    """``then()`` once every one of ``futures`` is done: now if they are, else on the thread
    that finishes the last of them (its error suppressed: nobody waits for it)."""
    left, lock = [len(futures)], threading.Lock()

    def one_done(_: Future | None) -> None:
        with lock:
            left[0] -= 1
            last = left[0] <= 0
        if last:
            with contextlib.suppress(Exception):
                then()

    if not futures:
        one_done(None)
    for future in futures:
        future.add_done_callback(one_done)


class ReadAhead:
    """Blocks of shards in read order, with requests kept in flight under ``max_inflight``
    bytes (``local_inflight`` while the shard asked for is a local file) and ``max_requests``
    requests (requested and not yet handed to the reader; at least one block is always
    allowed).

    Shards are added with ``add`` in the order they will be read; ``blocks(handle)`` yields
    that shard's bytes in order. Requests go first to the shard being read, then to the next
    ones, as far as ``lookahead`` shards ahead.
    """

    def __init__(
        self,
        block_size: int,
        max_inflight: int,
        on_peak: Callable[[int], None] | None,
        lookahead: int,
        max_requests: int,
        local_inflight: int | None = None,
    ) -> None:
        self.block_size = block_size
        # A shard whose size is unknown, while one before it still has bytes to ask for, is
        # first asked for a small block: its answer's headers tell the size. A whole block for
        # each of the next shards would take the window from the shard being read, which
        # then kept one block in flight until the reader reached them (a 28 MB shard at
        # 100 ms: 15.7k -> 27.7k samples/s).
        self.probe_size = max(block_size // 8, 4096)
        self.max_inflight = max(max_inflight, block_size)
        # while the shard asked for is a local file (``Fetcher.local``): no latency to hide
        self.local_inflight = max(local_inflight or max_inflight, block_size)
        self.max_requests = max(max_requests, 1)
        self.requests = 0
        self.lookahead = lookahead
        self.on_peak = on_peak
        self.plans: deque[_Plan] = deque()
        self.inflight = 0
        self.peak = 0
        self.wake = threading.Event()  # set when an awaited block arrives or a size is known

    def add(self, handle: ObjectHandle) -> None:
        """Queue a shard to be read after those already added."""
        handle.on_size = self.wake.set
        self.plans.append(_Plan(handle))
        self._fill()

    def _fill(self) -> None:
        behind = False  # a shard before this one still has bytes to ask for
        for plan in list(self.plans)[: self.lookahead + 1]:
            bound = self.local_inflight if plan.handle.fetcher.local else self.max_inflight
            while plan.wants_more():
                if behind and (plan.next_offset or plan.handle.size is not None):
                    break  # in read order: past its probe, a shard waits for those before it
                size = self._next_size(plan, behind, bound)
                if self.inflight and (
                    self.inflight + size > bound or self.requests >= self.max_requests
                ):
                    if plan.requests or plan is not self.plans[0]:
                        return  # earlier shards keep their place: later ones wait
                    # The shard being read has nothing in flight, and the next shards' probes
                    # hold the room its next request needs (what it read freed less: a probe,
                    # or a block before a tail of 1.25 blocks). It asks for the room left:
                    # waiting would end it there, as if it were truncated.
                    size = min(size, max(bound - self.inflight, self.probe_size))
                future = plan.handle.fetcher.submit(plan.handle, plan.next_offset, size)
                if plan.handle.size is None:
                    future.add_done_callback(
                        functools.partial(_learn, plan.handle, plan.next_offset)
                    )
                plan.requests.append(_Request(plan.next_offset, size, future))
                plan.next_offset += size
                self.inflight += size
                self.requests += 1
                if self.inflight > self.peak:
                    self.peak = self.inflight
                    if self.on_peak is not None:
                        self.on_peak(self.peak)
            behind = behind or not plan.requested()

    def _next_size(self, plan: _Plan, behind: bool, bound: int) -> int:
        """Bytes of ``plan``'s next request: a block; a shard's last bytes in one request when
        they are at most a quarter block more (a 9.3 MB shard is one request, not 8 + 1.3
        MiB) and within ``bound``; a probe when its size is unknown and a shard before it still
        has bytes to ask for (``probe_size``)."""
        if plan.handle.size is None:
            return self.probe_size if behind else self.block_size
        remaining = plan.handle.size - plan.next_offset
        if remaining <= min(self.block_size + self.block_size // 4, bound):
            return remaining
        return self.block_size

    def blocks(self, handle: ObjectHandle) -> Iterator[bytes]:
        """The shard's bytes, block by block, in order; it must be the oldest one added."""
        plan = self.plans[0]
        if plan.handle is not handle:
            raise ValueError("blocks() must be asked for the shards in the order they were added")
        try:
            while True:
                self._fill()
                if not plan.requests:
                    return
                self._await(plan.requests[0].future)
                request = plan.requests.popleft()
                try:
                    piece = request.future.result()
                finally:
                    self.inflight -= request.size
                    self.requests -= 1
                handle.learn(piece, request.offset)
                if len(piece.data) < request.size:  # the end of the object
                    plan.finished = True
                    self._cancel(plan)
                if piece.data:
                    yield piece.data
        finally:
            self.release(plan)

    def _await(self, future: Future) -> None:
        """Wait for ``future``, asking for more blocks meanwhile whenever an answer tells a
        shard's size (S3's headers do, before the body): a shard's second block leaves one
        round trip after its first, not after the first's whole body."""
        if future.done():
            return
        future.add_done_callback(lambda _: self.wake.set())
        while True:
            self.wake.clear()
            self._fill()
            if future.done():
                return
            self.wake.wait()

    def release(self, plan: _Plan) -> None:
        """Forget a shard: its requests in flight are cancelled, and its file is closed once
        the reads still running end, on the thread that ends the last of them. Never waited
        for here: a pass is closed wherever the garbage collector finalizes it, fsspec's
        loop thread or a reader's own included, and a read may need that thread to end (the
        process hung); a loop left early returns at once, not a round trip later."""
        plan.finished = True
        self._cancel(plan)
        if self.plans and self.plans[0] is plan:
            self.plans.popleft()
        closer = getattr(plan.handle.fetcher, "close_handle", None)
        if closer is not None:
            _after_all(plan.running, functools.partial(closer, plan.handle))
        plan.running = []

    def skip(self, handle: ObjectHandle) -> None:
        """The oldest shard will not be read after all (the gate skipped it)."""
        if self.plans and self.plans[0].handle is handle:
            self.release(self.plans[0])

    def _cancel(self, plan: _Plan) -> None:
        while plan.requests:
            request = plan.requests.pop()
            if not request.future.cancel():
                plan.running.append(request.future)
            self.inflight -= request.size
            self.requests -= 1

    def close(self) -> None:
        """Cancel everything in flight."""
        while self.plans:
            self.release(self.plans[0])
