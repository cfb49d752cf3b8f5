"""Data versions: snapshots (pinned manifests), diffs between them, quarantine and exclusions.

A snapshot is the manifest format ``sources.read_manifest`` reads as pinned shards::

    {"format": 1, "kind": "driftloader-snapshot", "created": ...,
     "shards": [{"url", "version", "size", "profile": {...}?}]}

``version`` is ``v:<VersionId>`` on a versioned bucket, else ``e:<ETag>`` (else ``s:size-mtime``),
so reading a snapshot returns exactly the recorded bytes or fails with ``VersionMismatch``.
URLs are written without credentials and storage options are never written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

from .catalog import CatalogRow
from .drift import ShardDrift, compare
from .errors import DriftloaderError, FingerprintMismatch, ProfileFormatError
from .profile import Profile
from .progress import track
from .shardversion import version_id_of
from .sources import Shard, expand_urls, filesystem, protocol_of, read_manifest, stat_shards
from .store import ProfileStore, check_reference_name, shard_key, unique_shards

SNAPSHOT_FORMAT = 1
SNAPSHOT_KIND = "driftloader-snapshot"
QUARANTINE_TAG = "driftloader-quarantine"
TAG_THREADS = 16  # shards tagged at once (a get and a put of its tags each)


# ------------------------------------------------------------------------------- snapshot


def snapshot(
    urls: str | Sequence[str],
    store: ProfileStore | None = None,
    storage_options: dict | None = None,
) -> dict:
    """A snapshot of the shards of ``urls`` at their current versions (a pinned manifest).

    With ``store``, shards that have a stored profile at that version carry its summary.
    """
    shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
    return manifest_of(shards, store)


def manifest_of(shards: Sequence[Shard], store: ProfileStore | None = None) -> dict:
    """The snapshot document for ``shards`` (already stat'ed); their stored profiles are read
    in batches (one at a time, 100k shards at 40 ms took over an hour)."""
    shards = list(shards)
    profiles = (
        repeat(None) if store is None else chain.from_iterable(store.fetch_profile_chunks(shards))
    )
    entries = track(zip(shards, profiles), "snapshot", total=len(shards))
    return {
        "format": SNAPSHOT_FORMAT,
        "kind": SNAPSHOT_KIND,
        "created": time.time(),
        "shards": [_entry(s, profile) for s, profile in entries],
    }


def _entry(shard: Shard, profile: Profile | None) -> dict:
    entry: dict[str, Any] = {"url": shard_key(shard.url), "version": shard.version}
    entry["size"] = shard.size
    if profile is not None:
        summary = profile.summary()
        entry["profile"] = {k: summary[k] for k in ("n", "errors", "fingerprint", "n_features")}
    return entry


def write_manifest(manifest: dict, url: str, storage_options: dict | None = None) -> None:
    """Write a snapshot manifest to ``url`` (any fsspec URL) as indented JSON."""
    data = json.dumps(manifest, indent=2, allow_nan=False).encode()
    if protocol_of(url) == "file":
        folder = os.path.dirname(os.path.abspath(url))
        os.makedirs(folder, exist_ok=True)
        with open(url, "wb") as f:
            f.write(data)
        return
    fs = filesystem(url, storage_options)
    fs.pipe_file(fs._strip_protocol(url), data)


# ----------------------------------------------------------------------------------- diff


@dataclass
class Side:
    """One side of a diff: shard versions by storage key, and the merged profile if known."""

    label: str
    versions: dict[str, str | None]
    profile: Profile | None = None
    missing_profiles: int = 0


@dataclass
class VersionDiff:
    """Shards added, removed and changed from ``a`` to ``b``, and drift of b's data vs a's."""

    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)
    unchanged: int = 0
    drift: ShardDrift | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (``diff --json``)."""
        return {
            "a": self.a,
            "b": self.b,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "drift": None if self.drift is None else self.drift.to_dict(),
            "note": self.note,
        }

    def lines(self) -> list[str]:
        """A readable summary, one line each."""
        out = [
            f"{self.a} -> {self.b}: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed, {self.unchanged} unchanged"
        ]
        out += [f"  + {u}" for u in self.added]
        out += [f"  - {u}" for u in self.removed]
        out += [f"  ~ {c['url']} ({c['a']} -> {c['b']})" for c in self.changed]
        out.append(self._drift_line())
        out += [f"    {f.name}: {f.metric} {f.effect:.3g}" for f in self._drifted_features()]
        return out

    def _drift_line(self) -> str:
        if self.drift is None:
            return f"drift: not computed ({self.note or 'no profiles'})"
        state = "DRIFT" if self.drift.drifted else "no drift"
        return f"drift of {self.b} vs {self.a}: {state} (score {self.drift.score:.2f})"

    def _drifted_features(self) -> list:
        if self.drift is None:
            return []
        return [f for f in self.drift.top(10) if f.drifted]


def diff(
    a: str | dict,
    b: str | dict,
    store: ProfileStore,
    storage_options: dict | None = None,
) -> VersionDiff:
    """Compare two data versions: manifests (paths or snapshot dicts) or reference names.

    Lists shards added, removed and changed (same URL, other version); when both sides'
    profiles are in ``store``, also compares merged profile ``b`` with merged profile ``a``.
    """
    side_a = load_side(a, store, storage_options)
    side_b = load_side(b, store, storage_options)
    result = VersionDiff(side_a.label, side_b.label)
    for url in sorted(set(side_a.versions) | set(side_b.versions)):
        _classify(result, url, side_a.versions, side_b.versions)
    _add_drift(result, side_a, side_b)
    return result


def _classify(result: VersionDiff, url: str, va: dict, vb: dict) -> None:
    if url not in va:
        result.added.append(url)
    elif url not in vb:
        result.removed.append(url)
    elif va[url] != vb[url]:
        result.changed.append({"url": url, "a": va[url], "b": vb[url]})
    else:
        result.unchanged += 1


def _add_drift(result: VersionDiff, side_a: Side, side_b: Side) -> None:
    if side_a.profile is None or side_b.profile is None:
        missing = side_a.missing_profiles + side_b.missing_profiles
        result.note = f"{missing} shards have no stored profile; run `driftloader profile`"
        return
    try:
        result.drift = compare(side_b.profile, side_a.profile)
    except FingerprintMismatch as e:
        result.note = str(e)


def load_side(spec: str | dict, store: ProfileStore, storage_options: dict | None = None) -> Side:
    """A diff side from a snapshot dict, a manifest path or URL, or a reference name.

    A string is a manifest when it has a ``/``, ends in ``.json`` / ``.txt`` or names an
    existing file; otherwise it is a reference name.
    """
    if isinstance(spec, dict):
        return _side_from_entries("snapshot", spec.get("shards") or [], store)
    if _is_reference(spec, store):
        ref = store.get_reference(spec)
        entries = ref.meta.get("shards") or []
        versions = {shard_key(e["url"]): e.get("version") for e in entries}
        return Side(spec, versions, ref)
    shards = read_manifest(spec, storage_options)
    entries = [{"url": s.url, "version": s.version} for s in shards]
    return _side_from_entries(os.path.basename(spec), entries, store)


def _is_reference(spec: str, store: ProfileStore) -> bool:
    if "/" in spec or os.sep in spec or spec.lower().endswith((".json", ".txt")):
        return False
    if os.path.exists(spec):
        return False
    check_reference_name(spec)
    return True


def _side_from_entries(label: str, entries: list[dict], store: ProfileStore) -> Side:
    versions = {shard_key(e["url"]): e.get("version") for e in entries}
    profiles = store.fetch_profiles([Shard(u, versions[u]) for u in versions])
    found = [p for p in profiles if p is not None]
    missing = len(profiles) - len(found)
    merged = Profile.merged(found) if found and not missing else None
    return Side(label, versions, merged, missing)


# ----------------------------------------------------------------------------- quarantine


def exclusions_path(store: ProfileStore, reference: str) -> str:
    """Where the exclusion list of ``reference`` lives: ``exclusions/<reference>.json``."""
    return store.path("exclusions", f"{check_reference_name(reference)}.json")


def load_exclusions(store: ProfileStore, reference: str) -> set[tuple[str, str | None]]:
    """(storage key, version) of the shards excluded under ``reference``; empty if none.

    The key is ``store.shard_key(url)``: credentials removed, local paths absolute.
    """
    path = exclusions_path(store, reference)
    doc = store.read_json(path)
    if doc is None:
        return set()
    try:
        return {(str(e["url"]), e.get("version")) for e in doc["shards"]}
    except (KeyError, TypeError, AttributeError) as e:
        raise ProfileFormatError(
            f"exclusion list {store.display(path)} is malformed ({type(e).__name__}: {e}); "
            "run `driftloader quarantine` again to rewrite it"
        ) from e


@dataclass
class QuarantineResult:
    """Shards quarantined under a reference, and which could be tagged on storage."""

    reference: str
    shards: list[dict] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)
    untagged: list[tuple[str, str]] = field(default_factory=list)
    path: str = ""


