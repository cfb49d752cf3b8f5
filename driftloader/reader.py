"""Streaming tar reader: shard bytes -> webdataset-style sample dicts, fast and strict.

``read_shards`` takes shards in the order they will be read and keeps ranged requests in
flight for the current shard's next blocks and the next shards (``fetch.ReadAhead``), under a
memory bound. Tar headers are parsed in one pass over each block (checksums verified, no copy
but each member's own bytes), members are grouped into samples by webdataset's rule (key =
path up to the first dot of the file name). gzip-compressed shards (``.tgz``, ``.tar.gz``, or
gzip by their magic bytes) are decompressed as a stream; ``pipe:CMD`` shards are the standard
output of a shell command, as in webdataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import threading
import zlib
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
    is_transient,
    local_path,
)
from .sources import Shard, is_pipe, protocol_of, redact

__all__ = ["ReadOptions", "ReadStats", "is_transient", "read_shard", "read_shards"]

BLOCK = 512
DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_INFLIGHT = 64 * 1024 * 1024
DEFAULT_MAX_REQUESTS = 8
DEFAULT_MAX_MEMBER_SIZE = 1 << 30
DEFAULT_TIMEOUT = 20.0
_REGULAR = (b"0", b"\x00", b"7")
_ZERO_BLOCK = bytes(BLOCK)
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSIONS = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x5d\x00\x00": "lzma",
}

Handler = Callable[[Exception], bool]


@dataclass(frozen=True)
class ReadOptions:
    """How shards are read: ``read_shards``' keywords as one value (``DriftDataset(read_options=)``).

    ``max_inflight`` bytes and ``max_requests`` ranged requests are kept in flight (requested
    and not yet parsed), for the current shard's next ``block_size`` blocks and the next
    ``lookahead`` shards; ``timeout`` seconds without data is a stall, retried ``retries`` times
    with ``backoff`` from the byte reached. Members over ``max_member_size`` bytes are refused.
    """

    block_size: int = DEFAULT_BLOCK_SIZE
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_requests: int = DEFAULT_MAX_REQUESTS
    lookahead: int = 4
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE
    retries: int = 5
    backoff: float = 0.2
    timeout: float = DEFAULT_TIMEOUT
    opener: Callable[..., object] | None = None

    def __post_init__(self) -> None:
        if self.block_size < 4096:
            raise ValueError(f"block_size={self.block_size} is too small; use at least 4096 bytes")
        for name in ("max_inflight", "lookahead", "retries", "max_member_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.max_requests < 1:
            raise ValueError(f"max_requests={self.max_requests} must be >= 1")
        if self.timeout <= 0 or self.backoff < 0:
            raise ValueError(
                f"timeout={self.timeout} must be > 0 and backoff={self.backoff} >= 0 seconds"
            )

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


# ----------------------------------------------------------------------------- tar members


def _octal(field_: bytes, url: str, offset: int) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field_[1:], "big")
    text = field_.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as e:
        raise ShardReadError(url, f"corrupt tar header (bad number {text!r})", offset) from e


def _checksum_ok(buf: bytes, at: int) -> bool:
    """Verify the header checksum of ``buf[at:at+512]``.

    The checksum is the byte sum with the checksum field read as eight spaces. Adler-32's low
    half is 1 + the byte sum mod 65521, computed in C: ten times faster than ``sum()`` and
    exact unless a corruption shifts the sum by a multiple of 65521.
    """
    field_ = buf[at + 148 : at + 156]
    try:
        expected = int(field_.split(b"\x00", 1)[0], 8)  # int() ignores surrounding spaces
    except ValueError:
        return False
    low = zlib.adler32(buf[at : at + BLOCK]) & 0xFFFF
    return (low - 1 - sum(field_) + 8 * 32) % 65521 == expected % 65521


def _pax_records(data: bytes, url: str, offset: int) -> dict[str, str]:
    """The records of a pax extended header; malformed ones raise ``ShardReadError``."""
    if b"path=" not in data and b"size=" not in data:
        return {}  # only times and owners: nothing we use
    records, pos = {}, 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= space - pos or pos + length > len(data):
                raise ValueError(f"record length {length} out of bounds")
            key, eq, value = data[space + 1 : pos + length - 1].partition(b"=")
            if not eq:
                raise ValueError("record without '='")
            records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
            pos += length
        if "size" in records:
            records["size"] = str(int(records["size"]))
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardReadError(url, f"malformed pax header: {e}", offset) from e
    return records


class TarMembers:
    """Iterate ``(name, data, offset)`` over a tar stream given as consecutive blocks.

    Headers are read in place in the current buffer; only a member's own bytes are copied
    out (as the ``bytes`` value of its sample field).
    """

    def __init__(
        self, blocks: Iterator[bytes], url: str, max_member_size: int = DEFAULT_MAX_MEMBER_SIZE
    ):
        self.blocks = blocks
        self.url = url
        self.max_member_size = max_member_size
        self.buf = b""
        self.pos = 0
        self.base = 0  # absolute offset of buf[0]

    def _need(self, size: int) -> bool:
        """Make ``size`` bytes available at ``pos``; False if the stream ends first."""
        have = len(self.buf) - self.pos
        if have >= size:
            return True
        parts = [self.buf[self.pos :]] if have else []
        for block in self.blocks:
            parts.append(block)
            have += len(block)
            if have >= size:
                break
        self.base += self.pos
        self.buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self.pos = 0
        return have >= size

    def _take(self, size: int, start: int) -> bytes:
        padded = size + (-size) % BLOCK
        if not self._need(padded):
            if len(self.buf) - self.pos >= size:  # padding missing at the very end: tolerated
                data = self.buf[self.pos : self.pos + size]
                self.pos = len(self.buf)
                return data
            raise ShardReadError(self.url, f"truncated: member needs {size} bytes", self.offset)
        data = self.buf[self.pos : self.pos + size]
        self.pos += padded
        return data

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _end_of_stream(self) -> ShardReadError:
        if len(self.buf) - self.pos == 0 and self.offset == 0:
            return ShardReadError(self.url, "empty file, not a tar archive", 0)
        return ShardReadError(
            self.url, "truncated: ends without the tar end-of-archive marker", self.offset
        )

    def __iter__(self) -> Iterator[tuple[str, bytes, int]]:
        url, limit = self.url, self.max_member_size
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            if len(self.buf) - self.pos < BLOCK and not self._need(BLOCK):
                raise self._end_of_stream()
            buf, at = self.buf, self.pos
            start = self.base + at
            if buf[at] == 0 and buf[at : at + BLOCK] == _ZERO_BLOCK:
                return
            if not _checksum_ok(buf, at):
                raise ShardReadError(url, "corrupt tar header (checksum mismatch)", start)
            size_field = buf[at + 124 : at + 136]
            size = int(pax["size"]) if "size" in pax else _octal(size_field, url, start)
            if size > limit:
                raise ShardReadError(
                    url, f"member is {size} bytes, over max_member_size={limit}", start
                )
            kind = buf[at + 156 : at + 157]
            name = None if kind in (b"L", b"x", b"g") else _header_name(buf, at)
            self.pos = at + BLOCK
            if name is None:
                data = self._take(size, start)
                if kind == b"L":
                    long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
                elif kind == b"x":
                    pax = _pax_records(data, url, start)
                continue
            name = pax.get("path") or long_name or name
            long_name, pax = None, {}
            end = self.pos + size + (-size) % BLOCK
            if kind in _REGULAR and end <= len(buf):  # whole in the buffer: the fast path
                data = buf[self.pos : self.pos + size]
                self.pos = end
            else:
                try:
                    data = self._take(size, start)
                except ShardReadError as e:
                    e.member = name  # its header was whole: this member is the one cut short
                    raise
                if kind not in _REGULAR:
                    continue  # links, devices, folders: never followed
            yield name, data, start


def _header_name(buf: bytes, at: int) -> str:
    end = buf.find(b"\x00", at, at + 100)
    name = buf[at : end if end >= 0 else at + 100]
    if buf[at + 257 : at + 262] == b"ustar" and buf[at + 345] != 0:
        end = buf.find(b"\x00", at + 345, at + 500)
        prefix = buf[at + 345 : end if end >= 0 else at + 500]
        name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------- samples


def _is_meta(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("__") and "__" in base[2:] and base.split(".")[0].endswith("__")


def group_samples(members: Iterator[tuple[str, bytes, int]], url: str) -> Iterator[dict]:
    """Group tar members into samples: key = path up to the first dot of the file name."""
    current: dict | None = None
    try:
        for name, data, offset in members:
            split = _key_and_ext(name)
            if split is None:
                continue
            key, ext = split
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            elif ext in current:
                raise ShardReadError(url, f"duplicate member {name!r} in sample {key!r}", offset)
            current[ext] = data
    except ShardReadError as e:
        # Cut short inside a member of the next sample: the current one is whole, keep it.
        cut = getattr(e, "member", None)
        split = _key_and_ext(cut) if cut is not None else None
        if current is not None and split is not None and split[0] != current["__key__"]:
            yield current
        raise
    if current is not None:
        yield current


def _key_and_ext(name: str) -> tuple[str, str] | None:
    """A member's sample key (its path up to the first dot of the file name) and extension;
    None for members that belong to no sample (no extension, or tar metadata)."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1 or _is_meta(name):
        return None
    return name[:dot], name[dot + 1 :].lower()


