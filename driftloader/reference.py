"""Merging stored shard profiles into a reference profile: the pure part of
``ProfileStore.build_reference`` (the store fetches, this merges and describes)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import DriftloaderError
from .profile import Profile
from .sources import Shard, redact

_MAX_LISTED = 10


class FeaturizerDisagreement(DriftloaderError, ValueError):
    """The shard profiles to merge were made by different featurizers."""


class MissingProfiles(DriftloaderError, LookupError):
    """Some shards have no stored profile at their current version."""

    def __init__(self, message: str, shards: Sequence[tuple[str, str | None]] = ()) -> None:
        super().__init__(message)
        self.shards = list(shards)


def merge_reference(
    name: str, shards: Sequence[Shard], profiles: Sequence[Profile | None]
) -> Profile:
    """Reference ``name`` merged from ``profiles`` (one per shard, None where missing): no I/O.

    ``MissingProfiles`` when one is None; ``ValueError`` when they hold no samples.
    ``reference.meta`` records the shards, the sorted set of their ``sources`` and of their
    ``preprocessing`` fingerprints (from their metadata, see ``profiling.shard_metadata``);
    ``drift.compare`` flags a shard declaring a source or fingerprint outside these sets.
    ``meta["featurizer"]`` is the ``FeatureSpec`` JSON the profiles carry (``featurizer_spec``),
    when they carry one.
    """
    return merge_reference_chunks(name, shards, [list(profiles)])


def merge_reference_chunks(
    name: str, shards: Sequence[Shard], chunks: Iterable[Sequence[Profile | None]]
) -> Profile:
    """``merge_reference`` of the profiles given in consecutive ``chunks`` (one per shard in
    all, in order), merged as they come: only one chunk of profiles is held at a time."""

    def parts() -> Iterator[list[Part]]:
        start = 0
        for chunk in chunks:
            yield [Part.of(s, p) for s, p in zip(shards[start : start + len(chunk)], chunk)]
            start += len(chunk)

    return merge_parts(name, shards, parts())


@dataclass(frozen=True)
class Part:
    """One input of a reference merge: the stored profile of a shard (None when it has none),
    or the merged profile of a pack of shards (``shard``: the first of them, for messages),
    with the sources and preprocessing fingerprints of the shards it holds."""

    shard: Shard
    profile: Profile | None
    sources: frozenset[str] = frozenset()
    preprocessing: frozenset[str] = frozenset()
    covers: tuple[str, ...] = ()  # the ids of the shards it holds (``ProfileStore.shard_id``)
    packed: bool = False  # read from a pack

    @classmethod
    def of(cls, shard: Shard, profile: Profile | None, covers: tuple[str, ...] = ()) -> Part:
        """The part of one shard's stored ``profile``."""
        if profile is None:
            return cls(shard, None, covers=covers)
        sources, preprocessing = origins([profile])
        return cls(shard, profile, frozenset(sources), frozenset(preprocessing), covers)


def merge_parts(
    name: str,
    shards: Sequence[Shard],
    chunks: Iterable[Sequence[Part]],
    on_merged: Callable[[Sequence[Part], Profile], None] | None = None,
) -> Profile:
    """Reference ``name`` over ``shards`` merged from ``chunks`` of parts (shard profiles and
    packs, together covering each shard once), as ``merge_reference``. Each chunk is merged on
    its own, then into the rest; ``on_merged(parts, merged)`` is told each chunk's merge when
    every part of it had a profile."""
    merged: Profile | None = None
    spec: dict | None = None
    missing: list[tuple[str, str | None]] = []
    examples: dict[str, tuple[Shard, Profile]] = {}  # one (shard, profile) per featurizer
    sources: set[str] = set()
    preprocessing: set[str] = set()
    for chunk in chunks:
        missing += [(p.shard.url, p.shard.version) for p in chunk if p.profile is None]
        found = [p for p in chunk if p.profile is not None]
        if missing or not found:
            continue
        for part in found:
            key = json.dumps(
                [part.profile.fingerprint, part.profile.meta.get("featurizer")], sort_keys=True
            )
            examples.setdefault(key, (part.shard, part.profile))
        spec = featurizer_spec(name, *_unzipped(examples))  # disagreeing featurizers: raises
        for part in found:
            sources |= part.sources
            preprocessing |= part.preprocessing
        chunk_merged = (  # one part is taken as it is: merging it alone reorders KLL items
            found[0].profile.copy()
            if len(found) == 1
            else Profile.merged([p.profile for p in found])
        )
        if on_merged is not None and len(found) == len(chunk):
            on_merged(found, chunk_merged)
        merged = chunk_merged if merged is None else Profile.merged([merged, chunk_merged])
    if missing:
        raise missing_profiles(name, missing, len(shards))
    if merged is None:
        raise ValueError(f"cannot build reference {name!r}: no shards")
    reference = described(name, shards, merged, sources, preprocessing)
    if spec is not None:
        reference.meta["featurizer"] = spec
    return reference


