"""``Profile``: the sketches of every feature of a shard (or of many shards) plus metadata.

A profile is built batch by batch from ``FeatureBatch`` objects, merged across shards, workers
and ranks (merge is associative and commutative) and stored as JSON, never pickle.

Invariants, kept by ``update``, ``merge`` and checked by ``from_dict``:

* every sketch of every feature has ``n == profile.n``: a feature first seen late, or absent
  from a batch or from one side of a merge, counts as missing for those samples;
* ``reservoir`` is None iff there is no numeric feature outside the joint projections;
  otherwise its columns are the sorted numeric feature names except ``joint:<group>/dir<j>``
  (recomputable from the coordinates they project, so not stored twice) and it has seen
  ``profile.n`` rows (NaN where a feature was missing). Profiles stored with the joint columns
  in their reservoir (before this rule) load with those columns dropped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

import driftloader
from driftloader.errors import FingerprintMismatch, IncompatibleSketchError, ProfileFormatError
from driftloader.features import Column, FeatureBatch, joint_name_parts
from driftloader.sketches import (
    DEFAULT_CATEGORICAL_CAP,
    DEFAULT_QUANTILE_K,
    DEFAULT_RESERVOIR_K,
    DEFAULT_TOKEN_BUCKETS,
    CategoricalCounts,
    HashedTokens,
    Moments,
    Quantiles,
    Reservoir,
    Sketch,
    sketch_from_dict,
)

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

from driftloader.sketches.encoding import split_masked
from driftloader.thumbnails import checked_thumbnails, merge_thumbnails

FORMAT = 2  # format 1 (before typed-array sketches) still loads: its envelope is the same
READS = (1, 2)
KINDS = ("numeric", "categorical", "tokens")
_CHUNK = 1 << 16  # rows per chunk when back-filling missing values


@dataclass(frozen=True)
class ProfileConfig:
    """Sketch parameters. Part of compatibility: profiles merge only with an equal config."""

    quantile_k: int = DEFAULT_QUANTILE_K
    categorical_cap: int = DEFAULT_CATEGORICAL_CAP
    token_buckets: int = DEFAULT_TOKEN_BUCKETS
    token_ngrams: int = 1
    reservoir_k: int = DEFAULT_RESERVOIR_K

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProfileConfig.{f.name} must be a positive int, got {value!r}")
        self.new_sketches("numeric")  # the sketch constructors validate the ranges
        self.new_sketches("tokens")
        self.new_sketches("categorical")

    def new_sketches(self, kind: str) -> dict[str, Sketch]:
        """Fresh, empty sketches for one feature of ``kind``."""
        if kind == "numeric":
            return {"moments": Moments(), "quantiles": Quantiles(self.quantile_k)}
        if kind == "categorical":
            return {"categorical": CategoricalCounts(self.categorical_cap)}
        if kind == "tokens":
            return {"tokens": HashedTokens(self.token_buckets, self.token_ngrams)}
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {KINDS}")

    def new_reservoir(self) -> Reservoir:
        return Reservoir(self.reservoir_k, seed=0)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> ProfileConfig:
        if not isinstance(d, dict) or set(d) != {f.name for f in fields(cls)}:
            raise ProfileFormatError(
                f"profile config must have exactly the keys of ProfileConfig, got {d!r}"
            )
        try:
            return cls(**d)
        except ValueError as e:
            raise ProfileFormatError(f"bad profile config: {e}") from e


def _missing_values(kind: str, n: int) -> np.ndarray:
    """A column of ``n`` missing values of ``kind``."""
    if kind == "numeric":
        return np.ma.masked_all(n, dtype=np.float64)
    return np.full(n, None, dtype=object)


def _backfill(kind: str, sketches: dict[str, Sketch], n: int) -> None:
    """Count ``n`` missing samples in every sketch of a feature (chunked: bounded memory)."""
    for start in range(0, n, _CHUNK):
        values = _missing_values(kind, min(_CHUNK, n - start))
        for sketch in sketches.values():
            sketch.update(values)


def _nan_reservoir(config: ProfileConfig, n: int, width: int) -> Reservoir:
    """A reservoir over ``n`` samples whose numeric features were all missing."""
    res = config.new_reservoir()
    for start in range(0, n, _CHUNK):
        res.update(np.full((min(_CHUNK, n - start), width), np.nan))
    return res


def _relayout(res: Reservoir, old: list[str], new: list[str]) -> Reservoir:
    """The same sample laid out on columns ``new``: columns of ``old`` absent from ``new`` are
    dropped, columns of ``new`` absent from ``old`` are NaN."""
    if old == new or not res.seen:
        return res
    rows = np.full((res.rows.shape[0], len(new)), np.nan)
    kept = [c for c in old if c in new]
    rows[:, [new.index(c) for c in kept]] = res.rows[:, [old.index(c) for c in kept]]
    out = Reservoir(res.k, res.seed)
    out.seen, out.rows, out.priorities = res.seen, rows, res.priorities.copy()
    return out


class Profile:
    """Per-feature sketches and metadata of a shard, or of a merge of shards.

    Example::

        p = Profile(featurizer.fingerprint, url=shard.url, version=shard.version)
        p.update(featurizer(samples))
        p.merge(other_shard_profile)
    """

    def __init__(
        self,
        fingerprint: str,
        *,
        url: str | None = None,
        version: str | None = None,
        source: str | None = None,
        config: ProfileConfig | None = None,
        created: float | None = None,
        meta: dict | None = None,
    ) -> None:
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint must be a non-empty str, got {fingerprint!r}")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        if config is not None and not isinstance(config, ProfileConfig):
            raise ValueError(f"config must be a ProfileConfig, got {config!r}")
        self.fingerprint = fingerprint
        self.url = url
        self.version = version
        self.source = source
        self.config = config or ProfileConfig()
        self.created = float(time.time() if created is None else created)
        self.library_version = driftloader.__version__
        self.meta: dict = dict(meta or {})
        self.n = 0
        self.errors = 0
        self.kinds: dict[str, str] = {}
        self.features: dict[str, dict[str, Sketch]] = {}
        self.reservoir: Reservoir | None = None
        self._reservoir_columns: list[str] = []
        self.thumbnails: dict[str, list[str]] = {}  # image field -> base64 JPEGs (thumbnails.py)

    # -- building ------------------------------------------------------------------------------

    def update(self, batch: FeatureBatch, n_samples: int | None = None) -> Self:
        """Add one featurized batch of samples; returns self."""
        n_samples = self._batch_size(batch, n_samples)
        for name, column in batch.items():
            self._ensure_feature(name, column.kind)
        self._prepare_reservoir()
        for name, sketches in self.features.items():
            column = batch.get(name)
            values = column.values if column is not None else None
            for sketch in sketches.values():
                sketch.update(
                    _missing_values(self.kinds[name], n_samples) if values is None else values
                )
        if self.reservoir is not None and n_samples:
            self.reservoir.update(self._numeric_rows(batch, n_samples))
        self.n += n_samples
        return self

    def count_errors(self, k: int = 1) -> None:
        """Record ``k`` samples that failed to read or featurize."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"count_errors needs an int k >= 0, got {k!r}")
        self.errors += k

    def _batch_size(self, batch: FeatureBatch, n_samples: int | None) -> int:
        if not isinstance(batch, dict):
            raise ValueError(f"batch must be a dict of name -> Column, got {type(batch).__name__}")
        lengths = {}
        for name, column in batch.items():
            if not isinstance(column, Column) or column.kind not in KINDS:
                raise ValueError(
                    f"feature {name!r}: expected a Column of kind {KINDS}, got {column!r}"
                )
            lengths[name] = int(np.size(column.values))  # no view made, masked or not
        sizes = set(lengths.values()) | ({n_samples} if n_samples is not None else set())
        if len(sizes) > 1:
            raise ValueError(
                f"columns and n_samples disagree on the batch size: {lengths}, n_samples={n_samples}"
            )
        size = sizes.pop() if sizes else 0
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"n_samples must be an int >= 0, got {n_samples!r}")
        return size

    def _ensure_feature(self, name: str, kind: str) -> None:
        known = self.kinds.get(name)
        if known is None:
            self.kinds[name] = kind
            self.features[name] = self.config.new_sketches(kind)
            _backfill(kind, self.features[name], self.n)
        elif known != kind:
            raise ValueError(f"feature {name!r} is {known} in this profile but {kind} in the batch")

    def _numeric_names(self) -> list[str]:
        return sorted(name for name, kind in self.kinds.items() if kind == "numeric")

    def _reservoir_names(self) -> list[str]:
        """The reservoir's columns: numeric features except the joint projections."""
        return [name for name in self._numeric_names() if joint_name_parts(name) is None]

    @property
    def reservoir_columns(self) -> list[str]:
        """The feature names of the reservoir's columns, in order."""
        return list(self._reservoir_columns)

    def _prepare_reservoir(self) -> None:
        """Create the reservoir on the first numeric feature, or widen it for new ones."""
        names = self._reservoir_names()
        if not names:
            return
        if self.reservoir is None:
            self.reservoir = _nan_reservoir(self.config, self.n, len(names))
        else:
            self.reservoir = _relayout(self.reservoir, self._reservoir_columns, names)
        self._reservoir_columns = names

    def _numeric_rows(self, batch: FeatureBatch, n_samples: int) -> np.ndarray:
        names = self._reservoir_names()
        rows = np.full((n_samples, len(names)), np.nan)
        for j, name in enumerate(names):
            if name in batch:
                data, missing = split_masked(batch[name].values)
                rows[:, j] = data
                rows[missing, j] = np.nan
        return rows

    # -- merging -------------------------------------------------------------------------------

    def merge(self, other: Profile) -> Self:
        """Merge ``other`` into self in place (associative and commutative); returns self."""
        return self._merge_all([other])

    @classmethod
    def merged(cls, profiles: Iterable[Profile]) -> Profile:
        """A new profile merging all ``profiles`` (inputs are left untouched)."""
        items = list(profiles)
        if not items:
            raise ValueError("Profile.merged needs at least one profile")
        first = items[0]
        out = cls(
            first.fingerprint,
            url=first.url,
            version=first.version,
            source=first.source,
            config=first.config,
            created=first.created,
            meta=first.meta,
        )
        out.library_version = first.library_version
        out.created = -math.inf
        return out._merge_all(items)

    def _check_mergeable(self, other: Profile) -> None:
        if not isinstance(other, Profile):
            raise TypeError(f"can only merge a Profile, got {type(other).__name__}")
        if other.fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"cannot merge profiles of featurizers {self.fingerprint!r} and {other.fingerprint!r} "
                f"(url {other.url!r}): re-profile with the same featurizer"
            )
        if other.config != self.config:
            raise IncompatibleSketchError(
                f"profile configs differ: {self.config} vs {other.config} (url {other.url!r})"
            )
        for name, kind in other.kinds.items():
            if self.kinds.get(name, kind) != kind:
                raise IncompatibleSketchError(
                    f"feature {name!r} is {self.kinds[name]} in one profile and {kind} in the other"
                )

    def _merge_all(self, others: list[Profile]) -> Self:
        others = [o.copy() if o is self else o for o in others]
        for other in others:
            self._check_mergeable(other)
        total = self.n + sum(o.n for o in others)
        for other in others:
            for name, kind in other.kinds.items():
                self.kinds.setdefault(name, kind)
        mine = {
            n: self.features.setdefault(n, self.config.new_sketches(k))
            for n, k in self.kinds.items()
        }
        # One pass over the inputs, profile by profile: KLL merges go straight into their
        # targets (a KLL merge costs in proportion to its target, and 100 targets stay in cache
        # while 100,000 inputs stream past once); the other sketches are collected for one
        # vectorised merge_many per feature.
        plan = {
            name: [(key, sk, None if type(sk) is Quantiles else []) for key, sk in sketches.items()]
            for name, sketches in mine.items()
        }
        for other in others:
            for name, sketches in other.features.items():
                for key, target, parts in plan[name]:
                    if parts is None:
                        target.merge(sketches[key])
                    else:
                        parts.append(sketches[key])
        for steps in plan.values():
            for _, target, parts in steps:
                if parts:
                    target.merge_many(parts)
        for name, kind in self.kinds.items():
            _backfill(kind, mine[name], total - next(iter(mine[name].values())).n)
        self._merge_reservoirs(others, total)
        self.thumbnails = merge_thumbnails([self.thumbnails, *(o.thumbnails for o in others)])
        self._merge_metadata(others)
        self.n = total
        self.errors += sum(o.errors for o in others)
        return self

    def _merge_reservoirs(self, others: list[Profile], total: int) -> None:
        names = self._reservoir_names()
        if not names:
            return
        parts = [self._aligned_reservoir(p, names) for p in [self, *others]]
        merged = self.config.new_reservoir().merge_many(r for r in parts if r is not None)
        if merged.seen != total:
            raise IncompatibleSketchError(f"reservoirs saw {merged.seen} rows for {total} samples")
        self.reservoir = merged
        self._reservoir_columns = names

    @staticmethod
    def _aligned_reservoir(p: Profile, names: list[str]) -> Reservoir | None:
        if not p.n:
            return None
        if p.reservoir is None:
            return _nan_reservoir(p.config, p.n, len(names))
        return _relayout(p.reservoir, p._reservoir_names(), names)

    def _merge_metadata(self, others: list[Profile]) -> None:
        for attr in ("url", "version", "source"):
            if any(getattr(o, attr) != getattr(self, attr) for o in others):
                setattr(self, attr, None)
        self.created = max([self.created, *(o.created for o in others)])
        for other in others:
            self.meta = {
                k: v for k, v in self.meta.items() if k in other.meta and other.meta[k] == v
            }
        if others:
            self.library_version = driftloader.__version__

    def copy(self) -> Profile:
        """An independent deep copy."""
        return Profile.from_dict(self.to_dict())

    # -- access --------------------------------------------------------------------------------

    def _feature(self, name: str, kind: str) -> dict[str, Sketch]:
        if name not in self.kinds:
            raise KeyError(f"no feature {name!r} in this profile; features: {sorted(self.kinds)}")
        if self.kinds[name] != kind:
            raise KeyError(f"feature {name!r} is {self.kinds[name]}, not {kind}")
        return self.features[name]

    def numeric(self, name: str) -> tuple[Moments, Quantiles]:
        """(moments, quantiles) of numeric feature ``name``."""
        sk = self._feature(name, "numeric")
        return sk["moments"], sk["quantiles"]  # type: ignore[return-value]

    def categorical(self, name: str) -> CategoricalCounts:
        """Counts of categorical feature ``name``."""
        return self._feature(name, "categorical")["categorical"]  # type: ignore[return-value]

    def tokens(self, name: str) -> HashedTokens:
        """Hashed token counts of text feature ``name``."""
        return self._feature(name, "tokens")["tokens"]  # type: ignore[return-value]

    def summary(self) -> dict[str, Any]:
        """A small flat dict for a catalog row."""
        return {
            "url": self.url,
            "version": self.version,
            "source": self.source,
            "created": self.created,
            "n": self.n,
            "errors": self.errors,
            "fingerprint": self.fingerprint,
            "n_features": len(self.kinds),
        }

    def __repr__(self) -> str:
        return f"Profile(url={self.url!r}, version={self.version!r}, n={self.n}, features={len(self.kinds)})"

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``format`` 2: sketches carry binary payloads as base64 typed arrays)."""
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "url": self.url,
            "version": self.version,
            "source": self.source,
            "created": self.created,
            "library_version": self.library_version,
            "config": self.config.to_dict(),
            "meta": self.meta,
            "n": self.n,
            "errors": self.errors,
            "features": {
                name: {
                    "kind": self.kinds[name],
                    "sketches": {k: s.to_dict() for k, s in sk.items()},
                }
                for name, sk in self.features.items()
            },
            "reservoir": None if self.reservoir is None else self.reservoir.to_dict(),
            **({"thumbnails": self.thumbnails} if self.thumbnails else {}),
        }

    def to_json(self) -> str:
        """Compact JSON text (no NaN / inf)."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        """Parse ``to_json`` output; ProfileFormatError on anything malformed."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as e:
            raise ProfileFormatError(f"profile is not valid JSON: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Any) -> Profile:
        """Rebuild a profile from ``to_dict`` output; ProfileFormatError on anything malformed."""
        if not isinstance(d, dict):
            raise ProfileFormatError(f"a profile must be a JSON object, got {type(d).__name__}")
        if d.get("format") not in READS or isinstance(d.get("format"), bool):
            raise ProfileFormatError(
                f"unknown profile format {d.get('format')!r}; this driftloader reads formats "
                f"{list(READS)}: upgrade driftloader or rebuild the profile"
            )
        try:
            return cls._from_dict(d)
        except ProfileFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProfileFormatError(f"malformed profile: {type(e).__name__}: {e}") from e

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Profile:
        for key in ("url", "version", "source", "library_version"):
            if d[key] is not None and not isinstance(d[key], str):
                raise ValueError(f"{key!r} must be a string or null, got {d[key]!r}")
        if isinstance(d["created"], bool) or not isinstance(d["created"], (int, float)):
            raise ValueError(f"'created' must be a number, got {d['created']!r}")
        p = cls(
            d["fingerprint"],
            url=d["url"],
            version=d["version"],
            source=d["source"],
            config=ProfileConfig.from_dict(d["config"]),
            created=d["created"],
            meta=d["meta"],
        )
        p.library_version = d["library_version"]
        p.n, p.errors = _count(d, "n"), _count(d, "errors")
        if not isinstance(d["features"], dict):
            raise ValueError("'features' must be an object")
        for name, feature in d["features"].items():
            p._load_feature(name, feature)
        p._load_reservoir(d["reservoir"])
        p.thumbnails = checked_thumbnails(d.get("thumbnails", {}))
        return p

    def _load_feature(self, name: str, feature: Any) -> None:
        kind = feature["kind"]
        expected = self.config.new_sketches(kind)
        raw = feature["sketches"]
        if not isinstance(raw, dict) or set(raw) != set(expected):
            raise ValueError(f"feature {name!r} ({kind}) needs sketches {sorted(expected)}")
        loaded = {key: sketch_from_dict(raw[key]) for key in expected}
        for key, sketch in loaded.items():
            if type(sketch) is not type(expected[key]) or sketch.params() != expected[key].params():
                raise ValueError(
                    f"feature {name!r}: sketch {key!r} does not match the profile config"
                )
            if sketch.n != self.n:
                raise ValueError(
                    f"feature {name!r}: sketch {key!r} saw {sketch.n} items, profile n={self.n}"
                )
        self.kinds[name], self.features[name] = kind, loaded

    def _load_reservoir(self, raw: Any) -> None:
        names = self._reservoir_names()
        if raw is None:
            if names:
                raise ValueError("profile has numeric features but no reservoir")
            return
        self.reservoir = _loaded_reservoir(raw, self, self._numeric_names(), names)
        self._reservoir_columns = names


def _loaded_reservoir(raw: Any, p: Profile, numeric: list[str], names: list[str]) -> Reservoir:
    """The stored reservoir of ``p`` on columns ``names``; one stored with the joint columns
    (all of ``numeric``, before they were left out) loads with those dropped."""
    res = sketch_from_dict(raw)
    if not isinstance(res, Reservoir) or res.params() != p.config.new_reservoir().params():
        raise ValueError("'reservoir' is not a reservoir matching the profile config")
    if res.seen != p.n:
        raise ValueError(f"reservoir saw {res.seen} rows, profile n={p.n}")
    if res.seen and res.width == len(numeric) != len(names):
        res = _relayout(res, numeric, names)
    if not names or (res.seen and res.width != len(names)):
        raise ValueError(
            f"reservoir ({res.seen} rows, width {res.width}) does not fit {len(names)} numeric features, n={p.n}"
        )
    return res


def _count(d: dict[str, Any], key: str) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{key!r} must be an int >= 0, got {v!r}")
    return v
