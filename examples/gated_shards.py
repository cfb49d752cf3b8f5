"""The shards the Lightning and Accelerate examples train on (shared by both examples).

``build(folder)`` writes four clean training shards, one drifted "shifted" shard and two
reference shards with the demo's generator, profiles them and builds the reference "clean".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import driftloader as dl
from driftloader.demo import CLASSES, FEATURES, PER_SHARD, write_shard


def build(folder: Path) -> list[str]:
    """Write and profile the shards, build the reference "clean"; return the training shards.

    Training shard ``train-NN-kind`` holds samples ``NN * PER_SHARD + i``; ``train-04`` is the
    drifted one (its first eight features flipped and offset, as from a new source)."""
    centers = np.random.default_rng(0).normal(0.0, 0.45, (CLASSES, FEATURES))
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    kinds = ["clean"] * 4 + ["shifted"]
    train = [data / f"train-{j:02d}-{kind}.tar" for j, kind in enumerate(kinds)]
    reference = [data / f"ref-{j:02d}.tar" for j in range(2)]
    for j, (path, kind) in enumerate(zip(train, kinds)):
        write_shard(path, kind, seed=10 + j, centers=centers)
    for j, path in enumerate(reference):
        write_shard(path, "clean", seed=j, centers=centers)
    store = dl.ProfileStore(str(folder / "store"))
    dl.profile_shards([str(p) for p in reference + train], store, progress=False)
    store.build_reference("clean", [str(p) for p in reference])
    return [str(p) for p in train]


def sample_id(key: str) -> int:
    """``train-03-clean-00017`` -> 3017: which shard and sample a training item came from."""
    parts = key.split("-")
    return int(parts[1]) * PER_SHARD + int(parts[-1])


def to_tensors(batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys become int ids: a dispatching (prepared) loader concatenates and broadcasts tensors
    only (a batch with strings fails on more than one process)."""
    keys, x, y = batch
    ids = torch.tensor([sample_id(k) for k in keys])
    return ids, torch.as_tensor(x), torch.as_tensor(y).long()


def print_summary(summary: dict, epochs: int, unit: str, json_path: str | None) -> None:
    """Per epoch: samples and steps per rank / process and the mean loss; then each shard's
    latest decision; and the whole summary as JSON to ``json_path`` if given."""
    ranks = summary["ranks"]
    for epoch in map(str, range(epochs)):
        seen = [len(rank["seen"][epoch]) for rank in ranks]
        steps = [rank["steps"][epoch] for rank in ranks]
        loss = np.mean([rank["loss"][epoch] for rank in ranks])
        print(f"epoch {epoch}: samples per {unit} {seen}, steps {steps}, loss {loss:.3f}")
    latest = {Path(row["url"]).name: row for row in summary["report"]}  # a row per shard and epoch
    for name, row in sorted(latest.items()):
        print(f"  {row['action']:<8} {name:<24} drift score {row['score']:6.1f}")
    if json_path:
        Path(json_path).write_text(json.dumps(summary))
