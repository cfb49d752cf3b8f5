"""Exceptions. Each subclasses our base and the builtin a caller would naturally catch."""

from __future__ import annotations


class DriftloaderError(Exception):
    """Base class of every error driftloader raises on purpose."""


class ShardReadError(DriftloaderError, OSError):
    """A shard could not be read: missing, unreachable, corrupt or truncated."""

    def __init__(self, url: str, message: str, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{url}{where}: {message}")
        self.url = url
        self.offset = offset


class NoShardsError(DriftloaderError, ValueError):
    """A URL pattern, glob or manifest expanded to no shard at all."""


class IncompatibleSketchError(DriftloaderError, ValueError):
    """Two sketches of different kinds or parameters cannot be merged."""


class ProfileFormatError(DriftloaderError, ValueError):
    """A stored profile or sketch is not valid JSON of a known format."""


class FingerprintMismatch(DriftloaderError, ValueError):
    """Profiles were featurized differently and cannot be merged or compared."""


class ReferenceNotFound(DriftloaderError, LookupError):
    """The named reference profile does not exist in the store."""


class VersionMismatch(DriftloaderError, ValueError):
    """A pinned shard version no longer matches what storage holds."""


class StoreReadOnlyError(DriftloaderError, PermissionError):
    """The profile store cannot be written: opened ``read_only``, or it refused a write."""


class StorageUnreachable(DriftloaderError, ConnectionError):
    """Storage could not be reached at all (no connection, no credentials); the message says
    what to set (``AWS_ENDPOINT_URL``, ``storage_options``, credentials)."""


class StoreTimeoutError(DriftloaderError, TimeoutError):
    """A profile store operation did not finish within the store's ``timeout``."""


class EmptyShardError(DriftloaderError, ValueError):
    """A shard is a valid tar with no samples: nothing to profile or compare (a data error)."""
