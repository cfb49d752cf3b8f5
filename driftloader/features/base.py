"""The shared vocabulary of featurization: columns, errors, options and the batch under construction.

Every feature-kind module (fields, arrays, text, images, joint) writes its columns into a
``BatchBuilder``; featurizers own one per call and hand back its ``FeatureBatch``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from driftloader.errors import DriftloaderError

if TYPE_CHECKING:
    from driftloader.features.featurizers import Featurizer

Kind = Literal["numeric", "categorical", "tokens"]

FEATURES_VERSION = "2"
"""Bump when any featurization changes its output: it is part of every fingerprint."""

ARRAY_EXTENSIONS = frozenset({"npy"})
LABEL_EXTENSIONS = frozenset({"cls", "cls2", "class", "index", "label", "target"})
JSON_EXTENSIONS = frozenset({"json"})
TEXT_EXTENSIONS = frozenset({"txt", "text", "caption", "title"})
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "ppm", "bmp"})


@dataclass(frozen=True)
class Column:
    """One feature over a batch of samples.

    numeric: float64 ``np.ma.MaskedArray`` (masked = missing; NaN and inf kept as values);
    categorical: object array of ``str`` (``None`` = missing);
    tokens: object array of text ``str`` (``None`` = missing).
    """

    kind: Kind
    values: np.ndarray


FeatureBatch = dict[str, Column]


class FeaturizeError(DriftloaderError, ValueError):
    """User featurization code failed on a sample; names the sample key and its shard URL."""

    def __init__(self, key: str | None, url: str | None, message: str) -> None:
        super().__init__(f"sample {key!r} of shard {url!r}: {message}")
        self.key = key
        self.url = url


class FeatureWarning(UserWarning):
    """A field was skipped or capped by the default featurizer (warned once per field)."""


def digest(obj: Any) -> str:
    """sha256 hex of canonical JSON: stable across processes (never Python's salted hash)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def callable_identity(fn: Callable[..., Any]) -> dict[str, str]:
    """Qualified name and a hash of the source text (or bytecode) of ``fn``, for fingerprints."""
    if isinstance(fn, functools.partial):
        inner = callable_identity(fn.func)
        extra = repr((fn.args, sorted(fn.keywords.items())))
        return {"name": f"partial({inner['name']})", "source": digest([inner["source"], extra])}
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        source = code.co_code.hex() if code is not None else ""
    return {"name": name, "source": hashlib.sha256(source.encode("utf-8")).hexdigest()}


def extension(field: str) -> str:
    """The type part of a field name: the last dotted part, lower case (``"x.npy"`` -> ``npy``)."""
    return field.rsplit(".", 1)[-1].lower()


def as_bytes(raw: Any) -> bytes | bytearray | memoryview:
    """The bytes of a raw field value (``str`` is UTF-8 encoded)."""
    if isinstance(raw, (bytes, bytearray)):
        return raw
    if isinstance(raw, memoryview):
        return raw.cast("B")
    if isinstance(raw, str):
        return raw.encode("utf-8")
    raise TypeError(f"expected bytes, got {type(raw).__name__}")


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` if it is an int >= ``low``; ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool; ``ValueError`` naming it otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


@dataclass
class FeaturizerState:
    """What a featurizer remembers between batches: its error count, the kind of every feature
    seen, which fields it warned about, and the JSON keys admitted per (shard, field)."""

    errors: int = 0
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    shard: str | None = None
    admitted: dict[str, dict[str, None]] = field(default_factory=dict)

    def keys_of(self, shard: str | None, field_name: str) -> dict[str, None]:
        """The admitted feature names of a field in the current shard (reset at a new shard)."""
        if shard != self.shard:
            self.shard = shard
            self.admitted = {}
        return self.admitted.setdefault(field_name, {})


class BatchBuilder:
    """The columns of one batch under construction; errors and kinds go to the featurizer."""

    def __init__(self, featurizer: Featurizer, samples: Sequence[Mapping[str, Any]]) -> None:
        self.featurizer = featurizer
        self.state: FeaturizerState = featurizer.state
        self.samples = samples
        self.n = len(samples)
        self.shard = samples[0].get("__url__") if samples else None
        self.columns: dict[str, Column] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def error(self, k: int = 1) -> None:
        """Count ``k`` values that could not be featurized."""
        self.featurizer.errors += k

    def known_kind(self, name: str) -> str | None:
        """The kind a feature had in an earlier batch, if any."""
        return self.state.schema.get(name, {}).get("kind")

    def fail(self, i: int, message: str) -> FeaturizeError:
        """A ``FeaturizeError`` naming sample ``i``."""
        sample = self.samples[i]
        return FeaturizeError(sample.get("__key__"), sample.get("__url__"), message)

    def numeric(self, name: str, field_name: str, data: np.ndarray, mask: np.ndarray) -> None:
        """Add a numeric column (``mask`` True = missing)."""
        values = np.ma.MaskedArray(np.asarray(data, dtype=np.float64), mask=mask)
        self.add(name, field_name, Column("numeric", values))

    def objects(self, kind: Kind, name: str, field_name: str, values: list[str | None]) -> None:
        """Add a categorical or tokens column (``None`` = missing)."""
        arr = np.empty(self.n, dtype=object)
        arr[:] = values
        self.add(name, field_name, Column(kind, arr))

    def add(self, name: str, field_name: str, column: Column) -> None:
        self.columns[name] = column
        self.info[name] = {"kind": column.kind, "field": field_name}

    def result(self) -> FeatureBatch:
        """The finished batch, sorted by name; records every feature's kind."""
        for name, info in self.info.items():
            self.state.schema.setdefault(name, info)
        return {name: self.columns[name] for name in sorted(self.columns)}


def decode_all(batch: BatchBuilder, values: list[Any], decoder: Callable[[Any], Any]) -> list[Any]:
    """Decode every present value; a failure counts one error and leaves the entry missing."""
    out: list[Any] = [None] * len(values)
    for i, raw in enumerate(values):
        if raw is None:
            continue
        try:
            out[i] = decoder(raw)
        except Exception:  # our own decoders on untrusted bytes: count, never crash
            batch.error()
    return out


def transform_all(
    batch: BatchBuilder, key: str, values: list[Any], fn: Callable[[Any], Any]
) -> list[Any]:
    """Apply a user transform; its exceptions become ``FeaturizeError`` naming the sample."""
    out: list[Any] = [None] * len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = fn(value)
        except Exception as e:
            raise batch.fail(i, f"transform of {key!r} failed: {e!r}") from e
    return out
