"""The decision index: each shard's drift against a reference, decided once and kept beside the
catalog, so that the gate decides shards from memory instead of loading every profile.

A decision is a pure result of (shard profile, reference, drift config), so it is decided once
per (shard key, shard version, reference name and content, drift config). Layout under the
store root::

    decisions/<reference>/<context>/<generation>.index.jsonl         compacted, one per line
    decisions/<reference>/<context>/new/<sha1(url)>.<version>.json   one small record each
    decisions/<reference>/<context>/context.json                     what the context is of
    decisions/<reference>/latest.<config digest>.jsonl               a copy of the index

``context`` is a digest of the reference's content and of the drift config (its fields, the
registered drift tests and the library version): a rebuilt reference or another config is
another folder, so a cached decision never outlives what it was decided against. Two writers
of one record write the same decision (it is deterministic), so concurrent writers never lose
each other's work; a record may also note which catalog row holds it (``row``, see
``DecisionIndex.mark_row``), and the later note wins. The gate reads the compacted index and
the new records once (one listing, one batch of reads) and falls back to profile +
``compare`` for shards not in it; ``check`` reads them too and adds what it decides. A reader
that finds ``FOLD_ON_READ`` new records or more folds them into a compacted file of their own
from what it read (one write, one listing, one batch delete, on a background thread), so the
runs after it read them in one request. ``compact_store`` (``driftloader compact``) folds the new records into a new
compacted index and the catalog's small rows into a new compacted catalog file
(``compaction.py``); with ``prune`` it first removes the folders of contexts whose reference
is gone or was rebuilt (``context.json`` tells what a context was decided against; it is
written with the context's first record).
A record keeps of the features only those that drifted (what ``top`` shows for a clean shard
is then empty), which keeps the index ~150 bytes per clean shard.

Example::

    index = DecisionIndex.of(store, "v1", store.get_reference("v1"), DriftConfig())
    decision = index.get(shard.url, shard.version)     # None: not decided yet
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .compaction import (
    CompactionResult,
    Fold,
    Folder,
    Snapshot,
    compaction_due,
    fold,
    fold_small,
    list_folder,
    parse_lines,
    read_folder,
    remove_tree,
    write_lines,
)
from .drift import DriftConfig, FeatureDrift, ShardDrift
from .drift.registry import DRIFT_TESTS
from .errors import ProfileFormatError, ReferenceNotFound, StoreReadOnlyError
from .index_copy import (
    CopyLookups,
    Latest,
    base_name,
    latest_path,
    parse_record,
    prune_copies,
    read_copy,
)
from .profile import Profile
from .sketches.encoding import decode_float, encode_float
from .store import ProfileStore, check_reference_name, shard_key, url_hash, version_name
from .writebehind import WriteBehind

DECISION_FORMAT = 1
INDEX_FILE = "index.jsonl"
"""The compacted index's files end so (``index.jsonl`` itself: as earlier versions wrote)."""
CONTEXT_FILE = "context.json"
TOP = 5  # features a decision keeps at most (those that drifted)
FOLD_ON_READ = 16
"""Small decision records past which a reader folds them into one file (``_fold_small``)."""
FOLD_COPY_MAX = 20_000
"""Decisions past which a reader's fold leaves the copy of the index to ``compact``: it would
rewrite the whole index (~150 bytes a decision) to fold a few records, on the sample path."""

Key = tuple[str, str | None]


