"""Tar bytes -> members -> webdataset-style samples, in one tight pass and strictly.

A shard arrives as consecutive blocks of bytes (any sizes). ``TarMembers`` walks the tar
headers in place in the current buffer: each header's checksum is verified, the member's own
bytes are the only copy taken, pax and GNU long names are honoured, and links, devices and
folders are passed over. ``group_samples`` groups members into samples by webdataset's rule
(key = path up to the first dot of the file name). ``decompressed`` turns a gzip stream into
the tar stream and refuses other compressions, naming them. Every error is a
``ShardReadError`` naming the shard and the byte offset.

Walking the headers is the hot path of the reader (six headers per sample in a
``webdataset.TarWriter`` shard: each member has a pax header for its mtime). ``_scan`` takes
runs of common headers (ustar, regular members and pax headers with nothing we use) with
array operations over the buffer's 512-byte rows; the loop in ``TarMembers.__iter__`` takes
every other header, the common case inline and anything unusual through the careful
functions below it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from .errors import ShardReadError

__all__ = ["DEFAULT_MAX_MEMBER_SIZE", "TarMembers", "decompressed", "group_samples"]

BLOCK = 512
DEFAULT_MAX_MEMBER_SIZE = 1 << 30
_REGULAR = frozenset(b"0\x007")  # type flags of regular files (as ints)
_PAX, _GLOBAL_PAX, _LONG_NAME = ord("x"), ord("g"), ord("L")
_ZERO_BLOCK = bytes(BLOCK)
_SCAN_ROWS = 8192  # 4 MiB of headers and data looked at per vectorised scan
_SCAN_MIN_ROWS = 4
_USTAR = np.frombuffer(b"ustar", np.uint8)
_SIZE_WEIGHTS = 8 ** np.arange(10, -1, -1, dtype=np.int64)  # eleven octal digits
_SUM_WEIGHTS = 8 ** np.arange(5, -1, -1, dtype=np.int64)  # six
_PAX_USED = (b"path=", b"size=")  # the pax records that change a member; others are passed
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSIONS = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x5d\x00\x00": "lzma",
}


# ----------------------------------------------------------------------------- tar members


def _octal(field_: bytes, url: str, offset: int) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field_[1:], "big")
    text = field_.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as e:
        raise ShardReadError(url, f"corrupt tar header (bad number {text!r})", offset) from e


def _checksum_ok(header: bytes) -> bool:
    """Verify a 512-byte header's checksum.

    The checksum is the byte sum with the checksum field read as eight spaces. Adler-32's low
    half is 1 + the byte sum mod 65521, computed in C: ten times faster than ``sum()`` and
    exact unless a corruption shifts the sum by a multiple of 65521.
    """
    field_ = header[148:156]
    try:
        expected = int(field_.split(b"\x00", 1)[0], 8)  # int() ignores surrounding spaces
    except ValueError:
        return False
    low = zlib.adler32(header) & 0xFFFF
    return (low - 1 - sum(field_) + 8 * 32) % 65521 == expected % 65521


def _size(header: bytes, url: str, offset: int) -> int:
    """The size field: eleven octal digits and a NUL (or space) in the common case."""
    if header[135] in (0, 32):
        try:
            return int(header[124:135], 8)
        except ValueError:
            pass
    return _octal(header[124:136], url, offset)


def _name(header: bytes) -> str:
    end = header.find(b"\x00", 0, 100)
    name = header[: end if end >= 0 else 100]
    if header[345] != 0 and header[257:262] == b"ustar":
        end = header.find(b"\x00", 345, 500)
        name = header[345 : end if end >= 0 else 500] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, url: str, offset: int) -> dict[str, str]:
    """The records of a pax extended header; malformed ones raise ``ShardReadError``."""
    if not any(key in data for key in _PAX_USED):
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


def _scan(buf: bytes, at: int, base: int, limit: int) -> tuple[list, int, int]:
    """The run of members from ``buf[at]`` whose headers are all in the common form, found
    with array operations over 512-byte rows instead of a loop over headers.

    Returns ``(members, end, rows)``: ``(name, data, offset)`` for each regular member of the
    run, the position after it, and how many rows were looked at. The run follows the chain
    of headers from ``at``: each next header must lie where the one before puts it, so a
    ``ustar`` found inside a member's data is never taken for a header. It stops before the
    first header that the loop must see: one that is not a ustar header with a valid
    six-digit checksum, eleven octal digits of size (at most ``limit``) and either a
    NUL-ended name of under 100 bytes with no prefix for a regular member, or a pax header
    whose one-row body has no ``path`` or ``size`` record (only those change a member); also
    before a member not whole in ``buf``. Those go through the loop exactly as before.
    """
    rows = min((len(buf) - at) // BLOCK, _SCAN_ROWS)
    table = np.frombuffer(buf, np.uint8, rows * BLOCK, at).reshape(rows, BLOCK)
    heads = np.flatnonzero(table[:, 257] == 117)  # "u", then the whole magic
    heads = heads[(table[heads, 257:262] == _USTAR).all(1)]
    if heads.size == 0 or heads[0] != 0:
        return [], at, rows
    head = table[heads]
    digits = head[:, 124:135].astype(np.int64) - 48
    sum_digits = head[:, 148:154].astype(np.int64) - 48
    size = digits @ _SIZE_WEIGHTS
    byte_sum = head.sum(1, dtype=np.uint32) - head[:, 148:156].sum(1, dtype=np.uint32) + 256
    kind = head[:, 156]
    regular = (kind == 48) | (kind == 0) | (kind == 55)
    pax = kind == _PAX
    name = head[:, :100] == 0
    name_end = name.argmax(1)
    ok = (
        ((digits >= 0) & (digits <= 7)).all(1)
        & ((head[:, 135] == 0) | (head[:, 135] == 32))
        & ((sum_digits >= 0) & (sum_digits <= 7)).all(1)
        & ((head[:, 154] == 0) | (head[:, 154] == 32))
        & (sum_digits @ _SUM_WEIGHTS == byte_sum)
        & (size <= limit)
        & ((regular & name.any(1) & (head[:, 345] == 0)) | pax)
    )
    after = heads + 1 + (size + BLOCK - 1) // BLOCK
    ok &= ~pax | ((size <= BLOCK) & (after <= rows))
    paxes = np.flatnonzero(pax & ok & (size > 0))
    if paxes.size:  # the one-row pax bodies, as far as the longest reaches, in one string
        reach = int(size[paxes].max())
        bodies = table[heads[paxes] + 1, :reach].tobytes()
        for key in _PAX_USED:
            found = bodies.find(key)
            while found >= 0:
                row = found // reach
                ok[paxes[row]] = False
                found = bodies.find(key, (row + 1) * reach)
    ok[:-1] &= after[:-1] == heads[1:]
    ok[-1] &= after[-1] <= rows
    stops = np.flatnonzero(~ok)
    count = int(stops[0]) if stops.size else heads.size
    while count and pax[count - 1]:  # a run never ends on a pax header: it is the next one's
        count -= 1
    if not count:
        return [], at, rows
    run = regular[:count]
    starts = at + heads[:count][run] * BLOCK
    # slices taken in C: the names (NUL-free) decoded in one go, then each member's bytes
    named = map(slice, starts.tolist(), (starts + name_end[:count][run]).tolist())
    names = b"\0".join(map(buf.__getitem__, named)).decode("utf-8", "surrogateescape")
    data_at = starts + BLOCK
    data = map(slice, data_at.tolist(), (data_at + size[:count][run]).tolist())
    members = list(zip(names.split("\0"), map(buf.__getitem__, data), (starts + base).tolist()))
    return members, at + int(after[count - 1]) * BLOCK, rows


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
        self.scan_from = 0  # absolute offset before which the loop reads headers one by one

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
        for run in self.runs():
            yield from run

    def runs(self) -> Iterator[list[tuple[str, bytes, int]]]:
        """The members in runs: a scan's whole run, or one member the loop read."""
        url, limit = self.url, self.max_member_size
        adler32 = zlib.adler32
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            buf, at = self.buf, self.pos
            if (
                len(buf) - at >= _SCAN_MIN_ROWS * BLOCK
                and not pax
                and long_name is None
                and self.base + at >= self.scan_from
            ):
                members, end, rows = _scan(buf, at, self.base, limit)
                if (end - at) * 2 < rows * BLOCK:  # mostly unusual headers: loop over them
                    self.scan_from = self.base + at + rows * BLOCK
                if members:  # a run ends on a regular member: none, and nothing was taken
                    self.pos = end
                    yield members
                    continue
            if len(buf) - at < BLOCK:
                if not self._need(BLOCK):
                    raise self._end_of_stream()
                buf, at = self.buf, self.pos
            header = buf[at : at + BLOCK]
            start = self.base + at
            if header[0] == 0 and header == _ZERO_BLOCK:
                return
            # the checksum, in the common layout: six octal digits, NUL, space
            checksum = header[148:156]
            try:
                ok = (adler32(header) & 0xFFFF) - 1 - sum(checksum) + 256 - int(checksum[:6], 8)
            except ValueError:
                ok = 1
            if ok % 65521 and not _checksum_ok(header):
                raise ShardReadError(url, "corrupt tar header (checksum mismatch)", start)
            if pax and "size" in pax:
                size = int(pax["size"])
            elif header[135] in (0, 32):  # _size inlined: eleven octal digits and a NUL
                try:
                    size = int(header[124:135], 8)
                except ValueError:
                    size = _size(header, url, start)
            else:
                size = _size(header, url, start)
            if size > limit:
                raise ShardReadError(
                    url, f"member is {size} bytes, over max_member_size={limit}", start
                )
            kind = header[156]
            data_at = at + BLOCK
            end = data_at + size + (-size) % BLOCK
            if kind in (_PAX, _LONG_NAME, _GLOBAL_PAX):
                if end <= len(buf):
                    data, self.pos = buf[data_at : data_at + size], end
                else:
                    self.pos = data_at
                    data = self._take(size, start)
                if kind == _LONG_NAME:
                    long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
                elif kind == _PAX:
                    pax = _pax_records(data, url, start)
                continue
            self.pos = data_at
            cut = header.find(b"\x00", 0, 100)
            if cut < 0 or header[345]:  # a name of 100 bytes, or a ustar prefix
                name = _name(header)
            else:
                name = header[:cut].decode("utf-8", "surrogateescape")
            if pax or long_name:
                name = pax.get("path") or long_name or name
                long_name, pax = None, {}
            if kind in _REGULAR and end <= len(buf):  # whole in the buffer: the fast path
                self.pos = end
                yield [(name, buf[data_at : data_at + size], start)]
                continue
            try:
                data = self._take(size, start)
            except ShardReadError as e:
                e.member = name  # its header was whole: this member is the one cut short
                raise
            if kind in _REGULAR:  # links, devices, folders: never followed
                yield [(name, data, start)]


