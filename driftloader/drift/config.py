"""The settings and results of drift detection: ``DriftConfig``, ``FeatureDrift``, ``ShardDrift``.

Every threshold is explained in ``DriftConfig``'s docstring and measured by
``benchmarks/detection.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from driftloader.sketches import encode_float

Correction = Literal["bonferroni", "bh"]

_BOOL_FIELDS = ("metadata",)


def _checked_floors(floors: Any) -> Mapping[str, float]:
    """A read-only copy of ``floors`` after checking every floor is a positive number."""
    if not isinstance(floors, Mapping):
        raise ValueError(f"DriftConfig.floors must be a mapping of metric -> floor, got {floors!r}")
    for metric, value in floors.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"DriftConfig.floors[{metric!r}] must be a positive number, got {value!r}"
            )
    return dict(floors)


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of ``compare``. Defaults are measured by ``benchmarks/detection.py``.

    alpha: 0.01 family-wise over all tests of a shard (~60 for 18 numeric features, a category
        and a text; rate tests with no event on either side cannot reject and are not counted).
        Measured false alarms stay <= 1% of in-distribution shards; 0.05 would skip ~1 in 20.
    correction: "bonferroni" (valid under any dependence between tests; the tests of one feature
        are correlated) or "bh" (Benjamini-Hochberg: controls the false discovery rate, more
        power when many features drift at once; under no drift it also bounds false alarms).
    ks_floor: 0.1 in Wasserstein-1 / reference std, the effect of the KS test (significance comes
        from the KS distance). W1 of a shift of s sigma is s sigma for any shape, so the floor sits
        between 0.05 and 0.25 sigma like mean_floor; x1.3 spread of a normal has W1 ~ 0.24 sigma.
        Same value as Evidently's Wasserstein threshold.
    mean_floor: 0.1 reference standard deviations, half-way (geometrically) between 0.05 and 0.25
        sigma; the same value Evidently uses for Wasserstein / std.
    scale_floor: 0.1 in |log spread ratio|, i.e. spread changed by more than ~10%; x1.3 is 0.26.
    rate_floor: 0.005 absolute change of the missing / NaN / inf rate: 1% NaN where the reference
        has none must be caught (10 of 1,000 samples), 0.1% on a huge shard need not be.
    chi2_floor: 0.1 Cohen's w (sqrt of the chi-square distance between category distributions,
        bias-corrected). A location shift of delta sigma has w ~ delta, so 0.1 matches mean_floor;
        a class going 10% -> 17% has w ~ 0.23.
    token_floor: 0.1 Cohen's w over token buckets, for the same reason as chi2_floor.
    bins: 20 reference-quantile bins for PSI / Jensen-Shannon and for importance weights: every bin
        holds ~50 samples of a 1,000-sample shard, enough for a stable density ratio.
    grid: 2048 quantile points per sketch for KS and the spread integral; finer than any KLL
        sketch of default k resolves, so the grid adds no error of its own.
    min_samples: 50 finite values on both sides before distribution tests run: the asymptotic
        z and chi-square p-values are unreliable below that. Rate tests are exact and always run.
    min_expected: 5 expected counts per chi-square cell (the usual rule); sparser cells are pooled.
    token_dispersion: 1.0 divides the token chi-square. Tokens of one document are not independent
        in real text (bursty words); set 1.5-3 on such corpora. 1.0 assumes independent tokens.
    schema_score: 10.0, the score of a shard whose feature set differs from the reference: a
        feature appearing or vanishing is stronger evidence than any borderline test.
    score_cap: 1000.0 caps scores so they stay finite and plottable (JSON has no inf).
    floors: {} overrides effect floors by metric name, for tests registered in
        ``driftloader.drift.registry`` without a field here (``{"my_metric": 0.2}``); it wins
        over the named fields above (a copy is kept; the config hashes by its content).
    metadata: True flags metadata drift: a shard whose metadata declares a ``source`` or a
        preprocessing fingerprint outside the reference's sets (``reference.meta["sources"]`` /
        ``["preprocessing"]``, recorded by ``ProfileStore.build_reference``). A shard without
        metadata, or a reference without these sets, is never flagged for it: unknown is not drift.
    """

    alpha: float = 0.01
    correction: Correction = "bonferroni"
    ks_floor: float = 0.1
    mean_floor: float = 0.1
    scale_floor: float = 0.1
    rate_floor: float = 0.005
    chi2_floor: float = 0.1
    token_floor: float = 0.1
    bins: int = 20
    grid: int = 2048
    min_samples: int = 50
    min_expected: float = 5.0
    token_dispersion: float = 1.0
    schema_score: float = 10.0
    score_cap: float = 1000.0
    metadata: bool = True
    floors: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"DriftConfig.alpha must be in (0, 1), got {self.alpha!r}")
        if self.correction not in ("bonferroni", "bh"):
            raise ValueError(
                f"DriftConfig.correction must be 'bonferroni' or 'bh', got {self.correction!r}"
            )
        object.__setattr__(self, "floors", _checked_floors(self.floors))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("alpha", "correction", "floors"):
                continue
            if f.name in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ValueError(f"DriftConfig.{f.name} must be a bool, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"DriftConfig.{f.name} must be a positive number, got {value!r}")
        for name in ("bins", "grid", "min_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(
                    f"DriftConfig.{name} must be an int >= 2, got {getattr(self, name)!r}"
                )

    def __hash__(self) -> int:
        values = [getattr(self, f.name) for f in fields(self) if f.name != "floors"]
        return hash((*values, tuple(sorted(self.floors.items()))))

    def floor(self, metric: str) -> float:
        """The effect floor of a test metric: ``floors[metric]`` if given, else what the
        metric's registry line names (a field of this config such as ``ks_floor``, or a number)."""
        from driftloader.drift.registry import floor_of  # the registry imports this module

        return floor_of(metric, self)


@dataclass
class FeatureDrift:
    """The deciding test of one feature (the one with the highest score).

    ``p_value`` is multiplicity-adjusted (compare it with ``alpha``); ``detail["tests"]`` holds
    every test of the feature with its raw, weighted and adjusted p-values, effect and floor.
    """

    name: str
    kind: str
    metric: str
    value: float
    effect: float
    p_value: float
    drifted: bool
    detail: dict = field(default_factory=dict)
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no detail)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "value": encode_float(self.value),
            "effect": encode_float(self.effect),
            "p_value": encode_float(self.p_value),
            "score": encode_float(self.score),
            "drifted": self.drifted,
        }


@dataclass
class ShardDrift:
    """Result of comparing one shard profile with a reference.

    ``score`` is >= 1 exactly when ``drifted``; ``schema`` lists features ``missing`` from the
    shard, ``new`` in it, or whose ``kind`` changed, and under ``"metadata"`` the shard's
    ``source`` / ``preprocessing`` not seen in the reference (``{"source": "new-src"}``).
    """

    url: str | None
    version: str | None
    n: int
    drifted: bool
    score: float
    features: list[FeatureDrift]
    schema: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list[FeatureDrift]:
        """The ``k`` features with the highest score (most drifted first)."""
        return sorted(self.features, key=lambda f: (-f.score, -f.effect, f.name))[:k]

    def to_dict(self) -> dict[str, Any]:
        """The ``check --json`` shape: url, version, n, drifted, score, features, schema."""
        return {
            "url": self.url,
            "version": self.version,
            "n": self.n,
            "drifted": self.drifted,
            "score": encode_float(self.score),
            "features": [f.to_dict() for f in self.top(len(self.features))],
            "schema": {
                k: dict(v) if isinstance(v, dict) else list(v) for k, v in self.schema.items()
            },
        }
