"""driftloader: a drop-in WebDataset loader that keeps data-quality sketches per shard and version."""

from __future__ import annotations

__version__ = "0.1.0"

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
from .features import FeatureSpec
from .pipeline import ignore_and_continue, reraise_exception, warn_and_continue
from .profile import Profile
from .profiling import profile_shards
from .reader import read_shard
from .sources import Shard
from .store import ProfileStore

__all__ = [
    "DriftConfig",
    "FeatureSpec",
    "Profile",
    "ShardDrift",
    "compare",
    "DriftDataset",
    "DriftloaderError",
    "FingerprintMismatch",
    "IncompatibleSketchError",
    "NoShardsError",
    "ProfileFormatError",
    "ProfileStore",
    "ReferenceNotFound",
    "Shard",
    "ShardReadError",
    "VersionMismatch",
    "ignore_and_continue",
    "profile_shards",
    "read_shard",
    "reraise_exception",
    "warn_and_continue",
]
