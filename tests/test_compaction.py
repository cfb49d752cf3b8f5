"""Compaction under concurrency: two compactors never lose a record, each small record is read
once, and the decision folders of references that are gone or rebuilt can be pruned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from driftloader.catalog import CatalogRow
from driftloader.check import check_shards
from driftloader.compaction import write_lines
from driftloader.dataset import DriftDataset
from driftloader.decisions import Decision, DecisionIndex, compact_store
from driftloader.profile import Profile
from driftloader.store import ProfileStore

from .test_decisions import _corpus

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")


class InterleavingStore(ProfileStore):
    """A real store that runs ``meanwhile`` once, right after this store first reads a
    compacted (``.jsonl``) file under a ``kind`` folder: another compactor's whole run, at the
    moment this one has read what it is folding and has not written yet."""

    meanwhile: Callable[[], object] | None = None
    kind = "/catalog/"

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        data = super().read_bytes(path, limit)
        if path.endswith(".jsonl") and self.kind in path and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return data


def _row(i: int) -> CatalogRow:
    return CatalogRow(f"s3://data/s-{i}.tar", f"v:{i}", reference="r", score=i / 4)


def test_two_concurrent_catalog_compactions_lose_no_row(s3_bucket: str) -> None:
    first = ProfileStore(f"s3://{s3_bucket}/drift")
    for i in range(4):
        first.record(_row(i))
    compact_store(first)  # an existing compacted file, which both compactors read
    for i in range(4, 6):
        first.record(_row(i))
    second = InterleavingStore(first.url)

    def other_compactor() -> None:  # a row written and compacted while ``second`` compacts
        first.record(_row(6))
        compact_store(first)

    second.meanwhile = other_compactor
    compact_store(second)
    assert second.meanwhile is None  # the other compaction did run in between
    assert sorted(r.url for r in first.catalog()) == sorted(_row(i).url for i in range(7))
    compact_store(first)  # and the next compaction folds what both wrote into one file
    assert [r.to_dict() for r in first.catalog()] == [_row(i).to_dict() for i in range(7)]
    assert len(_compacted(first, first.path("catalog"))) == 1


def _decision(i: int) -> Decision:
    return Decision(f"s3://data/s-{i}.tar", f"v:{i}", 10, i % 2 == 0, i / 4)


def test_two_concurrent_decision_compactions_lose_no_decision(s3_bucket: str) -> None:
    first = ProfileStore(f"s3://{s3_bucket}/drift")
    index = DecisionIndex(first, "ref", "c0ffee")

    def write(i: int) -> None:
        d = _decision(i)
        first.write_json(index.record_path(d.url, d.version), d.to_dict())

    for i in range(3):
        write(i)
    compact_store(first)
    write(3)
    second = InterleavingStore(first.url)

    def other_compactor() -> None:
        write(4)
        compact_store(first)

    second.meanwhile, second.kind = other_compactor, "/decisions/"
    compact_store(second)
    assert second.meanwhile is None
    got = DecisionIndex(ProfileStore(first.url), "ref", "c0ffee").known()
    assert sorted(got.values(), key=lambda d: d.url) == [_decision(i) for i in range(5)]


def _compacted(store: ProfileStore, folder: str) -> list[str]:
    return sorted(p for p in store.list_tree(folder) if p.endswith(".jsonl"))


def test_compaction_reads_each_small_record_once(s3_proxy, s3_bucket: str) -> None:
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    for i in range(5):
        store.record(_row(i))
    compact_store(store)
    for i in range(5, 9):
        store.record(_row(i))
    s3_proxy.reset_stats()
    result = compact_store(store)
    assert (result.folded, result.removed) == (4, 4)
    gets = Counter(
        unquote(r.target).split("?")[0]
        for r in s3_proxy.requests
        if r.method == "GET" and "list-type" not in r.target
    )
    rows = {k: n for k, n in gets.items() if k.endswith(".json") and "/catalog/" in k}
    assert len(rows) == 4 and set(rows.values()) == {1}  # each small row read once
    assert sum(n for k, n in gets.items() if k.endswith(".jsonl")) == 1  # and the compacted file


def test_files_of_earlier_versions_are_read_and_folded(tmp_path: Path) -> None:
    """``catalog/compacted.jsonl`` and ``decisions/<name>/<context>/index.jsonl`` as earlier
    versions wrote them are read beside newer compacted files, and folded in by compaction."""
    store = ProfileStore(str(tmp_path / "store"))
    write_lines(store, store.path("catalog", "compacted.jsonl"), [_row(0).to_dict()])
    index = DecisionIndex(store, "ref", "c0ffee")
    write_lines(store, index.index_path, [_decision(0).to_dict()])
    store.record(_row(1))
    d = _decision(1)
    store.write_json(index.record_path(d.url, d.version), d.to_dict())
    compact_store(store)
    store.record(_row(2))
    write_lines(store, store.path("catalog", "compacted.jsonl"), [_row(3).to_dict()])
    assert [r.url for r in store.catalog()] == [_row(i).url for i in range(4)]
    assert not Path(index.index_path).exists()  # folded into the newer file
    assert sorted(DecisionIndex(store, "ref", "c0ffee").known()) == [
        _decision(i).key for i in range(2)
    ]


def _contexts(store: ProfileStore, name: str) -> list[str]:
    return store.list_folders(store.path("decisions", name))


def test_prune_removes_only_decisions_of_gone_or_rebuilt_references(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean[:2], store, "ref")
    (stale,) = _contexts(store, "ref")
    store.build_reference("ref", clean)  # rebuilt: the decisions above are stale
    store.build_reference("gone", clean[:2])
    check_shards(clean[:2], store, "gone")
    (gone,) = _contexts(store, "gone")
    Path(store.reference_path("gone")).unlink()  # its reference removed
    check_shards(clean[:3], store, "ref")  # decided against the rebuilt reference
    gated = DriftDataset(clean + drifted, store=store.url, reference="ref", policy="skip")
    assert sum(1 for _ in gated) > 0  # the gate writes its decisions too
    older = DecisionIndex(store, "ref", "0123456789abcdef0123")  # as earlier versions wrote
    d = _decision(0)
    store.write_json(older.record_path(d.url, d.version), d.to_dict())
    kept = [c for c in _contexts(store, "ref") if c != stale]
    assert len(kept) >= 2
    assert compact_store(store).pruned == []  # only when asked
    result = compact_store(store, prune=True)
    assert sorted(result.pruned) == sorted(
        store.display(store.path("decisions", n, c)) for n, c in [("ref", stale), ("gone", gone)]
    )
    assert result.to_dict()["pruned"] == result.pruned
    assert _contexts(store, "ref") == kept and _contexts(store, "gone") == []
    assert compact_store(store, prune=True).pruned == []  # the current ones stay
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    assert len(index.known()) == 5  # check's and the gate's decisions against the current one


class CountingStore(ProfileStore):
    """A real store that counts the references it reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.references_read: Counter[str] = Counter()

    def get_reference(self, name: str) -> Profile:
        self.references_read[name] += 1
        return super().get_reference(name)


