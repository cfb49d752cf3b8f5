"""The write-ahead spool of ``ServingMonitor``: a window's samples on local disk until stored.

The caller's thread appends every chunk of samples it hands to the featurizing thread to the
open window's file (``window-<n>.part``: plain writes, no fsync) and, when the window closes,
appends the window's time range, fsyncs, renames the file to ``window-<n>.spool`` and fsyncs the
folder: a closed window is on local disk before ``observe`` returns, at the cost of one fsync per
window. The storing thread deletes the file once the window's profile and catalog row are in the
store. A process killed before that leaves the file behind; the next monitor of the same store,
reference and source takes it (``orphaned_runs`` / ``RunSpool.take``), featurizes, compares and
stores it under its original key (``serving://<run>/window-<n>``), so it is stored once.

Each monitor run owns ``<root>/<run>/`` and holds an exclusive lock on ``<run>/lock`` (``flock``,
released by the OS when the process dies, even by SIGKILL): a live monitor's windows are never
taken by another process, and two recovering monitors never take the same run.

A window file holds no pickle: a JSON header line, then records, each one JSON line followed by
exactly ``size`` bytes of raw payload that the line describes. Per field, a chunk's values are
one stacked array when all are arrays of one dtype and shape (``["stack", dtype, shape, offset,
nbytes]``), else one entry per sample: ``null`` (field absent), ``["b", offset, len]`` bytes,
``["s", text]``, ``["j", json]``, ``["a", dtype, shape, offset, nbytes]`` an array, ``["i",
mode, dtype, shape, offset, nbytes]`` a PIL image's pixels, ``["x", type]`` a value that cannot
be kept (featurized as an error, as the original would be). The last record is ``{"end": {...}}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FORMAT = "driftloader-serving-spool/1"
SEALED, OPEN, LOCK = ".spool", ".part", "lock"
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
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; the rename is durable enough there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunSpool:
    """The spool folder of one monitor run, locked by this process while the object lives."""

    def __init__(self, folder: Path, lock_fd: int) -> None:
        self.folder = folder
        self._lock_fd: int | None = lock_fd
        self._open: dict[int, BinaryIO] = {}

    @classmethod
    def create(cls, root: Path, run: str) -> RunSpool:
        """A new run's folder ``root/run``, locked."""
        folder = Path(root) / run
        folder.mkdir(parents=True, exist_ok=True)
        spool = cls.take(folder)
        if spool is None:
            raise OSError(f"serving spool {folder} is locked by another process")
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
        return cls(Path(folder), fd)

    def path(self, window: int, suffix: str) -> Path:
        return self.folder / f"window-{window:06d}{suffix}"

    def append(self, window: int, header: Mapping[str, Any], samples: Sequence[Mapping]) -> None:
        """Append ``samples`` to open window ``window``'s file (created with ``header``)."""
        f = self._file(window, header)
        line, parts = encode_chunk(samples)
        f.write(line)
        for part in parts:
            f.write(part)

    def seal(self, window: int, header: Mapping[str, Any], end: Mapping[str, Any]) -> Path:
        """Close window ``window``: its end record, fsync, rename to ``.spool``; its path."""
        f = self._file(window, header)
        del self._open[window]
        with f:
            f.write(_line({"end": dict(end)}))
            f.flush()
            os.fsync(f.fileno())
        sealed = self.path(window, SEALED)
        os.replace(self.path(window, OPEN), sealed)
        _fsync_folder(self.folder)
        return sealed

    def _file(self, window: int, header: Mapping[str, Any]) -> BinaryIO:
        f = self._open.get(window)
        if f is None:
            f = open(self.path(window, OPEN), "wb")  # noqa: SIM115 - kept open across chunks
            f.write(_line({"format": FORMAT, **header, "window": window}))
            self._open[window] = f
        return f

    def sealed(self) -> list[Path]:
        """The closed windows left in the folder, in window order."""
        return sorted(self.folder.glob(f"window-*{SEALED}"))

    def drop_open(self) -> int:
        """Delete the open windows' files (a crashed run's open window is lost by design);
        returns how many samples they held."""
        lost = 0
        for path in sorted(self.folder.glob(f"window-*{OPEN}")):
            with contextlib.suppress(OSError, ValueError):  # a half-written line ends the count
                lost += sum(len(chunk) for chunk in _chunks(path, complete=False))
            path.unlink(missing_ok=True)
        return lost

    def release(self) -> None:
        """Close open files, delete the folder when nothing is left in it, drop the lock."""
        for f in self._open.values():
            f.close()
        self._open.clear()
        if self._lock_fd is None:
            return
        if not self.sealed() and not any(self.folder.glob(f"window-*{OPEN}")):
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


def read_window(path: Path) -> tuple[dict, dict, list[list[dict[str, Any]]]]:
    """A sealed window file's header, end record and chunks of samples."""
    chunks: list[list[dict[str, Any]]] = []
    records = _chunks(path, complete=True, header_and_end=True)
    header = next(records)
    end = None
    for item in records:
        if isinstance(item, dict):
            end = item
        else:
            chunks.append(item)
    if end is None:
        raise ValueError(f"serving spool file {path} has no end record")
    return header, end, chunks


def _chunks(path: Path, complete: bool, header_and_end: bool = False) -> Iterator[Any]:
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a serving spool file of format {FORMAT}")
        if header_and_end:
            yield header
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                if line and complete:
                    raise ValueError(f"serving spool file {path} is truncated")
                return
            record = json.loads(line)
            if "end" in record:
                if header_and_end:
                    yield record["end"]
                return
            payload = f.read(record["size"])
            if len(payload) < record["size"]:
                if complete:
                    raise ValueError(f"serving spool file {path} is truncated")
                return
            yield decode_chunk(record, payload)


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


def encode_chunk(samples: Sequence[Mapping[str, Any]]) -> tuple[bytes, list]:
    """A record line and its payload parts for ``samples``."""
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample))
    payload = _Payload()
    fields = {}
    for name in names:
        values = [s.get(name, _ABSENT) for s in samples]
        fields[name] = _stacked(values, payload) or [_value(v, payload) for v in values]
    line = _line({"n": len(samples), "size": payload.size, "fields": fields})
    return line, payload.parts


def _stacked(values: list[Any], payload: _Payload) -> list | None:
    first = values[0]
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
