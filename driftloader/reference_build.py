"""Reading and merging what a reference is built from: the packs that cover its shards
(``packs.plan``), then the stored profiles of the shards no pack covers, read ``PACK_SHARDS`` at
a time (``READ_BATCH`` requests in flight) and merged chunk by chunk, in this process or as a
tree on an executor. Each chunk of profiles read one by one is written back as a pack, so the
next build over those shards reads one object per chunk.

``ProfileStore.build_reference`` stats the shards and stores the result; the merge rules
(missing profiles, featurizers, sources) are ``reference.merge_parts``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .executors import ExecutorSpec, tree_reference
from .packs import MIN_BUILD_PACK, PACK_SHARDS, Pack, pack_document, plan, read_packs, write_pack
from .profile import Profile
from .reference import Part, merge_parts
from .sources import Shard

if TYPE_CHECKING:  # store.py imports this module
    from .store import ProfileStore


def build_merged(
    store: ProfileStore,
    name: str,
    shards: Sequence[Shard],
    fingerprint: str | None = None,
    executor: ExecutorSpec = None,
) -> Profile:
    """Reference ``name`` over ``shards`` (not stored): packs first, then the loose profiles
    (of the featurizer of ``fingerprint``, else as stored). With ``executor`` and no
    ``fingerprint`` the loose profiles are read and merged in tasks, as a tree."""
    packs, loose = plan(store, read_packs(store), shards, fingerprint)
    if executor is not None and fingerprint is None:
        return tree_reference(executor, name, store, list(shards), packs, loose)
    packer = _ChunkPacker(store, plain=fingerprint is None)
    parts = _parts(store, shards, packs, loose, fingerprint)
    return merge_parts(name, shards, parts, on_merged=packer.add)


def pack_parts(packs: Sequence[Pack], shards: Sequence[Shard], store: ProfileStore) -> list[Part]:
    """One ``Part`` per pack: its merged profile, its first shard (for messages), its origins."""
    by_id = {store.shard_id(s.url, s.version): s for s in shards}
    return [
        Part(
            by_id[p.covers[0]],
            p.profile(),
            frozenset(p.sources),
            frozenset(p.preprocessing),
            covers=tuple(p.covers),
            packed=True,
        )
        for p in packs
    ]


def _parts(
    store: ProfileStore,
    shards: Sequence[Shard],
    packs: list[Pack],
    loose: list[Shard],
    fingerprint: str | None,
) -> Iterator[list[Part]]:
    for part in pack_parts(packs, shards, store):  # one at a time: merged as its chunk was
        yield [part]
    chunks = store.fetch_profile_chunks(loose, fingerprint, size=PACK_SHARDS) if loose else []
    start = 0
    for chunk in chunks:
        part = loose[start : start + len(chunk)]
        start += len(chunk)
        yield [
            Part.of(s, p, covers=(store.shard_id(s.url, s.version),)) for s, p in zip(part, chunk)
        ]


class _ChunkPacker:
    """Writes each merged chunk of loose profiles that ``merge_parts`` reports (of at least
    ``MIN_BUILD_PACK`` shards) as a pack: a cache of stored profiles, valid whether or not the
    build goes on to succeed."""

    def __init__(self, store: ProfileStore, plain: bool) -> None:
        self.store = store
        self.plain = plain
        self.written: list[str] = []

    def add(self, parts: Sequence[Part], merged: Profile) -> None:
        if any(p.packed for p in parts) or len(parts) < MIN_BUILD_PACK or not self.store.writable:
            return
        covers = [c for p in parts for c in p.covers]
        sources = {s for p in parts for s in p.sources}
        preprocessing = {f for p in parts for f in p.preprocessing}
        document = pack_document(covers, merged, sources, preprocessing, self.plain)
        path = write_pack(self.store, None, document)
        if path is not None:
            self.written.append(path)


__all__ = ["build_merged", "pack_parts"]