@dataclass(frozen=True)
class Decision:
    """One shard-version's drift against a reference: what the gate needs to act on it.

    ``url`` is the shard's stored key (``store.shard_key``), ``n`` its profile's sample count,
    ``top`` the most drifted features that drifted (``FeatureDrift.to_dict`` each)."""

    url: str
    version: str | None
    n: int
    drifted: bool
    score: float
    top: list[dict] = field(default_factory=list)
    schema: dict = field(default_factory=dict)
    row: int | None = field(default=None, compare=False)  # see ``DecisionIndex.mark_row``

    @classmethod
    def of(cls, url: str, version: str | None, n: int, drift: ShardDrift) -> Decision:
        """The decision of ``drift`` (of the profile of shard ``url`` at ``version``)."""
        top = [f.to_dict() for f in drift.top(TOP) if f.drifted]
        schema = {
            k: list(v) if isinstance(v, (list, tuple, set)) else v for k, v in drift.schema.items()
        }
        return cls(
            shard_key(url), version, int(n), bool(drift.drifted), float(drift.score), top, schema
        )

    @property
    def key(self) -> Key:
        return (self.url, self.version)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "url": self.url,
            "version": self.version,
            "n": self.n,
            "drifted": self.drifted,
            "score": encode_float(self.score),
        }
        if self.top:
            out["top"] = self.top
        if self.schema:
            out["schema"] = self.schema
        if self.row is not None:
            out["row"] = self.row
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        """A decision from its record; ``ProfileFormatError`` when it is not one."""
        try:
            url, version = d["url"], d.get("version")
            if not isinstance(url, str) or not (version is None or isinstance(version, str)):
                raise TypeError("url / version")
            top, schema = d.get("top", []), d.get("schema", {})
            if not isinstance(top, list) or not isinstance(schema, dict):
                raise TypeError("top / schema")
            n, drifted, row = d["n"], d["drifted"], d.get("row")
            if isinstance(n, bool) or not isinstance(n, int) or not isinstance(drifted, bool):
                raise TypeError("n / drifted")
            if row is not None and (isinstance(row, bool) or not isinstance(row, int)):
                raise TypeError("row")
            return cls(url, version, n, drifted, decode_float(d["score"]), top, schema, row)
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileFormatError(f"not a decision record ({e}): {str(d)[:80]}") from None

    def drift(self) -> ShardDrift:
        """The ``ShardDrift`` this decision keeps (features: the drifted ones only)."""
        features = [_feature(t) for t in self.top]
        return ShardDrift(
            self.url, self.version, self.n, self.drifted, self.score, features, dict(self.schema)
        )


def _decision_or_none(document: Any) -> Decision | None:
    """The decision a new record holds; None for what is not one (a partial or foreign
    object in the folder is skipped: the shard is decided again)."""
    if not isinstance(document, dict):
        return None
    try:
        return Decision.from_dict(document)
    except ProfileFormatError:
        return None


def _feature(d: dict) -> FeatureDrift:
    number = {k: decode_float(d.get(k)) for k in ("value", "effect", "p_value", "score")}
    return FeatureDrift(
        str(d.get("name")),
        str(d.get("kind")),
        str(d.get("metric")),
        number["value"],
        number["effect"],
        number["p_value"],
        bool(d.get("drifted")),
        {},
        number["score"],
    )


# -- what a decision depends on ---------------------------------------------------------------


def _digest(document: Any) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def config_fingerprint(config: DriftConfig | None) -> str:
    """A digest of ``config``'s fields, the registered drift tests and the library version."""
    config = config or DriftConfig()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields["floors"] = dict(fields["floors"])
    tests = [(t.kind, t.metric, getattr(t.run, "__qualname__", ""), t.floor) for t in DRIFT_TESTS]
    return _digest({"config": fields, "tests": tests, "version": __version__})


def reference_digest(reference: Profile) -> str:
    """A digest of the reference's content (a rebuilt reference has another)."""
    return _digest(reference.to_dict())


def context_of(reference: Profile, config: DriftConfig | None) -> str:
    """The folder name of the decisions against ``reference`` under ``config``."""
    return _context(_described(reference, config))


def _described(reference: Profile, config: DriftConfig | None) -> dict[str, Any]:
    """What a context is of (``context.json``): the parts its name is the digest of."""
    return {
        "format": DECISION_FORMAT,
        "reference": reference_digest(reference),
        "config": config_fingerprint(config),
    }


def _context(about: dict[str, Any]) -> str:
    return _digest([about["format"], about["reference"], about["config"]])[:20]


def list_contexts(store: ProfileStore, name: str) -> dict[str, str | None]:
    """Every file of every context of reference ``name`` (``StoreFiles.list_tree``): one
    listing, made before the reference is read, so before its context is known."""
    return store.list_tree(store.path("decisions", check_reference_name(name)))


def read_latest(store: ProfileStore, name: str, config: DriftConfig | None) -> Latest | None:
    """The copy of the index of reference ``name`` under ``config``; None when there is none
    or it cannot be read (a cache: the context is then read as before, which reports any
    error of the store)."""
    return read_copy(store, latest_path(store, name, config_fingerprint(config)))


# -- the index --------------------------------------------------------------------------------


