"""Merging stored shard profiles into a reference profile: the pure part of
``ProfileStore.build_reference`` (the store fetches, this merges and describes)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .errors import DriftloaderError
from .profile import Profile
from .sources import Shard, redact

_MAX_LISTED = 10


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
    """
    missing = [(s.url, s.version) for s, p in zip(shards, profiles) if p is None]
    if missing:
        raise missing_profiles(name, missing, len(shards))
    found = [p for p in profiles if p is not None]
    sources, preprocessing = origins(found)
    return described(name, shards, Profile.merged(found), sources, preprocessing)


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
    reference.meta = {
        "reference": name,
        "count": len(shards),
        "shards": [{"url": redact(s.url), "version": s.version} for s in shards],
        "sources": sorted(sources),
        "preprocessing": sorted(preprocessing),
    }
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
    "MissingProfiles",
    "described",
    "merge_reference",
    "missing_profiles",
    "origins",
    "preprocessing_of",
]
