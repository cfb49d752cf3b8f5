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
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from .catalog import CatalogRow, json_safe
from .compaction import Fold, catalog_folder, fold, merged_rows, read_folder
from .errors import (
    ProfileFormatError,
    ReferenceNotFound,
)
from .executors import ExecutorSpec
from .features import (
    DefaultFeaturizer,
    FeatureSpec,
    Featurizer,
    featurizer_from,
    featurizer_from_spec,
)
from .profile import READS as PROFILE_FORMATS
from .profile import Profile
from .reference import MissingProfiles, merge_reference, preprocessing_of
from .reference_build import build_merged
from .sources import Shard, expand_urls, local_path, protocol_of, redact, stat_shards
from .store_files import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    S3_STORE_OPTIONS,
    StoreFiles,
    encode_json,
    parse_store_json,
)

UNVERSIONED = "_unversioned"
FETCH_CHUNK = 1000
"""Profiles a reference build reads and merges at a time (``fetch_profile_chunks``)."""
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def shard_key(url: str) -> str:
    """The URL a shard is stored under: without credentials, local paths made absolute."""
    if protocol_of(url) == "file":
        return os.path.abspath(os.path.expanduser(local_path(url)))
    return redact(url)


def source_label(url: str) -> str:
    """Where a shard comes from: ``s3://bucket/train`` for ``s3://bucket/train/shard-000.tar``
    (scheme, bucket and first folder); the parent folder for local paths."""
    url = redact(url)
    if protocol_of(url) == "file" and not url.startswith("file://"):
        parent = url.replace("\\", "/").rsplit("/", 1)[0] if "/" in url else "."
        return parent or "/"
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return f"file://{rest.rsplit('/', 1)[0]}" if "/" in rest else url
    parts = rest.split("/")
    return f"{scheme}://" + "/".join(parts[:2] if len(parts) > 2 else parts[:1])


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


