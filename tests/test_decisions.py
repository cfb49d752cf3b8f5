"""The decision index and compaction: decided once, read in one request, compacted losslessly."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from driftloader import decisions
from driftloader.catalog import CatalogRow
from driftloader.check import check_shards
from driftloader.compaction import read_folder, read_lines, write_lines
from driftloader.dataset import DriftDataset
from driftloader.decisions import DecisionIndex, compact_store
from driftloader.drift import DriftConfig
from driftloader.errors import ProfileFormatError
from driftloader.gate import ShardGate
from driftloader.gate_reads import decisions_of
from driftloader.index_copy import CopyLookups, Latest
from driftloader.policy import policy_from
from driftloader.profile import Profile
from driftloader.profiling import profile_shards
from driftloader.sources import expand_urls, stat_shards
from driftloader.store import ProfileStore
from driftloader.store_files import json_depth

from .conftest import write_shard
from .test_store import Env, env, small_profile  # noqa: F401  (env is a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")


def _rows(store: ProfileStore) -> list[dict]:
    return [r.to_dict() for r in store.catalog()]


# -- compaction ------------------------------------------------------------------------------


def test_compaction_is_lossless_and_later_rows_are_seen(env: Env) -> None:  # noqa: F811
    store = env.store
    for i in range(4):
        store.put_profile(small_profile(f"{env.data}/s-{i}.tar", f"v:{i}", seed=i))
        store.record(CatalogRow(f"{env.data}/s-{i}.tar", f"v:{i}", reference="r", score=i / 2))
    before = _rows(store)
    result = compact_store(store)
    assert result.folded == 4 and result.removed == 4
    assert store.list_json(store.path("catalog")) == []  # only the compacted file is left
    assert _rows(store) == before  # the report reads the same rows
    # rows written after compaction land as small objects and are merged over the compacted
    store.record(CatalogRow(f"{env.data}/s-1.tar", "v:1", action="checked", drifted=True))
    store.record(CatalogRow(f"{env.data}/s-9.tar", "v:9", reference="r"))
    after = {(r.url, r.version): r for r in store.catalog()}
    assert len(after) == 5
    one = after[(f"{env.data}/s-1.tar", "v:1")]
    assert (one.score, one.action, one.drifted, one.n) == (0.5, "checked", True, 50)
    compact_store(store)  # a second compaction folds the new rows in as well
    assert {(r.url, r.version): r.to_dict() for r in store.catalog()} == {
        k: r.to_dict() for k, r in after.items()
    }


def test_two_writers_never_overwrite_each_other(env: Env) -> None:  # noqa: F811
    first = env.store
    second = ProfileStore(first.url, first.storage_options)

    def write(store: ProfileStore, name: str) -> None:
        for i in range(6):
            store.record(CatalogRow(f"{env.data}/{name}-{i}.tar", "v:1", reference=name))

    writers = [
        threading.Thread(target=write, args=(s, n)) for s, n in [(first, "a"), (second, "b")]
    ]
    for t in writers:
        t.start()
    compact_store(first)  # compacting while they write loses nothing
    for t in writers:
        t.join()
    compact_store(second)
    urls = sorted(r.url for r in first.catalog())
    assert urls == sorted(f"{env.data}/{n}-{i}.tar" for n in "ab" for i in range(6))


# -- the decision index ----------------------------------------------------------------------


def _corpus(tmp_path: Path, store: ProfileStore) -> tuple[list[str], list[str]]:
    data = tmp_path / "data"
    data.mkdir()
    ref = [str(data / f"ref-{i}.tar") for i in range(2)]
    clean = [str(data / f"clean-{i}.tar") for i in range(4)]
    drifted = [str(data / "drift-0.tar")]
    for i, url in enumerate(ref):
        write_shard(url, 200, seed=i)
    for i, url in enumerate(clean):
        write_shard(url, 80, seed=10 + i)
    write_shard(drifted[0], 80, seed=30, shift=3.0)
    profile_shards(ref + clean + drifted, store, progress=False)
    store.build_reference("ref", ref)
    return clean, drifted


def _proxied_store(s3_proxy, bucket: str) -> tuple[dict, ProfileStore]:
    """The storage options that reach moto through the proxy, and a store on ``bucket``."""
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    return options, ProfileStore(f"s3://{bucket}/drift", options)


def _targets(proxy, method: str | None = None) -> list[str]:
    """What the proxy's requests asked for (unquoted), those of ``method`` if given."""
    return [unquote(r.target) for r in proxy.requests if method is None or r.method == method]


def _profile_gets(proxy) -> int:
    return sum(r.method == "GET" and "/shards/" in r.target for r in proxy.requests)


