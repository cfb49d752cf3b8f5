"""Joint features: seeded random unit projections (sliced distributions) of vectors, so that a
change in how coordinates move together (a correlation flip with unchanged marginals) shows in
plain numeric features that the usual sketches, tests and effect floors handle.

Names: ``joint:<field>/dir<j>`` for the projections of a vector field (``x.npy``, an embedding)
and ``joint:numeric/dir<j>`` for the numeric features listed in ``JointOptions.numeric``.
``joint_name_parts`` parses them back, so a report can say "joint: x.npy (directions 3, 7)".

Standardisation (recorded in the fingerprint): a projection of raw coordinates is dominated by
the coordinates of largest scale, so each coordinate is divided by a fixed per-featurizer scale
taken from ``JointOptions.scales`` (1 when absent; ``joint_scales(reference, names)`` derives
them from a reference profile's standard deviations). Centering is not needed: a constant shift
of a projection changes none of the drift tests, which compare shapes against the reference's own
spread. The scales are part of the featurizer, never estimated from the shard being profiled,
since that would hide the drift it has to show.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloader.features.base import BatchBuilder, check_flag, check_int

JOINT_PREFIX = "joint:"
NUMERIC_GROUP = "numeric"
_NAME = re.compile(r"^joint:(?P<group>.+)/dir(?P<j>\d+)$")


@dataclass(frozen=True)
class JointOptions:
    """How joint projections are made.

    ``k`` directions per vector field (0 turns them off), drawn from ``seed``; vectors narrower
    than ``min_width`` get none. ``scales`` maps a vector field to one scale per coordinate, or a
    numeric feature name to its scale. ``numeric`` lists numeric features projected together as
    ``joint:numeric``; a sample missing any of them has that projection missing.
    """

    k: int = 8
    seed: int = 0
    min_width: int = 2
    scales: Mapping[str, Any] = field(default_factory=dict)
    numeric: tuple[str, ...] = ()
    vectors: bool = True

    def __post_init__(self) -> None:
        check_int("joint k", self.k, 0)
        check_int("joint seed", self.seed, 0)
        check_int("joint min_width", self.min_width, 2)
        check_flag("joint vectors", self.vectors)
        if not isinstance(self.scales, Mapping):
            raise ValueError(f"joint scales must be a dict, got {self.scales!r}")
        scales = {}
        for name, scale in self.scales.items():
            arr = np.asarray(scale, dtype=np.float64).reshape(-1)
            if not isinstance(name, str) or arr.size == 0 or not np.all(arr > 0):
                raise ValueError(f"joint scale for {name!r} must be positive numbers: {scale!r}")
            scales[name] = [float(x) for x in arr]
        object.__setattr__(self, "scales", scales)
        if isinstance(self.numeric, str) or not all(isinstance(n, str) for n in self.numeric):
            raise ValueError(f"joint numeric must be a list of feature names: {self.numeric!r}")
        object.__setattr__(self, "numeric", tuple(dict.fromkeys(self.numeric)))
        if len(self.numeric) == 1:
            raise ValueError("joint numeric needs at least two feature names")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the fingerprint hashes it)."""
        return {
            "k": self.k,
            "seed": self.seed,
            "min_width": self.min_width,
            "scales": dict(sorted(self.scales.items())),
            "numeric": list(self.numeric),
            "vectors": self.vectors,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JointOptions:
        if not isinstance(d, Mapping):
            raise ValueError(f"joint options must be a dict, got {d!r}")
        unknown = set(d) - {"k", "seed", "min_width", "scales", "numeric", "vectors"}
        if unknown:
            raise ValueError(f"unknown joint options {sorted(unknown)}")
        return cls(**{**d, "numeric": tuple(d.get("numeric", ()))})

    def directions(self, group: str, width: int) -> np.ndarray:
        """The ``(k, width)`` unit directions of a group (a field, or ``"numeric"``), read-only."""
        return _directions(self.seed, self.k, group, width)

    def scale_of(self, group: str, names: Sequence[str] | None, width: int) -> np.ndarray:
        """Per-coordinate scales for a group (1 where none is recorded)."""
        if names is not None:
            return np.array([self.scales.get(n, [1.0])[0] for n in names])
        scale = self.scales.get(group)
        if scale is None:
            return np.ones(width)
        if len(scale) != width:
            return np.resize(np.asarray(scale), width)
        return np.asarray(scale)


@functools.lru_cache(maxsize=64)
def _directions(seed: int, k: int, group: str, width: int) -> np.ndarray:
    """Made once per process for each (seed, k, group, width), not per batch: a generator
    seeded from a hash costs ~0.1 ms, as much as projecting a small batch."""
    key = f"{seed}/{group}/{width}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    dirs = rng.standard_normal((k, width))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs.flags.writeable = False  # shared by every caller
    return dirs


def joint_name(group: str, j: int) -> str:
    """``joint:<group>/dir<j>``."""
    return f"{JOINT_PREFIX}{group}/dir{j}"


def joint_name_parts(name: str) -> tuple[str, int] | None:
    """``"joint:x.npy/dir3"`` -> ``("x.npy", 3)``; None for any other feature name."""
    m = _NAME.match(name)
    return None if m is None else (m["group"], int(m["j"]))


def _dot(rows: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """``rows @ dirs.T`` summed in a fixed order, so a row's projection does not depend on the
    other rows of its batch (BLAS may round differently by batch size)."""
    out = np.zeros((rows.shape[0], dirs.shape[0]))
    for c in range(rows.shape[1]):
        out += rows[:, c : c + 1] * dirs[:, c]
    return out


def joint_labels(names: Iterable[str]) -> list[str]:
    """Human labels for the joint features among ``names``, one per group, in first-seen order:
    ``["joint:x.npy/dir7", "joint:x.npy/dir3"]`` -> ``["joint: x.npy (directions 3, 7)"]``."""
    groups: dict[str, list[int]] = {}
    for name in names:
        parts = joint_name_parts(name)
        if parts is not None:
            groups.setdefault(parts[0], []).append(parts[1])
    out = []
    for group, dirs in groups.items():
        label = "direction" if len(set(dirs)) == 1 else "directions"
        out.append(f"joint: {group} ({label} {', '.join(map(str, sorted(set(dirs))))})")
    return out


def project(
    batch: BatchBuilder,
    options: JointOptions,
    group: str,
    rows: np.ndarray,
    mask: np.ndarray,
    names: Sequence[str] | None = None,
) -> None:
    """Add ``k`` projection columns of ``rows`` (n, width); a row with any masked or non-finite
    coordinate has every projection missing."""
    width = rows.shape[1]
    if options.k == 0 or width < options.min_width:
        return
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = rows / options.scale_of(group, names, width)
        bad = mask.any(axis=1) | ~np.isfinite(scaled).all(axis=1)
        scaled[bad] = 0.0
        projected = _dot(scaled, options.directions(group, width))
    for j in range(options.k):
        batch.numeric(joint_name(group, j), group, projected[:, j], bad)


def project_numeric(batch: BatchBuilder, options: JointOptions) -> None:
    """The ``joint:numeric`` projections of the listed numeric features of a finished batch."""
    if not options.numeric or options.k == 0:
        return
    rows = np.zeros((batch.n, len(options.numeric)))
    mask = np.ones((batch.n, len(options.numeric)), dtype=bool)
    for c, name in enumerate(options.numeric):
        column = batch.columns.get(name)
        if column is not None and column.kind == "numeric":
            rows[:, c] = column.values.filled(0.0)
            mask[:, c] = np.ma.getmaskarray(column.values)
    project(batch, options, NUMERIC_GROUP, rows, mask, names=options.numeric)


def joint_scales(reference: Any, names: Sequence[str]) -> dict[str, float]:
    """Scales for ``JointOptions.scales`` from a reference profile: each numeric feature's
    standard deviation (1 where it is 0 or unknown). For a vector field ``f`` pass
    ``[f"{f}[{i}]" for i in range(width)]`` and store the list under ``f``."""
    out = {}
    for name in names:
        moments, _ = reference.numeric(name)
        std = float(np.sqrt(moments.var)) if moments.count > 1 else 0.0
        out[name] = std if np.isfinite(std) and std > 0 else 1.0
    return out