class ProfileStore(StoreFiles):
    """Profiles keyed by (shard URL, version), references and a catalog under one fsspec URL,
    on the file layer of ``StoreFiles`` (bounded reads, atomic writes, deadlines, read-only)."""

    # -- paths ---------------------------------------------------------------------------------

    def profile_path(self, url: str, version: str | None, fingerprint: str | None = None) -> str:
        """Where the profile of shard ``url`` at ``version`` lives (a path in the store's fs).

        The first featurizer to profile a shard-version takes the plain name
        ``<version>.json`` (``fingerprint`` None); another featurizer's profile sits beside it
        as ``<version>.f-<fingerprint[:16]>.json``, so several featurizers share one store."""
        digest = url_hash(url)
        name = version_name(version)
        if fingerprint is not None:
            name = f"{name}.f-{fingerprint[:16]}"
        return self.path("shards", digest[:2], digest, f"{name}.json")

    def probe_path(self, url: str, version: str | None) -> str:
        """Where the probe profile of shard ``url`` at ``version`` lives."""
        digest = url_hash(url)
        return self.path("probes", digest[:2], digest, f"{version_name(version)}.json")

    def reference_path(self, name: str) -> str:
        """Where reference ``name`` lives."""
        return self.path("references", f"{check_reference_name(name)}.json")

    def shard_id(self, url: str, version: str | None) -> str:
        """The id of shard ``url`` at ``version`` in packs: ``<sha1(url)>/<quote(version)>``."""
        return f"{url_hash(url)}/{version_name(version)}"

    def catalog_path(self, url: str, version: str | None) -> str:
        """Where the catalog row of shard ``url`` at ``version`` lives."""
        return self.path("catalog", f"{url_hash(url)}.{version_name(version)}.json")

    # -- shard profiles ------------------------------------------------------------------------

    def put_profile(
        self, profile: Profile, *, strict: bool = False, fields: Mapping | None = None
    ) -> str | None:
        """Store ``profile`` under (profile.url, profile.version) atomically; returns its path.
        Also writes the shard-version's catalog row: summary fields and ``fields`` (None if that
        row is not written), merged into any recorded keys. On a read-only store nothing is
        written and None is returned (one warning), or with ``strict`` StoreReadOnlyError."""
        if not isinstance(profile, Profile):
            raise ValueError(f"put_profile needs a Profile, got {type(profile).__name__}")
        if not profile.url:
            raise ValueError("put_profile needs a profile with a shard url (profile.url is None)")
        path = self._slot(profile.url, profile.version, profile.fingerprint)
        if strict:
            size = len(data := self._stored_form(profile))
            self.write_bytes(path, data)
        elif (size := self._put(path, profile)) is None:
            return None
        summary = {**profile.summary(), "url": shard_key(profile.url), "profile_bytes": size}
        written = self.record(
            CatalogRow.from_dict({**(fields or {}), **summary, "profile": self.display(path)})
        )
        return path if written or fields is None else None  # the row asked for is not stored

    def get_profile(
        self, url: str, version: str | None, fingerprint: str | None = None
    ) -> Profile | None:
        """The stored profile of shard ``url`` at ``version``; None if absent or corrupt. With
        ``fingerprint``, the profile made by that featurizer (None when only others' are).

        A corrupt file (truncated, empty, not JSON, ``null``, another format, too large or too
        deeply nested) is reported with a ``RuntimeWarning`` naming its path, never a crash: the
        shard will simply be profiled again (``has_profile`` says False for it too).
        """
        profile = self._load(self.profile_path(url, version))
        if fingerprint is None or (profile is not None and profile.fingerprint == fingerprint):
            return profile
        return self._load(self.profile_path(url, version, fingerprint))

    def put_probe(self, profile: Profile) -> str | None:
        """Store the profile of a shard's probe window (its first samples), which the skip
        policy dropped the shard on: later epochs and runs skip it without reading. Never a
        shard profile: it does not count as profiled, nor go into references. None on a
        read-only store (one warning)."""
        if not profile.url:
            raise ValueError("put_probe needs a profile with a shard url (profile.url is None)")
        path = self.probe_path(profile.url, profile.version)
        return path if self._put(path, profile) is not None else None

    def get_probe(self, url: str, version: str | None) -> Profile | None:
        """The stored probe profile of shard ``url`` at ``version``; None if absent or corrupt."""
        return self._load(self.probe_path(url, version), "the shard will be probed again")

    def has_profile(self, url: str, version: str | None, fingerprint: str | None = None) -> bool:
        """True if a readable profile is stored for shard ``url`` at ``version`` (made by the
        featurizer of ``fingerprint`` when given: when only another featurizer's is stored, a
        one-line warning says the shard will be profiled again).

        The file is read and checked as JSON of the profile format (not its sketches, which
        ``get_profile`` decodes): a corrupt one warns naming it and counts as absent, so that
        ``profile_shards`` profiles the shard again instead of skipping it for good."""
        plain = self._profile_document(self.profile_path(url, version))
        if fingerprint is None or (plain is not None and plain.get("fingerprint") == fingerprint):
            return plain is not None
        if self._profile_document(self.profile_path(url, version, fingerprint)) is not None:
            return True
        if plain is not None:
            warnings.warn(
                f"{redact(url)} was profiled with featurizer {str(plain.get('fingerprint'))[:12]}"
                f"..., not {fingerprint[:12]}...: profiling it again with the latter",
                RuntimeWarning,
                stacklevel=3,
            )
        return False

    def _profile_document(self, path: str) -> dict | None:
        """The JSON at ``path`` if it is a profile of a format this version reads; None when
        absent, or corrupt (with a warning naming it)."""
        try:
            document = self.read_json(path)
            if document is None:
                return None
            if document.get("format") not in PROFILE_FORMATS or document.get("format") is True:
                found = document.get("format")
                raise ProfileFormatError(f"unknown profile format {found!r:.40}")
        except ProfileFormatError as e:
            self._warn_corrupt(path, e)
            return None
        return document

    def _slot(self, url: str, version: str | None, fingerprint: str) -> str:
        """Where a profile of featurizer ``fingerprint`` goes: the plain name when it is free
        (or corrupt) or holds the same featurizer's, else the name keyed by fingerprint."""
        plain = self.profile_path(url, version)
        try:
            document = self.read_json(plain)
        except ProfileFormatError:
            document = None
        stored = document.get("fingerprint") if isinstance(document, dict) else None
        return (
            plain if stored in (None, fingerprint) else self.profile_path(url, version, fingerprint)
        )

    def _put(self, path: str, profile: Profile) -> int | None:
        """Write a shard's profile to ``path`` atomically: its size in bytes, or None on a
        read-only store (warned once)."""
        data = self._stored_form(profile)
        return len(data) if self._best_effort(path, data, "the shard's profile") else None

    @staticmethod
    def _stored_form(profile: Profile) -> bytes:
        """The profile as stored: JSON, its URL without credentials."""
        return encode_json({**profile.to_dict(), "url": redact(profile.url)})

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

    def fetch_profiles(
        self, shards: Sequence[Shard], fingerprint: str | None = None
    ) -> list[Profile | None]:
        """The stored profile of each shard at its version (None where absent or corrupt), of
        the featurizer of ``fingerprint`` when given (as ``get_profile``), read in batches
        (``read_many``: one ``cat`` on the list on object stores, never one at a time)."""
        shards = list(shards)
        found = self._load_many([self.profile_path(s.url, s.version) for s in shards])
        if fingerprint is None:
            return found
        again = [i for i, p in enumerate(found) if p is None or p.fingerprint != fingerprint]
        paths = [self.profile_path(shards[i].url, shards[i].version, fingerprint) for i in again]
        for i, profile in zip(again, self._load_many(paths)):
            found[i] = profile
        return found

    def fetch_profile_chunks(
        self, shards: Sequence[Shard], fingerprint: str | None = None, size: int = FETCH_CHUNK
    ) -> Iterator[list[Profile | None]]:
        """``fetch_profiles`` of ``shards`` in consecutive chunks of ``size``, the next chunk
        read (in a thread) while the caller works on this one: a merge over 10k profiles holds
        two chunks at a time, and the store's answers arrive while the last chunk is merged."""
        parts = [list(shards[i : i + size]) for i in range(0, len(shards), size)]
        if len(parts) <= 1:
            yield from (self.fetch_profiles(part, fingerprint) for part in parts)
            return
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            ahead = pool.submit(self.fetch_profiles, parts[0], fingerprint)
            for part in parts[1:]:
                current = ahead.result()
                ahead = pool.submit(self.fetch_profiles, part, fingerprint)
                yield current
            yield ahead.result()
        finally:  # a chunk still being read when the caller stops is not waited for: the
            pool.shutdown(wait=False)  # garbage collector may close this on fsspec's loop

    def _load_many(self, paths: list[str]) -> list[Profile | None]:
        """``_load`` of each of ``paths`` from one batched read."""
        out: list[Profile | None] = []
        for path, document in zip(paths, self.read_json_many(paths)):
            try:
                if isinstance(document, ProfileFormatError):
                    raise document
                out.append(None if document is None else Profile.from_dict(document))
            except ProfileFormatError as e:
                self._warn_corrupt(path, e)
                out.append(None)
        return out

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
        raise ReferenceNotFound(self._missing_reference(name))

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
        paths = self.list_json(self.path("references"))
        names = (_basename(p)[: -len(".json")] for p in paths)
        return sorted(n for n in names if _NAME.fullmatch(n) and not n.endswith(".rules"))

    def build_reference(
        self,
        name: str,
        urls: str | Sequence[str],
        storage_options: dict | None = None,
        executor: ExecutorSpec = None,
        featurizer: Any = None,
    ) -> Profile:
        """Merge the stored profiles of ``urls`` at their current versions into reference ``name``.

        ``storage_options`` are for the shards; when omitted and the shards live on the same kind
        of filesystem as the store, the store's options are used. Raises ``MissingProfiles``
        when some shard has no readable profile at its current version (a corrupt one is named
        in a warning; ``driftloader profile`` profiles it again). I/O (stat, concurrent fetch)
        is here; the reads and the merge are ``reference_build.build_merged``: the packs that
        cover the shards (``packs.py``) are read instead of their profiles, and the profiles
        read one by one are packed for the next build. With ``executor`` (an ``Executor``,
        ``"local:N"`` or ``"dask://HOST:PORT"``) tasks read and merge the profiles, as a tree on
        the workers (``executors.tree_reference``; not with ``featurizer``: merged here).
        ``featurizer`` (a featurizer, FeatureSpec or
        its JSON) picks whose profiles are merged (default: the stored ones, whichever featurizer
        made them); the reference records the spec of ``featurizer``, or of the default
        featurizer when its profiles were merged, in ``meta["featurizer"]``
        (see ``recorded_featurizer``).
        """
        check_reference_name(name)
        if storage_options is None and protocol_of(first_url(urls)) == protocol_of(self.url):
            storage_options = self.storage_options
        shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
        chosen = featurizer_of(featurizer)
        fingerprint = None if featurizer is None else chosen.fingerprint  # None: as stored
        reference = build_merged(self, name, shards, fingerprint, executor)
        if chosen.spec is not None and reference.fingerprint == chosen.fingerprint:
            reference.meta["featurizer"] = chosen.spec.to_dict()
        self.put_reference(name, reference)
        return reference

    # -- catalog -------------------------------------------------------------------------------

    def record(
        self,
        row: CatalogRow | str,
        version: str | None = None,
        fields: Mapping | None = None,
        *,
        holds: Callable[[CatalogRow], bool] | None = None,
    ) -> bool:
        """Merge ``row`` into the stored catalog row of its (url, version): fields ``row`` sets
        (not None) replace the stored ones, the others are kept (last writer wins).

        Never raises for a read-only store: it warns once and returns False (the caller keeps
        its result in memory); True when written. ``holds``: nothing is written (False) when
        it says the stored row holds ``row`` already. The older form ``record(url, version,
        dict)`` is accepted too.
        """
        if not isinstance(row, CatalogRow):
            if not isinstance(row, str) or not isinstance(fields, Mapping):
                raise ValueError(
                    f"record needs a CatalogRow (or url, version, dict), got {type(row).__name__}"
                )
            row = CatalogRow.from_dict({**fields, "url": row, "version": version})
        key = dataclasses.replace(row, url=shard_key(row.url))
        if not self.writable:
            self._warn_read_only("the catalog row")
            return False
        path = self.catalog_path(key.url, key.version)
        current = self._load_row(path)
        if current is not None and holds is not None and holds(current):
            return False
        merged = key if current is None else current.merged(key)
        merged.url, merged.version = key.url, key.version
        return self._best_effort(path, merged.to_dict(), "the catalog row")

    def catalog(self) -> list[CatalogRow]:
        """Every catalog row, sorted by url, version: the compacted files (see
        ``compact_catalog``; usually one) with the small rows written since merged in, from
        one listing and one batch of reads (``compaction.read_folder``). Rows of other versions
        of driftloader are read as they are (see ``CatalogRow.from_dict``); unreadable ones
        warn and are left out; a corrupt compacted file raises ``ProfileFormatError``."""
        snapshot = read_folder(self, catalog_folder(self))
        compacted = [self._row(d, p) for p, records in snapshot.records(self) for d in records]
        small = [self._row(d, p) for p, d in snapshot.small]
        return merged_rows(
            (r for r in compacted if r is not None), (r for r in small if r is not None)
        )

    def compact_catalog(self) -> Fold:
        """Fold the small catalog rows and the compacted files into a new compacted file
        (``compaction.fold``). Reads see the same rows before and after."""
        folder = catalog_folder(self)

        def merge(compacted: list[dict], small: list[dict]) -> list[dict]:
            old = (self._row(d, folder.root) for d in compacted)
            new = (self._row(d, folder.root) for d in small)
            rows = merged_rows((r for r in old if r is not None), (r for r in new if r is not None))
            return [r.to_dict() for r in rows]

        return fold(self, folder, merge)

    def _load_row(self, path: str) -> CatalogRow | None:
        try:
            document = self.read_json(path)
        except ProfileFormatError as e:
            document = e
        return self._row(document, path)

    def _row(self, document: dict | ProfileFormatError | None, path: str) -> CatalogRow | None:
        """The row in ``document`` (read from ``path``) in the stored URL form; None (with a
        warning when corrupt) when there is none."""
        problems: list[str] = []
        try:
            if document is None:
                return None
            if isinstance(document, ProfileFormatError):
                raise document
            if not isinstance(document.get("url"), str):
                raise ProfileFormatError("no url")
            row = canonical_row(CatalogRow.from_dict(document, problems))
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