def quarantine(
    store: ProfileStore,
    reference: str,
    tags: dict[str, str] | None = None,
    storage_options: dict | None = None,
) -> QuarantineResult:
    """Tag the drifted shards of ``reference`` on S3 and write ``exclusions/<reference>.json``.

    Drifted shards are the catalog rows with ``drifted: true`` checked against ``reference``.
    Tags (default ``{"driftloader-quarantine": reference}``) are merged into the object's
    existing tags, on the exact version for ``v:`` versions. Shards not on S3 are listed as
    untagged (the exclusion list still names them).
    """
    check_reference_name(reference)
    tags = dict(tags or {QUARANTINE_TAG: reference})
    rows = [
        r
        for r in store.catalog()
        if r.reference == reference and r.drifted and r.action != "served"
    ]  # serving windows are not objects to tag
    result = QuarantineResult(reference)
    pool = ThreadPoolExecutor(TAG_THREADS, "driftloader-tag")  # 2 requests a shard
    try:
        errors = pool.map(lambda row: _tag(row.url, row.version, tags, storage_options), rows)
        for row, error in track(zip(rows, errors), "quarantined", total=len(rows)):
            url, version = row.url, row.version
            result.shards.append({"url": shard_key(url), "version": version, "score": row.score})
            if error is None:
                result.tagged.append(url)
            else:
                result.untagged.append((url, error))
    finally:  # on an error or Ctrl-C, the shards not tagged yet are not tagged
        pool.shutdown(cancel_futures=True)
    result.path = _write_exclusions(store, reference, result.shards)
    return result


