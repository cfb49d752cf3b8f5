"""Merging stored shard profiles into a reference profile: the pure part of
``ProfileStore.build_reference`` (the store fetches, this merges and describes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

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
    merged: Profile | None = None
    spec: dict | None = None
    missing: list[tuple[str, str | None]] = []
    examples: dict[str, tuple[Shard, Profile]] = {}  # one (shard, profile) per featurizer
    sources: set[str] = set()
    preprocessing: set[str] = set()
    start = 0
    for chunk in chunks:
        pairs = list(zip(shards[start : start + len(chunk)], chunk))
        start += len(chunk)
        missing += [(s.url, s.version) for s, p in pairs if p is None]
        found = [(s, p) for s, p in pairs if p is not None]
        if missing or not found:
            continue
        for shard, profile in found:
            key = json.dumps([profile.fingerprint, profile.meta.get("featurizer")], sort_keys=True)
            examples.setdefault(key, (shard, profile))
        spec = featurizer_spec(name, *_unzipped(examples))  # disagreeing featurizers: raises
        more_sources, more_preprocessing = origins([p for _, p in found])
        sources |= more_sources
        preprocessing |= more_preprocessing
        head = [] if merged is None else [merged]
        merged = Profile.merged([*head, *(p for _, p in found)])
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
    "described",
    "featurizer_spec",
    "merge_reference",
    "merge_reference_chunks",
    "missing_profiles",
    "origins",
    "preprocessing_of",
]
