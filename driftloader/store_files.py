"""The file layer of a profile store: paths, bounded JSON reads, atomic writes, one deadline
per operation on object stores, and read-only stores (asked for, or found on a refused write).

``ProfileStore`` (store.py) builds profiles, references and the catalog on it; validate.py and
versions.py keep their files in the store through its public ``path`` / ``read_json`` /
``write_json``. Nothing here knows what a profile is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from .errors import (
    ProfileFormatError,
    StorageUnreachable,
    StoreReadOnlyError,
    StoreTimeoutError,
)
from .sources import CONNECT_TIMEOUT, filesystem, local_path, protocol_of, redact, storage_hint

MAX_JSON_BYTES = 256 * 2**20
"""The largest store file read (bytes): a profile of a few hundred features is a few MB."""
MAX_JSON_DEPTH = 64
"""The deepest JSON nesting read: profiles nest 6 levels, plus the user's shard metadata."""
DEFAULT_TIMEOUT = 60.0
"""Seconds one store operation (a read, a write, a HEAD, a listing) may take in all, retries
included, on object stores; then ``StoreTimeoutError``. ``ProfileStore(timeout=...)``. On S3 a
listing has the deadline per page of 1,000 files: a folder of a million catalog rows is a
thousand pages, ~100 s when they come one after the other (other object stores: one deadline
for the whole listing)."""
S3_STORE_OPTIONS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": 20,
        "retries": {"max_attempts": 2, "mode": "standard"},
    },
    "max_concurrency": 1,
    "version_aware": False,
}
"""storage_options the store adds on S3 unless the caller sets them (per key of
``config_kwargs``). s3fs's defaults (a 15 s read timeout, botocore's 5 legacy attempts, inside
s3fs's own 5 retries) kept a stalled PUT or HEAD going for about 7 minutes; here a connection
takes at most 3 s, a stalled answer 20 s, botocore tries twice, and ``DEFAULT_TIMEOUT`` bounds
the whole operation (s3fs's retries included) anyway. ``max_concurrency`` 1: a store file is read
with one GET (s3fs sends a HEAD first to split larger reads otherwise); many files are read
concurrently by ``read_many`` instead. ``version_aware`` False: the store reads and lists only
the latest objects; a version-aware listing is S3's ListObjectVersions, which returns every
version ever written (catalog rows are rewritten each epoch: on a versioned bucket each epoch
would add a page to every listing of the catalog)."""

LIST_RANGES = 8
"""Ranges of a long store listing asked for at once (``listing.objects``): a million catalog
rows are a thousand pages, ~125 round trips so. Fewer than a shard glob's 32: a store is
often a small or shared S3-compatible server. (A server that builds its pages one at a time,
as moto does, gets fewer still: ``listing.LIST_BUDGET_S``.)"""

