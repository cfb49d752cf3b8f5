"""Compacting many small store records into JSON-lines files that are read in one request each.

New records always land as small objects of their own (one per key), so concurrent writers
never overwrite each other's work. Compaction folds them, with every compacted file present,
into one NEW compacted file named by its generation (UTC time + a random suffix), beside them:

    catalog/<generation>.compacted.jsonl                      catalog rows (``CatalogRow.to_dict``)
    decisions/<reference>/<context>/<generation>.index.jsonl  decisions (``decisions.py``)

and then deletes what it folded in: the compacted files it read (never written again) and the
small objects still unchanged since it listed them (a writer that merged new fields into one
meanwhile keeps its object; the listing's ETags tell, so each object is read once). Two
concurrent compactions leave two compacted files whose union holds everything: a file is only
deleted by a compaction that read it and wrote its records into a newer file. A reader lists
the folder once (compacted and small files together) and reads them all in one batch, oldest
compacted file first and the small objects last; a file that vanished between the listing and
the read (compacted meanwhile) makes it list again. Files of earlier versions
(``catalog/compacted.jsonl``, ``.../<context>/index.jsonl``) are read as the oldest.

``ProfileStore.catalog`` / ``compact_catalog`` (store.py) and ``decisions.py`` use these;
``decisions.compact_store`` is what ``driftloader compact`` runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .catalog import CatalogRow
from .errors import ProfileFormatError
from .store_files import MAX_JSON_DEPTH, StoreFiles, json_depth

MAX_COMPACTED_BYTES = 4 * 2**30
"""The largest compacted file read (bytes): ~1 KB per catalog row, so about four million rows."""
CATALOG_FILE = "compacted.jsonl"
"""The catalog's compacted files end so (``compacted.jsonl`` itself: as earlier versions wrote)."""
COMPACT_OVER = 2000
"""Small records past which ``check`` compacts on its own (``driftloader compact`` any time)."""
READ_ATTEMPTS = 4
"""Listings a reader makes at most when files vanish under it (compactions running meanwhile)."""


@dataclass
class CompactionResult:
    """What one compaction did: records folded in and small objects removed, per file written
    (or kept), and the decision folders pruned (``driftloader compact --prune``)."""

    files: dict[str, int] = field(default_factory=dict)  # compacted file -> records it holds
    folded: int = 0  # small records read into them
    removed: int = 0  # small objects deleted after
    pruned: list[str] = field(default_factory=list)  # decision folders removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "folded": self.folded,
            "removed": self.removed,
            "pruned": list(self.pruned),
        }


@dataclass(frozen=True)
class Folder:
    """Where one kind of record lives: compacted files directly in ``root``, named ``suffix``
    (earlier versions) or ``<generation>.<suffix>``; small ``.json`` objects in ``root/small``
    (``small`` empty: in ``root`` itself)."""

    root: str
    suffix: str
    small: str = ""


@dataclass
class Snapshot:
    """What a reader found in a ``Folder``: compacted files (path, bytes), oldest first; small
    objects (path, JSON object or the ``ProfileFormatError`` naming it); each file's stamp."""

    compacted: list[tuple[str, bytes]] = field(default_factory=list)
    small: list[tuple[str, dict | ProfileFormatError]] = field(default_factory=list)
    stamps: dict[str, str | None] = field(default_factory=dict)

    def records(self, store: StoreFiles) -> list[tuple[str, list[dict]]]:
        """Each compacted file's records, oldest file first (``ProfileFormatError`` naming a
        corrupt one)."""
        return [(path, parse_lines(store, path, data)) for path, data in self.compacted]


@dataclass
class Fold:
    """What ``fold`` did to one ``Folder``: the compacted file holding its records now (None:
    there is none), how many records it holds, small records folded in, objects removed."""

    path: str | None
    records: int
    folded: int
    removed: int
    # with nothing to fold: the records of ``path``, as read (the caller need not read again)
    kept: list[dict] | None = field(default=None, repr=False, compare=False)


# -- JSON-lines files ------------------------------------------------------------------------


def read_lines(store: StoreFiles, path: str) -> list[dict]:
    """The records of the JSON-lines file at ``path`` (one GET; [] when it does not exist).
    ``ProfileFormatError`` naming the file and line when it is corrupt."""
    data = store.read_bytes(path, limit=MAX_COMPACTED_BYTES)
    return [] if not data else parse_lines(store, path, data)


