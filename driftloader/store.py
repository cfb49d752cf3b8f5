"""``ProfileStore``: shard profiles, reference profiles and a catalog on any fsspec URL.

The store is the shared memory of the system: workers, ranks, later epochs and later runs find a
shard's profile by the shard's URL **and version**, so an overwritten shard is never confused
with the bytes it replaced. Layout under the store root::

    shards/<sha1(url)[:2]>/<sha1(url)>/<quote(version)>.json   one profile per (shard, version)
    probes/<sha1(url)[:2]>/<sha1(url)>/<quote(version)>.json   the probe window of a shard
                                                               that the skip policy dropped
    references/<name>.json                                     a merged reference profile
    catalog/<sha1(url)>.<quote(version)>.json                  one summary row per shard-version

``url`` in a key is the shard URL without credentials (``sources.redact``; local paths are made
absolute first, so ``data/a.tar`` and ``/abs/data/a.tar`` name the same shard); ``quote`` is
``urllib.parse.quote(version, safe="")`` and an unknown version is stored as ``_unversioned``.
Everything is JSON, never pickle.

Writes are atomic: on local disk a temp file in the same folder is renamed over the target
(``os.replace``) and removed in ``finally`` on failure; on object stores the full bytes go in a
single PUT. A reader therefore sees the old file or the new one, never half of one.

Example::

    store = ProfileStore("s3://bucket/drift")
    store.put_profile(profile)
    store.get_profile(shard.url, shard.version)
    store.build_reference("v1", "s3://bucket/train/shard-{000000..000127}.tar")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from .errors import DriftloaderError, ProfileFormatError, ReferenceNotFound
from .profile import Profile
from .sources import Shard, expand_urls, filesystem, protocol_of, redact, stat_shards

UNVERSIONED = "_unversioned"
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_THREADS = 16
_MAX_LISTED = 10
_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


class MissingProfiles(DriftloaderError, LookupError):
    """Some shards have no stored profile at their current version."""

    def __init__(self, message: str, shards: Sequence[tuple[str, str | None]] = ()) -> None:
        super().__init__(message)
        self.shards = list(shards)


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


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (catalog rows must be strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


class ProfileStore:
    """Profiles keyed by (shard URL, version), references and a catalog under one fsspec URL."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        if not isinstance(url, (str, os.PathLike)) or not os.fspath(url):
            raise ValueError(f"store url must be a non-empty path or URL, got {url!r}")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ValueError(f"storage_options must be a dict, got {storage_options!r}")
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.local = protocol_of(self.url) == "file"
        if self.local:
            self.root = shard_key(self.url).rstrip(os.sep) or os.sep
        else:
            self.root = self.fs._strip_protocol(self.url).rstrip("/")

    @property
    def fs(self):
        """The store's filesystem (cached per process, so safe after a fork)."""
        return filesystem(self.url, self.storage_options)

    def __repr__(self) -> str:
        return f"ProfileStore({redact(self.url)!r})"

    def __reduce__(self):
        return (ProfileStore, (self.url, self.storage_options))

    def check_writable(self) -> None:
        """Raise ``ValueError`` naming the store when it cannot take writes: a local path that
        is a file, or an object-store bucket that does not exist. Called before long work, so
        that a mistyped store is not reported as a failure of every shard."""
        if self.local:
            path = self.root
            while not os.path.exists(path) and os.path.dirname(path) != path:
                path = os.path.dirname(path)  # the nearest part of it that exists
            if not os.path.isdir(path):
                raise ValueError(f"store {self.url!r}: {path!r} is a file, not a folder")
            return
        bucket = self.root.split("/", 1)[0]
        head = getattr(self.fs, "call_s3", None)
        if head is None:  # other object stores: their first write will tell
            return
        try:
            head("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise ValueError(
                f"store {redact(self.url)}: bucket {bucket!r} does not exist: create it, or fix "
                "the store URL"
            ) from None
        except Exception:  # e.g. no s3:ListBucket permission: writes may still be allowed
            return

    # -- paths ---------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        sep = os.sep if self.local else "/"
        return sep.join([self.root, *parts])

    def _display(self, path: str) -> str:
        return path if self.local else redact(self.fs.unstrip_protocol(path))

    def profile_path(self, url: str, version: str | None) -> str:
        """Where the profile of shard ``url`` at ``version`` lives (a path in the store's fs)."""
        digest = url_hash(url)
        return self._join("shards", digest[:2], digest, f"{version_name(version)}.json")

    def probe_path(self, url: str, version: str | None) -> str:
        """Where the probe profile of shard ``url`` at ``version`` lives."""
        digest = url_hash(url)
        return self._join("probes", digest[:2], digest, f"{version_name(version)}.json")

    def reference_path(self, name: str) -> str:
        """Where reference ``name`` lives."""
        return self._join("references", f"{check_reference_name(name)}.json")

    def catalog_path(self, url: str, version: str | None) -> str:
        """Where the catalog row of shard ``url`` at ``version`` lives."""
        return self._join("catalog", f"{url_hash(url)}.{version_name(version)}.json")

    # -- raw IO --------------------------------------------------------------------------------

    def _write(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically."""
        if not self.local:
            self.fs.pipe_file(path, data)
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

    def _read(self, path: str) -> bytes | None:
        """The bytes at ``path``, or None if there is no such file."""
        if self.local:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def _exists(self, path: str) -> bool:
        if self.local:
            return os.path.isfile(path)
        self.fs.invalidate_cache(path)
        return self.fs.exists(path)

    def _list_json(self, folder: str) -> list[str]:
        """Paths of the ``.json`` files directly in ``folder`` (temp files excluded)."""
        if self.local:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                return []
            return sorted(
                os.path.join(folder, n)
                for n in names
                if n.endswith(".json") and not n.startswith(".")
            )
        self.fs.invalidate_cache(folder)
        try:
            paths = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(p for p in paths if p.endswith(".json"))

    # -- shard profiles ------------------------------------------------------------------------

    def put_profile(self, profile: Profile) -> str:
        """Store ``profile`` under (profile.url, profile.version) atomically; returns its path.

        Also writes the shard-version's catalog row (summary fields merged into any recorded keys).
        """
        if not isinstance(profile, Profile):
            raise ValueError(f"put_profile needs a Profile, got {type(profile).__name__}")
        if not profile.url:
            raise ValueError("put_profile needs a profile with a shard url (profile.url is None)")
        path = self._put(self.profile_path(profile.url, profile.version), profile)
        summary = profile.summary()
        summary["url"] = redact(profile.url)
        self.record(profile.url, profile.version, {**summary, "profile": self._display(path)})
        return path

    def get_profile(self, url: str, version: str | None) -> Profile | None:
        """The stored profile of shard ``url`` at ``version``; None if absent or corrupt.

        A corrupt file is reported with ``warnings.warn`` naming its path (never a crash: the
        shard will simply be profiled again).
        """
        return self._load(self.profile_path(url, version))

    def put_probe(self, profile: Profile) -> str:
        """Store the profile of a shard's probe window (its first samples), which the skip
        policy dropped the shard on: later epochs and runs skip it without reading. Never a
        shard profile: it does not count as profiled, nor go into references."""
        if not profile.url:
            raise ValueError("put_probe needs a profile with a shard url (profile.url is None)")
        return self._put(self.probe_path(profile.url, profile.version), profile)

    def _put(self, path: str, profile: Profile) -> str:
        """Write a shard's profile (its URL without credentials) to ``path``, atomically."""
        data = profile.to_dict()
        data["url"] = redact(profile.url)
        self._write(path, json.dumps(data, allow_nan=False, separators=(",", ":")).encode())
        return path

    def get_probe(self, url: str, version: str | None) -> Profile | None:
        """The stored probe profile of shard ``url`` at ``version``; None if absent or corrupt."""
        return self._load(self.probe_path(url, version), "the shard will be probed again")

    def _load(self, path: str, fix: str | None = None) -> Profile | None:
        data = self._read(path)
        if data is None:
            return None
        try:
            return Profile.from_json(data)
        except ProfileFormatError as e:
            fix = fix or "re-profile the shard (profile_shards(..., force=True)) to replace it"
            warnings.warn(
                f"ignoring corrupt profile {self._display(path)}: {e}; {fix}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def has_profile(self, url: str, version: str | None) -> bool:
        """True if a profile file exists for shard ``url`` at ``version`` (not parsed)."""
        return self._exists(self.profile_path(url, version))

    # -- references ----------------------------------------------------------------------------

    def put_reference(self, name: str, profile: Profile) -> str:
        """Store ``profile`` as reference ``name`` atomically; returns its path."""
        path = self.reference_path(name)
        if not isinstance(profile, Profile):
            raise ValueError(f"put_reference needs a Profile, got {type(profile).__name__}")
        self._write(path, profile.to_json().encode())
        return path

    def get_reference(self, name: str) -> Profile:
        """Reference ``name``; ReferenceNotFound if absent, ProfileFormatError if corrupt."""
        path = self.reference_path(name)
        data = self._read(path)
        if data is None:
            raise ReferenceNotFound(self._missing_reference(name))
        try:
            return Profile.from_json(data)
        except ProfileFormatError as e:
            raise ProfileFormatError(
                f"reference {name!r} at {self._display(path)} is corrupt: {e}; "
                "rebuild it with `driftloader reference ...`"
            ) from e

    def _missing_reference(self, name: str) -> str:
        """Why reference ``name`` is not there: no store at all, or which references exist."""
        where = f"no reference {name!r} in store {redact(self.url)}"
        try:
            exists = os.path.isdir(self.root) if self.local else self.fs.exists(self.root)
        except Exception:  # unreachable storage: say only what is certain
            exists = True
        if not exists:
            return (
                f"{where}: the store itself does not exist (check --store); create it with "
                "`driftloader profile URL... --store STORE`, then `driftloader reference ...`"
            )
        names = self.references()
        if names:
            return (
                f"{where}; it has {', '.join(map(repr, names))} "
                "(others are built with `driftloader reference ...`)"
            )
        return f"{where}; it has no references yet: build one with `driftloader reference ...`"

    def references(self) -> list[str]:
        """Names of the stored references, sorted."""
        paths = self._list_json(self._join("references"))
        return sorted(_basename(p)[: -len(".json")] for p in paths)

    def build_reference(
        self, name: str, urls: str | Sequence[str], storage_options: dict | None = None
    ) -> Profile:
        """Merge the stored profiles of ``urls`` at their current versions into reference ``name``.

        ``storage_options`` are for the shards; when omitted and the shards live on the same kind
        of filesystem as the store, the store's options are used. Raises ``MissingProfiles``
        when some shard has no profile at its current version.

        ``reference.meta`` records the shards, the sorted set of their ``sources`` and of their
        ``preprocessing`` fingerprints (from their metadata, see ``profiling.shard_metadata``);
        ``drift.compare`` flags a shard declaring a source or fingerprint outside these sets.
        """
        check_reference_name(name)
        if storage_options is None and protocol_of(_first(urls)) == protocol_of(self.url):
            storage_options = self.storage_options
        shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
        profiles = self._map(lambda s: self.get_profile(s.url, s.version), shards)
        missing = [(s.url, s.version) for s, p in zip(shards, profiles) if p is None]
        if missing:
            raise MissingProfiles(_missing_message(name, missing, len(shards)), missing)
        reference = Profile.merged(profiles)
        if reference.n == 0:  # every later check would call each shard drifted
            raise ValueError(
                f"cannot build reference {name!r}: its {len(shards)} shard(s) hold no samples "
                f"(first: {redact(shards[0].url)})"
            )
        reference.meta = {
            "reference": name,
            "count": len(shards),
            "shards": [{"url": redact(s.url), "version": s.version} for s in shards],
            "sources": sorted({p.source for p in profiles if p.source is not None}),
            "preprocessing": sorted(
                {fp for fp in (preprocessing_of(p) for p in profiles) if fp is not None}
            ),
        }
        self.put_reference(name, reference)
        return reference

    # -- catalog -------------------------------------------------------------------------------

    def record(self, url: str, version: str | None, row: dict) -> None:
        """Merge ``row`` into the catalog row of shard ``url`` at ``version`` (last writer wins)."""
        if not isinstance(row, dict):
            raise ValueError(f"record needs a dict row, got {type(row).__name__}")
        path = self.catalog_path(url, version)
        current = self._load_row(path) or {}
        current.update(_json_safe(row))
        current["url"], current["version"] = redact(url), version
        self._write(path, json.dumps(current, allow_nan=False, sort_keys=True).encode())

    def catalog(self) -> list[dict]:
        """All catalog rows (url, version, summary fields, recorded keys), sorted by url, version."""
        rows = self._map(self._load_row, self._list_json(self._join("catalog")))
        rows = [r for r in rows if r is not None]
        return sorted(rows, key=lambda r: (str(r.get("url")), str(r.get("version"))))

    def _load_row(self, path: str) -> dict | None:
        data = self._read(path)
        if data is None:
            return None
        try:
            row = json.loads(data)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            warnings.warn(
                f"ignoring corrupt catalog row {self._display(path)}: {e}", RuntimeWarning, 2
            )
            return None
        return row

    def _map(self, fn, items: Sequence) -> list:
        """``map`` with threads on object stores (one request each), plain on local disk."""
        items = list(items)
        if self.local or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(_THREADS, len(items))) as pool:
            return list(pool.map(fn, items))


def preprocessing_of(profile: Profile) -> str | None:
    """The preprocessing fingerprint in a profile's metadata (``"preprocessing"`` or
    ``"preprocessing_fingerprint"``) as a string, or None when it declares none."""
    meta = profile.meta.get("metadata")
    if not isinstance(meta, dict):
        return None
    for key in ("preprocessing", "preprocessing_fingerprint"):
        value = meta.get(key)
        if value is not None:
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return None


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _first(urls: str | Sequence[str]) -> str:
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    return os.fspath(items[0]) if items else ""


def unique_shards(shards: list[Shard]) -> list[Shard]:
    """Shards without repeats of the same (url, version), in order."""
    seen, out = set(), []
    for s in shards:
        if (s.url, s.version) not in seen:
            seen.add((s.url, s.version))
            out.append(s)
    return out


def _missing_message(name: str, missing: list[tuple[str, str | None]], total: int) -> str:
    listed = "\n  ".join(f"{redact(u)} (version {v})" for u, v in missing[:_MAX_LISTED])
    more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return (
        f"cannot build reference {name!r}: {len(missing)} of {total} shards have no profile at "
        f"their current version:\n  {listed}{more}\n"
        "run `driftloader profile ...` first (or driftloader.profile_shards(urls, store))"
    )
