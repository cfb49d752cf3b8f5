"""The write-ahead spool of ``ServingMonitor``: a window's samples on local disk until stored.

Each monitor run owns a folder ``<root>/<run>/`` and appends to a log there
(``segment-<k>.log``, a new segment once one passes ``SEGMENT_BYTES``). The caller's thread
appends every chunk of samples it hands to the featurizing thread (through a 4 MiB user-space
buffer: no system call per chunk) and, on the ``observe`` that closes a window, appends the
window's end record and writes the buffer out to the OS: one system call per window, so a
closed window survives the process being killed (SIGKILL, the OOM killer, a segfault) from the
moment ``observe`` returns, and the caller never waits on the store. The storing thread fsyncs
the segment before it stores the window, so it also survives a machine crash from then on;
``fsync=True`` does that on the caller's thread instead, before ``observe`` returns (one
fsync per window: 6-10 ms on the benchmark machine's shared disk). The storing thread appends a "stored" record once the window's profile and catalog row are in
the store (not fsynced: at worst a window is stored again, under the same key), and a segment
whose windows are all stored is deleted once the log has moved past it.

A run holds an exclusive lock on ``<run>/lock`` (``flock``, released by the OS when the process
dies, even by SIGKILL): a live monitor's windows are never taken by another process, and two
recovering monitors never take the same run. The next monitor of the same store, reference and
source takes a dead run (``RunSpool.take``) and finishes its closed windows not yet stored
(``recoverable``), under their original keys. Records after a crash's torn write are ignored; a
window without its end record was open and is lost, as documented.

A log holds no pickle: a JSON header line, then records, each one JSON line (``window`` and
either a chunk, ``end`` or ``stored``), a chunk's line followed by exactly ``size`` bytes of raw
payload it describes. Per field, a chunk's values are one stacked array when all are arrays of
one dtype and shape (``["stack", dtype, shape, offset, nbytes]``) and all bytes are one blob (``["blob", offset, nbytes, lengths]``), else one entry
per sample:
``null`` (field absent), ``["b", offset, len]`` bytes, ``["s", text]``, ``["j", json]``,
``["a", dtype, shape, offset, nbytes]`` an array, ``["i", mode, dtype, shape, offset, nbytes]``
a PIL image's pixels, ``["x", type]`` a value that cannot be kept (featurized as an error, as
the original would be).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FORMAT = "driftloader-serving-spool/2"
LOCK = "lock"
SEGMENT_BYTES = 64 << 20  # a new log segment once the current one is this large
BUFFER_BYTES = 4 << 20  # chunks are buffered up to this size between system calls
_ABSENT = object()
_PIL_MODES = ("1", "L", "RGB", "RGBA", "I", "F")


class Unkept:
    """Stands for a sample value the spool could not keep (featurized as an error)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"Unkept({self.type_name!r})"


def default_root(store_url: str, reference: str, source: str) -> Path:
    """The spool folder of monitors of ``reference`` in ``store_url`` under ``source``:
    ``$DRIFTLOADER_SPOOL`` or ``$XDG_CACHE_HOME`` (``~/.cache``) ``/driftloader/serving-spool``,
    then a digest of the three, so a restarted monitor finds what a crashed one left."""
    base = os.environ.get("DRIFTLOADER_SPOOL")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "driftloader", "serving-spool")
    digest = hashlib.sha1(f"{store_url}\n{reference}\n{source}".encode()).hexdigest()[:16]
    return Path(base) / digest


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _fsync_folder(folder: Path) -> None:
    # Windows cannot open a folder; the file is durable enough there
    _fsync_path(folder, OSError)


def _fsync_path(path: Path, unopenable: type[OSError]) -> None:
    """fsync ``path`` through a descriptor of its own; ``unopenable`` errors mean nothing to do."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except unopenable:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class SealedWindow:
    """A closed window in the spool; ``done()`` once it is stored (or cannot be)."""

    spool: RunSpool
    segment: Path
    window: int

    def done(self) -> None:
        self.spool.stored(self.segment, self.window)

    def sync(self) -> None:
        """fsync the window's log segment (through a fd of its own, so a rotation that closes
        the log meanwhile is harmless); a segment already gone is ignored."""
        _fsync_path(self.segment, FileNotFoundError)


@dataclass
class SpooledWindow:
    """A closed, unstored window read back from a dead run's log."""

    header: dict
    window: int
    end: dict
    chunks: list[list[dict[str, Any]]]
    sealed: SealedWindow


@dataclass
class _Segment:
    """What a log segment holds, as read back."""

    header: dict | None = None
    chunks: dict[int, list] = field(default_factory=dict)
    ends: dict[int, dict] = field(default_factory=dict)
    stored: set[int] = field(default_factory=set)