def _tag(url: str, version: str | None, tags: dict, storage_options: dict | None) -> str | None:
    """Tag one shard object; the reason it could not be tagged, or None."""
    if protocol_of(url) not in ("s3", "s3a"):
        return "object tagging needs S3"
    fs = filesystem(url, storage_options)
    path = fs._strip_protocol(url)
    version_id = version_id_of(version)
    if version_id and getattr(fs, "version_aware", False):
        path = f"{path}?versionId={version_id}"
    try:
        fs.put_tags(path, tags, mode="m")
    except (OSError, DriftloaderError, ValueError) as e:
        return f"tagging failed: {e}"
    return None


def _write_exclusions(store: ProfileStore, reference: str, shards: list[dict]) -> str:
    path = exclusions_path(store, reference)
    doc = {"reference": reference, "created": time.time(), "shards": shards}
    store.write_json(path, doc, indent=2)
    return path


# ------------------------------------------------------------------------- clean manifest


def passed(row: CatalogRow | None, reference: str) -> bool:
    """True if a catalog row shows a check or validation against ``reference`` and no failure."""
    if row is None:
        return False
    checked = row.reference == reference
    validated = row.validation_reference == reference and row.validation is not None
    if checked and row.drifted:
        return False
    if validated and row.validation:
        return False
    return checked or validated


def clean_manifest(
    urls: str | Sequence[str],
    store: ProfileStore,
    reference: str,
    storage_options: dict | None = None,
) -> dict:
    """A snapshot of only the shards of ``urls`` that passed ``reference`` at their versions.

    A shard passes when its catalog row at its current version shows a check (not drifted) or
    a validation (no failures) against ``reference``, and it is not in the exclusion list.
    Shards never checked are left out.
    """
    shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
    rows = {(shard_key(r.url), r.version): r for r in store.catalog() if r.url}
    excluded = load_exclusions(store, reference)
    keep = [
        s
        for s in shards
        if (key := (shard_key(s.url), s.version)) not in excluded
        and passed(rows.get(key), reference)
    ]
    return manifest_of(keep, store)