def test_a_pruning_compaction_reads_each_reference_once(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path / "store"))
    clean, _ = _corpus(tmp_path, store)
    store.build_reference("other", clean[:2])
    check_shards(clean[:2], store, "ref")
    check_shards(clean[:2], store, "other")
    store.references_read.clear()
    compact_store(store, prune=True)
    assert store.references_read == {"ref": 1, "other": 1}  # prune and compact share them


class ListingStore(ProfileStore):
    """A real store that runs ``meanwhile`` once, right after its first listing: a compaction
    that removes what this reader listed before it reads it."""

    meanwhile: Callable[[], object] | None = None

    def list_tree(self, folder: str) -> dict[str, str | None]:
        found = super().list_tree(folder)
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return found


def test_a_reader_lists_again_when_a_compaction_removes_what_it_listed(s3_bucket: str) -> None:
    writer = ProfileStore(f"s3://{s3_bucket}/drift")
    for i in range(3):
        writer.record(_row(i))
    compact_store(writer)
    for i in range(3, 5):
        writer.record(_row(i))
    reader = ListingStore(writer.url)
    reader.meanwhile = lambda: compact_store(writer)
    assert [r.url for r in reader.catalog()] == [_row(i).url for i in range(5)]
    assert reader.meanwhile is None


def test_readers_list_once_and_read_every_compacted_file_in_one_batch(
    s3_proxy, s3_bucket: str
) -> None:
    """After two concurrent compactions (two compacted files) and new small records, the
    catalog and the decision index are still read with one listing each and one GET a file."""
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    first = ProfileStore(f"s3://{s3_bucket}/drift", options)
    index = DecisionIndex(first, "ref", "c0ffee")
    for i in range(4):
        first.record(_row(i))
        d = _decision(i)
        first.write_json(index.record_path(d.url, d.version), d.to_dict())
    second = InterleavingStore(first.url, options)
    second.meanwhile = lambda: compact_store(first)
    compact_store(first)
    first.record(_row(4))
    compact_store(second)  # the first compactor runs while the second has read: two files
    assert len(_compacted(first, first.path("catalog"))) == 2
    first.record(_row(5))
    s3_proxy.reset_stats()
    fresh = ProfileStore(first.url, options)
    assert [r.url for r in fresh.catalog()] == [_row(i).url for i in range(6)]
    lists = [r for r in s3_proxy.requests if "list-type" in r.target]
    gets = [r for r in s3_proxy.requests if r.method == "GET" and "list-type" not in r.target]
    assert (len(lists), len(gets), len(s3_proxy.requests)) == (1, 3, 4)  # 2 files + 1 row
    s3_proxy.reset_stats()
    again = DecisionIndex(fresh, "ref", "c0ffee")
    again.read()
    assert len(again.known()) == 4 and again.unfolded == 0
    lists = [r for r in s3_proxy.requests if "list-type" in r.target]
    assert (len(lists), len(s3_proxy.requests)) == (1, 2)  # one listing, one compacted file


