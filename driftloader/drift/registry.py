"""The registry of drift tests: which tests run on a feature of each kind, and their effect floors.

Where to add a drift test: write ``def my_test(pair, cfg) -> Evidence | None`` (``None`` when it
does not apply, e.g. too few samples) beside the tests of its feature kind, and add one line to
``DRIFT_TESTS`` below (or call ``register_test`` from outside the package). The line names the
kind, the metric (its name in results), the function, and the effect floor: a number, or the
name of the ``DriftConfig`` field that holds it. ``DriftConfig(floors={"metric": x})`` overrides
any floor. Tests of one kind run in the order of their lines.

Where to add a feature kind: a pair class ``(name, shard, reference, cfg)`` that reads the
kind's sketches from both profiles (``FEATURE_PAIRS``), then its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftloader.drift import categorical, numeric
from driftloader.drift.config import DriftConfig
from driftloader.drift.stats import Evidence
from driftloader.profile import Profile

PairBuilder = Callable[[str, Profile, Profile, DriftConfig], Any]


@dataclass(frozen=True)
class DriftTest:
    """One registered test: ``run(pair, cfg)`` on the features of ``kind``, reported as ``metric``.

    ``floor`` is the effect floor: a number, or the name of the ``DriftConfig`` field holding it.
    """

    kind: str
    metric: str
    run: Callable[[Any, DriftConfig], Evidence | None]
    floor: float | str


DRIFT_TESTS: list[DriftTest] = [
    DriftTest("numeric", "missing", numeric.missing_rate, floor="rate_floor"),
    DriftTest("numeric", "nan", numeric.nan_rate, floor="rate_floor"),
    DriftTest("numeric", "inf", numeric.inf_rate, floor="rate_floor"),
    DriftTest("numeric", "ks", numeric.ks_test, floor="ks_floor"),
    DriftTest("numeric", "mean", numeric.mean_test, floor="mean_floor"),
    DriftTest("numeric", "scale", numeric.scale_test, floor="scale_floor"),
    DriftTest("categorical", "missing", categorical.missing_rate, floor="rate_floor"),
    DriftTest("categorical", "chi2", categorical.chi2_test, floor="chi2_floor"),
    DriftTest("tokens", "missing", categorical.missing_rate, floor="rate_floor"),
    DriftTest("tokens", "tokens", categorical.token_test, floor="token_floor"),
]

FEATURE_PAIRS: dict[str, PairBuilder] = {
    "numeric": numeric.NumericPair,
    "categorical": categorical.CategoricalPair,
    "tokens": categorical.TokenPair,
}


def register_test(test: DriftTest) -> DriftTest:
    """Add a test after the others of its kind. A metric keeps one floor across kinds."""
    if not isinstance(test, DriftTest):
        raise ValueError(f"register_test needs a DriftTest, got {test!r}")
    if test.kind not in FEATURE_PAIRS:
        raise ValueError(f"no feature kind {test.kind!r}; known kinds: {sorted(FEATURE_PAIRS)}")
    _check_floor(test.floor)
    for known in DRIFT_TESTS:
        if (known.kind, known.metric) == (test.kind, test.metric):
            raise ValueError(f"a {test.kind} test {test.metric!r} is already registered")
        if known.metric == test.metric and known.floor != test.floor:
            raise ValueError(
                f"metric {test.metric!r} already has the floor {known.floor!r}, not {test.floor!r}"
            )
    DRIFT_TESTS.append(test)
    return test


def register_pair(kind: str, builder: PairBuilder) -> None:
    """Make feature ``kind`` testable: ``builder(name, shard, reference, cfg)`` is the pair
    its tests read."""
    if not isinstance(kind, str) or not kind or kind in FEATURE_PAIRS:
        raise ValueError(f"feature kind must be a new non-empty str, got {kind!r}")
    FEATURE_PAIRS[kind] = builder


def tests_of(kind: str) -> list[DriftTest]:
    """The tests of feature ``kind``, in registry order."""
    return [t for t in DRIFT_TESTS if t.kind == kind]


def floor_of(metric: str, cfg: DriftConfig) -> float:
    """The effect floor of ``metric`` under ``cfg``: ``cfg.floors`` first, then the registry."""
    if metric in cfg.floors:
        return cfg.floors[metric]
    for test in DRIFT_TESTS:
        if test.metric == metric:
            return getattr(cfg, test.floor) if isinstance(test.floor, str) else test.floor
    raise KeyError(f"no drift test reports metric {metric!r}")


def _check_floor(floor: Any) -> None:
    if isinstance(floor, str):
        if floor not in DriftConfig.__dataclass_fields__:
            raise ValueError(f"floor {floor!r} is not a DriftConfig field")
    elif isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
        raise ValueError(f"floor must be a positive number or a DriftConfig field, got {floor!r}")
