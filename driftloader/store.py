"""``ProfileStore``: shard profiles, reference profiles and a catalog on any fsspec URL.

The store is the shared memory of the system: workers, ranks, later epochs and later runs find a
shard's profile by the shard's URL **and version**, so an overwritten shard is never confused
with the bytes it replaced. Layout under the store root::

    shards/<sha1(url)[:2]>/<sha1(url)>/<quote(version)>.json   one profile per (shard, version)
    probes/<sha1(url)[:2]>/<sha1(url)>/<quote(version)>.json   the probe window of a shard
                                                               that the skip policy dropped
    references/<name>.json                                     a merged reference profile
    references/<name>.rules.json, exclusions/<name>.json       validation rules, quarantine
    catalog/<sha1(url)>.<quote(version)>.json                  one ``CatalogRow`` per shard-version

``url`` in a key is the shard URL without credentials (``sources.redact``; local paths are made
absolute first, so ``data/a.tar`` and ``/abs/data/a.tar`` name the same shard); ``quote`` is
``urllib.parse.quote(version, safe="")`` and an unknown version is stored as ``_unversioned``.
Everything is JSON, never pickle.

Writes are atomic: on local disk a temp file in the same folder is renamed over the target
(``os.replace``) and removed in ``finally`` on failure; on object stores the full bytes go in a
single PUT. A reader therefore sees the old file or the new one, never half of one. Other
modules keep their files here through the public ``path`` / ``read_json`` / ``write_json``.
Every read is bounded (``MAX_JSON_BYTES``, ``MAX_JSON_DEPTH``), every object-store operation
has one deadline (``timeout``), and a read-only store degrades to memory (see the class).

Example::

    store = ProfileStore("s3://bucket/drift")
    store.put_profile(profile)
    store.get_profile(shard.url, shard.version)
    store.build_reference("v1", "s3://bucket/train/shard-{000000..000127}.tar")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from .catalog import CatalogRow, json_safe
from .errors import (
    ProfileFormatError,
    ReferenceNotFound,
    StoreReadOnlyError,
    StoreTimeoutError,
)
from .profile import FORMAT as PROFILE_FORMAT
from .profile import Profile
from .reference import MissingProfiles, merge_reference, preprocessing_of
from .sources import Shard, expand_urls, filesystem, protocol_of, redact, stat_shards

UNVERSIONED = "_unversioned"
MAX_JSON_BYTES = 256 * 2**20
"""The largest store file read (bytes): a profile of a few hundred features is a few MB."""
MAX_JSON_DEPTH = 64
"""The deepest JSON nesting read: profiles nest 6 levels, plus the user's shard metadata."""
DEFAULT_TIMEOUT = 60.0
"""Seconds one store operation (a read, a write, a listing, a HEAD) may take in all, retries
included, on object stores; then ``StoreTimeoutError``. ``ProfileStore(timeout=...)``."""
S3_STORE_OPTIONS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 20,
        "retries": {"max_attempts": 2, "mode": "standard"},
    },
}
"""storage_options the store adds on S3 unless the caller sets them (per key of
``config_kwargs``). s3fs's defaults (a 15 s read timeout, botocore's 5 legacy attempts, inside
s3fs's own 5 retries) kept a stalled PUT or HEAD going for about 7 minutes; here a connection
takes at most 5 s, a stalled answer 20 s, botocore tries twice, and ``DEFAULT_TIMEOUT`` bounds
the whole operation (s3fs's retries included) anyway."""
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_THREADS = 16
_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)
T = TypeVar("T")


def shard_key(url: str) -> str:
    """The URL a shard is stored under: without credentials, local paths made absolute."""
    if protocol_of(url) == "file":
        path = url[len("file://") :] if url.startswith("file://") else url
        return os.path.abspath(os.path.expanduser(path))
    return redact(url)


def url_hash(url: str) -> str:
    """sha1 hex of the shard's storage key."""
    return hashlib.sha1(shard_key(url).encode("utf-8")).hexdigest()


def version_name(version: str | None) -> str:
    """A version string made safe for one path segment."""
    return UNVERSIONED if version is None else quote(str(version), safe="")