class DecisionIndex:
    """The decisions against one reference under one drift config, in a store.

    ``get`` answers from memory after reading the compacted index once (one request; ``forget``
    makes the next ``get`` read it again). ``add`` keeps a new
    decision in memory and writes its small record (best effort: a read-only store keeps it
    in memory only). ``load_all`` reads the index and the new records too. ``loads`` counts
    the reads of the index."""

    def __init__(self, store: ProfileStore, name: str, context: str) -> None:
        self.store = store
        self.name = check_reference_name(name)
        self.context = context
        self.loads = 0
        self.unfolded = 0  # new records ``load_all`` found (not compacted yet)
        self.folds = 0  # times a read folded the small records it found
        self.about: dict[str, Any] | None = None  # what the context is of (``of`` sets it)
        self.config_digest: str | None = None  # of its drift config: names ``Latest``
        self._known: dict[Key, Known] | None = None
        self._copy: CopyLookups | None = None  # the index's copy, its table not made yet
        self._listed: dict[str, str | None] | None = None  # the listing ``read`` was given
        self._read_from: list[str] = []  # the compacted files the records came from
        self._unwritten: dict[Key, Decision] = {}  # records waiting for a row's note (``add``)
        self._folding = WriteBehind(threads=1, limit=1)  # the fold a read started, if any

    @classmethod
    def of(
        cls, store: ProfileStore, name: str, reference: Profile, config: DriftConfig | None
    ) -> DecisionIndex:
        """The index of the decisions against ``reference`` (stored as ``name``) under
        ``config``."""
        about = _described(reference, config)
        index = cls(store, name, _context(about))
        index.about, index.config_digest = about, about["config"]
        return index

    @property
    def index_path(self) -> str:
        """The compacted index as earlier versions wrote it (still read)."""
        return self.store.path("decisions", self.name, self.context, INDEX_FILE)

    @property
    def new_folder(self) -> str:
        return self.store.path("decisions", self.name, self.context, "new")

    @property
    def folder(self) -> Folder:
        """The context's compacted files and new records (``compaction.Folder``)."""
        return Folder(self.store.path("decisions", self.name, self.context), INDEX_FILE, "new")

    def record_path(self, url: str, version: str | None) -> str:
        """Where the small record of shard ``url`` at ``version`` goes."""
        name = f"{url_hash(url)}.{version_name(version)}.json"
        return self.store.path("decisions", self.name, self.context, "new", name)

    def forget(self) -> None:
        """Read the index again on the next ``get`` (a new pass may find it compacted)."""
        self._known = self._copy = self._listed = None

    def _table(self) -> dict[Key, Known]:
        """Every record in memory by key, reading them first if not yet read: the copy a read
        took (``_from_latest``), else the compacted index (usually one file) and the new
        records not folded into it yet (``compaction.read_folder``), so a decision written by
        one pass is found by the next without a compaction. Records stay plain dicts until
        asked for (``get``): 100k decisions are read without building 100k ``Decision``s."""
        if self._known is None and self._copy is not None:
            copy, self._copy = self._copy, None
            with contextlib.suppress(ProfileFormatError):  # a cache: the context's files are read
                self._known = copy.table(self.store)
        if self._known is None:
            self.loads += 1
            snapshot, self._listed = read_folder(self.store, self.folder, self._listed), None
            table: dict[Key, Known] = {}
            for path, data in snapshot.compacted:  # oldest first: later files win
                table.update(self._records(path, data))
            for _, document in snapshot.small:
                decision = _decision_or_none(document)
                if decision is not None:
                    table[decision.key] = decision
            self._known, self.unfolded = table, len(snapshot.small)
            self._read_from = [path for path, _ in snapshot.compacted]
            self._fold_small(snapshot)
        return self._known

    def _from_latest(self, listed: dict[str, str | None], latest: Latest) -> None:
        """Take the records from ``latest`` if it holds exactly what ``listed`` shows of this
        context (the same compacted files, no new record); its table made when wanted."""
        compacted, small, _ = list_folder(self.store, self.folder, listed)
        if latest.context != self.context or small:
            return
        if sorted(map(base_name, compacted)) != sorted(latest.files):
            return
        self.loads += 1
        self._copy = CopyLookups(latest)
        self.unfolded, self._read_from = 0, compacted

    def _write_latest(self, records: list[dict], files: list[str]) -> None:
        """Rewrite the copy of the index (``Latest``): ``records`` are those of ``files``, the
        context's compacted files now. Best effort: a reader that finds it stale or missing
        reads the context's files."""
        if self.config_digest is None or not self.store.writable:
            return
        head = {"context": self.context, "files": sorted(map(base_name, files))}
        path = latest_path(self.store, self.name, self.config_digest)
        with contextlib.suppress(StoreReadOnlyError, OSError):
            write_lines(self.store, path, [head, *records])

    def _records(self, path: str, data: bytes) -> dict[Key, Known]:
        try:
            records = parse_lines(self.store, path, data)
        except ProfileFormatError as e:
            warnings.warn(
                f"ignoring decision index: {e}; decisions are taken again", RuntimeWarning, 4
            )
            return {}
        return {(r.get("url"), r.get("version")): r for r in records}

    def _decision(self, table: dict[Key, Known], key: Key) -> Decision | None:
        """The decision of ``key`` in ``table`` (made from its record the first time); None
        when there is none or its record is corrupt (one warning: it is decided again)."""
        found = table.get(key)
        if found is None or isinstance(found, Decision):
            return found
        try:
            decision = Decision.from_dict(_record(found))
            if decision.key != key:
                raise ProfileFormatError(f"keyed {key!r}: {str(found)[:80]}")
        except ProfileFormatError as e:
            where = ", ".join(self.store.display(p) for p in self._read_from)
            warnings.warn(
                f"ignoring a record of {where or self.store.display(self.index_path)}: {e}; "
                "it is decided again",
                RuntimeWarning,
                3,
            )
            del table[key]
            return None
        table[key] = decision
        return decision

    def read(
        self, listed: dict[str, str | None] | None = None, latest: Latest | None = None
    ) -> None:
        """Read the records now if not yet read (``forget`` resets), building no decision: what
        a pass does before its first ``get``. ``listed``: ``list_contexts``'s listing, made
        beforehand, which tells that ``latest`` (``read_latest``'s copy) holds them all."""
        if self._known is None and self._copy is None:
            self._listed = listed
            if listed is not None and latest is not None:
                self._from_latest(listed, latest)
        if self._copy is None:
            self._table()

    def known(self) -> dict[Key, Decision]:
        """The decisions in memory, reading the compacted index first if not yet read."""
        table = self._table()
        decisions = {key: self._decision(table, key) for key in list(table)}
        return {key: d for key, d in decisions.items() if d is not None}

    def get(self, url: str, version: str | None) -> Decision | None:
        """The decision on shard ``url`` at ``version``, or None when not decided yet."""
        key = (shard_key(url), version)
        if self._copy is not None:
            try:
                return self._decision(self._copy.entries(key), key)
            except LookupError:  # only the table can tell
                pass
        return self._decision(self._table(), key)

    def clean_keys(self) -> set[str]:
        """The shard keys every decision of which, at any version, found no drift: the
        shards a gated dataset reads without stat'ing them first (``dataset.remote_stat``)."""
        table = self._table()
        drifted = {url for (url, _), found in table.items() if _drifted(found) is not False}
        return {url for url, _ in table} - drifted

    def load_all(self) -> dict[Key, Decision]:
        """The index and every new record, read again now."""
        self.forget()
        return self.known()

    def add(
        self,
        url: str,
        version: str | None,
        n: int,
        drift: ShardDrift,
        later: Callable[..., None] | None = None,
    ) -> Decision:
        """Keep the decision of ``drift`` and write its record unless it is known already.
        With ``later`` (the gate's ``WriteBehind.submit``) the record waits: the gate writes
        the shard's catalog row next, and the record is written once, noting that row
        (``mark_row``), not once before and once after; ``write_unwritten`` hands the records
        no row noted to ``later`` (the gate's ``flush``)."""
        decision = Decision.of(url, version, n, drift)
        table = self._table()
        if self._decision(table, decision.key) == decision:
            return decision
        table[decision.key] = decision
        if later is not None:
            self._unwritten[decision.key] = decision
        else:
            self._write(decision)
        return decision

    @property
    def unwritten(self) -> int:
        """Decisions kept whose record waits for its catalog row's note (``add``)."""
        return len(self._unwritten)

    def write_unwritten(self, later: Callable[..., None]) -> None:
        """Hand the records still waiting for a row's note to ``later``, keyed by the shard."""
        for key in list(self._unwritten):
            decision = self._unwritten.pop(key, None)
            if decision is not None:
                later(decision.url, self._write, decision)

    def _write(self, decision: Decision, describe: bool = True) -> None:
        """Write ``decision``'s record (``context.json`` first, once, with ``describe``): a
        cache, so a failed write only means the shard is decided again next time."""
        if self.store.writable:
            with contextlib.suppress(StoreReadOnlyError, OSError):
                if describe:
                    self._describe()
                self.store.write_json(
                    self.record_path(decision.url, decision.version), decision.to_dict()
                )

    def mark_row(self, decision: Decision, row: int | None) -> None:
        """Note in ``decision``'s record that the shard's catalog row holds the decision of
        digest ``row`` (``gate.decision_digest`` of its fields; None: nothing is known of the
        row). A gate that recalls the decision with that digest then leaves the catalog alone,
        not even reading the row: that read was each recalled shard's only request. Written
        when the record waits for it (``add``) or says otherwise; a failed write means the row
        is read again."""
        waited = self._unwritten.pop(decision.key, None) is not None
        if waited or decision.row != row:
            self._write(dataclasses.replace(decision, row=row), describe=waited)

    def _describe(self) -> None:
        """Write ``context.json`` (what the context is of, for ``prune_decisions``) once."""
        if self.about is not None:
            about, self.about = self.about, None
            path = self.store.path("decisions", self.name, self.context, CONTEXT_FILE)
            self.store.write_json(path, about)

    def compact(self) -> Fold:
        """Fold the new records and the compacted files into a new compacted index
        (``compaction.fold``), and bring the copy of the index (``Latest``) up to it."""
        written: list[list[dict]] = []

        def merge(old: list[dict], new: list[dict]) -> list[dict]:
            written.append(_merged([*old, *new]))
            return written[-1]

        result = fold(self.store, self.folder, merge)
        if written and result.path is not None:
            self._write_latest(written[-1], [result.path])
        elif result.path is not None and self.config_digest is not None:  # nothing to fold
            copy = read_copy(self.store, latest_path(self.store, self.name, self.config_digest))
            if copy is None or (copy.context, copy.files) != (
                self.context,
                [base_name(result.path)],
            ):
                self._write_latest(result.kept or [], [result.path])
        self.forget()
        return result

    def _fold_small(self, snapshot: Snapshot) -> None:
        """Past ``FOLD_ON_READ`` small records read, fold them into a compacted file of their
        own (``compaction.fold_small``: from what was just read, nothing read again), so the
        next run reads them in one request: a gated run leaves one record per shard it
        decided, and every later run read them one by one. The fold (a write, a listing, a
        delete and the copy of the index: four round trips) runs on a background thread, so
        the run that reads them does not wait for it; ``settle`` does. A store that refuses
        is left as it is: the records stay readable."""
        if len(snapshot.small) < FOLD_ON_READ or not self.store.writable:
            return
        table = self._known or {}
        # a copy: passes add decisions to the table meanwhile (Decisions are frozen)
        records = list(table.values()) if len(table) <= FOLD_COPY_MAX else None
        self._folding.submit("fold", self._fold, snapshot, records, list(self._read_from))

    def _fold(self, snapshot: Snapshot, records: list[Known] | None, read_from: list[str]) -> None:
        with contextlib.suppress(StoreReadOnlyError, OSError):
            folded = fold_small(self.store, self.folder, snapshot, _merged)
            if folded is not None and folded.path is not None:
                self.folds += 1
                if records is not None:  # past ``FOLD_COPY_MAX``, ``compact`` writes the copy
                    records = [r for r in map(_record_or_none, records) if r is not None]
                    self._write_latest(records, [*read_from, folded.path])

    def settle(self) -> None:
        """Wait for the fold a read started (``_fold_small``), if any."""
        self._folding.flush()


