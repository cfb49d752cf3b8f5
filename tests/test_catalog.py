"""CatalogRow: one type for catalog rows, one writer (store.record) and one reader (store.catalog)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from driftloader.catalog import CatalogRow
from driftloader.profile import Profile
from driftloader.reference import MissingProfiles, merge_reference
from driftloader.sources import Shard
from driftloader.store import ProfileStore

from .test_store import small_profile


def every_field() -> CatalogRow:
    return CatalogRow(
        url="/d/a.tar",
        version="s:1-2",
        source="/d",
        created=1.5,
        n=10,
        errors=1,
        fingerprint="fp",
        n_features=3,
        profile="/store/shards/a.json",
        profile_bytes=2048,
        reference="v1",
        policy="skip",
        epoch=2,
        decided=3.5,
        action="skipped",
        drifted=True,
        score=4.0,
        top=[{"name": "x", "metric": "ks", "value": 0.5, "drifted": True}],
        schema={"missing": ["y"], "new": []},
        decided_n=8,
        ess=7.5,
        distinct=6,
        probe=5,
        validation=["too big"],
        validation_reference="v1",
        valid=False,
        validated=9.0,
        extra={"from_the_future": [1]},
    )


def test_every_field_round_trips_through_json() -> None:
    row = every_field()
    again = CatalogRow.from_dict(json.loads(json.dumps(row.to_dict(), allow_nan=False)))
    assert again.to_dict() == row.to_dict()
    assert {f.name for f in fields(CatalogRow)} - set(row.to_dict()) == {"extra"}
    assert CatalogRow.__doc__ is not None
    for f in fields(CatalogRow):  # every field is documented in the class docstring
        assert f"{f.name}:" in CatalogRow.__doc__, f.name


def test_unset_fields_are_not_written_and_read_as_a_mapping() -> None:
    row = CatalogRow("/d/a.tar", None, score=float("nan"), n=np.int64(3))
    assert row.to_dict() == {"url": "/d/a.tar", "version": None, "score": None, "n": 3}
    assert row["n"] == 3 and "drifted" not in row and row.get("drifted") is None
    assert dict(row) == row.to_dict() and row == row.to_dict()


def test_merging_keeps_what_the_newer_row_does_not_set() -> None:
    old = CatalogRow("/d/a.tar", "v", n=10, reference="v1", score=2.0, extra={"k": 1})
    new = CatalogRow("/d/a.tar", "v", action="passed", score=0.5, extra={"j": 2})
    merged = old.merged(new)
    assert (merged.n, merged.reference, merged.action, merged.score) == (10, "v1", "passed", 0.5)
    assert merged.extra == {"k": 1, "j": 2}
    assert old.score == 2.0  # not changed in place


def test_older_rows_are_read_and_bad_values_dropped_with_a_warning(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    store.record(CatalogRow("/d/a.tar", "v:1", reference="v1"))
    (path,) = store.list_json(store.path("catalog"))
    old = {"url": "/d/a.tar", "version": "v:1", "drift": True, "score": "high", "n": 4}
    store.write_json(path, old)  # a row from another version: unknown key, a string score
    with pytest.warns(RuntimeWarning, match=r"catalog row .*score='high' is not a number"):
        (row,) = store.catalog()
    assert row.n == 4 and row.score is None and row.extra == {"drift": True}
    store.record(CatalogRow("/d/a.tar", "v:1", action="checked"))
    written = json.loads(Path(path).read_text())
    assert written["drift"] is True and written["action"] == "checked"  # unknown keys kept


def test_record_takes_a_row_and_the_older_url_version_dict_form(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    assert store.record(CatalogRow("https://u:secret@h/a.tar", "e:1", score=1.0)) is True
    store.record("https://u:secret@h/a.tar", "e:1", {"action": "passed"})
    (row,) = store.catalog()
    assert isinstance(row, CatalogRow)
    assert (row.url, row.score, row.action) == ("https://***@h/a.tar", 1.0, "passed")
    with pytest.raises(ValueError, match="CatalogRow"):
        store.record({"url": "/d/a.tar"})  # type: ignore[arg-type]


def test_public_read_write_path_api(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    path = store.path("exclusions", "v1.json")
    assert path == str(tmp_path / "store" / "exclusions" / "v1.json")
    assert store.read_json(path) is None and not store.exists(path)
    store.write_json(path, {"a": [1, 2]}, indent=2)
    assert store.read_json(path) == {"a": [1, 2]} and store.exists(path)
    assert store.read_bytes(path).startswith(b"{\n")
    assert store.list_json(store.path("exclusions")) == [path]
    with pytest.raises(ValueError):  # strict JSON
        store.write_json(path, {"a": float("nan")})


def test_merge_reference_is_pure() -> None:
    shards = [Shard("/d/a.tar", "v:1"), Shard("/d/b.tar", "v:1")]
    profiles = [small_profile(s.url, s.version, seed=i) for i, s in enumerate(shards)]
    reference = merge_reference("r", shards, profiles)
    assert isinstance(reference, Profile) and reference.n == 100
    assert reference.meta["shards"] == [{"url": s.url, "version": "v:1"} for s in shards]
    with pytest.raises(MissingProfiles) as info:
        merge_reference("r", shards, [profiles[0], None])
    assert info.value.shards == [("/d/b.tar", "v:1")]


# -- one canonical URL form (#14) --------------------------------------------------------------


def test_relative_brace_and_absolute_glob_give_one_set_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftloader.check import check_shards
    from driftloader.gate import ShardGate
    from driftloader.profiling import profile_shards
    from driftloader.report import shard_rows
    from driftloader.sources import expand_urls, stat_shards
    from driftloader.validate import pending_shards, validate_shards

    from .conftest import write_shard

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    for i in range(3):
        write_shard(tmp_path / "shards" / f"s-{i}.tar", 30, seed=i)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards("shards/s-{0..2}.tar", store, progress=False)  # relative, as given
    store.build_reference("ref", "shards/s-{0..2}.tar")
    glob = str(tmp_path / "shards" / "*.tar")
    check_shards(glob, store, "ref")  # absolute: the same shards
    rows = store.catalog()
    absolute = [str(tmp_path / "shards" / f"s-{i}.tar") for i in range(3)]
    assert [r.url for r in rows] == absolute
    assert {r.source for r in rows} == {str(tmp_path / "shards")}  # one folder
    assert all(r.action == "checked" and r.n == 30 for r in rows)  # one row each, merged
    report = shard_rows(store, "ref")
    assert sorted(r.url for r in report) == absolute
    assert len({r.source for r in report}) == 1
    # the catalog's rows are recognised as the shards given either way
    gate = ShardGate(store, "ref", "monitor")
    assert len(gate.report(stat_shards(expand_urls("shards/s-{0..2}.tar")))) == 0  # checks
    store.record(CatalogRow("shards/s-0.tar", rows[0].version, reference="ref", policy="skip"))
    decided = ShardGate(store, "ref").report(stat_shards(expand_urls(glob)))
    assert [r["url"] for r in decided] == absolute[:1]
    validate_shards("shards/s-{0..2}.tar", store, "ref")
    assert pending_shards(str(tmp_path / "shards"), store, "ref") == []


def test_rows_stored_in_the_old_relative_form_still_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftloader.gate import ShardGate
    from driftloader.sources import expand_urls, stat_shards
    from driftloader.store import shard_key
    from driftloader.writebehind import WriteBehind

    from .conftest import write_shard

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "a.tar", 5)
    (shard,) = stat_shards(expand_urls(str(tmp_path / "shards" / "a.tar")))
    store = ProfileStore(str(tmp_path / "store"))
    old = {"url": "shards/a.tar", "version": shard.version, "source": "shards"}
    old.update(reference="ref", policy="skip", action="skipped", decided=1.0)
    store.write_json(store.catalog_path(shard.url, shard.version), old)  # as written before
    (row,) = store.catalog()
    assert (row.url, row.source) == (shard_key("shards/a.tar"), str(tmp_path / "shards"))
    gate = ShardGate.__new__(ShardGate)  # only report() and its store are used
    gate.store, gate.reference_name, gate.results = store, "ref", []
    gate._writes, gate._index = WriteBehind(), None
    assert [r["url"] for r in gate.report([shard])] == [str(tmp_path / "shards" / "a.tar")]
