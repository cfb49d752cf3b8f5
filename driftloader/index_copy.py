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
