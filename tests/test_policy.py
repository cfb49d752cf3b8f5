"""Policies in DriftDataset: monitor, skip (before reading and after a probe), reweight,
resample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import driftloader as dl
from driftloader.errors import FingerprintMismatch, ReferenceNotFound
from driftloader.features import CallableFeaturizer
from driftloader.profiling import profile_shards
from driftloader.store import ProfileStore

from .conftest import write_shard

N = 400


@pytest.fixture
def corpus(tmp_path: Path) -> dict:
    """Reference shards, clean training shards and one shard with x shifted by 1 sigma."""

    def shard(name: str, seed: int, shift: float = 0.0) -> str:
        path = tmp_path / "data" / f"{name}.tar"
        path.parent.mkdir(exist_ok=True)
        write_shard(path, N, seed=seed, start=seed * 10_000, shift=shift)
        return str(path)

    reference = [shard(f"ref-{i}", i) for i in range(4)]
    clean = [shard(f"clean-{i}", 10 + i) for i in range(2)]
    drifted = shard("drifted", 20, shift=1.0)
    covariate = str(tmp_path / "data" / "covariate.tar")
    write_covariate_shard(covariate, seed=30)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(reference, store, progress=False)
    store.build_reference("ref", reference)
    return {"store": store, "clean": clean, "drifted": drifted, "covariate": covariate}


def write_covariate_shard(path: str, seed: int) -> None:
    """Like the clean shards, but x.npy[0] shifted by 0.5 sigma: a covariate shift to reweight."""
    import io

    import webdataset as wds

    from .conftest import make_sample

    rng = np.random.default_rng(seed)
    with wds.TarWriter(path) as sink:
        for i in range(N):
            sample = make_sample(seed * 10_000 + i, rng)
            x = np.load(io.BytesIO(sample["x.npy"]))
            x[0] += 0.5
            buf = io.BytesIO()
            np.save(buf, x)
            sample["x.npy"] = buf.getvalue()
            sink.write(sample)


def _keys_by_shard(samples) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[Path(s["__url__"]).name] = counts.get(Path(s["__url__"]).name, 0) + 1
    return counts


def test_monitor_passes_everything_records_and_fills_the_store(corpus):
    urls = [*corpus["clean"], corpus["drifted"]]
    ds = dl.DriftDataset(urls, store=corpus["store"], reference="ref", policy="monitor")
    assert _keys_by_shard(ds) == {"clean-0.tar": N, "clean-1.tar": N, "drifted.tar": N}
    report = {Path(r["url"]).name: r for r in ds.drift_report()}
    assert report["drifted.tar"]["drifted"] and not report["clean-0.tar"]["drifted"]
    assert report["drifted.tar"]["top"][0]["name"].startswith(("x.npy[", "joint:x.npy/"))
    for url in urls:  # training filled the store at the shards' current versions
        version = dl.Shard(url) and ds.shards[urls.index(url)].version
        assert corpus["store"].get_profile(url, version).n == N


def test_skip_with_stored_profiles_reads_no_byte_of_drifted_shards(corpus):
    urls = [*corpus["clean"], corpus["drifted"]]
    profile_shards(urls, corpus["store"], progress=False)
    ds = dl.DriftDataset(urls, store=corpus["store"], reference="ref", policy="skip")
    assert _keys_by_shard(ds) == {"clean-0.tar": N, "clean-1.tar": N}
    clean_bytes = sum(Path(u).stat().st_size for u in corpus["clean"])
    assert ds.stats.bytes <= clean_bytes  # nothing of the drifted shard was read
    (row,) = [r for r in ds.drift_report() if r["action"] == "skipped"]
    assert row["url"].endswith("drifted.tar") and row["drifted"]
    catalog = {Path(r["url"]).name: r for r in corpus["store"].catalog()}
    assert catalog["drifted.tar"]["action"] == "skipped"


def test_skip_without_profile_drops_after_the_probe_and_stops_reading(corpus):
    ds = dl.DriftDataset(
        [corpus["drifted"], corpus["clean"][0]],
        shuffle=False,
        store=corpus["store"],
        reference="ref",
        policy="skip",
        probe=64,
        block_size=4096,
    )
    assert _keys_by_shard(ds) == {"clean-0.tar": N}
    drifted_size = Path(corpus["drifted"]).stat().st_size
    clean_size = Path(corpus["clean"][0]).stat().st_size
    assert ds.stats.bytes < drifted_size / 2 + clean_size  # the stream was closed early
    actions = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert actions == {"drifted.tar": "dropped after probe", "clean-0.tar": "passed"}


def test_a_dropped_probe_is_remembered_so_later_epochs_skip_unread(corpus):
    def make(policy: str = "skip") -> dl.DriftDataset:
        return dl.DriftDataset(
            [corpus["drifted"], corpus["clean"][0]],
            shuffle=False,
            store=corpus["store"],
            reference="ref",
            policy=policy,
            probe=64,
        )

    assert _keys_by_shard(make()) == {"clean-0.tar": N}  # probed, dropped, probe stored
    drifted = make().shards[0]
    assert not corpus["store"].has_profile(drifted.url, drifted.version)  # not "profiled"
    assert corpus["store"].get_probe(drifted.url, drifted.version).n == 64
    again = make()
    assert _keys_by_shard(again) == {"clean-0.tar": N}
    assert again.stats.bytes <= Path(corpus["clean"][0]).stat().st_size  # not a byte of it
    rows = {Path(r["url"]).name: r for r in again.drift_report(include_store=False)}
    assert rows["drifted.tar"]["action"] == "skipped" and rows["drifted.tar"]["probe"] == 64
    assert [(r["action"], r["n"]) for r in make().plan()] == [("skip", None), ("read", N)]
    # a probe from another featurizer is not used (nor an error): the shard is probed again
    stale = corpus["store"].get_probe(drifted.url, drifted.version)
    stale.fingerprint = "another-featurizer"
    corpus["store"].put_probe(stale)
    third = make()
    assert _keys_by_shard(third) == {"clean-0.tar": N}
    rows = {Path(r["url"]).name: r for r in third.drift_report(include_store=False)}
    assert rows["drifted.tar"]["action"] == "dropped after probe"
    # other policies read it whole (and so profile it)
    assert _keys_by_shard(make("monitor")) == {"drifted.tar": N, "clean-0.tar": N}


def test_reweight_attaches_weights_that_flow_through_to_tuple_and_batched(corpus):
    urls = [corpus["clean"][0], corpus["covariate"]]
    ds = dl.DriftDataset(
        urls, shuffle=False, store=corpus["store"], reference="ref", policy="reweight"
    )
    batches = list(ds.decode().to_tuple("x.npy", "__weight__", "__url__").batched(N))
    assert len(batches) == 2
    (x_clean, w_clean, _), (x_drift, w_drift, url) = batches
    assert url[0].endswith("covariate.tar")
    assert np.allclose(w_clean, 1.0)
    assert abs(w_drift.mean() - 1.0) < 0.05 and w_drift.std() > 0.1
    ref_mean = float(np.stack(x_clean)[:, 0].mean())
    raw = float(np.stack(x_drift)[:, 0].mean())
    weighted = float(np.average(np.stack(x_drift)[:, 0], weights=w_drift))
    assert abs(raw - ref_mean) > 0.3  # the shift is there ...
    assert abs(weighted - ref_mean) < 0.15  # ... and the weights take most of it out
    row = [r for r in ds.drift_report() if r["url"].endswith("covariate.tar")][0]
    assert row["action"] == "reweighted" and 0 < row["ess"] < N


@pytest.mark.parametrize("policy", ["reweight", "resample"])
def test_an_undrifted_shard_is_reported_passed_with_its_epoch(corpus, policy):
    ds = dl.DriftDataset(corpus["clean"][:1], store=corpus["store"], reference="ref", policy=policy)
    ds.set_epoch(3)
    assert len(list(ds)) == N
    (row,) = ds.drift_report(include_store=False)
    assert row["action"] == "passed" and not row["drifted"] and row["epoch"] == 3
    ds.set_epoch(4)
    assert len(list(ds)) == N
    assert [r["epoch"] for r in ds.drift_report(include_store=False)] == [3, 4]
    assert [r["epoch"] for r in ds.drift_report(epoch=4)] == [4]


def test_reweight_saturation_shows_in_the_effective_sample_size(corpus):
    ds = dl.DriftDataset(
        [corpus["drifted"]], store=corpus["store"], reference="ref", policy="reweight"
    )
    weights = np.array([s["__weight__"] for s in ds])
    (row,) = ds.drift_report()
    assert weights.std() > 0.1 and row["ess"] < N / 2  # 64 shifted features: little to save


def test_reweight_from_stored_profiles(corpus):
    profile_shards([corpus["covariate"]], corpus["store"], progress=False)
    ds = dl.DriftDataset(
        [corpus["covariate"]], store=corpus["store"], reference="ref", policy="reweight"
    )
    weights = np.array([s["__weight__"] for s in ds])
    assert len(weights) == N and weights.std() > 0.1


def _first_feature_by_shard(samples) -> dict[str, list[float]]:
    x: dict[str, list[float]] = {}
    for s in samples:
        x.setdefault(Path(s["__url__"]).name, []).append(float(s["x.npy"][0]))
    return x


@pytest.mark.parametrize("stored", [False, True], ids=["while-profiling", "from-stored-profile"])
def test_resample_draws_the_drifted_shard_toward_the_reference(corpus, stored):
    urls = [corpus["clean"][0], corpus["covariate"]]
    if stored:
        profile_shards(urls, corpus["store"], progress=False)
    ds = dl.DriftDataset(
        urls, shuffle=False, store=corpus["store"], reference="ref", policy="resample"
    )
    samples = list(ds.decode())
    assert all("__weight__" not in s for s in samples)  # no change to the training loop
    keys = [s["__key__"] for s in samples]
    x = _first_feature_by_shard(samples)
    plain = _first_feature_by_shard(dl.DriftDataset(urls, shuffle=False).decode())
    assert x["clean-0.tar"] == plain["clean-0.tar"]  # an undrifted shard passes untouched
    assert len(x["covariate.tar"]) == N  # counts are kept ...
    ref_mean = float(np.mean(plain["clean-0.tar"]))
    assert abs(np.mean(plain["covariate.tar"]) - ref_mean) > 0.3  # ... the shift is there ...
    assert abs(np.mean(x["covariate.tar"]) - ref_mean) < 0.15  # ... and the draws take it out
    row = [r for r in ds.drift_report() if r["url"].endswith("covariate.tar")][0]
    distinct = len(set(keys[N:]))
    assert row["action"] == "resampled" and row["distinct"] == distinct < N and 0 < row["ess"] < N


def test_resample_draws_differ_between_epochs_and_agree_within_one(corpus):
    profile_shards([corpus["covariate"]], corpus["store"], progress=False)

    def keys(epoch: int, seed: int = 0) -> list[str]:
        ds = dl.DriftDataset(
            [corpus["covariate"]],
            store=corpus["store"],
            reference="ref",
            policy="resample",
            seed=seed,
        )
        ds.set_epoch(epoch)
        return [s["__key__"] for s in ds]

    assert keys(0) == keys(0)  # every rank and worker draws the same
    # one uniform offset makes a draw: two seeds (or epochs) give the same one by chance
    # when their offsets fall between the same cumulative weights (seen once in CI), so the
    # draw must change for some of four others, not for each
    first = keys(0)
    assert any(keys(epoch) != first for epoch in range(1, 5))
    assert any(keys(0, seed=seed) != first for seed in range(1, 5))


def test_systematic_resample_counts_are_floor_or_ceil_of_the_expected():
    from driftloader.policy import systematic_resample

    rng = np.random.default_rng(0)
    for n in (1, 7, 256):
        w = rng.lognormal(0.0, 1.0, n)
        picks = systematic_resample(w, rng)
        expected = n * w / w.sum()
        counts = np.bincount(picks, minlength=n)
        assert len(picks) == n and np.all(np.diff(picks) >= 0)
        assert np.all(counts >= np.floor(expected) - 1e-9) and np.all(counts <= np.ceil(expected))
        assert np.array_equal(systematic_resample(np.ones(n), rng), np.arange(n))


def test_missing_reference_and_bad_policy(corpus):
    with pytest.raises(ReferenceNotFound, match="nope"):
        dl.DriftDataset(corpus["clean"], store=corpus["store"], reference="nope", policy="skip")
    with pytest.raises(ValueError, match="policy='drop'"):
        dl.DriftDataset(corpus["clean"], store=corpus["store"], reference="ref", policy="drop")
    with pytest.raises(ValueError, match="needs reference"):
        dl.DriftDataset(corpus["clean"], store=corpus["store"], policy="skip")


def test_featurizer_must_match_the_reference(corpus):
    other = CallableFeaturizer(lambda s: {"size": len(s.get("bin", b""))})
    with pytest.raises(FingerprintMismatch, match="featurizer"):
        dl.DriftDataset(corpus["clean"], store=corpus["store"], reference="ref", featurizer=other)


def test_skip_on_s3_with_store_on_s3(s3_bucket, s3fs_fresh, tmp_path):
    urls = {}
    for name, seed, shift in [
        ("ref-0", 0, 0.0),
        ("ref-1", 1, 0.0),
        ("ref-2", 2, 0.0),
        ("clean", 3, 0.0),
        ("bad", 4, 1.0),
    ]:
        write_shard(tmp_path / f"{name}.tar", N, seed=seed, start=seed * 10_000, shift=shift)
        s3fs_fresh.put(str(tmp_path / f"{name}.tar"), f"{s3_bucket}/d/{name}.tar")
        urls[name] = f"s3://{s3_bucket}/d/{name}.tar"
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    refs = [urls["ref-0"], urls["ref-1"], urls["ref-2"]]
    profile_shards(refs, store, progress=False)
    store.build_reference("v1", refs)
    ds = dl.DriftDataset(
        [urls["clean"], urls["bad"]], store=store, reference="v1", policy="skip", probe=64
    )
    assert _keys_by_shard(ds) == {"clean.tar": N}
    actions = {Path(r["url"]).name: r["action"] for r in store.catalog() if "action" in r}
    assert actions == {"clean.tar": "passed", "bad.tar": "dropped after probe"}


def test_a_gated_dataset_versions_each_local_file_as_it_reads_it(corpus, monkeypatch):
    """Made over a glob of local files, a gated dataset stats none of them (100k stats took a
    second before the first sample): each is stat'ed when the reader reaches it, so a shard
    rewritten after the dataset was made is decided at the version it is read at."""
    import os

    from driftloader.shardversion import file_version

    data = str(Path(corpus["clean"][0]).parent)
    stated, real = [], os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stated.append(str(p)) or real(p, *a, **k))
    ds = dl.DriftDataset(data + "/clean-*.tar", store=corpus["store"], reference="ref")
    assert not [p for p in stated if p.startswith(data)]
    monkeypatch.undo()
    rewritten = Path(corpus["clean"][1])
    write_shard(rewritten, N, seed=20, start=200_000, shift=1.0)
    assert _keys_by_shard(ds) == {"clean-0.tar": N, "clean-1.tar": N}
    found = real(rewritten)
    row = next(r for r in ds.drift_report() if r["url"].endswith("clean-1.tar"))
    assert row["version"] == file_version(found.st_size, found.st_mtime) and row["drifted"]
    assert ds.shards[1].version == row["version"]  # asked for: every shard stat'ed now


def test_quarantined_shards_are_excluded_before_reading(corpus):
    from driftloader.check import check_shards
    from driftloader.versions import quarantine

    urls = [*corpus["clean"], corpus["drifted"]]
    check_shards(urls, corpus["store"], "ref")
    result = quarantine(corpus["store"], "ref")
    assert [Path(s["url"]).name for s in result.shards] == ["drifted.tar"]
    ds = dl.DriftDataset(urls, store=corpus["store"], reference="ref", policy="monitor")
    assert _keys_by_shard(ds) == {"clean-0.tar": N, "clean-1.tar": N}
    assert ds.stats.bytes <= sum(Path(u).stat().st_size for u in corpus["clean"])
    actions = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert actions["drifted.tar"] == "excluded"


def test_drift_report_sees_decisions_taken_in_dataloader_workers(corpus):
    from torch.utils.data import DataLoader

    urls = [*corpus["clean"], corpus["drifted"]]
    ds = dl.DriftDataset(urls, store=corpus["store"], reference="ref", policy="skip", probe=64)
    keys = list(DataLoader(ds.map(lambda s: s["__key__"]), batch_size=None, num_workers=2))
    assert len(keys) == 2 * N
    actions = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert actions == {
        "clean-0.tar": "passed",
        "clean-1.tar": "passed",
        "drifted.tar": "dropped after probe",
    }


@pytest.mark.parametrize("policy", ["resample", "reweight"])
def test_first_pass_weights_replay_exactly_on_resume(corpus, tmp_path, policy):
    """Shards without stored profiles: weights come from the probe window (exact sketches),
    so two runs draw alike, and a resume replays the shards the saved run was profiling even
    after the crashed run went on to store their profiles."""
    import json
    import shutil

    root = Path(corpus["store"].url)

    def fresh_store(name: str) -> str:
        shutil.copytree(root, tmp_path / name)  # the reference only: nothing profiled yet
        return str(tmp_path / name)

    def make(store: str) -> dl.DriftDataset:
        ds = dl.DriftDataset(
            [corpus["clean"][0], corpus["covariate"], corpus["clean"][1]],
            store=store,
            reference="ref",
            policy=policy,
        )
        return ds.shuffle(100).map(lambda s: (s["__key__"], s.get("__weight__")))

    whole = list(make(fresh_store("a")))
    assert whole == list(make(fresh_store("b")))  # the same draws and weights in every run
    crashed = make(fresh_store("c"))
    it = iter(crashed)
    head = [next(it) for _ in range(500)]
    state = json.loads(json.dumps(crashed.state_dict()))
    list(it)  # the crashed run goes on and stores every shard's profile
    resumed = make(str(tmp_path / "c"))
    resumed.load_state_dict(state)
    assert head + list(resumed) == whole


def test_the_gate_profiles_with_the_references_sketch_config(tmp_path):
    """Profiles written in training use the sketch parameters of the reference (or of
    GateOptions.profile_config), so they merge with `profile_shards(config=...)` output."""
    from driftloader.profile import ProfileConfig

    config = ProfileConfig(quantile_k=200, categorical_cap=64)
    urls = []
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 40, seed=i, start=i * 1000)
        urls.append(str(tmp_path / f"s-{i}.tar"))
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls[:2], store, config=config, progress=False)
    store.build_reference("ref", urls[:2])
    ds = dl.DriftDataset(urls[2:], store=store, reference="ref")
    assert len(list(ds)) == 40
    written = store.get_profile(urls[2], ds.shards[0].version)
    assert written.config == config
    store.build_reference("all", urls)  # training's profile merges with the others
    assert store.get_reference("all").n == 120
    other = ProfileConfig(quantile_k=300)
    ds = dl.DriftDataset(
        urls[:1], store=str(tmp_path / "other"), options=dl.GateOptions(profile_config=other)
    )
    assert len(list(ds)) == 40
    assert (
        ProfileStore(str(tmp_path / "other")).get_profile(urls[0], ds.shards[0].version).config
        == other
    )


def _draws(send, urls: list[str], store: str, policy: str, n: int) -> None:
    """In a child process: the keys of ``n`` resampled samples and the drift report."""
    try:
        ds = dl.DriftDataset(
            urls, store=store, reference="ref", policy=policy, resampled=True, seed=3
        ).with_epoch(n)
        send.send(("value", ([s["__key__"] for s in ds], ds.drift_report())))
    except Exception as e:  # noqa: BLE001 - handed to the test
        send.send(("error", e))


def _draws_within(seconds: float, urls: list[str], store, policy: str, n: int):
    """``_draws`` in a spawned child killed after ``seconds``: a stream that never ends fails
    the test, and the memory it grows goes with the child."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_draws, args=(send, urls, store.url, policy, n), daemon=True)
    child.start()
    send.close()  # the child's end only: a child that dies is an end of file, not a wait
    ready = receive.poll(seconds)
    kind, value = "timeout", None
    if ready:  # read before joining: a large result is sent only as it is read
        try:
            kind, value = receive.recv()
        except EOFError:
            kind = "died"
    else:
        child.kill()
    child.join()
    assert ready, f"still running after {seconds} s"
    assert kind != "died", f"the child died (exit code {child.exitcode})"
    if kind == "error":
        raise value
    return value


