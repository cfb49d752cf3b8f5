"""One featurizer per reference: the reference records its FeatureSpec and check, validate,
report, the dataset's gate and the serving monitor use it when no featurizer is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import driftloader as dl
from driftloader.check import check_shards
from driftloader.cli import main
from driftloader.features import DefaultFeaturizer, FeatureSpec
from driftloader.profiling import profile_shards
from driftloader.reference import FeaturizerDisagreement
from driftloader.report import write_report
from driftloader.sources import stat_shard
from driftloader.store import ProfileStore
from driftloader.validate import validate_shards

N = 200
SPEC = FeatureSpec({"x.npy": "summary", "cls": "categorical"})


@pytest.fixture
def shards(shard_families) -> dict[str, list[str]]:
    return shard_families(N, refs=3)


def _spec_reference(shards: dict, store: ProfileStore) -> dl.Profile:
    profile_shards(shards["ref"], store, featurizer=SPEC, progress=False)
    return store.build_reference("v1", shards["ref"], featurizer=SPEC)


def test_cli_round_trip_with_features_check_uses_the_references_spec(shards, tmp_path, capsys):
    store = str(tmp_path / "store")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    assert main(["profile", *shards["ref"], "--store", store, "--features", str(spec_file)]) == 0
    assert (
        main(["reference", "v1", *shards["ref"], "--store", store, "--features", str(spec_file)])
        == 0
    )
    capsys.readouterr()
    ref = ProfileStore(store).get_reference("v1")
    assert ref.meta["featurizer"] == json.loads(SPEC.to_json())
    assert ref.fingerprint == SPEC.fingerprint
    code = main(
        ["check", *shards["clean"], *shards["bad"], "--store", store, "--reference", "v1", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["errors"] == []
    by_name = {Path(s["url"]).name: s for s in report["shards"]}
    assert by_name["bad-0.tar"]["drifted"] and not by_name["clean-0.tar"]["drifted"]
    names = {f["name"] for f in by_name["bad-0.tar"]["features"]}
    assert names <= set(ref.kinds) and not any(n.startswith("txt") for n in names)


def test_a_reference_takes_the_spec_its_shard_profiles_carry(shards, tmp_path, capsys):
    """Profiled with --features, the reference built without it records the profiles' spec,
    and check (no --features either) compares with the same featurizer."""
    store = str(tmp_path / "store")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    assert main(["profile", *shards["ref"], "--store", store, "--features", str(spec_file)]) == 0
    assert main(["reference", "v1", *shards["ref"], "--store", store]) == 0
    capsys.readouterr()
    ref = ProfileStore(store).get_reference("v1")
    assert ref.fingerprint == SPEC.fingerprint
    assert ref.meta["featurizer"] == json.loads(SPEC.to_json())
    shard = stat_shard(dl.Shard(shards["ref"][0]))
    stored = ProfileStore(store).get_profile(shard.url, shard.version)
    assert stored.meta["featurizer"] == json.loads(SPEC.to_json())
    code = main(["check", *shards["bad"], "--store", store, "--reference", "v1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["errors"] == [] and report["shards"][0]["drifted"]
    assert {f["name"] for f in report["shards"][0]["features"]} <= set(ref.kinds)


def test_a_reference_of_shards_profiled_by_different_featurizers_is_refused(
    shards, tmp_path, capsys
):
    store = str(tmp_path / "store")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    first, rest = shards["ref"][:1], shards["ref"][1:]
    assert main(["profile", *first, "--store", store, "--features", str(spec_file)]) == 0
    assert main(["profile", *rest, "--store", store]) == 0
    capsys.readouterr()
    assert main(["reference", "v1", *shards["ref"], "--store", store]) == 2
    err = capsys.readouterr().err
    assert "different featurizers" in err and "ref-0.tar" in err and "--features" in err
    with pytest.raises(FeaturizerDisagreement, match="ref-1.tar"):
        ProfileStore(store).build_reference("v1", shards["ref"])
    # picking one featurizer's profiles still works
    assert main(["profile", *first, "--store", store]) == 0
    ref = ProfileStore(store).build_reference("v1", shards["ref"], featurizer=DefaultFeaturizer())
    assert ref.meta["featurizer"] == DefaultFeaturizer().spec.to_dict()


def test_a_bad_features_file_is_a_clear_error(shards, tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"features": {"x.npy": "no-such-kind"}}')
    code = main(
        ["profile", *shards["ref"], "--store", str(tmp_path / "s"), "--features", str(spec_file)]
    )
    assert code == 2 and "spec.json" in capsys.readouterr().err


def test_a_shard_profiled_by_another_featurizer_is_profiled_again_side_by_side(shards, tmp_path):
    store = ProfileStore(str(tmp_path / "store"))
    ref = _spec_reference(shards, store)
    profile_shards(shards["clean"], store, progress=False)  # the default featurizer
    with pytest.warns(RuntimeWarning, match="profiling it again"):
        results = check_shards(shards["clean"], store, "v1")
    assert len(results) == 1 and not results.failed and not results[0].drifted
    shard = stat_shard(dl.Shard(shards["clean"][0]))
    default = store.get_profile(shard.url, shard.version)
    mine = store.get_profile(shard.url, shard.version, ref.fingerprint)
    assert default.fingerprint == DefaultFeaturizer().fingerprint
    assert mine.fingerprint == ref.fingerprint != default.fingerprint
    # a store written before profiles were keyed by featurizer: the plain file is read
    plain = store.profile_path(shard.url, shard.version)
    store.write_json(plain, mine.to_dict())
    store.fs.rm(store.profile_path(shard.url, shard.version, ref.fingerprint))
    assert store.has_profile(shard.url, shard.version, ref.fingerprint)
    assert store.get_profile(shard.url, shard.version, ref.fingerprint).n == mine.n


def test_validate_and_report_use_the_references_featurizer(shards, tmp_path):
    store = ProfileStore(str(tmp_path / "store"))
    _spec_reference(shards, store)
    results = validate_shards(shards["clean"], store, "v1")
    assert [r.n for r in results] == [N] and results[0].passed
    out = write_report(tmp_path / "r.html", store, "v1", urls=shards["clean"])
    html = Path(out).read_text()
    assert "featurized differently" not in html and "no stored profile" not in html


def test_the_gate_picks_the_references_featurizer(shards, tmp_path):
    store = ProfileStore(str(tmp_path / "store"))
    ref = _spec_reference(shards, store)
    ds = dl.DriftDataset(shards["clean"], store=store, reference="v1", policy="monitor")
    assert ds.gate.featurizer.fingerprint == ref.fingerprint
    assert sum(1 for _ in ds) == N
    from driftloader.store import recorded_featurizer

    assert recorded_featurizer(ref).fingerprint == ref.fingerprint


def test_the_monitor_picks_the_references_featurizer(shards, tmp_path):
    store = ProfileStore(str(tmp_path / "store"))
    ref = _spec_reference(shards, store)
    import webdataset as wds

    samples = list(wds.WebDataset(shards["bad"][0], shardshuffle=False))[:100]
    with dl.ServingMonitor(store, "v1", window=100) as mon:
        assert mon.featurizer.fingerprint == ref.fingerprint
        mon.observe([{k: v for k, v in s.items() if not k.startswith("__")} for s in samples])
        mon.flush()
        rows = mon.report()
    assert len(rows) == 1 and rows[0]["n"] == 100
