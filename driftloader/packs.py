"""Packs: one stored object holding the merged profile of many shard profiles and the list of
the (shard, version) it covers, so that a reference over N shards reads about N/512 objects
instead of N.

Layout: ``packs/<id>.json`` under the store root, one JSON object (never pickle)::

    {"format": "driftloader-pack/1", "created": 1733100000.0, "fingerprint": "<featurizer>",
     "plain": true, "covers": ["<sha1(url)>/<quote(version)>", ...],
     "sources": [...], "preprocessing": [...], "profile": {<the merged Profile>}}

A pack is written in one atomic write (``StoreFiles.write_json``): a reader sees all of it or
none of it. ``<id>`` is a digest of the fingerprint and the covered set, so writing the same
pack again (a retried task) replaces it rather than adding a copy.

Who writes packs: each profiling task (``profiling.profile_shards``), for the shards it
profiled, and ``build_reference``, for the stored profiles it had to read one by one, so the
next build over them reads one pack. Who reads them: ``build_reference`` (``plan``).

When a pack is used for a reference: every shard it covers is in the reference at the version
the pack covers (a shard overwritten since has a new version: the pack is not used, and its
other shards are read one by one), and its profiles are the ones the build asks for: the
featurizer ``fingerprint`` when given, else the stored ones (``plain``: every covered profile
was in the shard-version's first slot, see ``ProfileStore.profile_path``). When packs of one
featurizer overlap, the newest wins and the older ones are not used at all: a shard profiled
again (``force``) is never taken from the pack made before.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ProfileFormatError, StoreReadOnlyError
from .profile import Profile
from .reference import origins
from .sources import Shard

if TYPE_CHECKING:  # store.py imports this module
    from .store import ProfileStore

PACK_FORMAT = "driftloader-pack/1"
PACK_SHARDS = 512
"""Shard profiles per pack at most (a profiling task's shards, at most ``MAX_TASK_SHARDS``)."""
MIN_BUILD_PACK = 16
"""A reference build packs the profiles it read one by one when there are at least this many."""
_FOLD = 128  # profiles held before they are merged into the pack's running merge


@dataclass
class Pack:
    """A pack as read from the store (its merged profile is decoded only when used)."""

    path: str
    created: float
    fingerprint: str
    plain: bool
    covers: list[str]
    sources: list[str]
    preprocessing: list[str]
    document: dict = field(repr=False)

    def profile(self) -> Profile:
        """The merged profile of the covered shards."""
        return Profile.from_dict(self.document)


def pack_from(document: Any, path: str) -> Pack:
    """The ``Pack`` in ``document`` (read from ``path``); ``ProfileFormatError`` naming
    ``path`` when it is not one."""
    if not isinstance(document, dict) or document.get("format") != PACK_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ProfileFormatError(f"{path} is not a {PACK_FORMAT} pack (format {found!r:.40})")
    try:
        pack = Pack(
            path,
            float(document["created"]),
            str(document["fingerprint"]),
            document["plain"] is True,
            [str(c) for c in document["covers"]],
            [str(s) for s in document["sources"]],
            [str(p) for p in document["preprocessing"]],
            document["profile"],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProfileFormatError(f"pack {path} is missing or has a bad field: {e}") from None
    if not isinstance(pack.document, dict) or not pack.covers:
        raise ProfileFormatError(f"pack {path} has no profile or covers no shard")
    return pack


def pack_path(store: ProfileStore, fingerprint: str, covers: Sequence[str]) -> str:
    """Where the pack of ``fingerprint`` covering ``covers`` lives."""
    digest = hashlib.sha1("\n".join([fingerprint, *sorted(covers)]).encode("utf-8"))
    return store.path("packs", f"{digest.hexdigest()[:32]}.json")


class PackWriter:
    """Collects stored shard profiles and writes them as packs of at most ``size`` shards.

    ``add(shard, profile, plain)`` after a profile was stored (``plain``: in the
    shard-version's first slot); ``close()`` writes what is left. A profile of another
    featurizer or spec than the last, or in the other kind of slot, starts a new pack."""

    def __init__(self, store: ProfileStore, size: int = PACK_SHARDS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"pack size must be an int >= 1, got {size!r}")
        self.store = store
        self.size = size
        self.written: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._merged: Profile | None = None
        self._held: list[Profile] = []
        self._covers: list[str] = []
        self._sources: set[str] = set()
        self._preprocessing: set[str] = set()
        self._plain = True
        self._kind: str | None = None

    def add(self, shard: Shard, profile: Profile, plain: bool) -> None:
        """Add the stored ``profile`` of ``shard``."""
        kind = json.dumps(
            [profile.fingerprint, profile.meta.get("featurizer"), plain], sort_keys=True
        )
        if self._kind is not None and kind != self._kind:
            self.flush()
        self._kind = kind
        self._covers.append(self.store.shard_id(shard.url, shard.version))
        self._held.append(profile)
        self._plain = self._plain and plain
        sources, preprocessing = origins([profile])
        self._sources |= sources
        self._preprocessing |= preprocessing
        if len(self._held) >= _FOLD:
            self._fold()
        if len(self._covers) >= self.size:
            self.flush()

    def _fold(self) -> None:
        head = [] if self._merged is None else [self._merged]
        self._merged = Profile.merged([*head, *self._held])
        self._held = []

    def flush(self) -> str | None:
        """Write the pack collected so far (None when empty, or on a read-only store)."""
        if not self._covers:
            return None
        self._fold()
        if self._merged is None:
            return None
        document = pack_document(
            self._covers, self._merged, self._sources, self._preprocessing, self._plain
        )
        path = pack_path(self.store, document["fingerprint"], self._covers)
        self._reset()
        if write_pack(self.store, path, document) is None:
            return None
        self.written.append(path)
        return path

    def close(self) -> list[str]:
        """Write the last pack; the paths of every pack written."""
        self.flush()
        return self.written


def pack_document(
    covers: list[str], merged: Profile, sources: set[str], preprocessing: set[str], plain: bool
) -> dict:
    """The JSON of a pack of ``covers`` (shard ids, ``ProfileStore.shard_id``) whose profiles
    merge into ``merged``."""
    return {
        "format": PACK_FORMAT,
        "created": time.time(),
        "fingerprint": merged.fingerprint,
        "plain": plain,
        "covers": list(covers),
        "sources": sorted(sources),
        "preprocessing": sorted(preprocessing),
        "profile": merged.to_dict(),
    }


def write_pack(store: ProfileStore, path: str | None, document: dict) -> str | None:
    """Write the pack ``document`` to ``path`` (default: ``pack_path``) in one atomic write;
    its path, or None on a read-only store (a pack only saves later reads)."""
    path = path or pack_path(store, document["fingerprint"], document["covers"])
    try:
        store.write_json(path, document)
    except StoreReadOnlyError:
        return None
    return path


def read_packs(store: ProfileStore) -> list[Pack]:
    """Every readable pack in ``store`` (one listing, one batched read); a corrupt one is
    named in a ``RuntimeWarning`` and left out (its shards are read one by one)."""
    paths = store.list_json(store.path("packs"))
    if not paths:
        return []
    packs = []
    for path, document in zip(paths, store.read_json_many(paths)):
        try:
            if isinstance(document, ProfileFormatError):
                raise document
            if document is not None:
                packs.append(pack_from(document, store.display(path)))
        except ProfileFormatError as e:
            warnings.warn(
                f"ignoring corrupt pack {store.display(path)}: {e}", RuntimeWarning, stacklevel=2
            )
    return packs


def plan(
    store: ProfileStore, packs: Sequence[Pack], shards: Sequence[Shard], fingerprint: str | None
) -> tuple[list[Pack], list[Shard]]:
    """The packs a reference over ``shards`` uses, and the shards none of them covers.

    A pack is used when it covers only shards of ``shards`` at their versions, its profiles are
    the ones asked for (featurizer ``fingerprint``; None: the stored ones, ``plain`` packs), it
    covers none of the shards of a pack already used, and no newer pack of its featurizer (nor,
    for a ``plain`` pack, no newer ``plain`` pack) covers any of its shards: a shard profiled
    again is never taken from an older pack.
    Packs are listed in the order of their first shard in ``shards``."""
    position = {store.shard_id(s.url, s.version): i for i, s in enumerate(shards)}
    taken: set[str] = set()
    newer: set[tuple[str, str]] = set()  # (featurizer or "plain", shard) in a newer pack
    chosen: list[tuple[int, Pack]] = []
    for pack in sorted(packs, key=lambda p: (-p.created, p.path)):
        wanted = pack.plain if fingerprint is None else pack.fingerprint == fingerprint
        lines = [pack.fingerprint, *(["plain"] if pack.plain else [])]
        fresh = all((line, c) not in newer for line in lines for c in pack.covers)
        inside = all(c in position and c not in taken for c in pack.covers)
        if wanted and fresh and inside and len(set(pack.covers)) == len(pack.covers):
            chosen.append((min(position[c] for c in pack.covers), pack))
            taken.update(pack.covers)
        newer.update((line, c) for line in lines for c in pack.covers)
    loose = [s for s in shards if store.shard_id(s.url, s.version) not in taken]
    return [p for _, p in sorted(chosen, key=lambda t: t[0])], loose


def pack_profiles(
    store: ProfileStore,
    pairs: Sequence[tuple[Shard, Profile | None]],
    plain: bool,
    size: int = PACK_SHARDS,
) -> list[str]:
    """Write packs of the stored profiles in ``pairs`` (None ones are left out): the paths
    written. Best effort: nothing is written on a read-only store."""
    writer = PackWriter(store, size)
    for shard, profile in pairs:
        if profile is not None:
            writer.add(shard, profile, plain)
    return writer.close()


def pack_stored(store: ProfileStore, shards: Sequence[Shard], size: int = PACK_SHARDS) -> list[str]:
    """Read the stored profiles of ``shards`` (their first slots) and write them as packs: what
    profiling writes as it goes, for a store filled without it. The paths written."""
    written: list[str] = []
    for start in range(0, len(shards), size):
        part = list(shards[start : start + size])
        written += pack_profiles(store, list(zip(part, store.fetch_profiles(part))), True, size)
    return written


__all__ = [
    "MIN_BUILD_PACK",
    "PACK_FORMAT",
    "PACK_SHARDS",
    "Pack",
    "PackWriter",
    "pack_document",
    "pack_from",
    "pack_path",
    "pack_profiles",
    "pack_stored",
    "plan",
    "read_packs",
    "write_pack",
]