def parse_lines(store: StoreFiles, path: str, data: bytes) -> list[dict]:
    """The records of ``data``, the JSON-lines file at ``path``; ``ProfileFormatError`` naming
    the file and line when it is corrupt."""
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


# -- a folder of compacted and small files ---------------------------------------------------


def generation_path(store: StoreFiles, folder: Folder) -> str:
    """A new compacted file's path in ``folder``: its name sorts after every earlier one (by
    the writer's clock), and a random part keeps two compactions apart."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return _join(store, folder.root, f"{now}-{secrets.token_hex(4)}.{folder.suffix}")


def _join(store: StoreFiles, *parts: str) -> str:
    return (os.sep if store.local else "/").join(parts)


def list_folder(
    store: StoreFiles, folder: Folder, listed: dict[str, str | None] | None = None
) -> tuple[list[str], list[str], dict]:
    """One listing of ``folder``: its compacted files (oldest first), its small objects, and
    every file's stamp (``StoreFiles.list_tree``). ``listed``: a listing of a folder above it,
    made already, to take ``folder``'s files from instead."""
    top = _join(store, folder.root, "")
    if listed is None:
        stamps = store.list_tree(folder.root)
    else:
        stamps = {p: stamp for p, stamp in listed.items() if p.startswith(top)}
    small_top = _join(store, folder.root, folder.small, "") if folder.small else top
    compacted, small = [], []
    for path in stamps:
        name = path[len(top) :] if path.startswith(top) else ""
        if _compacted_name(name, folder):
            compacted.append(path)
        rest = path[len(small_top) :] if path.startswith(small_top) else ""
        if rest.endswith(".json") and not rest.startswith(".") and _plain(rest):
            small.append(path)
    return _oldest_first(compacted, folder), sorted(small), stamps


def _plain(name: str) -> bool:
    """True when ``name`` is a file name, not a path into a folder."""
    return "/" not in name and os.sep not in name


def _compacted_name(name: str, folder: Folder) -> bool:
    if not name or not _plain(name) or name.startswith("."):
        return False
    return name == folder.suffix or name.endswith("." + folder.suffix)


def _oldest_first(paths: Iterable[str], folder: Folder) -> list[str]:
    """Compacted files by age: an earlier version's file, then by generation (name)."""

    def age(path: str) -> tuple[bool, str]:
        name = path.replace(os.sep, "/").rsplit("/", 1)[-1]
        return (name != folder.suffix, name)

    return sorted(paths, key=age)


def read_folder(
    store: StoreFiles, folder: Folder, listed: dict[str, str | None] | None = None
) -> Snapshot:
    """Every compacted file and small object of ``folder``: one listing (``listed``, if made
    already: see ``list_folder``), then one batch of reads (the compacted files beside the
    batched read of the small ones). A file gone by the time it is read was folded into a
    newer compacted file meanwhile: the folder is listed again and what is new read too
    (``READ_ATTEMPTS`` listings at most)."""
    snapshot = Snapshot()
    for attempt in range(READ_ATTEMPTS):
        compacted, small, stamps = list_folder(store, folder, listed if attempt == 0 else None)
        compacted = [p for p in compacted if p not in snapshot.stamps]
        small = [p for p in small if p not in snapshot.stamps]
        if not compacted and not small:
            break
        blobs, documents = _read_both(store, compacted, small)
        snapshot.compacted += [(p, b) for p, b in zip(compacted, blobs) if b is not None]
        snapshot.small += [(p, d) for p, d in zip(small, documents) if d is not None]
        snapshot.stamps.update((p, stamps.get(p)) for p in [*compacted, *small])
        if all(b is not None for b in blobs) and all(d is not None for d in documents):
            break
    order = {p: i for i, p in enumerate(_oldest_first((p for p, _ in snapshot.compacted), folder))}
    snapshot.compacted.sort(key=lambda pair: order[pair[0]])
    return snapshot


def _read_both(
    store: StoreFiles, compacted: list[str], small: list[str]
) -> tuple[list[bytes | None], list[dict | ProfileFormatError | None]]:
    """The compacted files (each one GET, up to ``MAX_COMPACTED_BYTES``) and the small objects
    (one ``read_json_many``), read at the same time."""

    def read_compacted() -> list[bytes | None]:
        return store.map(lambda p: store.read_bytes(p, limit=MAX_COMPACTED_BYTES), compacted)

    if not compacted or not small:
        return read_compacted(), store.read_json_many(small) if small else []
    with ThreadPoolExecutor(1) as pool:
        blobs = pool.submit(read_compacted)
        documents = store.read_json_many(small)
        return blobs.result(), documents


