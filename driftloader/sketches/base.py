"""The ``Sketch`` interface every sketch kind implements, and the registry that loads kinds by name.

Kinds are looked up by name in ``SKETCHES`` when loading, never imported from a dotted path in
data. Where to add a sketch kind: a module in this package with one ``Sketch`` subclass under
``@register_sketch``, imported by ``__init__.py``, and a ``SketchContract`` suite in
tests/test_sketches.py (the registry test fails until it has one).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np

from driftloader.errors import IncompatibleSketchError, ProfileFormatError

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

FORMAT = 1  # the format of kinds that never changed theirs (a kind's ``format`` says its own)

SKETCHES: dict[str, type[Sketch]] = {}

S = TypeVar("S", bound="type[Sketch]")


def register_sketch(cls: S) -> S:
    """Class decorator: make a sketch kind loadable by its ``kind`` name."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"sketch class {cls.__name__} needs a non-empty str 'kind', got {kind!r}")
    if SKETCHES.get(kind, cls) is not cls:
        raise ValueError(f"sketch kind {kind!r} is already registered by {SKETCHES[kind].__name__}")
    SKETCHES[kind] = cls
    return cls


def sketch_from_dict(d: Any) -> Sketch:
    """Load any registered sketch from its ``to_dict`` form, resolving ``d["kind"]``."""
    if not isinstance(d, dict):
        raise ProfileFormatError(f"a sketch must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    cls = SKETCHES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProfileFormatError(f"unknown sketch kind {kind!r}; known kinds: {sorted(SKETCHES)}")
    return cls.from_dict(d)


class Sketch(abc.ABC):
    """A mergeable summary of a stream of values with bounded memory.

    Subclasses implement ``update``, ``params``, ``_merge`` (other is compatible and non-empty),
    ``_state`` and ``_from_state``; the base class does compatibility checks and the JSON envelope.
    """

    kind: ClassVar[str]
    format: ClassVar[int] = FORMAT  # the format ``to_dict`` writes
    reads: ClassVar[tuple[int, ...]] = (FORMAT,)  # the formats ``from_dict`` accepts
    n: int

    @abc.abstractmethod
    def update(self, batch: np.ndarray) -> Self:
        """Add a batch of values (vectorised); returns self."""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Parameters that must be equal for two sketches to merge."""

    @abc.abstractmethod
    def _merge(self, other: Self) -> None:
        """Merge a compatible, non-empty sketch of the same class into self."""

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-safe state besides kind, format and params."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        """Rebuild from ``params`` and ``_state`` output (``d["format"]`` is one of ``reads``);
        may raise KeyError/TypeError/ValueError."""

    def merge(self, other: Sketch) -> Self:
        """Merge ``other`` into self in place; an empty ``other`` is a no-op."""
        self._check_compatible(other)
        if other.n:
            self._merge(other)  # type: ignore[arg-type]
        return self

    def merge_many(self, others: Iterable[Sketch]) -> Self:
        """Merge several sketches into self; kinds may override with a vectorised version."""
        for other in others:
            self.merge(other)
        return self

    def _check_compatible(self, other: Sketch) -> None:
        if type(other) is not type(self) or other.params() != self.params():
            raise IncompatibleSketchError(
                f"cannot merge {self.kind}{self.params()} with "
                f"{getattr(other, 'kind', type(other).__name__)}"
                f"{other.params() if isinstance(other, Sketch) else ''}: kinds and parameters "
                "must match (build both with the same ProfileConfig)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with ``kind`` and ``format``; ``json.dumps(allow_nan=False)`` works."""
        return {"kind": self.kind, "format": self.format, "params": self.params(), **self._state()}

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        """Rebuild a sketch from ``to_dict`` output; ProfileFormatError on malformed input."""
        if not isinstance(d, dict):
            raise ProfileFormatError(
                f"{cls.kind} sketch must be a JSON object, got {type(d).__name__}"
            )
        if d.get("kind") != cls.kind:
            raise ProfileFormatError(f"expected a {cls.kind!r} sketch, got kind {d.get('kind')!r}")
        if d.get("format") not in cls.reads or isinstance(d.get("format"), bool):
            raise ProfileFormatError(
                f"unknown {cls.kind} sketch format {d.get('format')!r} (this driftloader reads "
                f"formats {list(cls.reads)}); upgrade driftloader or rebuild the profile"
            )
        params = d.get("params")
        if not isinstance(params, dict):
            raise ProfileFormatError(f"{cls.kind} sketch has no 'params' object")
        try:
            return cls._from_state(params, d)
        except ProfileFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError) as e:
            raise ProfileFormatError(f"malformed {cls.kind} sketch: {type(e).__name__}: {e}") from e

    def copy(self) -> Self:
        """An independent copy (through the JSON form, so it is exactly what a reload gives)."""
        return type(self).from_dict(self.to_dict())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args}; n={self.n})"
