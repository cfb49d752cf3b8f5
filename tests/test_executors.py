"""Profiling, checking, validating and building references on executors: thread and process
pools, and a Dask LocalCluster of 2 worker processes on loopback against the moto S3 store."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from driftloader import profiling_io
from driftloader.check import check_shards
from driftloader.executors import (
    QUEUED_PER_SLOT,
    TASKS_PER_WORKER,
    map_chunked,
    parse_executor,
    partition,
)
from driftloader.features import DefaultFeaturizer
from driftloader.profiling import profile_shards
from driftloader.sources import expand_urls, stat_shards
from driftloader.store import ProfileStore
from driftloader.validate import validate_shards

from .conftest import upload_shards, write_shard

N_SHARDS = 12


def without_time(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "created"}


def stored_profiles(store: ProfileStore, urls: str) -> dict[str, dict]:
    shards = stat_shards(expand_urls(urls, store.storage_options), store.storage_options)
    return {s.url: without_time(store.get_profile(s.url, s.version).to_dict()) for s in shards}


# -- units -----------------------------------------------------------------------------------


def test_partition_keeps_every_item_in_order() -> None:
    items = list(range(103))
    chunks = partition(items, 8)
    assert [x for c in chunks for x in c] == items
    assert len(chunks) == 8 and max(map(len, chunks)) == 13
    assert partition(items, 2, max_size=10)[0] == list(range(10))
    assert partition([], 4) == []
    with pytest.raises(ValueError, match="tasks must be"):
        partition(items, 0)


def _doubled(item: int) -> int:
    time.sleep(0.005)
    return 2 * item


class _CountingPool(ThreadPoolExecutor):
    """A thread pool that notes the most tasks it held unfinished when one was submitted."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.futures: list = []
        self.most = 0

    def submit(self, fn, /, *args, **kwargs):
        unfinished = sum(not f.done() for f in self.futures) + 1
        self.most = max(self.most, unfinished)
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def test_tasks_are_handed_over_as_slots_free_up() -> None:
    """map_chunked keeps two tasks a slot in flight (one waiting behind the running one), as
    a process pool's workers pull them: a scheduler that places tasks when they are submitted
    (Dask) cannot then queue many on one worker while another idles. Every item is done once."""
    with _CountingPool(2) as pool:
        out = list(map_chunked(pool, _doubled, list(range(40))))
    assert sorted(result for _, result, _ in out) == [2 * i for i in range(40)]
    assert len(pool.futures) == 2 * TASKS_PER_WORKER  # tasks of many items each
    assert pool.most <= 2 * (1 + QUEUED_PER_SLOT)


def test_a_reference_tree_hands_its_tasks_over_as_slots_free_up(tmp_path: Path) -> None:
    """The tree build reads and merges its chunks of stored profiles with as many tasks in
    flight as the executor has slots, and merges them in their order: two builds give the same
    reference bit for bit (no sketch compacts here), of every sample."""
    from driftloader.executors import merged_tree

    urls = [str(tmp_path / f"s-{i}.tar") for i in range(16)]  # 8 tasks of 2 on 2 slots
    for i, url in enumerate(urls):
        write_shard(url, 6, seed=i)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    shards = stat_shards(expand_urls(urls))
    with _CountingPool(2) as pool:
        merged, missing, _, _ = merged_tree(pool, store, shards)
    assert not missing and len(pool.futures) == 2 * TASKS_PER_WORKER
    assert pool.most <= 2 * (1 + QUEUED_PER_SLOT)
    with ThreadPoolExecutor(2) as pool:
        again, _, _, _ = merged_tree(pool, store, shards)
    assert merged.to_dict()["features"] == again.to_dict()["features"]
    assert merged.n == store.build_reference("alone", urls).n == 16 * 6


def test_parse_executor() -> None:
    assert parse_executor("local:3") == ("local", 3)
    assert parse_executor("dask://10.0.0.5:8786") == ("dask", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "dask://", "spark://h:1", "threads"):
        with pytest.raises(ValueError, match="executor"):
            parse_executor(bad)


