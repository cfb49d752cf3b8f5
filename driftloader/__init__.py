"""driftloader: a drop-in WebDataset loader that keeps data-quality sketches per shard and version.

The names below are imported on first use, so that ``import driftloader`` (and the
``driftloader profile`` / ``check`` commands, and every profiling worker process) does not
pay for torch or scipy until a dataset or a drift test needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "DriftDataset": "dataset",
    "DriftConfig": "drift",
    "ShardDrift": "drift",
    "compare": "drift",
    "DriftloaderError": "errors",
    "FingerprintMismatch": "errors",
    "IncompatibleSketchError": "errors",
    "NoShardsError": "errors",
    "ProfileFormatError": "errors",
    "ReferenceNotFound": "errors",
    "DriftCallback": "monitoring",
    "DriftReport": "monitoring",
    "log_drift": "monitoring",
    "ShardReadError": "errors",
    "StorageUnreachable": "errors",
    "VersionMismatch": "errors",
    "EmbeddingFeaturizer": "features",
    "FeatureSpec": "features",
    "GateOptions": "gate",
    "ignore_and_continue": "handlers",
    "reraise_exception": "handlers",
    "warn_and_continue": "handlers",
    "Profile": "profile",
    "profile_shards": "profiling",
    "read_shard": "reader",
    "ReadOptions": "reader",
    "read_records": "records",
    "ServingMonitor": "serving",
    "Shard": "sources",
    "ProfileStore": "store",
}

__all__ = [
    "compare",
    "DriftCallback",
    "DriftReport",
    "log_drift",
    "DriftConfig",
    "DriftDataset",
    "DriftloaderError",
    "EmbeddingFeaturizer",
    "FeatureSpec",
    "FingerprintMismatch",
    "GateOptions",
    "ignore_and_continue",
    "IncompatibleSketchError",
    "NoShardsError",
    "Profile",
    "profile_shards",
    "ProfileFormatError",
    "ProfileStore",
    "read_records",
    "read_shard",
    "ReadOptions",
    "ReferenceNotFound",
    "reraise_exception",
    "ServingMonitor",
    "Shard",
    "ShardDrift",
    "ShardReadError",
    "StorageUnreachable",
    "VersionMismatch",
    "warn_and_continue",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'driftloader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .dataset import DriftDataset
    from .drift import DriftConfig, ShardDrift, compare
    from .errors import (
        DriftloaderError,
        FingerprintMismatch,
        IncompatibleSketchError,
        NoShardsError,
        ProfileFormatError,
        ReferenceNotFound,
        ShardReadError,
        VersionMismatch,
    )
    from .features import EmbeddingFeaturizer, FeatureSpec
    from .gate import GateOptions
    from .handlers import ignore_and_continue, reraise_exception, warn_and_continue
    from .monitoring import DriftCallback, DriftReport, log_drift
    from .profile import Profile
    from .profiling import profile_shards
    from .reader import ReadOptions, read_shard
    from .records import read_records
    from .serving import ServingMonitor
    from .sources import Shard
    from .store import ProfileStore