Known = Decision | dict | tuple  # a decision; its record; or its line and drifted (``keyed``)


def _record(found: Known) -> dict:
    """The record of a decision the index holds (``ProfileFormatError`` when its line is
    corrupt)."""
    if isinstance(found, tuple):
        return parse_record(found[0], "a record of the index's copy")
    return found.to_dict() if isinstance(found, Decision) else found


def _record_or_none(found: Known) -> dict | None:
    try:
        return _record(found)
    except ProfileFormatError:
        return None


def _drifted(found: Known) -> bool | None:
    if isinstance(found, tuple):
        return found[1]
    return found.drifted if isinstance(found, Decision) else found.get("drifted")


def _merged(records: list[dict]) -> list[dict]:
    """Decision records by key, the later one of a key kept, sorted by key (corrupt ones
    left out)."""
    out: dict[Key, dict] = {}
    for record in records:
        try:
            out[Decision.from_dict(record).key] = record
        except ProfileFormatError:
            continue
    return [out[k] for k in sorted(out, key=lambda k: (k[0], str(k[1])))]


def compact_decisions(
    store: ProfileStore, digests: dict[str, str | None] | None = None
) -> list[Fold]:
    """Compact every decision index of the store (``DecisionIndex.compact`` each); the
    contexts of each current reference rewrite their copy of the index (``Latest``), which
    the contexts of a rebuilt one share the path of. ``digests``: the references' digests
    already read (``_current_digest``), filled with those read here."""
    out, digests = [], {} if digests is None else digests
    for name in store.list_folders(store.path("decisions")):
        current = _current_digest(store, name, digests)
        for context in store.list_folders(store.path("decisions", name)):
            index = DecisionIndex(store, name, context)
            about = _about(store, name, context)
            if about is not None and about["reference"] == current:
                index.config_digest = about["config"]
            out.append(index.compact())
    return out


