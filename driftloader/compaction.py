"""Compacting many small store records into one JSON-lines file that is read in one request.

New records always land as small objects of their own (one per key), so concurrent writers
never overwrite each other's work. Compaction folds them into one file per kind, beside them:

    catalog/compacted.jsonl                    every catalog row (``CatalogRow.to_dict`` each)
    decisions/<reference>/<context>/index.jsonl  the decision index (``decisions.py``)

and then deletes the small objects it folded in, each only if it is unchanged since it was
read (a writer that merged new fields into it meanwhile keeps its object). A reader reads the
compacted file (one GET) and the small objects written since (one listing, one batched ``cat``).

``ProfileStore.catalog`` / ``compact_catalog`` (store.py) and ``decisions.py`` use these;
``decisions.compact_store`` is what ``driftloader compact`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .catalog import CatalogRow
from .errors import ProfileFormatError
from .store_files import MAX_JSON_DEPTH, StoreFiles, json_depth

MAX_COMPACTED_BYTES = 4 * 2**30
"""The largest compacted file read (bytes): ~1 KB per catalog row, so about four million rows."""
CATALOG_FILE = "compacted.jsonl"
COMPACT_OVER = 2000
"""Small records past which ``check`` compacts on its own (``driftloader compact`` any time)."""


@dataclass
class CompactionResult:
    """What one compaction did: records folded in and small objects removed, per file."""

    files: dict[str, int] = field(default_factory=dict)  # compacted file -> records it holds
    folded: int = 0  # small records read into them
    removed: int = 0  # small objects deleted after

    def to_dict(self) -> dict[str, Any]:
        return {"files": dict(self.files), "folded": self.folded, "removed": self.removed}


# -- JSON-lines files ------------------------------------------------------------------------


def read_lines(store: StoreFiles, path: str) -> list[dict]:
    """The records of the JSON-lines file at ``path`` (one GET; [] when it does not exist).
    ``ProfileFormatError`` naming the file and line when it is corrupt."""
    data = store.read_bytes(path, limit=MAX_COMPACTED_BYTES)
    if not data:
        return []
    where = store.display(path)
    if len(data) > MAX_COMPACTED_BYTES:
        raise ProfileFormatError(f"{where} is larger than {MAX_COMPACTED_BYTES:,} bytes")
    if json_depth(data) > MAX_JSON_DEPTH + 1:
        raise ProfileFormatError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
    lines = [line for line in data.splitlines() if line.strip()]
    try:  # one parse of all the lines at once (C speed), checked line by line if it fails
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        records = None
    if records is None or len(records) != len(lines) or not all(type(r) is dict for r in records):
        numbered = enumerate(data.splitlines(), 1)
        records = [_line_record(line, number, where) for number, line in numbered if line.strip()]
    return records


def _line_record(line: bytes, number: int, where: str) -> dict:
    """The JSON object on line ``number`` of the file ``where``, or ``ProfileFormatError``."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ProfileFormatError(f"{where} line {number} is not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise ProfileFormatError(f"{where} line {number} is not a JSON object")
    return record


def write_lines(store: StoreFiles, path: str, records: Iterable[dict]) -> int:
    """Write ``records`` as one JSON-lines file at ``path`` atomically; returns how many."""
    lines = [json.dumps(r, allow_nan=False, separators=(",", ":")) for r in records]
    store.write_bytes(path, ("\n".join(lines) + "\n").encode() if lines else b"")
    return len(lines)


def read_small(store: StoreFiles, folder: str) -> tuple[list[str], list[bytes | None]]:
    """The ``.json`` objects directly in ``folder``: their paths and bytes (one listing, one
    batched ``cat``)."""
    paths = store.list_json(folder)
    return paths, store.read_many(paths)


def fold(
    store: StoreFiles,
    target: str,
    folder: str,
    merge: Callable[[list[dict], list[dict]], list[dict]],
) -> tuple[int, int, int]:
    """Fold the small objects of ``folder`` into the JSON-lines file ``target`` with
    ``merge(compacted, small)``, then delete the small objects still unchanged. Returns
    (records in ``target``, small records folded, objects removed)."""
    paths, blobs = read_small(store, folder)
    small, read = [], []
    for path, blob in zip(paths, blobs):
        document = _parsed(blob)
        if document is not None:
            small.append(document)
            read.append((path, blob))
    if not small:
        return len(read_lines(store, target)), 0, 0
    records = merge(read_lines(store, target), small)
    count = write_lines(store, target, records)
    now = store.read_many([p for p, _ in read])
    unchanged = [p for (p, blob), again in zip(read, now) if again == blob]
    store.delete(unchanged)
    return count, len(small), len(unchanged)


def _parsed(blob: bytes | None) -> dict | None:
    """A small object's JSON object, or None (absent or corrupt: left where it is)."""
    if blob is None:
        return None
    try:
        document = json.loads(blob)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


# -- the catalog -----------------------------------------------------------------------------


def catalog_file(store: StoreFiles) -> str:
    """Where the compacted catalog lives."""
    return store.path("catalog", CATALOG_FILE)


def merged_rows(compacted: Iterable[CatalogRow], small: Iterable[CatalogRow]) -> list[CatalogRow]:
    """Compacted rows with the small rows (newer) merged in, by (url, version), sorted."""
    rows: dict[tuple[str, str | None], CatalogRow] = {}
    for row in compacted:
        rows[(row.url, row.version)] = row
    for row in small:
        key = (row.url, row.version)
        rows[key] = row if key not in rows else _merged(rows[key], row)
    return sorted(rows.values(), key=lambda r: (str(r.url), str(r.version)))


def _merged(old: CatalogRow, new: CatalogRow) -> CatalogRow:
    out = old.merged(new)
    out.url, out.version = new.url, new.version
    return out


__all__ = [
    "CATALOG_FILE",
    "COMPACT_OVER",
    "MAX_COMPACTED_BYTES",
    "CompactionResult",
    "catalog_file",
    "fold",
    "merged_rows",
    "read_lines",
    "read_small",
    "write_lines",
]
