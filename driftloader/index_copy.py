"""The copy of a context's whole decision index (``Latest``), which a gate reads beside the
reference: where it lives, how it is read, and how its files are named.

``DecisionIndex`` (decisions.py) writes it with every compacted file of the current reference's
context and reads it when it is current; ``compact --prune`` removes the copies of contexts gone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .compaction import MAX_COMPACTED_BYTES, parse_lines
from .errors import ProfileFormatError
from .store import ProfileStore, check_reference_name
from .store_files import parse_store_json

LATEST = "latest"  # decisions/<reference>/latest.<config digest>.jsonl (``Latest``)
_LINE = re.compile(  # a record as ``Decision.to_dict`` and ``write_lines`` write it
    rb'^(\{"url":"([^"\\\n]*)","version":(null|"[^"\\\n]*"),"n":(?:null|-?\d+),'
    rb'"drifted":(true|false|null)[,}][^\n]*)$',
    re.M,
)
_DRIFTED = {b"true": True, b"false": False, b"null": None}


@dataclass
class Latest:
    """A copy of a context's whole index, at a path the reference's name and the drift
    config tell (``latest_path``), rewritten with every compacted file of the context. A gate
    reads it beside the reference: one round trip for the index, not a second one for its
    files once the reference gives the context. It is used only when it is of that context
    and names exactly the compacted files the context's listing shows, with no new record
    beside them (``DecisionIndex._table``); else the context is read as before. Its first
    line is ``{"context", "files"}``, then the records, parsed only when it is used."""

    context: str
    files: list[str]  # the base names of the compacted files whose records it holds
    path: str
    body: bytes  # the records' lines

    def records(self, store: ProfileStore) -> list[dict]:
        """The records (``ProfileFormatError`` naming the file when one is corrupt)."""
        return parse_lines(store, self.path, self.body)

    def keyed(self) -> dict[tuple[str, str | None], tuple[bytes, bool | None]] | None:
        """Each record's line and ``drifted`` by its key (url, version), read from how the
        line starts, the rest parsed only when its decision is asked for (``parse_record``):
        a gate over 100k decisions parsed every record before its first sample (0.5 s). None
        when a line does not start as ``Decision.to_dict`` writes it (an escape in its url or
        version, another order): ``records`` reads it then."""
        found = _LINE.findall(self.body)
        if len(found) != self.body.count(b"\n") + (not self.body.endswith(b"\n")):
            return None  # a line read otherwise, or a blank one
        try:
            return {
                (url.decode(), None if version == b"null" else version[1:-1].decode()): (
                    line,
                    _DRIFTED[drifted],
                )
                for line, url, version, drifted in found
            }
        except UnicodeDecodeError:
            return None


class CopyLookups:
    """A copy of the index (``Latest``) answering its first lookups by searching its text,
    before its table of keys is made (``table``): keying 100k records took 0.12-0.17 s of a
    gate's first sample, which asks for a handful of shards. ``find`` gives a key's entry as
    ``Latest.keyed`` would (its line and ``drifted``) or None when no record names the key:
    in a copy in key order (as compaction writes it) by bisecting its lines (~0.03 ms for
    100k records), else by a search of its text (~0.75 ms). It raises ``LookupError`` when
    only the table can tell: past ``LOOKUPS`` lookups (the table then costs less than more
    searches), a name JSON writes escaped, a copy whose lines do not all start as
    ``Decision.to_dict`` writes them, or such a key's line laid out otherwise."""

    LOOKUPS = 64

    def __init__(self, latest: Latest) -> None:
        self.latest, self.asked = latest, 0
        self.found: dict[tuple[str, str | None], Any] = {}  # entries found, decisions made
        self._seen: set[tuple[str, str | None]] = set()  # keys found (or none), searched once
        body = latest.body
        starts = body.count(b'\n{"url":"') + body.startswith(b'{"url":"')
        self.plain = starts == body.count(b"\n") + (not body.endswith(b"\n"))

    def find(self, key: tuple[str, str | None]) -> tuple[bytes, bool | None] | None:
        url, version = key
        if not self.plain or self.asked >= self.LOOKUPS or not _plain(url, version):
            raise LookupError(key)
        self.asked += 1
        quoted = b"null" if version is None else b'"' + version.encode() + b'"'
        needle = b'{"url":"' + url.encode() + b'","version":' + quoted + b","
        body = self.latest.body
        at = self._bisected(needle, (url, str(version)))
        if at < 0:  # not in key order, or no record of it: the whole text is searched
            at = body.rfind(needle)  # the last record of a key wins, as in ``keyed``
            while at > 0 and body[at - 1] != 10:  # a record's start is a line's start
                at = body.rfind(needle, 0, at)
        if at < 0:
            return None
        end = body.find(b"\n", at)
        found = _LINE.fullmatch(body, at, end if end >= 0 else len(body))
        if found is None:
            raise LookupError(key)
        return found[1], _DRIFTED[found[4]]

    def _bisected(self, needle: bytes, key: tuple[str, str]) -> int:
        """Where the line starting with ``needle`` is, found by bisecting the lines as if in
        the order compaction writes them (by url and ``str(version)``), ~17 steps for 100k
        records instead of a search of the whole text; -1 when not found so. A copy holds
        each key once (it is written from a table or a merge), so a line found is the one."""
        body, lo, hi = self.latest.body, 0, len(self.latest.body)
        while lo < hi:
            start = max(body.rfind(b"\n", 0, (lo + hi) // 2) + 1, lo)
            if body.startswith(needle, start):
                return start
            found = _LINE.match(body, start)
            if found is None:
                return -1
            here = (found[2].decode(), "None" if found[3] == b"null" else found[3][1:-1].decode())
            if here < key:
                lo = found.end() + 1
            else:
                hi = start
        return -1

    def entries(self, key: tuple[str, str | None]) -> dict[tuple[str, str | None], Any]:
        """``found``, with ``key``'s entry when the copy has a record of it (``find``, once a
        key): ``DecisionIndex`` makes and keeps its decisions there, and drops a corrupt one."""
        if key not in self._seen:
            entry = self.find(key)
            self._seen.add(key)
            if entry is not None:
                self.found[key] = entry
        return self.found

    def table(self, store: ProfileStore) -> dict[tuple[str, str | None], Any]:
        """Every record by key (``keyed``, else each record parsed), with the decisions made
        from ``found`` and without what was dropped from it; ``ProfileFormatError`` naming
        the copy when a record is corrupt."""
        known = self.latest.keyed()
        if known is None:
            records = self.latest.records(store)
            known = {(r.get("url"), r.get("version")): r for r in records}
        for key in self._seen - self.found.keys():  # none, or dropped as corrupt
            known.pop(key, None)
        known.update(self.found)
        return known


_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # what JSON writes as it is


def _plain(url: str, version: str | None) -> bool:
    return bool(_PLAIN.fullmatch(url)) and (version is None or bool(_PLAIN.fullmatch(version)))


def prune_copies(store: ProfileStore, name: str) -> list[str]:
    """Remove the copies of the index (``Latest``) of reference ``name`` whose context's
    folder is gone (pruned, or never written)."""
    top = store.path("decisions", name)
    contexts = set(store.list_folders(top))
    copies = [p for p in store.list_tree(top) if is_copy(base_name(p))]
    stale = [p for p in copies if getattr(read_copy(store, p), "context", None) not in contexts]
    store.delete(stale)
    return [store.display(p) for p in stale]


def parse_record(line: bytes, where: str) -> dict[str, Any]:
    """The record on a line ``Latest.keyed`` kept; ``ProfileFormatError`` naming ``where``."""
    record = parse_store_json(line, where)
    if type(record) is not dict:
        raise ProfileFormatError(f"{where}: a record is not a JSON object: {line[:80]!r}")
    return record


def latest_path(store: ProfileStore, name: str, config_digest: str) -> str:
    name = check_reference_name(name)
    return store.path("decisions", name, f"{LATEST}.{config_digest[:20]}.jsonl")


def read_copy(store: ProfileStore, path: str) -> Latest | None:
    try:
        data = store.read_bytes(path, limit=MAX_COMPACTED_BYTES)
        if not data:
            return None
        first, _, body = data.partition(b"\n")
        (head,) = parse_lines(store, path, first)
        return Latest(str(head["context"]), [str(f) for f in head["files"]], path, body)
    except Exception:  # noqa: BLE001 - whatever is wrong with a cache, it is not used
        return None


def base_name(path: str) -> str:
    return path.replace(os.sep, "/").rsplit("/", 1)[-1]


def is_copy(name: str) -> bool:
    """Whether the file named ``name`` (a base name) is a copy of an index."""
    return name.startswith(f"{LATEST}.") and name.endswith(".jsonl")
