"""Drift detection: comparing a shard's profile with a reference, and weighing its samples.

``compare`` (compare.py) runs the tests registered per feature kind (registry.py: numeric.py,
categorical.py) under one ``DriftConfig`` (config.py) and returns a ``ShardDrift``; the tests
read their sketches through views.py and compute with stats.py. ``importance_weights``
(weights.py) serves the weighting policies.
"""

from driftloader.drift.compare import compare
from driftloader.drift.config import DriftConfig, FeatureDrift, ShardDrift
from driftloader.drift.registry import (
    DRIFT_TESTS,
    FEATURE_PAIRS,
    DriftTest,
    register_pair,
    register_test,
)
from driftloader.drift.stats import Evidence, adjust_pvalues, rejection_cut
from driftloader.drift.weights import effective_sample_size, importance_weights

__all__ = [
    "DRIFT_TESTS",
    "FEATURE_PAIRS",
    "DriftConfig",
    "DriftTest",
    "Evidence",
    "FeatureDrift",
    "ShardDrift",
    "adjust_pvalues",
    "compare",
    "effective_sample_size",
    "importance_weights",
    "register_pair",
    "register_test",
    "rejection_cut",
]