def profiled(store: ProfileStore, shards: Sequence[Shard], fingerprint: str) -> list[bool]:
    """``store.has_profile`` of each of ``shards`` (stat'ed: with their versions), reading only
    the profiles that the catalog and one listing of the profiles do not vouch for: a
    profile is whole when its catalog row names it, by ``fingerprint``, with the size the
    listing gives (rows record the size written since ``profile_bytes`` was added). Over
    many shards that is the catalog and a listing request per 1,000 profiles instead of a
    GET of each profile; a profile damaged or deleted since is read, and found so. A shard
    with no profile in the listing has none: it is not read."""
    rows = {(row.url, row.version): row for row in store.catalog()}
    sizes = store.list_sizes(store.path("shards"))

    def vouched(shard: Shard) -> bool:
        row = rows.get((shard_key(shard.url), shard.version))
        if row is None or row.fingerprint != fingerprint or row.profile_bytes is None:
            return False
        for fp in (None, fingerprint):
            path = store.profile_path(shard.url, shard.version, fp)
            if store.display(path) == row.profile:
                return sizes.get(path) == row.profile_bytes
        return False

    def listed(shard: Shard) -> bool:  # one of its profile's names is in the listing
        paths = (store.profile_path(shard.url, shard.version, fp) for fp in (None, fingerprint))
        return any(path in sizes for path in paths)

    # what is neither vouched for nor listed is absent, with no read (of a new corpus, every
    # shard: two GETs each); what is listed but not vouched for is read to know
    vouch = [vouched(shard) for shard in shards]
    unsure = [not v and listed(s) for s, v in zip(shards, vouch)]
    read = iter(read_profiled(store, [s for s, u in zip(shards, unsure) if u], fingerprint))
    return [v or (u and next(read)) for v, u in zip(vouch, unsure)]