def _about(store: ProfileStore, name: str, context: str) -> dict[str, Any] | None:
    """What ``context`` is of (its ``context.json``), if it says so and matches its name."""
    try:
        about = store.read_json(store.path("decisions", name, context, CONTEXT_FILE))
        return about if about is not None and _context(about) == context else None
    except (ProfileFormatError, KeyError, TypeError):
        return None


def prune_decisions(store: ProfileStore, digests: dict[str, str | None] | None = None) -> list[str]:
    """Remove the decision folders of contexts no stored reference has any more: their
    reference was removed, or rebuilt with other content (``context.json`` tells what a
    context was decided against). A folder that does not say (written by an earlier version)
    is kept unless its reference is gone; one decided against the current reference under
    any drift config is always kept. Returns the folders removed. ``digests`` as in
    ``compact_decisions``."""
    pruned, digests = [], {} if digests is None else digests
    for name in store.list_folders(store.path("decisions")):
        current = _current_digest(store, name, digests)
        if current is None:  # not a reference name, or its reference is unreadable
            continue
        for context in store.list_folders(store.path("decisions", name)):
            folder = store.path("decisions", name, context)
            if _stale(store, name, context, current):
                remove_tree(store, folder)
                pruned.append(store.display(folder))
        pruned += prune_copies(store, name)
    return pruned