# --------------------------------------------------------------------------------- samples


def group_samples(runs: Iterator[list[tuple[str, bytes, int]]], url: str) -> Iterator[dict]:
    """Group tar members, in runs as ``TarMembers.runs`` gives them, into samples: key = path
    up to the first dot of the file name; members with no extension, and tar metadata
    (``__name__.ext``), belong to none."""
    current: dict | None = None
    key = None
    try:
        for run in runs:
            for name, data, offset in run:
                # _key_and_ext inlined (it runs for every member): keep the two the same
                slash = name.rfind("/")
                dot = name.find(".", slash + 1)
                if dot <= slash + 1 or (name.startswith("__", slash + 1) and _is_meta(name)):
                    continue
                stem = name[:dot]
                if stem != key:
                    if current is not None:
                        yield current
                    key = stem
                    current = {"__key__": key, "__url__": url, name[dot + 1 :].lower(): data}
                    continue
                ext = name[dot + 1 :].lower()
                if ext in current:
                    raise ShardReadError(
                        url, f"duplicate member {name!r} in sample {key!r}", offset
                    )
                current[ext] = data
    except ShardReadError as e:
        # Cut short inside a member of the next sample: the current one is whole, keep it.
        cut = getattr(e, "member", None)
        split = _key_and_ext(cut) if cut is not None else None
        if current is not None and split is not None and split[0] != key:
            yield current
        raise
    if current is not None:
        yield current


def _is_meta(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("__") and "__" in base[2:] and base.split(".")[0].endswith("__")


def _key_and_ext(name: str) -> tuple[str, str] | None:
    """A member's sample key and extension; None for members that belong to no sample (the
    rule ``group_samples`` inlines)."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1 or _is_meta(name):
        return None
    return name[:dot], name[dot + 1 :].lower()


# ------------------------------------------------------------------------------ compression


def decompressed(blocks: Iterator[bytes], url: str, block_size: int) -> Iterator[bytes]:
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
