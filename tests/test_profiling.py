"""Profiling shards: the incremental ShardProfiler, profile_shard, and resumable profile_shards."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

import driftloader as dl
from driftloader.errors import ShardReadError
from driftloader.features import DefaultFeaturizer
from driftloader.profile import ProfileConfig
from driftloader.profiling import (
    ProfilingSummary,
    ShardProfiler,
    profile_shard,
    profile_shards,
    source_label,
)
from driftloader.reader import read_shard
from driftloader.sources import Shard, stat_shard
from driftloader.store import ProfileStore

from .conftest import write_shard

CONFIG = ProfileConfig(quantile_k=32, categorical_cap=16, token_buckets=64, reservoir_k=16)

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")


def truncate(path: str | Path, fraction: float = 0.5) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction) // 512 * 512 + 100)  # cut in the middle of a member


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    return ProfileStore(str(tmp_path / "drift"))


# -- ShardProfiler ---------------------------------------------------------------------------


def test_profiler_one_by_one_equals_one_batch(local_shards: list[str]) -> None:
    shard = stat_shard(Shard(local_shards[0]))
    samples = list(read_shard(shard))
    one = ShardProfiler(shard, config=CONFIG, batch_size=1)
    for sample in samples:
        one.add(sample)
    whole = ShardProfiler(shard, config=CONFIG, batch_size=1000)
    whole.add_many(samples)
    assert whole.profile.n == 0  # still buffered
    a, b = one.finish(), whole.finish()
    assert a.n == b.n == len(samples) == 25
    assert a.kinds == b.kinds and len(a.kinds) > 60
    for name, kind in a.kinds.items():
        if kind == "numeric":
            ma, _ = a.numeric(name)
            mb, _ = b.numeric(name)
            assert (ma.count, ma.missing) == (mb.count, mb.missing)
            assert ma.mean == pytest.approx(mb.mean, rel=1e-9, abs=1e-12)
            assert ma.var == pytest.approx(mb.var, rel=1e-9, abs=1e-12)
            assert (ma.min, ma.max) == (mb.min, mb.max)
        elif kind == "categorical":
            assert a.categorical(name).counts() == b.categorical(name).counts()
        else:
            assert np.array_equal(a.tokens(name).counts, b.tokens(name).counts)
    assert a.url == shard.url and a.version == shard.version
    assert a.source == source_label(shard.url)
    assert a.fingerprint == DefaultFeaturizer().fingerprint


def test_profiler_add_batch_returns_features(local_shards: list[str]) -> None:
    samples = list(read_shard(local_shards[0]))
    mixed = ShardProfiler(Shard(local_shards[0]), config=CONFIG, batch_size=100)
    mixed.add_many(samples[:5])
    batch = mixed.add_batch(samples[5:])
    assert mixed.profile.n == 25  # the buffered five were sketched first
    assert len(batch["x.npy[0]"].values) == 20
    whole = ShardProfiler(Shard(local_shards[0]), config=CONFIG)
    whole.add_batch(samples)
    assert mixed.finish().categorical("cls").counts() == whole.finish().categorical("cls").counts()
    first = np.array([np.load(io.BytesIO(s["x.npy"]))[0] for s in samples[5:]])
    assert np.allclose(np.ma.filled(batch["x.npy[0]"].values, np.nan), first)


def test_profiler_matches_numpy(local_shards: list[str]) -> None:
    samples = list(read_shard(local_shards[1]))
    profiler = ShardProfiler(Shard(local_shards[1]), config=CONFIG, batch_size=7)
    profiler.add_many(samples)
    profiler.flush()
    xs = np.array([np.load(io.BytesIO(s["x.npy"]))[3] for s in samples], float)
    moments, _ = profiler.profile.numeric("x.npy[3]")
    assert moments.mean == pytest.approx(xs.mean())
    assert moments.var == pytest.approx(xs.var())


def test_profiler_counts_featurizer_errors(tmp_path: Path) -> None:
    samples = [{"__key__": f"k{i}", "__url__": "u", "json": b"{not json"} for i in range(3)]
    samples.append({"__key__": "ok", "__url__": "u", "json": b'{"a": 1}'})
    profiler = ShardProfiler(Shard(str(tmp_path / "a.tar"), "s:1"), config=CONFIG)
    profiler.add_many(samples)
    profile = profiler.finish()
    assert profile.n == 4 and profile.errors == 3


def test_profiler_validates_batch_size(local_shards: list[str]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ShardProfiler(Shard(local_shards[0]), batch_size=0)


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("s3://bucket/train/shard-000.tar", "s3://bucket/train"),
        ("s3://bucket/train/2024/shard-000.tar", "s3://bucket/train"),
        ("s3://bucket/shard-000.tar", "s3://bucket"),
        ("gs://user:pw@bucket/a/b.tar", "gs://***@bucket/a"),
        ("/data/train/shard-000.tar", "/data/train"),
        ("file:///data/train/shard-000.tar", "file:///data/train"),
        ("shard.tar", "."),
    ],
)
def test_source_label(url: str, label: str) -> None:
    assert source_label(url) == label


# -- profile_shard ---------------------------------------------------------------------------


def test_profile_shard_stores_the_profile(local_shards: list[str], store: ProfileStore) -> None:
    shard = stat_shard(Shard(local_shards[0]))
    profile = profile_shard(shard, store, config=CONFIG)
    assert profile.n == 25 and profile.errors == 0
    assert store.get_profile(shard.url, shard.version).to_dict() == profile.to_dict()


def test_profile_shard_stats_an_unversioned_shard(local_shards: list[str], store: ProfileStore):
    profile = profile_shard(local_shards[0], store, config=CONFIG)
    assert profile.version == stat_shard(Shard(local_shards[0])).version
    assert store.has_profile(local_shards[0], profile.version)


def test_profile_shard_truncated(tmp_path: Path, store: ProfileStore) -> None:
    path = tmp_path / "bad.tar"
    write_shard(path, 40, seed=3)
    truncate(path)
    shard = stat_shard(Shard(str(path)))
    with pytest.raises(ShardReadError, match="bad.tar"):
        profile_shard(shard, store, config=CONFIG)
    partial = profile_shard(shard, store, config=CONFIG, on_error="skip")
    assert 0 < partial.n < 40
    assert partial.errors == 1 and "bad.tar" in partial.meta["read_error"]
    assert not store.has_profile(shard.url, shard.version)  # a half profile is never stored
    assert store.catalog() == []


def test_profile_shard_reads_the_version_it_was_given(s3_bucket: str, s3fs_fresh, tmp_path: Path):
    url = f"s3://{s3_bucket}/data/s.tar"
    write_shard(tmp_path / "a.tar", 10, seed=1)
    s3fs_fresh.put(str(tmp_path / "a.tar"), url)
    old = stat_shard(Shard(url))
    write_shard(tmp_path / "b.tar", 14, seed=2)
    s3fs_fresh.put(str(tmp_path / "b.tar"), url)
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    assert profile_shard(old, store, config=CONFIG).n == 10  # not the newer 14-sample bytes
    assert store.get_profile(url, old.version).n == 10


def test_on_error_is_validated(local_shards: list[str], store: ProfileStore) -> None:
    with pytest.raises(ValueError, match="on_error"):
        profile_shard(local_shards[0], store, on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        profile_shards(local_shards, store, on_error="ignore")
    with pytest.raises(ValueError, match="workers"):
        profile_shards(local_shards, store, workers=0)


# -- profile_shards --------------------------------------------------------------------------


def test_profile_shards_resumes_and_forces(
    local_shards: list[str], store: ProfileStore, capsys: pytest.CaptureFixture
) -> None:
    summary = dl.profile_shards(local_shards, store, workers=2, config=CONFIG)
    assert isinstance(summary, ProfilingSummary)
    assert (summary.profiled, summary.skipped, summary.failed) == (4, 0, [])
    assert summary.samples == 100 and summary.seconds > 0
    for url in local_shards:
        shard = stat_shard(Shard(url))
        assert store.get_profile(url, shard.version).n == 25
    err = capsys.readouterr().err
    assert "profiled 4 shards (100 samples) in" in err and "0 skipped" in err

    again = profile_shards(local_shards, store, workers=2, config=CONFIG)
    assert (again.profiled, again.skipped, again.samples) == (0, 4, 0)
    assert "0 shards (0 samples)" in capsys.readouterr().err and "4 skipped" in again.line()

    forced = profile_shards(local_shards, store, config=CONFIG, force=True, progress=False)
    assert (forced.profiled, forced.skipped, forced.samples) == (4, 0, 100)
    assert capsys.readouterr().err == ""


def test_profile_shards_profiles_only_the_changed_shard(
    local_shards: list[str], store: ProfileStore
) -> None:
    profile_shards(local_shards, store, config=CONFIG, progress=False)
    write_shard(local_shards[2], 30, seed=9)
    os.utime(local_shards[2], (5, 5))
    summary = profile_shards(local_shards, store, config=CONFIG, progress=False)
    assert (summary.profiled, summary.skipped, summary.samples) == (1, 3, 30)


def test_profile_shards_skip_failures(
    local_shards: list[str], store: ProfileStore, capsys: pytest.CaptureFixture
) -> None:
    truncate(local_shards[1])
    summary = profile_shards(local_shards, store, workers=2, config=CONFIG, on_error="skip")
    assert summary.profiled == 3 and summary.samples == 75
    assert [url for url, _ in summary.failed] == [local_shards[1]]
    assert local_shards[1] in summary.failed[0][1]
    bad = stat_shard(Shard(local_shards[1]))
    assert not store.has_profile(bad.url, bad.version)
    assert len(store.catalog()) == 3
    assert "1 failed" in capsys.readouterr().err
    # the failed shard is retried on the next run
    again = profile_shards(local_shards, store, config=CONFIG, on_error="skip", progress=False)
    assert (again.profiled, again.skipped, len(again.failed)) == (0, 3, 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_profile_shards_raise_names_the_shard(
    local_shards: list[str], store: ProfileStore, workers: int
) -> None:
    truncate(local_shards[2])
    with pytest.raises(ShardReadError) as info:
        profile_shards(local_shards, store, workers=workers, config=CONFIG, progress=False)
    assert info.value.url == local_shards[2]
    assert str(info.value).startswith(local_shards[2])
    assert str(info.value).count(local_shards[2]) == 1
    bad = stat_shard(Shard(local_shards[2]))
    assert not store.has_profile(bad.url, bad.version)


def test_profile_shards_refuses_unpicklable_featurizer(
    local_shards: list[str], store: ProfileStore
) -> None:
    with pytest.raises(ValueError, match="worker processes"):
        profile_shards(local_shards, store, workers=2, featurizer=lambda samples: {})


def test_profile_shards_on_s3(s3_bucket: str, s3fs_fresh, tmp_path: Path) -> None:
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 10, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s-{i}.tar"), f"{s3_bucket}/data/s-{i}.tar")
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    urls = f"s3://{s3_bucket}/data/s-{{0..2}}.tar"
    summary = profile_shards(urls, store, config=CONFIG, progress=False)
    assert (summary.profiled, summary.samples) == (3, 30)
    assert profile_shards(urls, store, config=CONFIG, progress=False).skipped == 3
    assert store.build_reference("v1", urls).n == 30


def _profile_in_a_daemon(urls: list[str], store_url: str) -> None:
    profile_shards(urls, ProfileStore(store_url), workers=2, progress=False)


def test_workers_in_a_daemonic_process_fall_back_to_profiling_in_it(local_shards, tmp_path):
    import multiprocessing

    store = str(tmp_path / "store")
    proc = multiprocessing.get_context("spawn").Process(
        target=_profile_in_a_daemon, args=(local_shards, store), daemon=True
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    assert all(
        ProfileStore(store).has_profile(u, stat_shard(Shard(u)).version) for u in local_shards
    )


def test_an_unguarded_script_gets_told_to_guard_itself(local_shards, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import driftloader as dl\n"
        f"dl.profile_shards({local_shards!r}, dl.ProfileStore({str(tmp_path / 's')!r}), "
        "workers=2, progress=False)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert 'if __name__ == "__main__":' in result.stderr


# -- a killed parent ---------------------------------------------------------------------------


def _children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _profiles(store: Path) -> int:
    return sum(1 for _ in (store / "shards").rglob("*.json")) if store.exists() else 0


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc")
def test_profile_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    urls = []
    for i in range(16):
        write_shard(tmp_path / f"s-{i:02d}.tar", 300, seed=i, start=i * 1000)
        urls.append(str(tmp_path / f"s-{i:02d}.tar"))
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "driftloader", "profile", *urls, "--store", str(store)]
    parent = subprocess.Popen([*cmd, "--workers", "2", "--quiet"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _profiles(store) == 0 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.02)
        workers = _children(parent.pid)
        assert _profiles(store) > 0 and workers, "no worker started profiling"
        parent.send_signal(signal.SIGKILL)
        at_kill = _profiles(store)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "workers outlived their parent"
    after = _profiles(store)
    time.sleep(1.0)
    assert _profiles(store) == after < len(urls)
    assert after <= at_kill + 2  # at most the two shards being written at the kill