def _unzipped(examples: dict[str, tuple[Shard, Profile]]) -> tuple[list[Shard], list[Profile]]:
    return [s for s, _ in examples.values()], [p for _, p in examples.values()]


def featurizer_spec(name: str, shards: Sequence[Shard], profiles: Sequence[Profile]) -> dict | None:
    """The ``FeatureSpec`` JSON the shard ``profiles`` were made with (``meta["featurizer"]``;
    profiles made before it was recorded have none), None when none records one.
    ``FeaturizerDisagreement`` when they were made by different featurizers (other fingerprints
    or other specs), naming a shard of each."""
    by_key: dict[str, tuple[Shard, Profile]] = {}
    for shard, profile in zip(shards, profiles):
        spec = profile.meta.get("featurizer")
        by_key.setdefault(json.dumps([profile.fingerprint, spec], sort_keys=True), (shard, profile))
    specs = {
        json.dumps(p.meta["featurizer"], sort_keys=True): p.meta["featurizer"]
        for _, p in by_key.values()
        if p.meta.get("featurizer") is not None
    }
    if len({p.fingerprint for _, p in by_key.values()}) > 1 or len(specs) > 1:
        raise FeaturizerDisagreement(_disagreement_message(name, list(by_key.values())))
    return next(iter(specs.values()), None)


def _disagreement_message(name: str, examples: list[tuple[Shard, Profile]]) -> str:
    listed = "\n  ".join(
        f"{redact(s.url)}: featurizer {p.fingerprint[:12]}, spec "
        + json.dumps(p.meta.get("featurizer"), sort_keys=True)[:200]
        for s, p in examples[:_MAX_LISTED]
    )
    return (
        f"cannot build reference {name!r}: its shards were profiled with different featurizers, "
        f"e.g.\n  {listed}\nprofile them again with one featurizer (driftloader profile "
        "--features SPEC.json), or pick whose profiles to merge (reference --features SPEC.json)"
    )


def origins(profiles: Sequence[Profile]) -> tuple[set[str], set[str]]:
    """The sources and the preprocessing fingerprints that ``profiles`` declare."""
    sources = {p.source for p in profiles if p.source is not None}
    preprocessing = {fp for fp in (preprocessing_of(p) for p in profiles) if fp is not None}
    return sources, preprocessing


def described(
    name: str,
    shards: Sequence[Shard],
    reference: Profile,
    sources: set[str],
    preprocessing: set[str],
) -> Profile:
    """``reference`` (merged from ``shards``) with its ``meta``; ``ValueError`` when empty."""
    if reference.n == 0:  # every later check would call each shard drifted
        raise ValueError(
            f"cannot build reference {name!r}: its {len(shards)} shard(s) hold no samples "
            f"(first: {redact(shards[0].url)})"
        )
    spec = reference.meta.get("featurizer")  # kept by the merge when every profile agrees
    reference.meta = {
        "reference": name,
        "count": len(shards),
        "shards": [{"url": redact(s.url), "version": s.version} for s in shards],
        "sources": sorted(sources),
        "preprocessing": sorted(preprocessing),
    }
    if spec is not None:
        reference.meta["featurizer"] = spec
    return reference


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


def missing_profiles(
    name: str, missing: list[tuple[str, str | None]], total: int
) -> MissingProfiles:
    """The error for reference ``name`` when ``missing`` of ``total`` shards have no profile."""
    return MissingProfiles(_missing_message(name, missing, total), missing)


def _missing_message(name: str, missing: list[tuple[str, str | None]], total: int) -> str:
    listed = "\n  ".join(f"{redact(u)} (version {v})" for u, v in missing[:_MAX_LISTED])
    more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return (
        f"cannot build reference {name!r}: {len(missing)} of {total} shards have no profile at "
        f"their current version:\n  {listed}{more}\n"
        "run `driftloader profile ...` first (or driftloader.profile_shards(urls, store))"
    )


__all__ = [
    "FeaturizerDisagreement",
    "MissingProfiles",
    "Part",
    "described",
    "featurizer_spec",
    "merge_reference",
    "merge_parts",
    "merge_reference_chunks",
    "missing_profiles",
    "origins",
    "preprocessing_of",
]
