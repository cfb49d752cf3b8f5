"""Streaming tar reader: shard bytes -> webdataset-style sample dicts, fast and strict.

``read_shards`` takes shards in the order they will be read and keeps ranged requests in
flight for the current shard's next blocks and the next shards (``fetch.ReadAhead``), under a
memory bound; ``tarparse`` turns each shard's bytes into samples (gzip decompressed as a
stream). ``pipe:CMD`` shards are the standard output of a shell command, as in webdataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ShardReadError
from .fetch import (
    Fetcher,
    FsspecFetcher,
    LocalFetcher,
    ObjectHandle,
    ReadAhead,
    RetryPolicy,
)
from .sources import Shard, is_pipe, local_path, protocol_of, redact
from .tarparse import DEFAULT_MAX_MEMBER_SIZE, TarMembers, decompressed, group_samples
from .transient import is_transient

__all__ = ["ReadOptions", "ReadStats", "is_transient", "read_shard", "read_shards"]

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
# Bytes in flight by default, per process that reads, split among its DataLoader workers: what
# hides a latency is the process's whole rate times the time a request is held (Little's law),
# and each of N workers reads 1/N of it. When the bytes come no faster than C (one link, or a
# server's CPU) a request is held for L + bytes in flight / C, and 128 MiB lost 17-27% from 0 to
# 100 ms at ~350 MB/s, 256 MiB 3-12% (results/peers.md). At least 4 blocks per worker.
DEFAULT_PROCESS_INFLIGHT = 256 * 1024 * 1024
MIN_INFLIGHT_BLOCKS = 4
# Local files have no latency to hide and are read by two threads whatever the bound: bytes
# read further ahead only cost fresh pages (a page fault each) and fall out of the CPU's cache
# before they are parsed. 256 MiB took 50-58k page faults a pass of 312 MB where 32 MiB took
# 9-19k, and read 61k samples/s with 2 DataLoader workers where 16 MiB each read 75k
# (results/peers.md). At least 2 blocks per worker: one being read while one is parsed.
DEFAULT_PROCESS_LOCAL_INFLIGHT = 32 * 1024 * 1024
MIN_LOCAL_INFLIGHT_BLOCKS = 2
DEFAULT_MAX_REQUESTS = 48
DEFAULT_LOOKAHEAD = 32  # shards: 16 kept 9.3 MB shards under 155 MiB in flight (results/peers.md)
DEFAULT_TIMEOUT = 20.0

Handler = Callable[[Exception], bool]


def _dataloader_workers() -> int:
    """How many DataLoader workers this process is one of (1 outside a worker). torch is not
    imported for it: a process that never imported its DataLoader is in no worker."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return max(1, info.num_workers) if info is not None else 1