# --------------------------------------------------------------------- compression and pipes


def _decompressed(blocks: Iterator[bytes], url: str, block_size: int) -> Iterator[bytes]:
    """The tar stream: gzip (by magic bytes) decompressed block by block, plain tar as is;
    other compressions refused naming them."""
    for first in blocks:
        if first:
            break
    else:
        return
    if first.startswith(_GZIP_MAGIC):
        yield from _gunzip(first, blocks, url, block_size)
        return
    for magic, name in _OTHER_COMPRESSIONS.items():
        if first.startswith(magic):
            raise ShardReadError(
                url, f"{name}-compressed; only plain tar and gzip-compressed tar are read", 0
            )
    yield first
    yield from blocks


def _gunzip(first: bytes, blocks: Iterator[bytes], url: str, block_size: int) -> Iterator[bytes]:
    """Decompress a gzip stream (concatenated members too), ``block_size`` bytes at a time."""
    inflate = zlib.decompressobj(31)
    read = 0
    for data in _chain(first, blocks):
        read += len(data)
        while data:
            if inflate.eof:  # a gzip member ended: the next one starts here
                inflate = zlib.decompressobj(31)
            try:
                out = inflate.decompress(data, block_size)
            except zlib.error as e:
                at = read - len(data)
                raise ShardReadError(url, f"corrupt gzip stream: {e}", at) from e
            if out:
                yield out
            data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
    if not inflate.eof:
        tail = inflate.flush()
        if tail:
            yield tail
        raise ShardReadError(url, "truncated gzip stream", read)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


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

    def __init__(self, storage_options, policy: RetryPolicy, on_retry, opener) -> None:
        self.storage_options = storage_options
        self.policy = policy
        self.on_retry = on_retry
        self.opener = opener
        self.made: dict[str, Fetcher] = {}

    def for_shard(self, shard: Shard) -> Fetcher:
        protocol = protocol_of(shard.url)
        kind = "opener" if self.opener is not None else protocol
        if kind not in ("file", "s3", "s3a", "opener"):
            kind = "fsspec:" + protocol
        if kind not in self.made:
            self.made[kind] = self._make(kind)
        return self.made[kind]

    def _make(self, kind: str) -> Fetcher:
        if kind == "file":
            return LocalFetcher(self.policy, self.on_retry)
        if kind in ("s3", "s3a"):
            from .fetch_s3 import S3Fetcher

            return S3Fetcher(self.policy, self.on_retry, self.storage_options)
        return FsspecFetcher(self.policy, self.on_retry, self.storage_options, self.opener)

    def close(self) -> None:
        for fetcher in self.made.values():
            fetcher.close()