class RunSpool:
    """The spool folder of one monitor run, locked by this process while the object lives."""

    def __init__(self, folder: Path, lock_fd: int, header: Mapping[str, Any] | None) -> None:
        self.folder = Path(folder)
        self.header = dict(header or {})
        self._lock_fd: int | None = lock_fd
        self._guard = threading.Lock()  # the log file and the pending windows
        self._file: BinaryIO | None = None
        self._active: Path | None = None
        self._pending: dict[Path, set[int]] = {}  # segment -> closed windows not yet stored

    @classmethod
    def create(cls, root: Path, run: str, header: Mapping[str, Any]) -> RunSpool:
        """A new run's folder ``root/run``, locked; every segment starts with ``header``."""
        folder = Path(root) / run
        folder.mkdir(parents=True, exist_ok=True)
        spool = cls.take(folder)
        if spool is None:
            raise OSError(f"serving spool {folder} is locked by another process")
        spool.header = dict(header)
        return spool

    @classmethod
    def take(cls, folder: Path) -> RunSpool | None:
        """Lock the run folder ``folder``; None when a live process holds it (or it is gone)."""
        try:
            fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        if not _try_lock(fd):
            os.close(fd)
            return None
        return cls(Path(folder), fd, None)

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("segment-*.log"))

    # -- the live run ----------------------------------------------------------------------------

    def append(self, window: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Add a chunk of open window ``window`` (buffered; durable once the window is sealed)."""
        line, parts = encode_chunk(samples, window)
        with self._guard:
            f = self._log()
            f.write(line)
            for part in parts:
                f.write(part)

    def seal(self, window: int, end: Mapping[str, Any], fsync: bool = False) -> SealedWindow:
        """Close window ``window``: its end record and the buffer written out to the OS (one
        system call: the window survives the process being killed); with ``fsync``, also on
        the disk (it survives a machine crash) before returning, else once ``sync()`` is."""
        with self._guard:
            f = self._log()
            f.write(_line({"window": window, "end": dict(end)}))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            segment = self._active
            self._pending.setdefault(segment, set()).add(window)
            if f.tell() >= SEGMENT_BYTES:  # the next window starts a new segment
                f.close()
                self._file = self._active = None
        return SealedWindow(self, segment, window)

    def _log(self) -> BinaryIO:
        if self._file is None:
            number = len(self.segments())
            self._active = self.folder / f"segment-{number:06d}.log"
            self._file = open(self._active, "ab", buffering=BUFFER_BYTES)  # noqa: SIM115
            self._file.write(_line({"format": FORMAT, **self.header}))
            _fsync_folder(self.folder)  # the new file's name survives a machine crash
        return self._file

    def stored(self, segment: Path, window: int) -> None:
        """Window ``window`` of ``segment`` is stored: say so in the log (not fsynced), and
        delete a segment the log has moved past once all its windows are stored."""
        with self._guard:
            if segment == self._active and self._file is not None:
                self._file.write(_line({"window": window, "stored": True}))
            waiting = self._pending.get(segment, set())
            waiting.discard(window)
            if not waiting and segment != self._active:
                self._pending.pop(segment, None)
                segment.unlink(missing_ok=True)

    # -- a dead run ------------------------------------------------------------------------------

    def recoverable(self) -> tuple[list[SpooledWindow], int, list[str]]:
        """The dead run's closed windows not yet stored, in order; how many samples its open
        window held (lost); and the segments that could not be read (kept, with a reason).
        Each window's ``sealed.done()`` marks it stored."""
        windows, lost, unreadable = [], 0, []
        for path in self.segments():
            try:
                segment = read_segment(path)
            except (OSError, ValueError, KeyError, TypeError) as e:
                unreadable.append(f"{path}: {e!r}")
                self._pending.setdefault(path, set()).add(-1)  # never deleted by release
                continue
            for w in sorted(segment.chunks.keys() | segment.ends.keys()):
                if w in segment.stored:
                    continue
                chunks = segment.chunks.get(w, [])
                if w not in segment.ends:
                    lost += sum(len(c) for c in chunks)
                    continue
                sealed = SealedWindow(self, path, w)
                windows.append(SpooledWindow(segment.header, w, segment.ends[w], chunks, sealed))
                self._pending.setdefault(path, set()).add(w)
        return windows, lost, unreadable

    def release(self) -> None:
        """Close the log, delete what holds nothing unstored (and the folder when empty), drop
        the lock. Windows not stored stay for the next monitor."""
        with self._guard:
            if self._file is not None:
                self._file.close()
                self._file = self._active = None
            for path in self.segments():
                if not self._pending.get(path):
                    path.unlink(missing_ok=True)
            if self._lock_fd is None:
                return
            if not self.segments():
                (self.folder / LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # another process just put something in it
                    self.folder.rmdir()
            os.close(self._lock_fd)
            self._lock_fd = None


def orphaned_runs(root: Path, exclude: str | None = None) -> list[Path]:
    """Run folders under ``root`` other than ``exclude`` (candidates; ``RunSpool.take`` tells
    which belong to no live process)."""
    if not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name != exclude)


def read_segment(path: Path) -> _Segment:
    """What a log segment holds; reading stops at a torn record (a crash mid-write)."""
    out = _Segment()
    with open(path, "rb") as f:
        first = f.readline()
        if not first.endswith(b"\n"):
            return out
        out.header = json.loads(first)
        if out.header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a serving spool log of format {FORMAT}")
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                return out
            try:
                record = json.loads(line)
            except ValueError:
                return out
            w = record["window"]
            if "end" in record:
                out.ends[w] = record["end"]
            elif "stored" in record:
                out.stored.add(w)
            else:
                payload = f.read(record["size"])
                if len(payload) < record["size"]:
                    return out
                out.chunks.setdefault(w, []).append(decode_chunk(record, payload))


def _line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=True).encode() + b"\n"


