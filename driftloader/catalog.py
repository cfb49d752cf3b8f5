"""``CatalogRow``: the one type of a catalog row (what the store knows about one shard-version).

The catalog keeps one row per (shard URL, version) at ``catalog/<sha1(url)>.<version>.json``.
Several writers fill different fields of the same row; ``ProfileStore.record(row)`` merges the
fields a writer sets (not None) into the stored row, so a later decision does not erase the
profile summary, nor a validation the last check:

* ``ProfileStore.put_profile``: the profile summary (``source`` .. ``profile``);
* the loader's gate (``policy.py``): a training decision (``reference``, ``policy``, ``epoch``,
  ``decided``, ``action``, ``drifted``, ``score``, ``top``, ``schema``, ``decided_n`` and, by
  policy, ``ess`` / ``distinct`` / ``probe``);
* ``check.check_shards``: a check (``reference``, ``action="checked"``, ``drifted``, ``score``,
  ``top``, ``decided``);
* ``validate.validate_shards``: a validation (``validation``, ``validation_reference``,
  ``valid``, ``validated``).

Rows written by older versions are read as they are: unknown keys are kept in ``extra`` (and
written back), values of the wrong type are dropped with a warning naming the row's file. A
row reads like a read-only mapping of its set fields (``row["url"]``, ``"score" in row``,
``row.get("drifted")``), as the plain dicts it replaces did.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_TIME = (int, float)


@dataclass(eq=False)
class CatalogRow(Mapping):
    """What the store knows about one shard-version. Fields left None are unknown or unset.

    Identity:
        url: the shard URL without credentials (as ``sources.redact`` writes it).
        version: the shard's version (``v:<VersionId>``, ``e:<ETag>``, ``s:<size-mtime>``) or
            None when it has none.
    The shard's stored profile (written with it by ``put_profile``):
        source: where the shard comes from (``profile.source``).
        created: when the profile was made (Unix seconds).
        n: samples in the profile.
        errors: samples (and reads) that failed while profiling.
        fingerprint: the featurizer's fingerprint of the profile.
        n_features: features in the profile.
        profile: where the profile is stored (path or URL, without credentials).
        profile_bytes: the stored profile's size, so that a listing tells it is whole without
            reading it (``store.profiled``).
    The latest drift result against a reference (training decision or ``check``):
        reference: the reference name the shard was compared with.
        policy: the gate's policy (``monitor``, ``skip``, ``reweight``, ``resample``); None for
            a result of ``check``.
        epoch: the training epoch of the decision.
        decided: when the result was taken (Unix seconds).
        action: ``passed``, ``skipped``, ``reweighted``, ``resampled``, ``excluded`` (training)
            or ``checked`` (``check``).
        drifted: whether the shard drifted.
        score: the drift score (>= 1 exactly when drifted).
        top: the most drifted features, ``FeatureDrift.to_dict()`` each.
        schema: features ``missing`` from or ``new`` to the shard against the reference.
        decided_n: samples the decision saw (a probe window or a shard read in part may be
            fewer than ``n``).
        ess: effective sample size of the weights applied (reweight / resample).
        distinct: distinct samples drawn (resample).
        probe: the decision came from a stored probe window of this many samples.
    The latest validation against a reference's rules:
        validation: the failures (empty when the shard passed).
        validation_reference: the reference whose rules were checked.
        valid: True when there were no failures.
        validated: when it was validated (Unix seconds).
    Anything else:
        extra: keys this version does not know (from other versions), kept and written back.
    """

    url: str
    version: str | None = None
    source: str | None = None
    created: float | None = None
    n: int | None = None
    errors: int | None = None
    fingerprint: str | None = None
    n_features: int | None = None
    profile: str | None = None
    profile_bytes: int | None = None
    reference: str | None = None
    policy: str | None = None
    epoch: int | None = None
    decided: float | None = None
    action: str | None = None
    drifted: bool | None = None
    score: float | None = None
    top: list[dict] | None = None
    schema: dict | None = None
    decided_n: int | None = None
    ess: float | None = None
    distinct: int | None = None
    probe: int | None = None
    validation: list[str] | None = None
    validation_reference: str | None = None
    valid: bool | None = None
    validated: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- conversion ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The row as strict JSON-safe data: set fields only (``url`` and ``version`` always),
        non-finite floats as None, ``extra``'s keys beside the known ones."""
        out = dict(json_safe(self.extra))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.name in ("url", "version")):
                out[f.name] = json_safe(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], problems: list[str] | None = None) -> CatalogRow:
        """A row from stored or legacy data. Unknown keys go to ``extra``; a known key whose
        value has the wrong type is dropped (and named in ``problems`` when given)."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            key = str(key)
            exact = _EXACT.get(key)
            if exact is None:
                extra[key] = value
            elif value is None or type(value) in exact or _fits(key, value):
                values[key] = value
            elif problems is not None:
                problems.append(f"{key}={value!r:.40} is not a {_KINDS[key][1]}")
        if "url" not in values:
            values["url"] = str(data.get("url", ""))
        row = cls.__new__(cls)  # the fields set directly: catalogs read 100k rows at once
        row.__dict__.update(_DEFAULTS, **values, extra=extra)
        return row

    def merged(self, newer: CatalogRow) -> CatalogRow:
        """This row with every field ``newer`` sets (not None) taken from ``newer`` (a NaN
        score is set: it is written as null)."""
        out = CatalogRow.from_dict(self.to_dict())
        for f in fields(newer):
            value = getattr(newer, f.name)
            if f.name == "extra":
                out.extra.update(value)
            elif value is not None:
                setattr(out, f.name, value)
        return out

    # -- read-only mapping of the set fields (what readers of the old dict rows use) -------------

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "url": ((str,), "string"),
    "version": ((str,), "string"),
    "source": ((str,), "string"),
    "created": (_TIME, "number"),
    "n": ((int,), "integer"),
    "errors": ((int,), "integer"),
    "fingerprint": ((str,), "string"),
    "n_features": ((int,), "integer"),
    "profile": ((str,), "string"),
    "profile_bytes": ((int,), "integer"),
    "reference": ((str,), "string"),
    "policy": ((str,), "string"),
    "epoch": ((int,), "integer"),
    "decided": (_TIME, "number"),
    "action": ((str,), "string"),
    "drifted": ((bool,), "boolean"),
    "score": (_TIME, "number"),
    "top": ((list,), "list"),
    "schema": ((dict,), "object"),
    "decided_n": ((int,), "integer"),
    "ess": (_TIME, "number"),
    "distinct": ((int,), "integer"),
    "probe": ((int,), "integer"),
    "validation": ((list,), "list"),
    "validation_reference": ((str,), "string"),
    "valid": ((bool,), "boolean"),
    "validated": (_TIME, "number"),
}


_DEFAULTS: dict[str, Any] = {f.name: None for f in fields(CatalogRow) if f.name != "extra"}
"""Every field but ``extra`` unset (``from_dict`` starts from these)."""
_EXACT: dict[str, frozenset[type]] = {key: frozenset(types) for key, (types, _) in _KINDS.items()}
"""The exact types each known field takes without conversion (the fast path of ``from_dict``;
``_fits`` decides the rest: subclasses, numpy scalars)."""


def _fits(key: str, value: Any) -> bool:
    """True if ``value`` has the type field ``key`` holds (bool is not a number here)."""
    types = _KINDS[key][0]
    if isinstance(value, bool) and bool not in types:
        return False
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalars
    return isinstance(value, types)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None and numpy scalars made Python."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


__all__ = ["CatalogRow", "json_safe"]