# -- thread and process pools ----------------------------------------------------------------


def test_thread_pool_profiles_and_builds_the_same_as_one_process(tmp_path: Path) -> None:
    for i in range(6):
        write_shard(tmp_path / f"s-{i}.tar", 8, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..5}.tar")
    alone, pooled = ProfileStore(str(tmp_path / "a")), ProfileStore(str(tmp_path / "b"))
    profile_shards(urls, alone, progress=False)
    with ThreadPoolExecutor(3) as pool:
        summary = profile_shards(urls, pooled, progress=False, executor=pool)
        assert summary.profiled == 6 and summary.samples == 48
        ref = pooled.build_reference("ref", urls, executor=pool)
    assert stored_profiles(pooled, urls) == stored_profiles(alone, urls)
    expected = alone.build_reference("ref", urls)
    assert ref.n == expected.n == 48
    assert ref.meta == expected.meta


def test_executor_tasks_check_the_store_a_window_a_task_not_every_shard(
    tmp_path: Path, s3_proxy, s3_bucket: str, s3fs_fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task asks the store whether its shards are already profiled (a retried task) only
    about its first ``STORE_BEHIND`` shards while none of them is: past the one process's
    reads, a GET for each of those (here 2 of each task's 3)."""
    monkeypatch.setattr(profiling_io, "STORE_BEHIND", 2)
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}

    def profile_gets(store: str, executor=None) -> int:
        s3_proxy.reset_stats()
        store = ProfileStore(f"s3://{s3_bucket}/{store}", options)
        summary = profile_shards(
            urls, store, progress=False, executor=executor, storage_options=options
        )
        assert (summary.profiled, summary.failed) == (N_SHARDS, [])
        return sum(r.method == "GET" and "/shards/" in r.target for r in s3_proxy.requests)

    alone = profile_gets("alone")
    with ThreadPoolExecutor(1) as pool:
        tasks = len(partition(range(N_SHARDS), TASKS_PER_WORKER))  # 4 tasks of 3 shards
        assert profile_gets("pooled", pool) == alone + 2 * tasks


def test_local_process_pool_by_name(tmp_path: Path) -> None:
    for i in range(3):
        write_shard(tmp_path / f"s-{i}.tar", 5, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..2}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    summary = profile_shards(urls, store, progress=False, executor="local:2")
    assert summary.profiled == 3 and summary.samples == 15
    assert store.build_reference("ref", urls, executor="local:2").n == 15


# -- Dask ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(s3_endpoint: str):
    """A LocalCluster of 2 single-threaded worker processes on loopback; the workers inherit
    the S3 environment (as on a real cluster: credentials through the environment)."""
    distributed = pytest.importorskip("distributed")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def dask_client(dask_cluster, s3_env: str):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_cluster) as client:
        yield client


def test_dask_profiles_checks_and_builds_like_one_process(
    dask_client, s3_bucket: str, s3fs_fresh, tmp_path: Path
) -> None:
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    alone = ProfileStore(f"s3://{s3_bucket}/alone")
    on_dask = ProfileStore(f"s3://{s3_bucket}/dask")
    executor = dask_client.get_executor()
    profile_shards(urls, alone, progress=False)
    summary = profile_shards(urls, on_dask, progress=False, executor=executor)
    assert (summary.profiled, summary.samples, summary.failed) == (N_SHARDS, 8 * N_SHARDS, [])
    assert stored_profiles(on_dask, urls) == stored_profiles(alone, urls)

    ref = on_dask.build_reference("ref", urls, executor=executor)
    expected = alone.build_reference("ref", urls)
    assert ref.n == expected.n == 8 * N_SHARDS
    assert ref.meta == expected.meta
    assert without_time(ref.summary()) == without_time(expected.summary())  # sketches: merge order

    got = check_shards(urls, on_dask, "ref", executor=executor)
    want = check_shards(urls, alone, "ref")
    assert [(r.url, r.drifted, r.score) for r in got] == [(r.url, r.drifted, r.score) for r in want]
    checked = validate_shards(urls, on_dask, "ref", executor=executor)
    assert [v.passed for v in checked] == [v.passed for v in validate_shards(urls, alone, "ref")]