@dataclass(frozen=True)
class ReadOptions:
    """How shards are read: ``read_shards``' keywords as one value (``DriftDataset(read_options=)``).

    ``max_inflight`` bytes (by default 256 MiB per process, split among its DataLoader
    workers: ``inflight_bound``; for local files 32 MiB: ``local_inflight_bound``) and
    ``max_requests`` ranged requests are kept in flight
    (requested and not yet parsed), for the current shard's next ``block_size`` blocks and the next
    ``lookahead`` shards; ``timeout`` seconds without data is a stall, retried ``retries`` times
    with ``backoff`` from the byte reached. Members over ``max_member_size`` bytes are refused.

    ``opener(path, "rb", **kwargs)``, if given, opens every shard for its reads: ``path`` is
    the shard's path on its fsspec filesystem (``bucket/key`` for ``s3://bucket/key``), or its
    URL as given when fsspec knows no such protocol; ``kwargs`` may hold a ``version_id``.
    """

    block_size: int = DEFAULT_BLOCK_SIZE
    max_inflight: int | None = None
    max_requests: int = DEFAULT_MAX_REQUESTS
    lookahead: int = DEFAULT_LOOKAHEAD
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE
    retries: int = 5
    backoff: float = 0.2
    timeout: float = DEFAULT_TIMEOUT
    opener: Callable[..., object] | None = None

    def __post_init__(self) -> None:
        if self.block_size < 4096:
            raise ValueError(f"block_size={self.block_size} is too small; use at least 4096 bytes")
        for name in ("max_inflight", "lookahead", "retries", "max_member_size"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.max_requests < 1:
            raise ValueError(f"max_requests={self.max_requests} must be >= 1")
        if self.timeout <= 0 or self.backoff < 0:
            raise ValueError(
                f"timeout={self.timeout} must be > 0 and backoff={self.backoff} >= 0 seconds"
            )

    def inflight_bound(self) -> int:
        """``max_inflight``, or the default for this process: ``DEFAULT_PROCESS_INFLIGHT``
        over the DataLoader workers it is one of (256 MiB alone, 128 MiB each of 2, 32 MiB
        each of 8), at least ``MIN_INFLIGHT_BLOCKS`` blocks."""
        return self._bound(DEFAULT_PROCESS_INFLIGHT, MIN_INFLIGHT_BLOCKS)

    def local_inflight_bound(self) -> int:
        """The bound while the request is for a local file: ``max_inflight`` if given, else
        ``DEFAULT_PROCESS_LOCAL_INFLIGHT`` over the DataLoader workers (32 MiB alone, 16 MiB
        each of 2 or more), at least ``MIN_LOCAL_INFLIGHT_BLOCKS`` blocks."""
        return self._bound(DEFAULT_PROCESS_LOCAL_INFLIGHT, MIN_LOCAL_INFLIGHT_BLOCKS)

    def _bound(self, per_process: int, min_blocks: int) -> int:
        """``max_inflight`` if given, else ``per_process`` over this process's DataLoader
        workers, at least ``min_blocks`` blocks."""
        if self.max_inflight is not None:
            return self.max_inflight
        share = per_process // _dataloader_workers()
        return max(share, min_blocks * self.block_size)

    def keywords(self) -> dict[str, Any]:
        """These options as ``read_shards`` keywords."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def with_given(self, **given: Any) -> ReadOptions:
        """These options with the keywords given one by one (``DriftDataset(block_size=...)``)
        applied; a keyword left at its default changes nothing, one set both ways to different
        values raises ``ValueError`` naming it."""
        default, changes = ReadOptions(), {}
        for name, value in given.items():
            if value == getattr(default, name):
                continue
            mine = getattr(self, name)
            if mine != getattr(default, name) and mine != value:
                raise ValueError(
                    f"{name}={value!r} and read_options.{name}={mine!r} disagree: give it once"
                )
            changes[name] = value
        return dataclasses.replace(self, **changes) if changes else self


@dataclass
class ReadStats:
    """What reading did: counted, never silently lost.

    ``inflight_peak_bytes`` is the most bytes requested and not yet parsed at once (the read-
    ahead's memory; under ``max_inflight``); merged across workers it is the largest one.
    """

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    retries: int = 0
    errors: int = 0
    skipped_shards: list[str] = field(default_factory=list)
    inflight_peak_bytes: int = 0
    excluded_shards: list[str] = field(default_factory=list)  # quarantined: never read

    def merge(self, other: ReadStats) -> ReadStats:
        """Add another worker's counts to these."""
        self.shards += other.shards
        self.samples += other.samples
        self.bytes += other.bytes
        self.retries += other.retries
        self.errors += other.errors
        self.skipped_shards.extend(other.skipped_shards)
        self.excluded_shards.extend(other.excluded_shards)
        self.inflight_peak_bytes = max(self.inflight_peak_bytes, other.inflight_peak_bytes)
        return self


# -------------------------------------------------------------------------------- pipes


def _pipe_blocks(url: str, block_size: int) -> Iterator[bytes]:
    """Standard output of the shell command of a ``pipe:`` URL; a nonzero exit is an error."""
    command = url[len("pipe:") :]
    process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)  # noqa: S602
    finished = False
    try:
        while True:
            data = process.stdout.read(block_size)
            if not data:
                break
            yield data
        status = process.wait()
        finished = True
        if status != 0:
            raise ShardReadError(redact(url), f"the command exited with status {status}")
    finally:
        if not finished:
            process.kill()
            process.wait()
        process.stdout.close()


# ----------------------------------------------------------------------------------- shards


class _Fetchers:
    """One fetcher per kind of storage, made when first needed, closed together."""

    def __init__(self, storage_options, policy: RetryPolicy, on_retry, opener, threads) -> None:
        self.storage_options = storage_options
        self.policy = policy
        self.on_retry = on_retry
        self.opener = opener
        self.threads = threads  # of a threaded fetcher: one per request in flight
        self.made: dict[str, Fetcher] = {}

    def for_shard(self, shard: Shard) -> Fetcher:
        protocol = protocol_of(shard.url)
        kind = "opener" if self.opener is not None else protocol
        if kind in ("http", "https"):
            kind = "http"
        elif kind not in ("file", "s3", "s3a", "opener"):
            kind = "fsspec:" + protocol
        if kind not in self.made:
            self.made[kind] = self._make(kind)
        return self.made[kind]

    def _make(self, kind: str) -> Fetcher:
        if kind == "file":
            return LocalFetcher(self.policy, self.on_retry)
        if kind in ("s3", "s3a"):
            from . import fetch_s3

            options = self.storage_options
            if not fetch_s3.threads_serve(options):  # request-payer, encryption, an https proxy
                return fetch_s3.S3Fetcher(self.policy, self.on_retry, options)
            return fetch_s3.S3ThreadFetcher(self.policy, self.on_retry, options, self.threads)
        if kind == "http":
            from . import fetch_http

            if not fetch_http.serves(self.storage_options):  # aiohttp's own settings
                from .fetch_http_aio import AioHttpFetcher

                return AioHttpFetcher(self.policy, self.on_retry, self.storage_options)
            options = self.storage_options
            return fetch_http.HttpFetcher(self.policy, self.on_retry, options, self.threads)
        return FsspecFetcher(
            self.policy, self.on_retry, self.storage_options, self.opener, self.threads
        )

    def close(self) -> None:
        for fetcher in self.made.values():
            fetcher.close()


class ShardSamples(Iterator[dict]):
    """A shard's samples, as ``read_shards`` yields them, with the ``version`` its reads are
    pinned to: the shard's own, else the one its first answer reported (ETag or
    ``x-amz-version-id``), known once the first sample came. Iterating it iterates the
    samples themselves (no step added per sample)."""

    def __init__(self, samples: Iterator[dict], handle: ObjectHandle | None) -> None:
        self._samples = samples
        self._handle = handle

    def __iter__(self) -> Iterator[dict]:
        return self._samples

    def __next__(self) -> dict:
        return next(self._samples)

    def close(self) -> None:
        self._samples.close()

    @property
    def version(self) -> str | None:
        version = None if self._handle is None else self._handle.version
        return None if version is None else str(version)


def read_shards(
    shards: Iterable[Shard | str],
    storage_options: dict | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_inflight: int | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    retries: int = 5,
    backoff: float = 0.2,
    timeout: float = DEFAULT_TIMEOUT,
    lookahead: int = DEFAULT_LOOKAHEAD,
    stats: ReadStats | None = None,
    opener: Callable[..., object] | None = None,
) -> Iterator[tuple[Shard, ShardSamples]]:
    """Yield ``(shard, samples)`` for each shard in order, reading ahead across shards.

    Ranged requests for the current shard's next blocks and the next ``lookahead`` shards'
    blocks stay in flight: at most ``max_requests`` of them and ``max_inflight`` bytes
    requested and not yet parsed (at least one ``block_size`` block; by default 256 MiB per
    process, split among its DataLoader workers, 32 MiB for local files: ``ReadOptions``'
    bounds). ``shards``
    is consumed lazily, ``lookahead`` shards ahead of the one being read.
    Read each ``samples`` before asking for the next pair; one left unread (a shard the
    caller decided to skip) is dropped with its requests. A shard that fails raises
    ``ShardReadError`` from its ``samples`` only: the next pair still comes.

    Transient failures are retried ``retries`` times, resuming at the failed byte; a response
    with no data for ``timeout`` seconds counts as one. Every read of a shard is pinned to
    one version (see ``fetch``).
    """
    options = ReadOptions(  # checks them, naming the value
        block_size,
        max_inflight,
        max_requests,
        lookahead,
        max_member_size,
        retries,
        backoff,
        timeout,
    )
    stats = stats if stats is not None else ReadStats()
    lock = threading.Lock()

    def on_retry() -> None:
        with lock:
            stats.retries += 1

    def on_peak(peak: int) -> None:
        stats.inflight_peak_bytes = max(stats.inflight_peak_bytes, peak)

    policy = RetryPolicy(retries, backoff, timeout)
    fetchers = _Fetchers(storage_options, policy, on_retry, opener, max_requests)
    ahead = ReadAhead(
        block_size,
        options.inflight_bound(),
        on_peak,
        lookahead,
        max_requests,
        local_inflight=options.local_inflight_bound(),
    )
    pending: deque[tuple[Shard, ObjectHandle | None]] = deque()
    source = iter(shards)

    def top_up() -> None:
        while len(pending) <= lookahead:
            shard = next(source, None)
            if shard is None:
                return
            shard = Shard(shard) if isinstance(shard, str) else shard
            handle = None
            if not is_pipe(shard.url):
                handle = ObjectHandle(shard, fetchers.for_shard(shard))
                ahead.add(handle)
            pending.append((shard, handle))

    try:
        top_up()
        while pending:
            shard, handle = pending.popleft()
            blocks = _pipe_blocks(shard.url, block_size) if handle is None else ahead.blocks(handle)
            samples = ShardSamples(
                _shard_samples(shard, blocks, block_size, max_member_size, stats), handle
            )
            try:
                yield shard, samples
            finally:
                samples.close()
                if handle is not None:
                    ahead.skip(handle)
            top_up()
    finally:
        ahead.close()
        fetchers.close()


def _counted(blocks: Iterator[bytes], stats: ReadStats) -> Iterator[bytes]:
    for block in blocks:
        stats.bytes += len(block)
        yield block


def _shard_samples(
    shard: Shard, blocks: Iterator[bytes], block_size: int, max_member_size: int, stats: ReadStats
) -> Iterator[dict]:
    url = shard.url
    try:
        stream = decompressed(_counted(blocks, stats), redact(url), block_size)
        members = TarMembers(stream, redact(url), max_member_size)
        local = local_path(url) if protocol_of(url) == "file" and not is_pipe(url) else None
        for sample in group_samples(members.runs(), url):
            if local is not None:
                sample["__local_path__"] = local
            stats.samples += 1
            yield sample
        stats.shards += 1
    finally:
        with contextlib.suppress(Exception):
            blocks.close()


def read_shard(
    shard: Shard | str,
    storage_options: dict | None = None,
    *,
    stats: ReadStats | None = None,
    **options: Any,
) -> Iterator[dict]:
    """Yield the samples of one shard; raise ``ShardReadError`` naming URL and byte offset.

    ``options`` are ``read_shards``' keywords (``block_size``, ``max_inflight``, ``retries``,
    ``timeout``, ``opener``, ...; ``lookahead`` means nothing for one shard).

    Example:
        >>> for sample in read_shard("data/shard-000000.tar"):
        ...     sample["__key__"], sorted(sample)
    """
    options["lookahead"] = 0
    pairs = read_shards([shard], storage_options, stats=stats, **options)
    with contextlib.closing(pairs):
        for _, samples in pairs:
            yield from samples