class RewritingStore(ProfileStore):
    """A real store that runs ``meanwhile`` once, right before its second listing of a tree:
    another writer's work between a reader's read of a folder and its fold's check of it."""

    meanwhile: Callable[[], object] | None = None
    listings = 0

    def list_tree(self, folder: str) -> dict[str, str | None]:
        self.listings += 1
        if self.listings == 2 and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return super().list_tree(folder)


def test_a_reader_folds_the_small_records_it_read_but_not_one_rewritten_since(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``FOLD_ON_READ`` small records, a reader writes them into a compacted file of
    their own and deletes them, leaving the compacted files there as they are; a record
    rewritten between its read and the delete is kept (the listing's ETag tells), and every
    decision stays readable, the rewritten one as rewritten."""
    import dataclasses

    from driftloader import decisions

    monkeypatch.setattr(decisions, "FOLD_ON_READ", 3)
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    index = DecisionIndex(store, "ref", "c0ffee")

    def write(d: Decision) -> None:
        store.write_json(index.record_path(d.url, d.version), d.to_dict())

    for i in range(2):
        write(_decision(i))
    compact_store(store)
    (older,) = _compacted(store, index.folder.root)
    for i in range(2, 6):
        write(_decision(i))
    rewritten = dataclasses.replace(_decision(3), drifted=True, score=9.0)
    reader = RewritingStore(store.url)
    reader.meanwhile = lambda: write(rewritten)
    folding = DecisionIndex(reader, "ref", "c0ffee")
    assert len(folding.known()) == 6
    folding.settle()  # the fold runs on a background thread
    assert folding.folds == 1
    compacted = _compacted(store, index.folder.root)
    assert older in compacted and len(compacted) == 2  # the older file is left as it is
    left = [p for p in store.list_tree(index.new_folder) if p.endswith(".json")]
    assert left == [index.record_path(rewritten.url, rewritten.version)]
    got = DecisionIndex(ProfileStore(store.url), "ref", "c0ffee").known()
    assert got[rewritten.key] == rewritten and len(got) == 6
