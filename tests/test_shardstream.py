"""ShardStream on its own: steps in order, each fetched step paired with its own shard's
samples, through long runs of steps with nothing to fetch (each ends a reader; a new one
takes the next steps)."""

from __future__ import annotations

from pathlib import Path

from driftloader.reader import ReadOptions, ReadStats
from driftloader.shardstream import UNFETCHED_RUN, ShardStream, Step
from driftloader.sources import Shard

from .conftest import write_shard


def test_steps_come_in_order_with_their_own_samples_across_long_unfetched_runs(tmp_path: Path):
    shards = []
    for i in range(3):
        path = tmp_path / f"s-{i}.tar"
        write_shard(path, 5, seed=i, start=100 * i)
        shards.append(Shard(str(path)))
    runs = [0, UNFETCHED_RUN + 6, 2 * UNFETCHED_RUN + 3, UNFETCHED_RUN - 1, 1]
    steps, j = [], 0
    for i, run in enumerate(runs):
        steps.append(Step(j, shards[i % 3], fetch=True))
        j += 1
        for _ in range(run):
            steps.append(Step(j, shards[(i + 1) % 3], fetch=False))
            j += 1
    stream = ShardStream(steps, None, ReadOptions(), ReadStats())
    seen = []
    for step, samples in stream:
        if not step.fetch:
            assert samples is None
            seen.append(step.index)
            continue
        keys = [s["__key__"] for s in samples]
        start = 100 * shards.index(step.shard)
        assert keys == [f"sample{start + k:06d}" for k in range(5)], step.index
        seen.append(step.index)
    assert seen == list(range(len(steps)))  # each once, in order
    assert not stream.queue