def fold(
    store: StoreFiles, folder: Folder, merge: Callable[[list[dict], list[dict]], list[dict]]
) -> Fold:
    """Fold the small objects and compacted files of ``folder`` into a new compacted file with
    ``merge(compacted records, oldest first; small records)``, then delete the compacted files
    read and the small objects unchanged since (a second listing tells). Nothing is written
    when there are no small objects and at most one compacted file. ``ProfileFormatError``
    naming a corrupt compacted file (it is left as it is)."""
    snapshot = read_folder(store, folder)
    small = [(p, d) for p, d in snapshot.small if isinstance(d, dict)]  # corrupt: left in place
    old = snapshot.records(store)
    if not small and len(old) <= 1:
        path, records = old[0] if old else (None, [])
        return Fold(path, len(records), 0, 0, kept=records)
    records = merge([r for _, rs in old for r in rs], [d for _, d in small])
    return _written(store, folder, snapshot, records, small, [p for p, _ in old])


def fold_small(
    store: StoreFiles, folder: Folder, snapshot: Snapshot, merge: Callable[[list[dict]], list[dict]]
) -> Fold | None:
    """Fold the small objects a reader just read (``snapshot``) into a compacted file of their
    own, beside the compacted files there (left as they are: nothing is read again or
    rewritten), then delete the small objects unchanged since; the next reader makes one
    request for them, not one each. A later ``fold`` merges the compacted files. None when
    there was nothing to fold."""
    small = [(p, d) for p, d in snapshot.small if isinstance(d, dict)]
    if not small:
        return None
    return _written(store, folder, snapshot, merge([d for _, d in small]), small, [])


def _written(
    store: StoreFiles,
    folder: Folder,
    snapshot: Snapshot,
    records: list[dict],
    small: list[tuple[str, dict]],
    folded: list[str],
) -> Fold:
    """Write ``records`` into a new compacted file (named by its generation: newer than every
    compacted file, so its records win), then delete the compacted files ``folded`` into it
    and the ``small`` objects unchanged since ``snapshot`` listed them (a second listing
    tells)."""
    target = generation_path(store, folder)
    count = write_lines(store, target, records)
    _, _, now = list_folder(store, folder)
    unchanged = [p for p, _ in small if _same(snapshot.stamps.get(p), now.get(p))]
    store.delete([*folded, *unchanged])
    return Fold(target, count, len(small), len(unchanged))


def _same(before: str | None, after: str | None) -> bool:
    return before is not None and before == after


def remove_tree(store: StoreFiles, folder: str) -> int:
    """Delete every file under ``folder`` (and the folder, locally); returns how many files."""
    paths = sorted(store.list_tree(folder))
    store.delete(paths)
    if store.local:
        shutil.rmtree(folder, ignore_errors=True)
    return len(paths)


# -- the catalog -----------------------------------------------------------------------------


def catalog_folder(store: StoreFiles) -> Folder:
    """Where the catalog lives: small rows and compacted files together in ``catalog/``."""
    return Folder(store.path("catalog"), CATALOG_FILE)


def compaction_due(store: StoreFiles, waiting: int = 0) -> bool:
    """Whether a store that takes writes has more than ``COMPACT_OVER`` small records
    waiting: ``waiting`` known ones (new decision records), or its catalog's small rows."""
    if not store.writable:
        return False
    return waiting > COMPACT_OVER or len(store.list_json(store.path("catalog"))) > COMPACT_OVER


def merged_rows(compacted: Iterable[CatalogRow], small: Iterable[CatalogRow]) -> list[CatalogRow]:
    """The rows of the compacted files (oldest first) with the small rows (newest) merged in
    after them, by (url, version): fields a later row sets replace earlier ones. Sorted."""
    rows: dict[tuple[str, str | None], CatalogRow] = {}
    for row in [*compacted, *small]:
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
    "READ_ATTEMPTS",
    "CompactionResult",
    "compaction_due",
    "Fold",
    "Folder",
    "Snapshot",
    "catalog_folder",
    "fold",
    "generation_path",
    "list_folder",
    "merged_rows",
    "parse_lines",
    "read_folder",
    "read_lines",
    "remove_tree",
    "write_lines",
]
