"""``FeatureSpec``: an explicit, JSON-writable choice of features, and the featurizer it makes.

A spec is what a reference records so that every later command featurizes the same way:
``spec.to_json()`` / ``FeatureSpec.from_json(text)`` round trip, ``featurizer.spec`` gives the
spec of a built-in featurizer, and ``featurizer_from_spec(d)`` rebuilds the featurizer from the
dict a profile or reference stored. JSON form (every key optional)::

    {"features": {"x.npy": "vector", "cls": "categorical", "json.size": "numeric"},
     "fields": null, "max_vector": 64, "max_keys": 128,
     "images": {"decode": true, "size": 128},
     "joint": {"k": 8, "seed": 0, "min_width": 2, "scales": {}, "numeric": [], "vectors": true}}

``"features": null`` (or absent) means the default featurizer's inference for every field (or
for ``"fields"`` only); ``"joint": null`` turns joint projections off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from driftloader.features.base import (
    JSON_EXTENSIONS,
    BatchBuilder,
    FeatureBatch,
    callable_identity,
    decode_all,
    transform_all,
)
from driftloader.features.featurizers import (
    DefaultFeaturizer,
    FeatureOptions,
    Featurizer,
    check_fields,
    features_of_kind,
    finish,
    make_options,
)
from driftloader.features.fields import DECODERS, DEFAULT_MAX_KEYS, decoder_name, default_kind
from driftloader.features.joint import JointOptions

SPEC_KINDS = (
    "auto",
    "numeric",
    "categorical",
    "text",
    "vector",
    "summary",
    "array",
    "json",
    "image",
)
"""Kinds a ``FeatureSpec`` entry may name; see ``FeatureSpec``."""

_JSON_KEYS = {"features", "fields", "max_vector", "max_keys", "images", "joint"}


def split_key(key: str) -> tuple[str, str | None]:
    """``"json.size"`` -> ``("json", "size")``; ``"meta.json.a.b"`` -> ``("meta.json", "a.b")``."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.lower() in JSON_EXTENSIONS:
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1 :])
    return key, None


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _check_features(features: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"features must be a non-empty dict of key -> kind, got {features!r}")
    for key, kind in features.items():
        if not isinstance(key, str) or not key or key.startswith("__"):
            raise ValueError(f"bad feature key {key!r}")
        if kind not in SPEC_KINDS:
            raise ValueError(
                f"feature {key!r}: unknown kind {kind!r}; expected one of {SPEC_KINDS}"
            )
        path = split_key(key)[1]
        if path is not None and kind == "image":
            raise ValueError(f"feature {key!r}: a JSON path cannot be an image")
        if path is None and kind == "auto" and default_kind(key) is None:
            raise ValueError(f"feature {key!r}: 'auto' needs a known extension; name a kind")
    return dict(features)


def _check_transforms(
    transforms: Mapping[str, Callable[[Any], Any]], features: Mapping[str, str] | None
) -> dict[str, Callable[[Any], Any]]:
    if not isinstance(transforms, Mapping):
        raise ValueError(f"transforms must be a dict of key -> callable, got {transforms!r}")
    for key, fn in transforms.items():
        if features is None or key not in features:
            raise ValueError(f"transform for {key!r}, which is not a feature of the spec")
        if not callable(fn):
            raise ValueError(f"transform for {key!r} is not callable: {fn!r}")
    return dict(transforms)