def read_profiled(store: ProfileStore, shards: Sequence[Shard], fingerprint: str) -> list[bool]:
    """``store.has_profile`` of each of ``shards``, each profile read (concurrently): a
    corrupt one counts as absent."""
    return store.map(lambda s: store.has_profile(s.url, s.version, fingerprint), shards)


def canonical_row(row: CatalogRow) -> CatalogRow:
    """``row`` with its URL in the stored form (``shard_key``): rows written before URLs were
    stored canonically kept a relative path as the user gave it (made absolute here, against
    the current folder), and the source label derived from it follows."""
    key = shard_key(row.url) if row.url else row.url
    if key == row.url:
        return row
    if row.source is not None and row.source == source_label(row.url):
        row.source = source_label(key)
    row.url = key
    return row


def featurizer_of(featurizer: Any = None) -> Featurizer:
    """A featurizer from a featurizer, a ``FeatureSpec``, a spec's JSON (dict or text) or
    None (the default)."""
    if isinstance(featurizer, (FeatureSpec, str, bytes, Mapping)):
        return featurizer_from_spec(featurizer)
    return featurizer_from(featurizer)


def recorded_featurizer(reference: Profile) -> Featurizer:
    """The featurizer reference ``reference`` was built with: the spec it recorded in
    ``meta["featurizer"]``, else the default featurizer (references made before recording)."""
    spec = reference.meta.get("featurizer")
    return featurizer_from_spec(spec) if spec is not None else DefaultFeaturizer()


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