@pytest.mark.parametrize("policy", ["monitor", "skip", "reweight"])
def test_a_gated_resampled_stream_draws_one_shard_again_and_again(corpus, policy):
    """Every draw after the first is of a shard already in the read-ahead: each is read
    when reached (before: the read-ahead pulled draws forever, and nothing came)."""
    urls = [corpus["clean"][0]]
    keys, rows = _draws_within(90, urls, corpus["store"], policy, 3 * N + 7)
    assert len(keys) == 3 * N + 7
    assert keys[:N] == keys[N : 2 * N] == keys[2 * N : 3 * N]  # the same shard, whole, each time
    assert rows and all(r["url"].endswith("clean-0.tar") for r in rows)


def test_a_resampled_stream_whose_every_shard_is_skipped_raises(corpus):
    """With nothing readable to draw, a resampled stream says so instead of never ending."""
    profile_shards([corpus["drifted"]], corpus["store"], progress=False)
    with pytest.raises(ValueError, match=r"last 1000 shards drawn gave no sample"):
        _draws_within(120, [corpus["drifted"]], corpus["store"], "skip", 10)


def test_a_resampled_stream_with_some_shards_skipped_reads_the_others(corpus):
    """Skipped draws in long runs (most shards drifted) are passed over, not queued forever."""
    profile_shards([corpus["drifted"], corpus["clean"][1]], corpus["store"], progress=False)
    urls = [corpus["drifted"]] * 200 + [corpus["clean"][1]]  # runs of skipped draws
    keys, rows = _draws_within(120, urls, corpus["store"], "skip", 2 * N)
    assert len(keys) == 2 * N and len(set(keys)) == N
    assert any(r["action"] == "skipped" for r in rows)
    assert all(r["action"] == "skipped" for r in rows if "drifted" in r["url"])


def test_resampled_draws_of_a_shard_with_a_stored_profile_are_read_ahead(corpus, monkeypatch):
    """A draw of a shard already in the read-ahead is fetched ahead like any other when its
    verdict comes from its stored profile (before: each was read on its own when reached,
    its first block a round trip with nothing in flight)."""
    import driftloader.shardstream as shardstream

    url = corpus["clean"][0]
    profile_shards([url], corpus["store"], progress=False)
    alone, read_shard = [], shardstream.read_shard

    def counted(*args, **kwargs):
        alone.append(1)
        return read_shard(*args, **kwargs)

    monkeypatch.setattr(shardstream, "read_shard", counted)
    ds = dl.DriftDataset(
        [url], store=corpus["store"], reference="ref", policy="reweight", resampled=True
    ).with_epoch(5 * N)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 5 * N and keys[:N] == keys[4 * N :]
    assert alone == []  # before: 4 of the 5 draws
