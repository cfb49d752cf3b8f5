"""Shard versions: the one parser and writer of the ``v:`` / ``e:`` / ``s:`` version strings.

A shard's version is a string that changes when its bytes change. It keys profiles, decisions,
snapshots and catalog rows, so its text form is stable and stored:

- ``v:<VersionId>``: an S3 object version (a versioned bucket); reads can ask for exactly it;
- ``e:<ETag>``: the object's ETag (no versioning); reads can require it with ``If-Match``;
- ``s:<size>-<mtime>``: a file's size and modification time (local and other filesystems).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = {"v": "version_id", "e": "etag", "s": "size_mtime"}
_PREFIXES = {kind: prefix for prefix, kind in KINDS.items()}


@dataclass(frozen=True)
class ShardVersion:
    """A parsed shard version. ``str(version)`` is its stored text form."""

    kind: str  # one of KINDS' values
    value: str

    @classmethod
    def parse(cls, text: str | None) -> ShardVersion | None:
        """The version in ``text`` (``"v:..."``, ``"e:..."``, ``"s:..."``); None for None.

        Raises ``ValueError`` naming the text when it has no known prefix.
        """
        if text is None:
            return None
        prefix, sep, value = str(text).partition(":")
        if not sep or prefix not in KINDS:
            raise ValueError(f"not a shard version (v:, e: or s:): {text!r}")
        return cls(KINDS[prefix], value)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ShardVersion | None:
        """From an fsspec ``info()`` dict or S3 response: VersionId, else ETag, else size+mtime."""
        version_id = info.get("VersionId") or info.get("version_id")
        if version_id and version_id != "null":
            return cls("version_id", str(version_id))
        etag = info.get("ETag") or info.get("etag")
        if etag:
            return cls("etag", str(etag).strip('"'))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        size = info.get("size")
        if size is None and mtime is None:
            return None
        return cls.of_file(size, mtime)

    @classmethod
    def of_file(cls, size: int | None, mtime: float | None) -> ShardVersion:
        """A ``s:`` version from a file's size and modification time."""
        return cls("size_mtime", file_version(size, mtime)[2:])

    def __str__(self) -> str:
        return f"{_PREFIXES[self.kind]}:{self.value}"

    @property
    def version_id(self) -> str | None:
        """The S3 VersionId of a ``v:`` version, else None."""
        return self.value if self.kind == "version_id" else None

    @property
    def etag(self) -> str | None:
        """The ETag (without quotes) of an ``e:`` version, else None."""
        return self.value if self.kind == "etag" else None


def file_version(size: int | None, mtime: float | None) -> str:
    """The text of a file's ``s:`` version (``ShardVersion.of_file``'s), made directly: a
    listing of 100k local shards makes 100k of them."""
    return f"s:{size}-{mtime if mtime is None else repr(float(mtime))}"


def version_id_of(text: str | None) -> str | None:
    """The S3 VersionId in a version string (``"v:abc"`` -> ``"abc"``), else None."""
    version = ShardVersion.parse(text)
    return version.version_id if version is not None else None