def _current_digest(store: ProfileStore, name: str, digests: dict[str, str | None]) -> str | None:
    """The digest of stored reference ``name`` (read once: kept in ``digests``); "" when there
    is none; None when ``name`` is no reference name or its reference cannot be read (nothing
    of it is pruned then)."""
    if name not in digests:
        try:
            digests[name] = reference_digest(store.get_reference(name))
        except ReferenceNotFound:
            digests[name] = ""
        except (ValueError, OSError):
            digests[name] = None
    return digests[name]


def _stale(store: ProfileStore, name: str, context: str, current: str) -> bool:
    """True when the decisions of ``context`` were decided against other content of reference
    ``name`` than ``current`` (the stored reference's digest; "" when it is gone)."""
    if not current:
        return True
    about = _about(store, name, context)
    return about is not None and about["reference"] != current


def compact_store(store: ProfileStore, *, prune: bool = False) -> CompactionResult:
    """Compact the catalog and every decision index (what ``driftloader compact`` runs); with
    ``prune``, first remove the decisions of references gone or rebuilt (``prune_decisions``).
    ``ValueError`` naming the store when it cannot be written (read-only, a file, no bucket);
    reads give the same answers after."""
    store.check_writable()
    result, digests = CompactionResult(), {}
    if prune:
        result.pruned = prune_decisions(store, digests)
    for part in [store.compact_catalog(), *compact_decisions(store, digests)]:
        if part.path is not None:
            result.files[store.display(part.path)] = part.records
        result.folded += part.folded
        result.removed += part.removed
    return result


def compact_if_large(store: ProfileStore, index: DecisionIndex | None = None) -> bool:
    """Compact when more than ``COMPACT_OVER`` small records wait (catalog rows, or the new
    records ``index.load_all`` saw); True when it did. Nothing on a read-only store."""
    if not compaction_due(store, getattr(index, "unfolded", 0) if index is not None else 0):
        return False
    compact_store(store)
    return True


__all__ = [
    "DECISION_FORMAT",
    "Decision",
    "DecisionIndex",
    "compact_decisions",
    "compact_if_large",
    "compact_store",
    "prune_decisions",
    "config_fingerprint",
    "context_of",
    "reference_digest",
]