def test_gate_decides_indexed_shards_without_loading_profiles(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    shards = stat_shards(expand_urls(clean + drifted))
    plain = ShardGate(store, "ref", "skip")
    expected = [(s.url, plain.verdict(s).action, plain.verdict(s).drift.score) for s in shards]
    check_shards(clean + drifted, store, "ref")  # decides every shard into the index
    compact_store(store)
    s3_proxy.reset_stats()
    gate = ShardGate(ProfileStore(store.url, options), "ref", "skip")
    got = [(s.url, gate.verdict(s).action, gate.verdict(s).drift.score) for s in shards]
    assert got == expected  # the same decisions: 4 clean read, the drifted one skipped
    assert [a for _, a, _ in got] == ["read"] * 4 + ["skip"]
    assert _profile_gets(s3_proxy) == 0  # no profile loaded
    index_gets = [r for r in s3_proxy.requests if r.target.split("?")[0].endswith("index.jsonl")]
    assert len(index_gets) == 1 and decisions_of(gate).loads == 1  # the index, read once
    s3_proxy.reset_stats()
    gate.start_pass(1, 0, resumed=False)  # a new epoch decides from memory: no request
    gate.verdict(shards[0])
    assert decisions_of(gate).loads == 1 and s3_proxy.requests == []
    # a shard read from an indexed decision passes its samples and records its decision
    assert gate.before(shards[0])
    samples = list(gate.observe(shards[0], iter([{"__key__": "a"}, {"__key__": "b"}])))
    assert len(samples) == 2 and gate.results[-1]["action"] == "passed"
    assert _profile_gets(s3_proxy) == 0


def test_a_new_config_or_reference_invalidates_the_cached_decisions(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean + drifted, store, "ref")
    ref = store.get_reference("ref")
    (shard,) = stat_shards(expand_urls(drifted))
    assert DecisionIndex.of(store, "ref", ref, None).get(shard.url, shard.version).drifted
    compact_store(store)
    index = DecisionIndex.of(store, "ref", ref, None)
    assert index.get(shard.url, shard.version).drifted
    assert (
        DecisionIndex.of(store, "ref", ref, DriftConfig(alpha=0.001)).get(shard.url, shard.version)
        is None
    )  # another config: decided again
    store.build_reference("ref", clean)  # rebuilt: other content under the same name
    rebuilt = store.get_reference("ref")
    assert DecisionIndex.of(store, "ref", rebuilt, None).get(shard.url, shard.version) is None
    gate = ShardGate(store, "ref", "skip", options=None)
    assert gate.verdict(shard).action == "skip"  # decided from the profile again
    assert decisions_of(gate).get(shard.url, shard.version) is not None


def test_compacted_decisions_and_new_records_are_both_read(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean[:2], store, "ref")
    compact_store(store)
    check_shards(clean[2:] + drifted, store, "ref")  # after compaction: small records
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    assert len(index.known()) == 5 and index.unfolded == 3  # the index and the new records
    first = {k: d.to_dict() for k, d in index.load_all().items()}
    compact_store(store)
    again = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    assert {k: d.to_dict() for k, d in again.known().items()} == first


def _skip_gated(urls: list[str], store: ProfileStore, options: dict) -> DriftDataset:
    """A dataset over ``urls`` gated by ``store``'s reference "ref" with the skip policy."""
    return DriftDataset(
        urls, store=store.url, reference="ref", policy="skip", storage_options=options,
        shuffle=False,
    )  # fmt: skip


def test_a_gate_pass_decides_each_shard_once_for_the_next_passes(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """No ``check`` and no compaction: the first pass decides from the profiles, the next
    passes (new datasets, as in a new job) read those decisions and load no profile."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)

    def one_pass() -> tuple[int, list[str]]:
        ds = _skip_gated(clean + drifted, store, options)
        n = sum(1 for _ in ds)
        return n, sorted(r["action"] for r in ds.drift_report())

    s3_proxy.reset_stats()
    first = one_pass()
    assert first == (4 * 80, ["passed"] * 4 + ["skipped"])
    assert _profile_gets(s3_proxy) == 5  # decided from each stored profile once
    s3_proxy.reset_stats()
    assert one_pass() == first
    assert _profile_gets(s3_proxy) == 0  # the decisions written by the first pass


def test_a_run_folds_the_records_it_read_and_the_next_reads_one_file(
    tmp_path: Path, s3_proxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first gated run leaves a small record per shard it decided. The run after reads
    them one by one and folds them into a compacted file of their own, and writes the copy of
    the index (``index_copy.Latest``); the third reads that copy alone. Every run takes the
    same decisions."""
    monkeypatch.setattr(decisions, "FOLD_ON_READ", 3)  # the corpus has 5 shards
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)

    def one_run() -> tuple[int, list[str], list[str], int]:
        s3_proxy.reset_stats()
        ds = _skip_gated(clean + drifted, store, options)
        n = sum(1 for _ in ds)
        paths = [t.split("?")[0] for t in _targets(s3_proxy, "GET")]
        read = [p for p in paths if "/decisions/" in p]
        return n, sorted(r["action"] for r in ds.drift_report()), read, decisions_of(ds.gate).folds

    first, second, third = one_run(), one_run(), one_run()
    assert first[:2] == second[:2] == third[:2] == (4 * 80, ["passed"] * 4 + ["skipped"])
    assert [first[3], second[3], third[3]] == [0, 1, 0]  # the second run folded
    assert len([p for p in second[2] if "/new/" in p]) == 5
    assert [p for p in third[2] if "/new/" in p or p.endswith(".index.jsonl")] == []
    assert len([p for p in third[2] if "/latest." in p]) == 1


def test_a_run_is_built_without_waiting_for_the_fold_of_the_records_it_read(
    tmp_path: Path, s3_proxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold of the records a run reads (a write, a listing, a delete and the copy of the
    index: four round trips, ~0.5 s at 100 ms) runs beside the run: a dataset is built while
    the store holds the fold's write back, and the pass's end waits for the fold."""
    monkeypatch.setattr(decisions, "FOLD_ON_READ", 3)  # the corpus has 5 shards
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80  # decides
    s3_proxy.add_fault("stall", method="PUT", path=r"\.index\.jsonl", seconds=4)
    started = time.monotonic()
    ds = _skip_gated(clean + drifted, store, options)
    assert time.monotonic() - started < 2.5  # before: >= 4 s, waiting for the fold's write
    assert sum(1 for _ in ds) == 4 * 80
    assert decisions_of(ds.gate).folds == 1  # done when the pass ended
    assert [r.fault for r in s3_proxy.requests if r.method == "PUT"].count("stall") == 1
    s3_proxy.reset_stats()
    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
    assert [t for t in _targets(s3_proxy, "GET") if "/new/" in t] == []  # folded


def test_a_fold_of_a_large_index_leaves_the_copy_to_compact(
    tmp_path: Path, s3_proxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``FOLD_COPY_MAX`` decisions a reader's fold does not rewrite the whole index into
    its copy: the next run reads the folded file; ``compact`` writes the copy."""
    monkeypatch.setattr(decisions, "FOLD_ON_READ", 3)
    monkeypatch.setattr(decisions, "FOLD_COPY_MAX", 4)  # the corpus has 5 shards
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)

    def decision_gets() -> list[str]:
        s3_proxy.reset_stats()
        assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
        return [t for t in _targets(s3_proxy, "GET") if "/decisions/" in t and "list-type" not in t]

    decision_gets()  # decides from the profiles
    assert len([t for t in decision_gets() if "/new/" in t]) == 5  # read and folded
    third = decision_gets()
    assert len([t for t in third if t.endswith(".index.jsonl")]) == 1  # no copy written
    compact_store(store)
    assert [t for t in decision_gets() if t.endswith(".index.jsonl")] == []  # the copy


def test_a_compaction_with_nothing_to_fold_reads_the_index_once(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """With one compacted file and no new record, ``compact`` brings a missing copy of the
    index up to it from the records it has just read: one GET of the file, not two."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
    compact_store(store)
    copies = [p for p in store.list_tree(store.path("decisions")) if "/latest." in p]
    assert len(copies) == 1
    store.delete(copies)
    s3_proxy.reset_stats()
    compact_store(store)
    gets = _targets(s3_proxy, "GET")
    assert len([t for t in gets if t.endswith(".index.jsonl")]) == 1
    s3_proxy.reset_stats()  # the copy is back, and what the next pass reads
    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
    gets = _targets(s3_proxy, "GET")
    assert [t for t in gets if t.endswith(".index.jsonl")] == []
    assert len([t for t in gets if "/latest." in t]) == 1


def test_a_gate_parses_only_the_records_of_the_index_copy_it_asks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy of the index is read by how each line starts (its shard, version and whether
    it drifted); a record is parsed when its decision is asked for: a gate over 100k
    decisions parsed them all before its first sample (0.5 s). A line whose tail is corrupt
    costs only its shard (decided again); a copy whose lines start otherwise is parsed
    whole, as before. Every pass takes the same decisions."""
    import json

    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean + drifted, store, "ref")
    parsed, loads, lines = [], json.loads, []

    def compacted() -> tuple[str, bytes]:  # a pass notes rows in new records: folded here
        compact_store(store)
        (copy,) = [p for p in store.list_tree(store.path("decisions")) if "/latest." in p]
        head, _, body = store.read_bytes(copy).partition(b"\n")
        lines[:] = body.splitlines()
        assert len(lines) == 5
        return copy, head

    def counted(data, *args, **kwargs):  # a parse of the copy's records: some or all
        text = data if isinstance(data, bytes) else data.encode()
        if any(line in text for line in lines):
            parsed.append(sum(line in text for line in lines))
        return loads(data, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counted)

    def one_pass(warns: bool = False) -> tuple[int, list, list]:
        parsed.clear()
        ds = _skip_gated(clean + drifted, store, {})
        built = list(parsed)
        with pytest.warns(RuntimeWarning, match="ignoring a record") if warns else _nothing():
            n = sum(1 for _ in ds)
        return n, sorted(r["action"] for r in ds.drift_report()), built

    compacted()
    n, actions, built = one_pass()
    assert (n, actions) == (4 * 80, ["passed"] * 4 + ["skipped"])
    assert built == []  # before: the whole copy, parsed while the dataset was made
    assert parsed == [1] * 5  # each record once, one at a time
    copy, head = compacted()
    good = list(lines)
    store.write_bytes(copy, b"\n".join([head, lines[0][:-1], *lines[1:]]) + b"\n")
    assert one_pass(warns=True)[:2] == (n, actions)  # the corrupt one decided again
    lines[:] = [json.dumps(loads(line), sort_keys=True).encode() for line in good]
    store.write_bytes(copy, b"\n".join([head, *lines]) + b"\n")
    n2, actions2, built = one_pass()
    assert (n2, actions2) == (n, actions) and parsed == [5]  # parsed whole, at once


def _nothing():
    import contextlib

    return contextlib.nullcontext()


# -- many small objects are read in batches --------------------------------------------------


def test_references_and_catalogs_read_many_objects_in_concurrent_batches(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    options, store = _proxied_store(s3_proxy, s3_bucket)
    urls = [str(tmp_path / f"s-{i}.tar") for i in range(12)]
    for i, url in enumerate(urls):
        write_shard(url, 5, seed=i)
    profile_shards(urls, store, progress=False)
    store.delete(store.list_json(store.path("packs")))  # read the profiles, not their pack
    shards = stat_shards(expand_urls(urls))
    one_by_one = [store.get_profile(s.url, s.version) for s in shards]
    s3_proxy.latency_ms = 30
    s3_proxy.reset_stats()
    fresh = ProfileStore(store.url, options)
    reference = fresh.build_reference("ref", urls)
    assert (fresh.reads, fresh.batches) == (12, 1)  # one batched read of the 12 profiles
    assert s3_proxy.max_in_flight >= 2  # in flight together, not one at a time
    gets = [r for r in s3_proxy.requests if r.method == "GET" and "/shards/" in r.target]
    assert len(gets) == 12 and not [r for r in s3_proxy.requests if r.method == "HEAD"]
    merged = Profile.merged(one_by_one)
    assert reference.n == merged.n == 60
    assert reference.to_dict()["features"] == merged.to_dict()["features"]  # the same merge
    fresh.reads = fresh.batches = 0
    s3_proxy.reset_stats()
    rows = fresh.catalog()
    assert len(rows) == 12 and (fresh.reads, fresh.batches) == (12, 1)
    assert s3_proxy.max_in_flight >= 2


# -- reading compacted files fast, and still strictly -----------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b'{"a":"[[[[","b":[1,{"c":"]]}"}]}', 3),  # brackets inside strings do not count
        (b'{"a":"x\\"[[[[["}', 1),  # nor after an escaped quote
        (b'{"a":"x\\\\","b":[[]]}', 3),  # an escaped backslash ends the string
        (b'[1,2]\n{"a":[[]]}\n', 3),
        (b'"{{{"', 0),
    ],
)
def test_json_depth_counts_only_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_a_bad_line_of_a_compacted_file_is_named(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    path = store.path("catalog", "compacted.jsonl")
    write_lines(store, path, [{"url": "a"}, {"url": "b"}])
    assert read_lines(store, path) == [{"url": "a"}, {"url": "b"}]  # one parse of every line
    for bad, what in [(b"{oops}", "not valid JSON"), (b"[1]", "not a JSON object")]:
        store.write_bytes(path, b'{"url":"a"}\n\n' + bad + b'\n{"url":"b"}\n')
        with pytest.raises(ProfileFormatError, match=f"line 3 is {what}"):
            read_lines(store, path)
    store.write_bytes(path, b'{"url":"a"},{"url":"b"}\n')  # two objects on one line
    with pytest.raises(ProfileFormatError, match="line 1 is not valid JSON"):
        read_lines(store, path)


def test_a_corrupt_decision_record_costs_only_itself(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean + drifted, store, "ref")
    compact_store(store)
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    ((path, _),) = read_folder(store, index.folder).compacted  # the one compacted file
    records = read_lines(store, path)
    assert len(records) == 5
    records[0]["n"] = "many"  # one corrupt record among good ones
    write_lines(store, path, records)
    shards = stat_shards(expand_urls(clean + drifted))
    again = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    by_key = {(r["url"], r["version"]): r for r in records}
    bad = next(s for s in shards if by_key[(s.url, s.version)] is records[0])
    with pytest.warns(RuntimeWarning, match="ignoring a record of .*index.jsonl"):
        assert again.get(bad.url, bad.version) is None  # decided again
    assert all(again.get(s.url, s.version) is not None for s in shards if s is not bad)
    assert len(again.known()) == 4 and again.loads == 1


def test_a_decision_taken_again_in_a_later_epoch_is_not_written_again(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    ds = _skip_gated(clean + drifted, store, options)

    def catalog_requests() -> int:
        return sum("/catalog/" in t for t in _targets(s3_proxy))

    s3_proxy.reset_stats()
    assert sum(1 for _ in ds) == 4 * 80
    assert catalog_requests() == 2 * 5  # each shard's row read and written once
    ds.set_epoch(1)
    s3_proxy.reset_stats()
    assert sum(1 for _ in ds) == 4 * 80
    assert catalog_requests() == 0  # the same decisions: nothing read or written
    rows = ds.drift_report(include_store=False)
    assert sorted(r["epoch"] for r in rows) == [0] * 5 + [1] * 5  # still reported per epoch
    assert {r.epoch for r in store.catalog() if r.policy} == {0}  # rows keep their first epoch


def test_a_first_gated_pass_writes_each_decision_record_once(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """A shard decided in a pass gets its catalog row, and its decision record noting that
    row: one write of the record, not one before the row and one after it. The next run
    takes every decision from the records, reading and writing no catalog row."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    s3_proxy.reset_stats()
    ds = _skip_gated(clean + drifted, store, options)
    assert sum(1 for _ in ds) == 4 * 80
    puts = _targets(s3_proxy, "PUT")
    records = [t for t in puts if "/decisions/" in t and "/new/" in t]
    assert len(records) == len(set(records)) == 5
    assert sum("/catalog/" in t for t in puts) == 5
    s3_proxy.reset_stats()
    again = _skip_gated(clean + drifted, store, options)
    assert sum(1 for _ in again) == 4 * 80
    assert not [t for t in _targets(s3_proxy) if "/catalog/" in t]
    assert sorted(r["action"] for r in again.drift_report()) == ["passed"] * 4 + ["skipped"]


def _gate_requests(s3_proxy, store: ProfileStore, options: dict) -> tuple[ShardGate, dict]:
    """A gate made and its first pass prepared; each store request's start, by target."""
    s3_proxy.reset_stats()
    gate = ShardGate(ProfileStore(store.url, options), "ref", "skip")
    gate.start_pass(0, 0, resumed=False)
    return gate, {unquote(r.target): r.started for r in s3_proxy.requests}


def _started(requests: dict, part: str) -> float:
    (when,) = [t for target, t in requests.items() if part in target]
    return when


def test_a_gate_reads_its_reference_exclusions_and_decisions_in_one_round_trip(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """What a gate reads before its first verdict, after a compaction: the reference, the
    exclusion list, the listing of the reference's decision contexts and the copy of the
    index, all at once; the copy holds the context's compacted file, which is not read. At
    40 ms a request, one after another (the reference, then the listing, then the index
    file), these round trips delayed every dataset made."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean + drifted, store, "ref")
    compact_store(store)
    latency = 0.3
    s3_proxy.latency_ms = latency * 1000
    gate, requests = _gate_requests(s3_proxy, store, options)
    reference = _started(requests, "/references/ref.json")
    for part in ("/exclusions/ref.json", "prefix=drift/decisions/ref/&", "/latest."):
        assert _started(requests, part) < reference + latency  # before the reference came
    assert len(requests) == 4  # no index file read
    s3_proxy.reset_stats()
    shards = stat_shards(expand_urls(clean + drifted), options)
    assert [gate.verdict(s).action for s in shards] == ["read"] * 4 + ["skip"]
    assert not [r for r in s3_proxy.requests if "/drift/" in r.target]  # all read already


def test_a_copy_of_the_index_older_than_a_new_record_is_not_used(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """A decision recorded since the copy was written: the copy is not used, the context's
    files are read (the second round trip), and the new decision is found there."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean, store, "ref")
    compact_store(store)
    check_shards(drifted, store, "ref")  # a new record beside the compacted file
    latency = 0.3
    s3_proxy.latency_ms = latency * 1000
    gate, requests = _gate_requests(s3_proxy, store, options)
    reference = _started(requests, "/references/ref.json")
    assert _started(requests, "/latest.") < reference + latency
    assert reference + latency < _started(requests, ".index.jsonl") < reference + 2 * latency
    assert _started(requests, "/new/") < reference + 2 * latency
    s3_proxy.reset_stats()
    shards = stat_shards(expand_urls(clean + drifted), options)
    assert [gate.verdict(s).action for s in shards] == ["read"] * 4 + ["skip"]
    assert not [r for r in s3_proxy.requests if "/drift/" in r.target]  # all read already


# -- a clean pass costs nothing beyond reading -----------------------------------------------


def _drift_requests(proxy, after: int = 0) -> list[str]:
    """The store requests the proxy saw after the first ``after``, catalog rows left out."""
    targets = [unquote(r.target) for r in proxy.requests[after:]]
    return [t for t in targets if "/catalog/" not in t and "catalog%2F" not in t]


def test_a_new_run_taking_the_recorded_decisions_again_writes_nothing(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """The catalog rows and decision records of the first run hold the second run's
    decisions: the second run writes no object and does not even read the catalog (each
    record says its row holds the decision), and still reports its decisions."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)

    def catalog_requests() -> int:
        return sum("/catalog/" in t for t in _targets(s3_proxy))

    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
    s3_proxy.reset_stats()
    again = _skip_gated(clean + drifted, store, options)
    assert sum(1 for _ in again) == 4 * 80
    assert s3_proxy.counts.get("PUT", 0) == 0  # was one catalog row per shard
    assert catalog_requests() == 0  # was a read of each shard's row
    rows = again.drift_report()
    assert sorted(r["action"] for r in rows) == ["passed"] * 4 + ["skipped"]

    def monitored() -> DriftDataset:  # another policy: the rows change
        ds = _skip_gated(clean + drifted, store, options)
        ds.gate.policy = policy_from("monitor")
        return ds

    s3_proxy.reset_stats()
    assert sum(1 for _ in monitored()) == 5 * 80
    assert s3_proxy.counts.get("PUT", 0) == 10  # each row, then each record's note of it
    assert {r.policy for r in store.catalog() if r.reference} == {"monitor"}
    s3_proxy.reset_stats()
    assert sum(1 for _ in monitored()) == 5 * 80
    assert s3_proxy.counts.get("PUT", 0) == 0 and catalog_requests() == 0


def test_a_first_run_writes_its_decision_records_behind_the_samples(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """A shard decided from its stored profile gets a decision record: written behind the
    samples, not between them (at 40 ms each was a round trip on the sample path). With
    every record PUT held 2 s by the store, the first sample still comes at once, and the
    pass ends with every record written."""
    import time

    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    held = s3_proxy.add_fault(
        "stall", method="PUT", path="/decisions/.*/new/", seconds=2.0, times=None
    )
    ds = _skip_gated(clean + drifted, store, options)
    started = time.monotonic()
    samples = iter(ds)
    next(samples)
    assert time.monotonic() - started < 1.5  # was 2 s or more: one held PUT before it
    assert 1 + sum(1 for _ in samples) == 4 * 80
    assert held.fired >= 5  # every record was written, each held
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    assert len(index.load_all()) == 5


def test_a_check_after_a_gated_run_has_the_next_run_write_its_rows_again(tmp_path: Path) -> None:
    """``check`` rewrites the catalog rows (action "checked") and clears the records' note
    that a gate's rows hold them, so the next gated run writes its rows back."""
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    urls = clean + drifted
    for _ in range(2):
        assert sum(1 for _ in _skip_gated(urls, store, None)) == 4 * 80

    def actions() -> list[str | None]:
        return sorted(str(r.action) for r in store.catalog() if r.reference)

    assert actions() == ["passed"] * 4 + ["skipped"]
    check_shards(urls, store, "ref")
    assert actions() == ["checked"] * 5
    assert sum(1 for _ in _skip_gated(urls, store, None)) == 4 * 80
    assert actions() == ["passed"] * 4 + ["skipped"]


def test_dataloader_workers_read_nothing_the_dataset_read_when_made(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """The reference, the exclusions and the decision index are read once, when the dataset
    is made; its DataLoader workers take them along and ask the store for nothing more than
    catalog rows. The decisions they take reach ``drift_report``."""
    from torch.utils.data import DataLoader

    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    assert sum(1 for _ in _skip_gated(clean + drifted, store, options)) == 4 * 80
    s3_proxy.reset_stats()
    ds = _skip_gated(clean + drifted, store, options)
    made = len(s3_proxy.requests)
    assert any("decisions/" in t for t in _drift_requests(s3_proxy))  # read when made
    loader = DataLoader(ds.map(lambda s: s["__key__"]), batch_size=None, num_workers=2)
    assert len(list(loader)) == 4 * 80
    assert _drift_requests(s3_proxy, made) == []  # was the index and its records per worker
    actions = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert actions == {**{f"clean-{i}.tar": "passed" for i in range(4)}, "drift-0.tar": "skipped"}


def test_the_dataset_lists_its_shards_while_the_gate_reads_its_reference(
    tmp_path: Path, s3_proxy, s3_bucket: str, s3fs_fresh
) -> None:
    """Listing the shards of a glob, with their versions, and reading the reference one after
    the other added a round trip before the first sample: they overlap (the listing is held
    3 s at the store; the reference is asked for meanwhile)."""
    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    s3fs_fresh.put([*clean, *drifted], f"{s3_bucket}/data/")
    s3_proxy.add_fault("stall", method="GET", path="prefix=data", seconds=3.0)
    s3_proxy.reset_stats()
    ds = _skip_gated(f"s3://{s3_bucket}/data/*.tar", store, options)
    assert [s.version.startswith("v:") for s in ds.shards] == [True] * 5
    listing = next(r for r in s3_proxy.requests if r.fault == "stall")
    reference = next(r for r in s3_proxy.requests if "/references/" in r.target)
    assert reference.started - listing.started < 2.5  # one after the other: >= 3 s apart


def test_workers_of_a_later_epoch_find_the_decisions_earlier_workers_took(
    tmp_path: Path, s3_proxy, s3_bucket: str
) -> None:
    """A first run with DataLoader workers: each epoch's workers are new processes, made from
    a dataset whose index was read before any decision was taken. The second epoch's workers
    read the decisions the first epoch's wrote (once, at their first unknown shard) and load
    no profile again."""
    from torch.utils.data import DataLoader

    options, store = _proxied_store(s3_proxy, s3_bucket)
    clean, drifted = _corpus(tmp_path, store)
    ds = _skip_gated(clean + drifted, store, options)
    loader = DataLoader(ds.map(lambda s: s["__key__"]), batch_size=None, num_workers=2)
    s3_proxy.reset_stats()
    assert len(list(loader)) == 4 * 80
    assert _profile_gets(s3_proxy) == 5  # the first epoch decides from the profiles
    s3_proxy.reset_stats()
    assert len(list(loader)) == 4 * 80
    assert _profile_gets(s3_proxy) == 0  # was 5: each shard decided again from its profile
    listings = [t for t in _drift_requests(s3_proxy) if "decisions/" in t and "list-type" in t]
    assert 0 < len(listings) <= 2  # once a worker (its first unknown shard), not once a shard


def test_a_first_pass_compares_stored_profiles_ahead_off_the_readers_thread(
    tmp_path: Path, monkeypatch
) -> None:
    """A shard with no decision is decided from its stored profile: the comparison with the
    reference (~30 ms for 64 features) runs ahead on the read-ahead's thread, in the order of
    the shards, not on the sample path; the decisions are the same."""
    import threading

    import driftloader.drift as drift_module

    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    compared, real = [], drift_module.compare

    def recording(profile, reference, config=None):
        compared.append((profile.url, threading.current_thread().name))
        return real(profile, reference, config)

    monkeypatch.setattr(drift_module, "compare", recording)
    ds = _skip_gated(clean + drifted, store, {})
    assert sum(1 for _ in ds) == 4 * 80
    assert [Path(url).name for url, _ in compared] == [Path(u).name for u in clean + drifted]
    assert {name.split("_")[0] for _, name in compared} == {"driftloader-ahead"}
    rows = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert rows == {**{Path(u).name: "passed" for u in clean}, "drift-0.tar": "skipped"}


# -- the copy of the index answers a gate's first lookups without its table -----------------


def _copy_of(lines: list[dict]) -> Latest:
    body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in lines)
    return Latest("ctx", [], "copy.jsonl", body)


def _record(url: str, version: str | None, drifted: bool | None, n: int = 10) -> dict:
    return {"url": url, "version": version, "n": n, "drifted": drifted, "score": 0.5}


def test_the_copy_s_lookups_find_what_its_table_holds() -> None:
    """A key's line and ``drifted`` found by searching the copy's text are its table's entry
    (a copy holds each key once: it is written from a table or a merge); a key with no
    record is None; what only the table can tell raises ``LookupError``: a name JSON
    escapes, a copy laid out otherwise, and every lookup past ``LOOKUPS``. A copy not in key
    order is searched whole; one in key order (as compaction writes it) is bisected."""
    import random

    records = [_record(f"s3://b/shard-{i:04d}.tar", f"e:{i:x}", i % 3 == 0) for i in range(200)]
    records += [_record("s3://b/shard-0007.tar", None, None), _record("s3://b/u.tar", None, False)]
    random.Random(3).shuffle(records)
    copy = _copy_of(records)
    table = copy.keyed()
    lookups = CopyLookups(copy)
    keys = [
        ("s3://b/shard-0007.tar", None),
        ("s3://b/u.tar", None),
        ("s3://b/shard-0007.tar", "e:7"),
    ]
    for key in keys + [(f"s3://b/shard-{i:04d}.tar", f"e:{i:x}") for i in range(0, 200, 7)]:
        assert lookups.find(key) == table[key]
    assert lookups.find(("s3://b/shard-0008.tar", None)) is None  # another version
    assert lookups.find(("s3://b/shard-9.tar", "e:9")) is None
    assert lookups.find(("s3://b/shard-0007.tar", None))[1] is None
    for odd in [('s3://b/a"b.tar', None), ("s3://b/\u00e9.tar", None), ("s3://b/x", "a\\b")]:
        with pytest.raises(LookupError):
            lookups.find(odd)
    while lookups.asked < CopyLookups.LOOKUPS:
        lookups.find(keys[0])
    with pytest.raises(LookupError):
        lookups.find(keys[0])
    sorted_keys = _copy_of([json.loads(json.dumps(r, sort_keys=True)) for r in records])
    with pytest.raises(LookupError):
        CopyLookups(sorted_keys).find(keys[0])
    assert CopyLookups(copy).table(None) == table
    # in key order, as compaction writes a copy: each key found by bisecting the lines
    ordered = sorted(table.items(), key=lambda item: (item[0][0], str(item[0][1])))
    copy = _copy_of([json.loads(line) for line, _ in (entry for _, entry in ordered)])
    lookups = CopyLookups(copy)
    lookups.LOOKUPS = len(ordered) + 2
    for key, entry in ordered:
        quoted = "null" if key[1] is None else f'"{key[1]}"'
        needle = f'{{"url":"{key[0]}","version":{quoted},'.encode()
        assert lookups._bisected(needle, (key[0], str(key[1]))) >= 0
        assert lookups.find(key) == entry
    assert lookups.find(("s3://b/shard-0003.tar", "e:0")) is None


def test_a_gate_s_first_verdicts_search_the_copy_and_key_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run over decided shards takes its first decisions by searching the copy of the index
    (keying 100k records took 0.12-0.17 s before a gate's first sample); its table is made
    only past ``CopyLookups.LOOKUPS`` lookups, or for what a search cannot answer. The same
    decisions either way."""
    store = ProfileStore(str(tmp_path / "store"))
    clean, drifted = _corpus(tmp_path, store)
    check_shards(clean + drifted, store, "ref")
    compact_store(store)  # the decisions and the copy of the index
    keyed, real = [], Latest.keyed
    monkeypatch.setattr(Latest, "keyed", lambda self: keyed.append(1) or real(self))
    searched_keys, find = [], CopyLookups.find
    monkeypatch.setattr(CopyLookups, "find", lambda s, k: searched_keys.append(k) or find(s, k))

    def one_pass() -> tuple[int, list[str]]:
        ds = _skip_gated(clean + drifted, store, {})
        return sum(1 for _ in ds), sorted(r["action"] for r in ds.drift_report())

    searched = one_pass()
    assert searched == (4 * 80, ["passed"] * 4 + ["skipped"])
    assert keyed == [] and len(set(searched_keys)) == 5  # each shard a search of the copy
    compact_store(store)  # the rows the pass noted in new records, folded into the copy
    monkeypatch.setattr(CopyLookups, "LOOKUPS", 2)
    assert one_pass() == searched and keyed == [1]  # past two lookups: the table, once