# -- chunks ------------------------------------------------------------------------------------


class _Payload:
    def __init__(self) -> None:
        self.parts: list[bytes | np.ndarray] = []
        self.size = 0

    def add(self, data: bytes | np.ndarray) -> tuple[int, int]:
        offset = self.size
        self.parts.append(data)
        self.size += len(data)
        return offset, len(data)


def encode_chunk(samples: Sequence[Mapping[str, Any]], window: int = 0) -> tuple[bytes, list]:
    """A record line and its payload parts for ``samples`` of window ``window``."""
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample))
    payload = _Payload()
    fields = {}
    for name in names:
        values = [s.get(name, _ABSENT) for s in samples]
        fields[name] = _stacked(values, payload) or [_value(v, payload) for v in values]
    line = _line({"window": window, "n": len(samples), "size": payload.size, "fields": fields})
    return line, payload.parts


def _stacked(values: list[Any], payload: _Payload) -> list | None:
    """One entry for a column of same-shape arrays, or of bytes; None for anything else."""
    first = values[0]
    if type(first) is bytes and all(type(v) is bytes for v in values):
        return ["blob", *payload.add(b"".join(values)), [len(v) for v in values]]
    if not isinstance(first, np.ndarray) or first.dtype.hasobject:
        return None
    dtype, shape = first.dtype, first.shape
    for v in values:
        if type(v) is not np.ndarray or v.dtype != dtype or v.shape != shape:
            return None
    block = np.ascontiguousarray(np.stack(values))
    return ["stack", dtype.str, list(shape), *payload.add(block.reshape(-1).view(np.uint8))]


def _value(value: Any, payload: _Payload) -> Any:
    if value is _ABSENT:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["b", *payload.add(bytes(value))]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        block = np.ascontiguousarray(value)
        return ["a", block.dtype.str, list(block.shape), *payload.add(block.tobytes())]
    if type(value).__module__.startswith("PIL.") and getattr(value, "mode", None) in _PIL_MODES:
        pixels = np.ascontiguousarray(np.asarray(value))
        return [
            "i",
            value.mode,
            pixels.dtype.str,
            list(pixels.shape),
            *payload.add(pixels.tobytes()),
        ]
    if isinstance(value, np.generic):
        value = value.item()
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return ["x", type(value).__name__]
    return ["j", value]


def decode_chunk(record: Mapping[str, Any], payload: bytes) -> list[dict[str, Any]]:
    """The samples of a record line and its payload (the inverse of ``encode_chunk``)."""
    n = record["n"]
    samples: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, column in record["fields"].items():
        if column and column[0] == "blob":
            _, offset, _size, lengths = column
            for sample, length in zip(samples, lengths):
                sample[name] = payload[offset : offset + length]
                offset += length
            continue
        if column and column[0] == "stack":
            _, dtype, shape, offset, size = column
            block = np.frombuffer(payload[offset : offset + size], dtype=np.dtype(dtype))
            block = block.reshape(n, *shape).copy()
            for sample, row in zip(samples, block):
                sample[name] = row
            continue
        for sample, entry in zip(samples, column):
            if entry is not None:
                sample[name] = _decoded(entry, payload)
    return samples


def _decoded(entry: list, payload: bytes) -> Any:
    tag = entry[0]
    if tag == "b":
        return payload[entry[1] : entry[1] + entry[2]]
    if tag in ("s", "j"):
        return entry[1]
    if tag == "a":
        _, dtype, shape, offset, size = entry
        array = np.frombuffer(payload[offset : offset + size], dtype=np.dtype(dtype))
        return array.reshape(shape).copy()
    if tag == "i":
        from PIL import Image

        _, _mode, dtype, shape, offset, size = entry  # fromarray infers the mode back
        pixels = np.frombuffer(payload[offset : offset + size], dtype=np.dtype(dtype))
        return Image.fromarray(pixels.reshape(shape).copy())
    return Unkept(str(entry[1]))
