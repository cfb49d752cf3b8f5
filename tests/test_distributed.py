"""Two ranks (gloo) x two DataLoader workers: exactly-once shards, shared decisions, equal counts,
profiles merged across ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

import driftloader as dl
from driftloader.distributed import gather_reports, merge_profiles, placement
from driftloader.profile import Profile
from driftloader.store import ProfileStore

from .conftest import run_ranks, write_gated_corpus

WORLD = 2
CLEAN_SIZES = [30, 45, 38, 52, 33, 41, 60, 36]


def _key(sample: dict) -> str:
    return sample["__key__"]


def _dataset(corpus: dict, **kwargs) -> dl.DriftDataset:
    return dl.DriftDataset(
        corpus["train"], store=corpus["store"], reference="ref", policy="skip", **kwargs
    )


def _loader(ds: dl.DriftDataset, context: str) -> DataLoader:
    return DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context)


def _rank_main(rank: int, corpus: dict) -> None:
    """One rank: run the checks that need the process group, write what it saw as JSON."""
    dist.init_process_group(
        "gloo", init_method=f"file://{corpus['rendezvous']}", rank=rank, world_size=WORLD
    )
    try:
        out = _rank_checks(rank, corpus)
        Path(corpus["out"], f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def _rank_checks(rank: int, corpus: dict) -> dict:
    corpus["store"] = ProfileStore(corpus["store_url"])
    keys = list(_loader(_dataset(corpus).map(_key), "spawn"))  # workers without the group
    uneven = _dataset(corpus).map(_key).batched(4, collation_fn=None)
    equal = _dataset(corpus, equalize=True).map(_key).batched(4, collation_fn=None)
    counts = [len(list(_loader(d, "fork"))) for d in (uneven, equal)]

    ds = _dataset(corpus)  # in this process: its read stats and decisions are visible here
    n_read = sum(1 for _ in ds)
    mine = {(s.url, s.version) for s in ds.shards_for(placement(), 0)}
    plan = ds.plan()
    read = [row for row, s in zip(plan, ds.shards) if (s.url, s.version) in mine]
    store = corpus["store"]
    local = [store.get_profile(s.url, s.version) for s in ds.shards if (s.url, s.version) in mine]
    local = [p for p, row in zip(local, read) if row["action"] == "read"]
    merged = merge_profiles(Profile.merged(local) if local else None)
    report = gather_reports(ds.drift_report())
    return {
        "keys": keys,
        "batches": counts,
        "plan": plan,
        "n_read": n_read,
        "bytes": ds.stats.bytes,
        "read_bytes": sum(Path(r["url"]).stat().st_size for r in read if r["action"] == "read"),
        "skipped_here": sum(r["action"] == "skip" for r in read),
        "merged": merged.to_dict(),
        "report": report,
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A reference, eight clean shards of uneven sizes and three drifted ones, all profiled."""
    root = tmp_path_factory.mktemp("ddp")
    made = write_gated_corpus(root, CLEAN_SIZES, 3)
    clean, drifted = made["clean"], made["drifted"]
    return {
        "train": clean + drifted,
        "clean": clean,
        "drifted": drifted,
        "store_url": str(root / "store"),
        "rendezvous": str(root / "rendezvous"),
        "out": str(root),
    }


@pytest.fixture(scope="module")
def ranks(corpus: dict) -> list[dict]:
    mp.spawn(_rank_main, args=(corpus,), nprocs=WORLD, join=True)
    return [json.loads(Path(corpus["out"], f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_clean_sample_exactly_once_and_no_drifted_sample(corpus, ranks):
    keys = [k for r in ranks for k in r["keys"]]
    expected = [s["__key__"] for s in dl.DriftDataset(corpus["clean"])]
    assert sorted(keys) == sorted(expected) and len(keys) == sum(CLEAN_SIZES)
    assert all(r["keys"] for r in ranks)  # both ranks got work


def test_both_ranks_take_the_same_decisions(ranks):
    assert ranks[0]["plan"] == ranks[1]["plan"]
    actions = {Path(r["url"]).name: r["action"] for r in ranks[0]["plan"]}
    assert {name for name, a in actions.items() if a == "skip"} == {
        f"drift-{i}.tar" for i in range(3)
    }
    report = ranks[0]["report"]  # gathered from both ranks to rank 0
    assert ranks[1]["report"] == []
    assert sorted(Path(r["url"]).name for r in report) == sorted(actions)
    assert all(r["action"] == ("skipped" if r["drifted"] else "passed") for r in report)


def test_equalize_gives_every_rank_the_same_batch_count(ranks):
    uneven = [r["batches"][0] for r in ranks]
    equal = [r["batches"][1] for r in ranks]
    assert len(set(uneven)) > 1  # the shards alone would hang DDP ...
    assert len(set(equal)) == 1  # ... equalize keeps the ranks in lockstep


def test_merged_profile_equals_a_single_process_merge(corpus, ranks):
    store = ProfileStore(corpus["store_url"])
    shards = dl.DriftDataset(corpus["clean"], store=store).shards
    single = Profile.merged(store.get_profile(s.url, s.version) for s in shards)
    for r in ranks:
        merged = Profile.from_dict(r["merged"])
        assert merged.n == single.n == sum(CLEAN_SIZES)
        for name, kind in single.kinds.items():
            if kind != "numeric":
                continue
            a, _ = merged.numeric(name)
            b, _ = single.numeric(name)
            assert a.count == b.count
            if b.count:
                assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-12)
                assert math.isclose(a.var, b.var, rel_tol=1e-9, abs_tol=1e-12)


def test_a_skipped_shard_costs_no_bytes(ranks):
    assert sum(r["skipped_here"] for r in ranks) == 3
    for r in ranks:
        assert 0 < r["bytes"] <= r["read_bytes"]


def test_without_a_process_group_the_helpers_are_local(corpus):
    assert not (dist.is_available() and dist.is_initialized())
    store = ProfileStore(corpus["store_url"])
    shard = dl.DriftDataset(corpus["clean"][:1], store=store).shards[0]
    profile = store.get_profile(shard.url, shard.version)
    assert merge_profiles(profile).n == profile.n
    assert gather_reports([{"a": 1}]) == [{"a": 1}]
    with pytest.raises(ValueError, match="profile=None"):
        merge_profiles(None)


def test_equalize_needs_a_store_and_stored_profiles(corpus, tmp_path):
    with pytest.raises(ValueError, match="with_epoch"):
        dl.DriftDataset(corpus["clean"], equalize=True)
    empty = ProfileStore(str(tmp_path / "empty"))
    ds = dl.DriftDataset(corpus["clean"], store=empty, equalize=True)
    with pytest.raises(ValueError, match="driftloader profile"):
        list(ds)


def test_rank_and_world_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    where = placement()
    assert (where.rank, where.world_size) == (1, 3)
    assert placement(rank_world=(0, 2)).world_size == 2  # carried by a spawned worker's copy
    assert placement(split_by_node=False).world_size == 1


def test_the_ddp_example_runs_under_torchrun():
    import sys

    script = Path(__file__).resolve().parent.parent / "examples" / "ddp_train.py"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = (
        [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    )
    result = run_ranks([*command, "--standalone", "--nproc_per_node=2", str(script)], 120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    (counts,) = [line for line in lines if "batches per rank" in line]
    a, b = counts.split("[")[1].rstrip("]").split(", ")
    assert a == b and int(a) > 0
    assert any(line.strip().startswith("skipped") for line in lines)
    assert "merged profile of the shards read in the last epoch: 6,000 samples" in result.stdout