def read_shards(
    shards: Iterable[Shard | str],
    storage_options: dict | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    retries: int = 5,
    backoff: float = 0.2,
    timeout: float = DEFAULT_TIMEOUT,
    lookahead: int = 4,
    stats: ReadStats | None = None,
    opener: Callable[..., object] | None = None,
) -> Iterator[tuple[Shard, Iterator[dict]]]:
    """Yield ``(shard, samples)`` for each shard in order, reading ahead across shards.

    Ranged requests for the current shard's next blocks and the next ``lookahead`` shards'
    blocks stay in flight: at most ``max_requests`` of them and ``max_inflight`` bytes
    requested and not yet parsed (at least one ``block_size`` block). ``shards`` is consumed
    lazily, ``lookahead`` shards ahead of the one being read.
    Read each ``samples`` before asking for the next pair; one left unread (a shard the
    caller decided to skip) is dropped with its requests. A shard that fails raises
    ``ShardReadError`` from its ``samples`` only: the next pair still comes.

    Transient failures are retried ``retries`` times, resuming at the failed byte; a response
    with no data for ``timeout`` seconds counts as one. Every read of a shard is pinned to
    one version (see ``fetch``).
    """
    ReadOptions(  # checks them, naming the value
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

    fetchers = _Fetchers(storage_options, RetryPolicy(retries, backoff, timeout), on_retry, opener)
    ahead = ReadAhead(block_size, max_inflight, on_peak, lookahead, max_requests)
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
            samples = _shard_samples(shard, blocks, block_size, max_member_size, stats)
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
        stream = _decompressed(_counted(blocks, stats), redact(url), block_size)
        members = TarMembers(stream, redact(url), max_member_size)
        local = local_path(url) if protocol_of(url) == "file" and not is_pipe(url) else None
        for sample in group_samples(iter(members), url):
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