class FeatureSpec:
    """An explicit choice of features: ``{key: kind}`` plus optional per-key transforms.

    A key is a field name (``"x.npy"``, ``"cls"``) or a path into a JSON field
    (``"json.size"``, ``"meta.json.box.w"``). Kinds (``SPEC_KINDS``): ``auto`` (the default
    featurizer's choice for the field), ``numeric`` (a number, numeric text or size-1 array),
    ``categorical``, ``text``, ``vector`` (one feature per array element), ``summary`` (mean,
    std, min, max, size), ``array`` (vector up to ``max_vector`` values, else summary), ``json``
    (flattened) and ``image``. A transform gets the decoded value (array, str, parsed JSON value,
    or image bytes) and returns the value to featurize; its exceptions raise ``FeaturizeError``.
    Names follow the default rules with the key as prefix. ``features=None`` keeps the default
    inference (of every field, or of ``fields``) with this spec's options.

    >>> spec = FeatureSpec({"x.npy": "summary", "cls": "categorical", "json.size": "numeric"})
    >>> FeatureSpec.from_json(spec.to_json()).fingerprint == spec.fingerprint
    True
    """

    def __init__(
        self,
        features: Mapping[str, str] | None,
        transforms: Mapping[str, Callable[[Any], Any]] | None = None,
        *,
        fields: Sequence[str] | None = None,
        max_vector: int = 64,
        decode_images: bool = True,
        image_size: int = 128,
        joint: JointOptions | Mapping[str, Any] | None = JointOptions(),  # noqa: B008 (frozen)
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.features = None if features is None else _check_features(features)
        if fields is not None and self.features is not None:
            raise ValueError("give either features or fields, not both")
        self.fields = None if fields is None else check_fields(fields)
        self.transforms = _check_transforms(transforms or {}, self.features)
        self.options = make_options(max_vector, decode_images, image_size, joint, max_keys)

    @classmethod
    def from_options(
        cls,
        features: Mapping[str, str] | None,
        options: FeatureOptions,
        fields: Sequence[str] | None = None,
    ) -> FeatureSpec:
        """A spec with ``options`` as they are (no transforms)."""
        spec = cls(features, fields=fields)
        spec.options = options
        return spec

    @property
    def max_vector(self) -> int:
        return self.options.max_vector

    @property
    def decode_images(self) -> bool:
        return self.options.images.decode

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see the module docstring); ``ValueError`` if it has transforms, which
        are code and cannot be written as JSON."""
        if self.transforms:
            raise ValueError(
                f"a FeatureSpec with transforms ({sorted(self.transforms)}) cannot be written "
                "as JSON"
            )
        features = None if self.features is None else dict(sorted(self.features.items()))
        fields = None if self.fields is None else sorted(self.fields)
        return {"features": features, "fields": fields, **self.options.to_dict()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> FeatureSpec:
        """The spec of a JSON form; ``ValueError`` naming what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a feature spec must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - _JSON_KEYS
        if unknown:
            raise ValueError(
                f"unknown feature spec keys {sorted(unknown)}; known: {sorted(_JSON_KEYS)}"
            )
        images = d.get("images") or {}
        if not isinstance(images, Mapping) or not set(images) <= {"decode", "size"}:
            raise ValueError(f"feature spec 'images' must be {{'decode', 'size'}}, got {images!r}")
        return cls(
            d.get("features"),
            fields=d.get("fields"),
            max_vector=d.get("max_vector", 64),
            decode_images=images.get("decode", True),
            image_size=images.get("size", 128),
            joint=d["joint"] if "joint" in d else JointOptions(),
            max_keys=d.get("max_keys", DEFAULT_MAX_KEYS),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        """Parse a spec written by ``to_json`` (or by hand)."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"feature spec is not JSON: {e}") from e
        return cls.from_dict(d)

    def describe(self) -> dict[str, Any]:
        """JSON-safe description; transforms by qualified name and source hash."""
        features = None if self.features is None else dict(sorted(self.features.items()))
        return {
            "features": features,
            "transforms": {k: callable_identity(fn) for k, fn in sorted(self.transforms.items())},
            **self.options.to_dict(),
        }

    def featurizer(self) -> Featurizer:
        """A fresh featurizer for this spec (a ``DefaultFeaturizer`` when ``features`` is None)."""
        if self.features is None:
            featurizer = DefaultFeaturizer(self.fields)
            featurizer.options = self.options
            return featurizer
        return SpecFeaturizer(self)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of this spec's featurizer."""
        return self.featurizer().fingerprint


class SpecFeaturizer(Featurizer):
    """Featurizes exactly the keys of a ``FeatureSpec``; each field is decoded once per sample."""

    def __init__(self, spec: FeatureSpec) -> None:
        if not isinstance(spec, FeatureSpec) or spec.features is None:
            raise ValueError(f"spec must be a FeatureSpec with features, got {spec!r}")
        self._spec = spec
        self.errors = 0

    def describe(self) -> dict[str, Any]:
        return self._spec.describe()

    @property
    def spec(self) -> FeatureSpec | None:
        return None if self._spec.transforms else self._spec

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self.run(samples, self._build)

    def _build(self, batch: BatchBuilder) -> None:
        spec = self._spec
        decoded: dict[tuple[str, str], list[Any]] = {}
        for key in sorted(spec.features or {}):
            kind = spec.features[key]  # type: ignore[index]
            field, path = split_key(key)
            if kind == "auto":
                kind = "json" if path is not None else default_kind(field)  # type: ignore[assignment]
            decoder = "json" if path is not None else decoder_name(field, kind)
            if (field, decoder) not in decoded:
                raws = [s.get(field) for s in batch.samples]
                decoded[field, decoder] = decode_all(batch, raws, DECODERS[decoder])
            values = decoded[field, decoder]
            if path is not None:
                values = [None if v is None else _lookup(v, path) for v in values]
            if key in spec.transforms:
                values = transform_all(batch, key, values, spec.transforms[key])
            features_of_kind(batch, key, field, kind, values, spec.options)
        finish(batch, spec.options)


def featurizer_from_spec(spec: Mapping[str, Any] | str | FeatureSpec) -> Featurizer:
    """Rebuild a featurizer from what a profile or reference recorded: a spec's JSON form
    (dict or text) or a ``FeatureSpec``. ``ValueError`` if it is not a valid spec."""
    if isinstance(spec, FeatureSpec):
        return spec.featurizer()
    if isinstance(spec, (str, bytes)):
        return FeatureSpec.from_json(spec).featurizer()
    return FeatureSpec.from_dict(spec).featurizer()