class DyingFeaturizer(DefaultFeaturizer):
    """Kills its worker process (the first time only) when it meets sample key ``victim``."""

    def __init__(self, marker: str, victim: str) -> None:
        super().__init__()
        self.marker, self.victim = marker, victim

    def __call__(self, samples):
        if any(s.get("__key__") == self.victim for s in samples) and not os.path.exists(
            self.marker
        ):
            Path(self.marker).touch()
            os._exit(1)  # the worker dies mid-task, before this shard's profile is written
        return super().__call__(samples)


def test_dask_worker_killed_mid_task_loses_and_rewrites_nothing(
    dask_client, s3_bucket: str, s3fs_fresh, tmp_path: Path
) -> None:
    urls = upload_shards(tmp_path, s3_bucket, s3fs_fresh)
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    marker = tmp_path / "killed"
    victim = write_shard(tmp_path / "probe.tar", 8, seed=7, start=700)[3]["__key__"]
    featurizer = DyingFeaturizer(str(marker), victim)  # shard 7, inside a task of many shards
    summary = profile_shards(
        urls, store, progress=False, executor=dask_client.get_executor(), featurizer=featurizer
    )
    assert marker.exists()  # a worker did die
    assert (summary.profiled, summary.samples, summary.failed) == (N_SHARDS, 8 * N_SHARDS, [])
    profiles = stored_profiles(store, urls)
    assert len(profiles) == N_SHARDS and all(p["n"] == 8 for p in profiles.values())
    # every profile object was written exactly once (the bucket is versioned)
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    listed = client.list_object_versions(Bucket=s3_bucket, Prefix="drift/shards/")
    writes = [v["Key"] for v in listed.get("Versions", [])]
    assert len(writes) == N_SHARDS == len(set(writes))


def test_cli_executor_local_and_dask(dask_cluster, tmp_path: Path, capsys) -> None:
    from driftloader.cli import main

    for i in range(4):
        write_shard(tmp_path / f"s-{i}.tar", 6, seed=i, start=i * 100)
    urls, store = str(tmp_path / "s-{0..3}.tar"), str(tmp_path / "store")
    scheduler = "dask://" + dask_cluster.scheduler_address.removeprefix("tcp://")
    assert main(["profile", urls, "--store", store, "--executor", "local:2", "--quiet"]) == 0
    assert main(["reference", "v1", urls, "--store", store, "--executor", scheduler]) == 0
    assert "4 shards, 24 samples" in capsys.readouterr().out
    assert (
        main(["check", urls, "--store", store, "--reference", "v1", "--executor", scheduler]) == 0
    )
    with pytest.raises(SystemExit) as exit_:
        main(["profile", urls, "--store", store, "--executor", "spark://h:1"])
    assert exit_.value.code == 2
    assert "expected local:N or dask://HOST:PORT" in capsys.readouterr().err


def test_force_on_an_executor_profiles_stored_shards_again(tmp_path: Path) -> None:
    for i in range(4):
        write_shard(tmp_path / f"s-{i}.tar", 5, seed=i, start=i * 100)
    urls = str(tmp_path / "s-{0..3}.tar")
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    before = {u: p["n"] for u, p in stored_profiles(store, urls).items()}
    shards = stat_shards(expand_urls(urls))
    created = [store.get_profile(s.url, s.version).created for s in shards]
    with ThreadPoolExecutor(2) as pool:
        profile_shards(urls, store, progress=False, executor=pool, force=True)
    assert [store.get_profile(s.url, s.version).created for s in shards] != created
    assert {u: p["n"] for u, p in stored_profiles(store, urls).items()} == before