def check_reference_name(name: str) -> str:
    """``name`` if it is a valid reference name (``[A-Za-z0-9._-]+``), else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"reference name must match [A-Za-z0-9._-]+, got {name!r}")
    return name


def json_depth(data: bytes) -> int:
    """How deeply the JSON text ``data`` nests arrays and objects (strings not counted), without
    parsing it: a bound checked before ``json.loads``, which recurses once per level."""
    brackets = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    opens = (brackets == ord("[")) | (brackets == ord("{"))
    closes = (brackets == ord("]")) | (brackets == ord("}"))
    steps = opens.astype(np.int8) - closes.astype(np.int8)
    steps = steps[steps != 0].astype(np.int64)
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


class ProfileStore:
    """Profiles keyed by (shard URL, version), references and a catalog under one fsspec URL.

    ``read_only``: the store is never written. Profiles made while training stay in memory,
    decisions stay in ``drift_report()``; ``check`` compares without storing. A store that turns
    out read-only (the first write is refused for permissions) behaves the same from then on,
    after one ``RuntimeWarning``. ``timeout``: seconds one operation may take on an object
    store, retries included (``DEFAULT_TIMEOUT``).
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
        if self.local:
            self.root = shard_key(self.url).rstrip(os.sep) or os.sep
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
        return (_rebuild, (self.url, self.storage_options, options, self.timeout))

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

    def profile_path(self, url: str, version: str | None) -> str:
        """Where the profile of shard ``url`` at ``version`` lives (a path in the store's fs)."""
        digest = url_hash(url)
        return self.path("shards", digest[:2], digest, f"{version_name(version)}.json")

    def probe_path(self, url: str, version: str | None) -> str:
        """Where the probe profile of shard ``url`` at ``version`` lives."""
        digest = url_hash(url)
        return self.path("probes", digest[:2], digest, f"{version_name(version)}.json")

    def reference_path(self, name: str) -> str:
        """Where reference ``name`` lives."""
        return self.path("references", f"{check_reference_name(name)}.json")

    def catalog_path(self, url: str, version: str | None) -> str:
        """Where the catalog row of shard ``url`` at ``version`` lives."""
        return self.path("catalog", f"{url_hash(url)}.{version_name(version)}.json")

    # -- reading and writing -------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes | None:
        """The bytes at ``path`` (a store path, see ``path``), or None if there is no such file.
        At most ``MAX_JSON_BYTES`` + 1 bytes are kept; ``StoreTimeoutError`` past ``timeout``."""
        if self.local:
            try:
                with open(path, "rb") as f:
                    return f.read(MAX_JSON_BYTES + 1)
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
        if data is None:
            return None
        document = parse_store_json(data, self.display(path))
        if not isinstance(document, dict):
            raise ProfileFormatError(
                f"{self.display(path)} holds a JSON {type(document).__name__}, not an object"
            )
        return document

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
        separators = None if indent is not None else (",", ":")
        text = json.dumps(document, allow_nan=False, indent=indent, separators=separators)
        self.write_bytes(path, text.encode())

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
        self.fs.invalidate_cache(folder)
        try:
            paths = self._call("_ls", folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(p for p in paths if p.endswith(".json"))

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

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``fs.<method>`` on an object store within ``timeout`` seconds in all (async
        filesystems run the coroutine on fsspec's loop with a deadline; others are called
        as they are, bounded only by their own timeouts)."""
        fs = self.fs
        if not getattr(fs, "async_impl", False) or not hasattr(fs, method):
            return getattr(fs, method.lstrip("_"))(*args, **kwargs)
        from fsspec.asyn import FSTimeoutError, sync

        try:
            return sync(fs.loop, getattr(fs, method), *args, timeout=self.timeout, **kwargs)
        except FSTimeoutError:
            target = args[0] if args and isinstance(args[0], str) else None
            what = method.strip("_") + (f" {self.display(target)}" if target else "")
            raise StoreTimeoutError(
                f"store {redact(self.url)}: {what} did not finish within {self.timeout:g} s "
                "(ProfileStore(timeout=...) sets the limit)"
            ) from None

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

    # -- shard profiles ------------------------------------------------------------------------

    def put_profile(self, profile: Profile, *, strict: bool = False) -> str | None:
        """Store ``profile`` under (profile.url, profile.version) atomically; returns its path.

        Also writes the shard-version's catalog row (summary fields merged into any recorded
        keys). On a read-only store nothing is written and None is returned (one warning), or
        with ``strict`` (storing is the caller's whole job) ``StoreReadOnlyError`` is raised.
        """
        if not isinstance(profile, Profile):
            raise ValueError(f"put_profile needs a Profile, got {type(profile).__name__}")
        if not profile.url:
            raise ValueError("put_profile needs a profile with a shard url (profile.url is None)")
        path = self.profile_path(profile.url, profile.version)
        if strict:
            self.write_json(path, self._stored_form(profile))
        elif self._put(path, profile) is None:
            return None
        summary = {**profile.summary(), "url": redact(profile.url), "profile": self.display(path)}
        self.record(CatalogRow.from_dict(summary))
        return path

    def get_profile(self, url: str, version: str | None) -> Profile | None:
        """The stored profile of shard ``url`` at ``version``; None if absent or corrupt.

        A corrupt file (truncated, empty, not JSON, ``null``, another format, too large or too
        deeply nested) is reported with a ``RuntimeWarning`` naming its path, never a crash: the
        shard will simply be profiled again (``has_profile`` says False for it too).
        """
        return self._load(self.profile_path(url, version))

    def put_probe(self, profile: Profile) -> str | None:
        """Store the profile of a shard's probe window (its first samples), which the skip
        policy dropped the shard on: later epochs and runs skip it without reading. Never a
        shard profile: it does not count as profiled, nor go into references. None on a
        read-only store (one warning)."""
        if not profile.url:
            raise ValueError("put_probe needs a profile with a shard url (profile.url is None)")
        return self._put(self.probe_path(profile.url, profile.version), profile)

    def get_probe(self, url: str, version: str | None) -> Profile | None:
        """The stored probe profile of shard ``url`` at ``version``; None if absent or corrupt."""
        return self._load(self.probe_path(url, version), "the shard will be probed again")

    def has_profile(self, url: str, version: str | None) -> bool:
        """True if a readable profile is stored for shard ``url`` at ``version``.

        The file is read and checked as JSON of the profile format (not its sketches, which
        ``get_profile`` decodes): a corrupt one warns naming it and counts as absent, so that
        ``profile_shards`` profiles the shard again instead of skipping it for good."""
        path = self.profile_path(url, version)
        try:
            document = self.read_json(path)
            if document is None:
                return False
            if document.get("format") != PROFILE_FORMAT:
                found = document.get("format")
                raise ProfileFormatError(f"unknown profile format {found!r:.40}")
        except ProfileFormatError as e:
            self._warn_corrupt(path, e)
            return False
        return True

    def _put(self, path: str, profile: Profile) -> str | None:
        """Write a shard's profile to ``path`` atomically, or warn once on a read-only store."""
        written = self._best_effort(path, self._stored_form(profile), "the shard's profile")
        return path if written else None

    @staticmethod
    def _stored_form(profile: Profile) -> dict:
        """The profile as stored: its URL without credentials."""
        return {**profile.to_dict(), "url": redact(profile.url)}

    def mark_read_only(self, reason: str) -> None:
        """Treat the store as read-only from now on (a write was refused elsewhere, e.g. in
        a worker process), with the one warning a refused write gives."""
        if self._refused is None and not self.read_only:
            self._refused = reason
            self._warn_read_only("this run's profiles and decisions")

    def _best_effort(self, path: str, document: Any, what: str) -> bool:
        """Write ``document``; on a read-only store warn once and say False."""
        try:
            self.write_json(path, document)
        except StoreReadOnlyError:
            self._warn_read_only(what)
            return False
        return True

    def _load(self, path: str, fix: str | None = None) -> Profile | None:
        try:
            document = self.read_json(path)
            return None if document is None else Profile.from_dict(document)
        except ProfileFormatError as e:
            self._warn_corrupt(path, e, fix)
            return None

    def _warn_corrupt(self, path: str, error: Exception, fix: str | None = None) -> None:
        fix = fix or "the shard will be profiled again"
        warnings.warn(
            f"ignoring corrupt profile {self.display(path)}: {error}; {fix}",
            RuntimeWarning,
            stacklevel=4,
        )

    def fetch_profiles(self, shards: Sequence[Shard]) -> list[Profile | None]:
        """The stored profile of each shard at its version (None where absent or corrupt),
        fetched concurrently on object stores."""
        return self.map(lambda s: self.get_profile(s.url, s.version), shards)

    # -- references ----------------------------------------------------------------------------

    def put_reference(self, name: str, profile: Profile) -> str:
        """Store ``profile`` as reference ``name`` atomically; returns its path.
        ``StoreReadOnlyError`` on a read-only store (a reference is asked for explicitly)."""
        path = self.reference_path(name)
        if not isinstance(profile, Profile):
            raise ValueError(f"put_reference needs a Profile, got {type(profile).__name__}")
        self.write_json(path, profile.to_dict())
        return path

    def get_reference(self, name: str) -> Profile:
        """Reference ``name``; ReferenceNotFound if absent, ProfileFormatError if corrupt."""
        path = self.reference_path(name)
        try:
            document = self.read_json(path)
            if document is not None:
                return Profile.from_dict(document)
        except ProfileFormatError as e:
            raise ProfileFormatError(
                f"reference {name!r} at {self.display(path)} is corrupt: {e}; "
                "rebuild it with `driftloader reference ...`"
            ) from e
        raise ReferenceNotFound(
            f"no reference {name!r} in store {redact(self.url)}: "
            "build it with `driftloader reference ...`"
        )

    def references(self) -> list[str]:
        """Names of the stored references, sorted."""
        paths = self.list_json(self.path("references"))
        names = (_basename(p)[: -len(".json")] for p in paths)
        return sorted(n for n in names if _NAME.fullmatch(n) and not n.endswith(".rules"))

    def build_reference(
        self, name: str, urls: str | Sequence[str], storage_options: dict | None = None
    ) -> Profile:
        """Merge the stored profiles of ``urls`` at their current versions into reference ``name``.

        ``storage_options`` are for the shards; when omitted and the shards live on the same kind
        of filesystem as the store, the store's options are used. Raises ``MissingProfiles``
        when some shard has no readable profile at its current version (a corrupt one is named
        in a warning; ``driftloader profile`` profiles it again). I/O (stat, concurrent fetch)
        is here; the merge is ``merge_reference``.
        """
        check_reference_name(name)
        if storage_options is None and protocol_of(first_url(urls)) == protocol_of(self.url):
            storage_options = self.storage_options
        shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
        reference = merge_reference(name, shards, self.fetch_profiles(shards))
        self.put_reference(name, reference)
        return reference

    # -- catalog -------------------------------------------------------------------------------

    def record(
        self, row: CatalogRow | str, version: str | None = None, fields: Mapping | None = None
    ) -> bool:
        """Merge ``row`` into the stored catalog row of its (url, version): fields ``row`` sets
        (not None) replace the stored ones, the others are kept (last writer wins).

        Never raises for a read-only store: it warns once and returns False (the caller keeps
        its result in memory); True when written. The older form ``record(url, version,
        dict)`` is accepted too.
        """
        if not isinstance(row, CatalogRow):
            if not isinstance(row, str) or not isinstance(fields, Mapping):
                raise ValueError(
                    f"record needs a CatalogRow (or url, version, dict), got {type(row).__name__}"
                )
            row = CatalogRow.from_dict({**fields, "url": row, "version": version})
        key = dataclasses.replace(row, url=redact(row.url))
        if not self.writable:
            self._warn_read_only("the catalog row")
            return False
        path = self.catalog_path(row.url, row.version)
        current = self._load_row(path)
        merged = key if current is None else current.merged(key)
        merged.url, merged.version = key.url, key.version
        return self._best_effort(path, merged.to_dict(), "the catalog row")

    def catalog(self) -> list[CatalogRow]:
        """Every catalog row, sorted by url, version. Rows of other versions of driftloader are
        read as they are (see ``CatalogRow.from_dict``); unreadable ones warn and are left out."""
        rows = self.map(self._load_row, self.list_json(self.path("catalog")))
        rows = [r for r in rows if r is not None]
        return sorted(rows, key=lambda r: (str(r.url), str(r.version)))

    def _load_row(self, path: str) -> CatalogRow | None:
        problems: list[str] = []
        try:
            document = self.read_json(path)
            if document is None:
                return None
            if not isinstance(document.get("url"), str):
                raise ProfileFormatError("no url")
            row = CatalogRow.from_dict(document, problems)
        except ProfileFormatError as e:
            warnings.warn(
                f"ignoring corrupt catalog row {self.display(path)}: {e}", RuntimeWarning, 2
            )
            return None
        if problems:
            warnings.warn(
                f"catalog row {self.display(path)}: ignoring {'; '.join(problems)}",
                RuntimeWarning,
                2,
            )
        return row


def _rebuild(url: str, storage_options: dict, options: dict, timeout: float) -> ProfileStore:
    return ProfileStore(url, storage_options, timeout=timeout, **options)


def first_url(urls: str | Sequence[str]) -> str:
    """The first URL of ``urls`` (a URL, a path or a list of them), or "" when there is none."""
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    return os.fspath(items[0]) if items else ""


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def unique_shards(shards: list[Shard]) -> list[Shard]:
    """Shards without repeats of the same (url, version), in order."""
    seen, out = set(), []
    for s in shards:
        if (s.url, s.version) not in seen:
            seen.add((s.url, s.version))
            out.append(s)
    return out


__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "S3_STORE_OPTIONS",
    "CatalogRow",
    "MissingProfiles",
    "ProfileStore",
    "first_url",
    "json_safe",
    "merge_reference",
    "parse_store_json",
    "preprocessing_of",
]