READ_BATCH = 64
"""Requests in flight at once when ``read_many`` reads a list of store files on an object
store (fsspec's ``cat`` on the list, on s3fs's event loop)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[[ord(c) for c in '"[]{}']] = True
_THREADS = 16
_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)
T = TypeVar("T")


def json_depth(data: bytes) -> int:
    """How deeply the JSON text ``data`` nests arrays and objects (strings not counted), without
    parsing it: a bound checked before ``json.loads``, which recurses once per level."""
    if b"\\" in data:  # escaped quotes: strings are cut out by the regex first
        data = _STRING.sub(b'""', data)
    raw = np.frombuffer(data, dtype=np.uint8)
    marks = raw[np.flatnonzero(_STRUCTURAL[raw])]  # the quotes and brackets, in order
    quotes = marks == ord('"')
    outside = np.cumsum(quotes) % 2 == 0  # without escapes: an even number of quotes before
    kept = marks[outside & ~quotes]
    steps = np.where((kept == ord("[")) | (kept == ord("{")), 1, -1)
    return int(np.cumsum(steps).max()) if steps.size else 0


def parse_store_json(data: bytes, where: str) -> Any:
    """``json.loads(data)`` within the store's bounds: ``ProfileFormatError`` naming ``where``
    when it is larger than ``MAX_JSON_BYTES``, nests deeper than ``MAX_JSON_DEPTH`` or is not
    valid JSON."""
    if len(data) > MAX_JSON_BYTES:
        raise ProfileFormatError(
            f"{where} is {len(data):,} bytes, more than the {MAX_JSON_BYTES:,} a store file may be"
        )
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ProfileFormatError(
            f"{where} nests {depth} levels deep, more than the {MAX_JSON_DEPTH} a store file may"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ProfileFormatError(f"{where} is not valid JSON: {e}") from None


def store_options(url: str, storage_options: dict | None) -> dict:
    """The storage options a store on ``url`` uses: the caller's, plus on S3 the bounded
    timeouts and retries of ``S3_STORE_OPTIONS`` for every key the caller did not set."""
    options = dict(storage_options or {})
    if protocol_of(url) not in ("s3", "s3a"):
        return options
    for key, default in S3_STORE_OPTIONS.items():
        if isinstance(default, dict):
            options[key] = {**default, **dict(options.get(key) or {})}
        else:
            options.setdefault(key, default)
    return options


class StoreFiles:
    """The files of a profile store under one fsspec URL: paths, bounded reads, atomic writes.

    ``read_only``: the store is never written. Profiles made while training stay in memory,
    decisions stay in ``drift_report()``; ``check`` compares without storing. A store that turns
    out read-only (the first write is refused for permissions) behaves the same from then on,
    after one ``RuntimeWarning``. ``timeout``: seconds one operation (one page of a listing on
    S3) may take on an object store, retries included (``DEFAULT_TIMEOUT``).
    """

    def __init__(
        self,
        url: str,
        storage_options: dict | None = None,
        *,
        read_only: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(url, (str, os.PathLike)) or not os.fspath(url):
            raise ValueError(f"store url must be a non-empty path or URL, got {url!r}")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ValueError(f"storage_options must be a dict, got {storage_options!r}")
        if not isinstance(read_only, bool):
            raise ValueError(f"read_only must be True or False, got {read_only!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.read_only = read_only
        self.timeout = float(timeout)
        self.local = protocol_of(self.url) == "file"
        self._refused: str | None = None  # why writes are refused, once a write was
        self._warned = threading.Lock()
        self._said = False  # the read-only warning was given
        self.reads = 0  # files asked for through read_many (counters for tests and benchmarks)
        self.batches = 0  # read_many calls
        if self.local:
            path = os.path.abspath(os.path.expanduser(local_path(self.url)))
            self.root = path.rstrip(os.sep) or os.sep
        else:
            self.root = self.fs._strip_protocol(self.url).rstrip("/")

    @property
    def fs(self):
        """The store's filesystem (cached per process, so safe after a fork)."""
        return filesystem(self.url, store_options(self.url, self.storage_options))

    def __repr__(self) -> str:
        return f"ProfileStore({redact(self.url)!r})"

    def __reduce__(self):
        options = {"read_only": self.read_only or self._refused is not None}
        return (_rebuild, (type(self), self.url, self.storage_options, options, self.timeout))

    @property
    def writable(self) -> bool:
        """False when the store was opened ``read_only`` or a write was refused for permissions."""
        return not self.read_only and self._refused is None

    def check_writable(self) -> None:
        """Raise ``ValueError`` naming the store when it cannot take writes: opened read-only,
        a local path that is a file or not writable, or an object-store bucket that does not
        exist. Called before long work, so that a mistyped store is not reported as a failure
        of every shard."""
        if not self.writable:
            raise ValueError(
                f"store {redact(self.url)} is read-only: {self._refused or 'opened so'}"
            )
        if self.local:
            path = self.root
            while not os.path.exists(path) and os.path.dirname(path) != path:
                path = os.path.dirname(path)  # the nearest part of it that exists
            if not os.path.isdir(path):
                raise ValueError(f"store {self.url!r}: {path!r} is a file, not a folder")
            return
        bucket = self.root.split("/", 1)[0]
        if getattr(self.fs, "call_s3", None) is None:  # other object stores: the first write tells
            return
        try:
            self._call("_call_s3", "head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise ValueError(
                f"store {redact(self.url)}: bucket {bucket!r} does not exist: create it, or fix "
                "the store URL"
            ) from None
        except StoreTimeoutError:
            raise
        except Exception:  # e.g. no s3:ListBucket permission: writes may still be allowed
            return

    # -- paths ---------------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """The path of ``parts`` under the store root, in the store's filesystem
        (``store.path("references", "v1.json")``). Parts are joined as given."""
        sep = os.sep if self.local else "/"
        return sep.join([self.root, *parts])

    def display(self, path: str) -> str:
        """``path`` as a user should see it: a local path, or a URL without credentials."""
        return path if self.local else redact(self.fs.unstrip_protocol(path))

    # -- reading and writing -------------------------------------------------------------------

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """The bytes at ``path`` (a store path, see ``path``), or None if there is no such file.
        At most ``limit`` (default ``MAX_JSON_BYTES``) + 1 bytes are kept; ``StoreTimeoutError``
        past ``timeout``."""
        limit = MAX_JSON_BYTES if limit is None else limit
        if self.local:
            try:
                with open(path, "rb") as f:
                    return f.read(limit + 1)
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            return self._call("_cat_file", path)
        except FileNotFoundError:
            return None

    def read_json(self, path: str) -> dict | None:
        """The JSON object at ``path``, or None if there is no such file. ``ProfileFormatError``
        naming the file when it is not JSON, not an object (every store file is one), or
        exceeds ``MAX_JSON_BYTES`` / ``MAX_JSON_DEPTH``."""
        data = self.read_bytes(path)
        return None if data is None else self._json_object(data, path)

    def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        """The bytes at each of ``paths``, in order (None where there is no such file). On an
        async object store they are read with one ``cat`` on the whole list (``READ_BATCH``
        requests in flight, one deadline of ``timeout`` per batch), never one at a time;
        locally they are read in turn. ``reads`` counts the files asked for, ``batches`` the
        calls that read them."""
        paths = list(paths)
        self.reads += len(paths)
        self.batches += 1
        if self.local or len(paths) <= 1 or not getattr(self.fs, "async_impl", False):
            return [self.read_bytes(p) for p in paths]
        out: list[bytes | None] = []
        for start in range(0, len(paths), READ_BATCH * 16):
            batch = paths[start : start + READ_BATCH * 16]
            found = self._call("_cat", batch, on_error="return", batch_size=READ_BATCH)
            out.extend(self._answer(found.get(self.fs._strip_protocol(p)), p) for p in batch)
        return out

    def _answer(self, value: Any, path: str) -> bytes | None:
        """One file's answer from ``cat``: its bytes, None when absent, else the error raised."""
        if isinstance(value, (FileNotFoundError, type(None))):
            return None
        if isinstance(value, BaseException):
            raise value
        if len(value) > MAX_JSON_BYTES:
            return value[: MAX_JSON_BYTES + 1]
        return value

    def read_json_many(self, paths: Sequence[str]) -> list[dict | ProfileFormatError | None]:
        """``read_json`` of each of ``paths`` from one ``read_many``: the JSON object, None
        when absent, or the ``ProfileFormatError`` naming a corrupt file (returned, not
        raised, so one bad file does not hide the others)."""
        out: list[dict | ProfileFormatError | None] = []
        for path, data in zip(paths, self.read_many(paths)):
            try:
                out.append(None if data is None else self._json_object(data, path))
            except ProfileFormatError as e:
                out.append(e)
        return out

    def _json_object(self, data: bytes, path: str) -> dict:
        document = parse_store_json(data, self.display(path))
        if not isinstance(document, dict):
            raise ProfileFormatError(
                f"{self.display(path)} holds a JSON {type(document).__name__}, not an object"
            )
        return document

    def delete(self, paths: Sequence[str]) -> None:
        """Remove the files ``paths`` (absent ones are ignored); one batch on object stores."""
        paths = list(paths)
        if not paths or not self.writable:
            return
        if self.local:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        self._call("_rm", paths)
        for path in paths:
            self.fs.invalidate_cache(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically. ``StoreReadOnlyError`` (a ``PermissionError``)
        when the store is read-only or refuses the write for permissions (then it counts as
        read-only from now on); ``StoreTimeoutError`` past ``timeout`` on object stores."""
        if not self.writable:
            raise StoreReadOnlyError(f"store {redact(self.url)} is read-only: {self._why()}")
        try:
            self._write(path, data)
        except PermissionError as e:
            self._refused = f"writing {self.display(path)} was refused: {e}"
            raise StoreReadOnlyError(f"store {redact(self.url)} is read-only: {self._why()}") from e

    def write_json(self, path: str, document: Any, *, indent: int | None = None) -> None:
        """Write ``document`` as strict JSON (no NaN) to ``path`` atomically (``write_bytes``)."""
        self.write_bytes(path, encode_json(document, indent))

    def exists(self, path: str) -> bool:
        """True if a file exists at ``path`` (not read)."""
        if self.local:
            return os.path.isfile(path)
        self.fs.invalidate_cache(path)
        return self._call("_exists", path)

    def list_json(self, folder: str) -> list[str]:
        """Paths of the ``.json`` files directly in ``folder`` (temp files excluded), sorted."""
        if self.local:
            try:
                names = os.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(
                os.path.join(folder, n)
                for n in names
                if n.endswith(".json") and not n.startswith(".")
            )
        if self._s3:
            paths = [info["Key"] for info in self._s3_listing(folder, recursive=False)]
        else:
            self.fs.invalidate_cache(folder)
            try:
                paths = self._call("_ls", folder, detail=False, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(p for p in paths if p.endswith(".json"))

    def list_tree(self, folder: str) -> dict[str, str | None]:
        """Every file under ``folder`` (recursively, temp files excluded): path -> a stamp that
        changes when the file is written again (the ETag on S3; inode, mtime and size locally;
        None when the filesystem tells none). One listing request per 1,000 files on S3."""
        return {path: _stamp(info) for path, info in self._tree(folder).items()}

    def list_sizes(self, folder: str) -> dict[str, int | None]:
        """Every file under ``folder``, as ``list_tree`` lists them: path -> size in bytes."""
        return {path: info.get("size") for path, info in self._tree(folder).items()}

    def _tree(self, folder: str) -> dict[str, dict]:
        if self.local:
            return _local_tree(folder)
        if self._s3:  # a fresh listing: s3fs's cache is not read
            return {i["Key"]: i for i in self._s3_listing(folder, recursive=True)}
        self.fs.invalidate_cache(folder)
        try:
            found = self._call("_find", folder, detail=True)
        except FileNotFoundError:
            return {}
        return {p: i for p, i in found.items() if i.get("type") != "directory"}

    @property
    def _s3(self) -> bool:
        return not self.local and getattr(self.fs, "call_s3", None) is not None

    def _s3_listing(self, folder: str, recursive: bool) -> list[dict]:
        """The objects in ``folder`` on S3 (under it with ``recursive``), as ``Key``-named
        info dicts: a prefix listing (no HEAD, [] when the folder is empty), its pages at once
        when the names allow (``listing.objects``: the store's are hashed), each page within
        ``timeout``; a folder of a million files takes a thousand pages."""
        from driftloader.listing import objects

        bucket, key, _ = self.fs.split_path(folder)
        what = f"a page of the listing of {self.display(folder)}"

        def page(method: str, **kwargs: Any) -> dict:
            return self._call("_call_s3", method, doing=what, **kwargs)

        prefix = key.rstrip("/") + "/" if key else ""
        try:
            return objects(
                self.fs, bucket, prefix, recursive=recursive, call=page, ranges=LIST_RANGES
            )
        except FileNotFoundError:  # no such bucket: nothing stored, as with no such folder
            return []

    def list_folders(self, folder: str) -> list[str]:
        """Names of the folders directly in ``folder``, sorted ([] when there is none)."""
        if self.local:
            try:
                return sorted(
                    n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n))
                )
            except (FileNotFoundError, NotADirectoryError):
                return []
        self.fs.invalidate_cache(folder)
        try:
            entries = self._call("_ls", folder, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        names = (
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        )
        return sorted(names)

    def map(self, fn: Callable[[Any], T], items: Sequence) -> list[T]:
        """``[fn(x) for x in items]``, with threads on object stores (one request each)."""
        items = list(items)
        if self.local or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(_THREADS, len(items))) as pool:
            return list(pool.map(fn, items))

    def _why(self) -> str:
        return self._refused or "opened with read_only=True"

    def _write(self, path: str, data: bytes) -> None:
        if not self.local:
            self._call("_pipe_file", path, data)
            self.fs.invalidate_cache(path)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; stores are shared by ranks/users
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _call(self, method: str, *args: Any, doing: str | None = None, **kwargs: Any) -> Any:
        """``fs.<method>`` on an object store within ``timeout`` seconds in all (async
        filesystems run the coroutine on fsspec's loop with a deadline; others are called
        as they are, bounded only by their own timeouts). ``doing``: what a timeout names."""
        fs = self.fs
        if not getattr(fs, "async_impl", False) or not hasattr(fs, method):
            return getattr(fs, method.lstrip("_"))(*args, **kwargs)
        from fsspec.asyn import FSTimeoutError, sync

        try:
            return sync(fs.loop, getattr(fs, method), *args, timeout=self.timeout, **kwargs)
        except FSTimeoutError:
            target = args[0] if args and isinstance(args[0], str) else None
            what = doing or method.strip("_") + (f" {self.display(target)}" if target else "")
            raise StoreTimeoutError(
                f"store {redact(self.url)}: {what} did not finish within {self.timeout:g} s "
                "(ProfileStore(timeout=...) sets the limit)"
            ) from None
        except Exception as e:
            hint = storage_hint(e)
            if not hint:
                raise
            raise StorageUnreachable(f"store {redact(self.url)}: {e}{hint}") from e

    def _warn_read_only(self, what: str) -> None:
        """One RuntimeWarning per store object that ``what`` is not stored because the store
        refused a write (none for a store opened ``read_only``: the caller asked for that)."""
        with self._warned:
            if self._said or self._refused is None:
                return
            self._said = True
        warnings.warn(
            f"store {redact(self.url)} is read-only ({self._why()}): {what} and everything "
            "after it is kept in memory only, not stored",
            RuntimeWarning,
            stacklevel=3,
        )

    def mark_read_only(self, reason: str) -> None:
        """Treat the store as read-only from now on (a write was refused elsewhere, e.g. in
        a worker process), with the one warning a refused write gives."""
        if self._refused is None and not self.read_only:
            self._refused = reason
            self._warn_read_only("this run's profiles and decisions")

    def _best_effort(self, path: str, document: Any, what: str) -> bool:
        """Write ``document`` (JSON, or bytes as they are); on a read-only store warn once
        and say False."""
        try:
            if isinstance(document, bytes):
                self.write_bytes(path, document)
            else:
                self.write_json(path, document)
        except StoreReadOnlyError:
            self._warn_read_only(what)
            return False
        return True


def encode_json(document: Any, indent: int | None = None) -> bytes:
    """``document`` as strict JSON (no NaN), compact unless ``indent``: what ``write_json``
    writes."""
    separators = None if indent is not None else (",", ":")
    return json.dumps(document, allow_nan=False, indent=indent, separators=separators).encode()


def _local_tree(folder: str) -> dict[str, dict]:
    out = {}
    for top, folders, names in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(top, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                out[path] = {"stamp": f"{st.st_ino}:{st.st_mtime_ns}", "size": st.st_size}
    return out


def _stamp(info: dict) -> str | None:
    """What changes when an object store file is written again: its ETag (or the nearest
    the filesystem gives); None when it gives none (such a file never counts as unchanged)."""
    for key in (
        "stamp",  # a local file's inode and mtime
        "ETag",
        "etag",
        "md5Hash",
        "generation",
        "LastModified",
        "last_modified",
        "mtime",
    ):
        if info.get(key) is not None:
            return f"{info[key]}:{info.get('size')}"
    return None


def _rebuild(
    cls: type[StoreFiles], url: str, storage_options: dict, options: dict, timeout: float
) -> StoreFiles:
    return cls(url, storage_options, timeout=timeout, **options)


__all__ = [
    "DEFAULT_TIMEOUT",
    "READ_BATCH",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "S3_STORE_OPTIONS",
    "StoreFiles",
    "json_depth",
    "parse_store_json",
    "store_options",
]
