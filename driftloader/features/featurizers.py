"""Featurizers: the ``Featurizer`` interface, the default one (features inferred from each field's
extension), the wrapper for a user's callable, and ``featurizer_from`` to pick one."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftloader.features.arrays import array_features
from driftloader.features.base import (
    FEATURES_VERSION,
    BatchBuilder,
    FeatureBatch,
    FeatureWarning,
    FeaturizerState,
    callable_identity,
    check_int,
    decode_all,
    digest,
)
from driftloader.features.fields import (
    DECODERS,
    DEFAULT_MAX_KEYS,
    categorical_features,
    decoder_name,
    default_kind,
    json_features,
    numeric_features,
    records_features,
    value_kind,
)
from driftloader.features.images import ImageOptions, image_features
from driftloader.features.joint import JointOptions, project_numeric
from driftloader.features.text import text_features


@dataclass(frozen=True)
class FeatureOptions:
    """Settings shared by the built-in featurizers (all part of the fingerprint)."""

    max_vector: int = 64
    images: ImageOptions = field(default_factory=ImageOptions)
    joint: JointOptions | None = field(default_factory=JointOptions)
    max_keys: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        check_int("max_vector", self.max_vector, 0)
        check_int("max_keys", self.max_keys, 1)
        if not isinstance(self.images, ImageOptions):
            raise ValueError(f"images must be ImageOptions, got {self.images!r}")
        if self.joint is not None and not isinstance(self.joint, JointOptions):
            raise ValueError(f"joint must be JointOptions or None, got {self.joint!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_vector": self.max_vector,
            "images": self.images.to_dict(),
            "joint": None if self.joint is None else self.joint.to_dict(),
            "max_keys": self.max_keys,
        }


def make_options(
    max_vector: int,
    decode_images: bool,
    image_size: int,
    joint: JointOptions | Mapping[str, Any] | None,
    max_keys: int,
) -> FeatureOptions:
    """``FeatureOptions`` from keyword arguments (``joint`` may be a dict of ``JointOptions``)."""
    if isinstance(joint, Mapping):
        joint = JointOptions.from_dict(joint)
    images = ImageOptions(decode=decode_images, size=image_size)
    return FeatureOptions(max_vector=max_vector, images=images, joint=joint, max_keys=max_keys)


class Featurizer(ABC):
    """Maps a list of samples to a ``FeatureBatch`` (one entry per sample, in order).

    ``fingerprint`` is a stable sha256 hex of ``describe()`` and ``FEATURES_VERSION``: equal
    across processes and runs for the same featurization. ``schema`` maps every feature name
    seen so far to ``{"kind", "field"}``. ``errors`` counts values that could not be featurized.
    ``spec`` is the ``FeatureSpec`` that rebuilds this featurizer, or None when it cannot be
    written as JSON (user code).
    """

    errors: int = 0

    @abstractmethod
    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        """Featurize a batch of samples."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-safe description of the featurization (what the fingerprint hashes)."""

    @property
    def spec(self) -> Any:
        """The ``FeatureSpec`` that rebuilds this featurizer, or None."""
        return None

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the class name, ``describe()`` and ``FEATURES_VERSION``."""
        spec = {"featurizer": type(self).__name__, "version": FEATURES_VERSION}
        return digest({**spec, "spec": self.describe()})

    @property
    def state(self) -> FeaturizerState:
        """What this featurizer remembers between batches (created on first use)."""
        return self.__dict__.setdefault("_state", FeaturizerState())

    @property
    def schema(self) -> dict[str, dict[str, Any]]:
        """``{name: {"kind", "field"}}`` for every feature produced so far, sorted by name."""
        return {name: dict(info) for name, info in sorted(self.state.schema.items())}

    def run(
        self, samples: Sequence[Mapping[str, Any]], build: Callable[[BatchBuilder], None]
    ) -> FeatureBatch:
        """Check ``samples``, build a batch with ``build`` and return its columns."""
        if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
            raise TypeError(f"samples must be a list of dicts, got {type(samples).__name__}")
        for sample in samples:
            if not isinstance(sample, Mapping):
                raise TypeError(f"each sample must be a dict, got {type(sample).__name__}")
        batch = BatchBuilder(self, samples)
        if samples:
            build(batch)
        return batch.result()


def features_of_kind(
    batch: BatchBuilder,
    name: str,
    field: str,
    kind: str,
    values: list[Any],
    options: FeatureOptions,
) -> None:
    """Dispatch decoded values of one field (or JSON path) to the step for ``kind``."""
    if kind in ("vector", "summary", "array"):
        array_features(batch, name, field, values, kind, options.max_vector, options.joint)
    elif kind == "numeric":
        numeric_features(batch, name, field, values)
    elif kind == "categorical":
        categorical_features(batch, name, field, values)
    elif kind == "text":
        text_features(batch, name, field, values)
    elif kind == "json":
        json_features(batch, name, field, values, options.max_keys)
    else:
        image_features(batch, name, field, values, options.images)


def finish(batch: BatchBuilder, options: FeatureOptions) -> None:
    """Steps over a whole built batch: the joint projection of the listed numeric features."""
    if options.joint is not None:
        project_numeric(batch, options.joint)


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """Field names, each with a default featurizer; ``ValueError`` naming a bad one."""
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise ValueError(f"fields must be a list of field names, got {fields!r}")
    for name in fields:
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise ValueError(f"bad field name {name!r}")
        if default_kind(name) is None:
            raise ValueError(
                f"field {name!r} has no default featurizer; name it in a FeatureSpec "
                "or pass a callable"
            )
    return tuple(dict.fromkeys(fields))


class DefaultFeaturizer(Featurizer):
    """Infers features from each field's extension (see ``driftloader.features`` for names).

    ``fields`` restricts featurization to those fields (each must have a default featurizer);
    ``None`` featurizes every non-``__`` field and warns once per field it has to skip.
    Images are featurized by content (``decode_images``; ``image_size`` px analysis size),
    vectors get ``joint`` projections (``None`` turns them off), a JSON field makes at most
    ``max_keys`` features per shard.

    >>> batch = DefaultFeaturizer()([{"__key__": "a", "cls": b"3"}])
    >>> batch["cls"].values.tolist()
    ['3']
    """

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        max_vector: int = 64,
        decode_images: bool = True,
        *,
        image_size: int = 128,
        joint: JointOptions | Mapping[str, Any] | None = JointOptions(),  # noqa: B008 (frozen)
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.fields = None if fields is None else check_fields(fields)
        self.options = make_options(max_vector, decode_images, image_size, joint, max_keys)
        self.errors = 0

    @property
    def max_vector(self) -> int:
        return self.options.max_vector

    @property
    def decode_images(self) -> bool:
        return self.options.images.decode

    def describe(self) -> dict[str, Any]:
        fields = None if self.fields is None else sorted(self.fields)
        return {"fields": fields, **self.options.to_dict()}

    @property
    def spec(self) -> Any:
        from driftloader.features.spec import FeatureSpec

        return FeatureSpec.from_options(None, self.options, fields=self.fields)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self.run(samples, self._build)

    def _build(self, batch: BatchBuilder) -> None:
        fields = self.fields or dict.fromkeys(
            k for s in batch.samples for k in s if not k.startswith("__")
        )
        for name in fields:
            kind = default_kind(name)
            if kind is None:
                self._warn_skipped(name)
                continue
            raws = [s.get(name) for s in batch.samples]
            values = decode_all(batch, raws, DECODERS[decoder_name(name, kind)])
            features_of_kind(batch, name, name, kind, values, self.options)
        finish(batch, self.options)

    def _warn_skipped(self, name: str) -> None:
        if name not in self.state.warned:
            self.state.warned.add(name)
            warnings.warn(
                f"field {name!r} has no default featurizer; skipped", FeatureWarning, stacklevel=4
            )


class CallableFeaturizer(Featurizer):
    """Wraps ``fn(sample) -> {name: value}``: numbers -> numeric, str and bool -> categorical,
    None -> missing. Exceptions from ``fn`` raise ``FeaturizeError`` naming key and shard."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> None:
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.errors = 0

    def describe(self) -> dict[str, Any]:
        return {"callable": callable_identity(self.fn)}

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self.run(samples, self._build)

    def _row(self, batch: BatchBuilder, i: int) -> dict[str, Any]:
        try:
            row = self.fn(batch.samples[i])
        except Exception as e:
            raise batch.fail(
                i, f"featurizer {callable_identity(self.fn)['name']} failed: {e!r}"
            ) from e
        if not isinstance(row, Mapping):
            raise batch.fail(i, f"featurizer returned {type(row).__name__}, expected a dict")
        for name, value in row.items():
            if not isinstance(name, str):
                raise batch.fail(i, f"feature name {name!r} is not a str")
            if value is not None and value_kind(value) is None:
                raise batch.fail(i, f"feature {name!r}: unsupported value {type(value).__name__}")
        return {k: v for k, v in row.items() if v is not None}

    def _build(self, batch: BatchBuilder) -> None:
        rows: list[dict[str, Any] | None] = [self._row(batch, i) for i in range(batch.n)]
        records_features(batch, "", rows)


def featurizer_from(obj: Any) -> Featurizer:
    """None -> ``DefaultFeaturizer()``; a ``FeatureSpec`` -> its featurizer; a ``Featurizer`` ->
    itself; any other callable -> ``CallableFeaturizer(obj)``."""
    from driftloader.features.spec import FeatureSpec

    if obj is None:
        return DefaultFeaturizer()
    if isinstance(obj, Featurizer):
        return obj
    if isinstance(obj, FeatureSpec):
        return obj.featurizer()
    if callable(obj):
        return CallableFeaturizer(obj)
    raise ValueError(
        f"cannot make a featurizer from {obj!r}; pass None, a FeatureSpec or a callable"
    )
