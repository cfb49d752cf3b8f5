"""Train with DDP on drift-gated shards: ``torchrun --nproc_per_node=2 examples/ddp_train.py``.

CPU only (gloo; add ``--standalone`` to pick a free port). Rank 0 writes the demo's shards (clean, shifted, label-shifted, NaN-broken),
profiles them and builds the reference; every rank then trains the same tiny model with
``DriftDataset(policy="skip", equalize=True)``: drifted shards are skipped before a byte is read,
each rank reads its own shards exactly once, and all ranks run the same number of batches (no
DDP hang). Rank 0 prints the drift report and the merged profile of what was trained on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import driftloader as dl
from driftloader.demo import CLASSES, FEATURES, build_data
from driftloader.distributed import gather_reports, merge_profiles
from driftloader.profile import Profile
from driftloader.profiling import profile_shards

EPOCHS, BATCH = 2, 64


def prepare(folder: Path) -> list[str]:
    """Rank 0: write the shards, profile them, build the reference "clean"."""
    roles = build_data(folder, seed=0)
    store = dl.ProfileStore(str(folder / "store"))
    profile_shards(roles["reference"] + roles["train"], store, progress=False)
    store.build_reference("clean", roles["reference"])
    return roles["train"]


def shared_setup() -> tuple[Path, list[str], bool]:
    """Rank 0 prepares a temporary folder; every rank gets its path and the training shards."""
    owned = dist.get_rank() == 0 and "DDP_DATA" not in os.environ
    message: list = [None]
    if dist.get_rank() == 0:
        folder = Path(os.environ.get("DDP_DATA") or tempfile.mkdtemp(prefix="ddp-train-"))
        message = [(str(folder), prepare(folder))]
    dist.broadcast_object_list(message, src=0)  # also a barrier: the data exists after it
    folder, train = message[0]
    return Path(folder), train, owned


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    folder, train, owned = shared_setup()
    store = dl.ProfileStore(str(folder / "store"))
    ds = dl.DriftDataset(train, store=store, reference="clean", policy="skip", equalize=True)
    ds = ds.shuffle(1000).decode().to_tuple("x.npy", "cls").batched(BATCH)
    # num_workers=0 keeps the decisions in this process for the report below; with workers
    # they are in store.catalog() (and resumable with torchdata's StatefulDataLoader).
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)

    torch.manual_seed(0)
    model = DDP(
        torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
        )
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = 0
    for epoch in range(EPOCHS):
        ds.set_epoch(epoch)
        first_row = len(ds.drift_report(include_store=False))  # this epoch's decisions start here
        for x, y in loader:
            x = torch.nan_to_num(torch.as_tensor(np.asarray(x)))
            loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(y).long())
            opt.zero_grad()
            loss.backward()  # every rank reaches the same number of these all-reduces
            opt.step()
            batches += 1
    counts: list = [None] * world
    dist.all_gather_object(counts, batches)

    last_epoch = ds.drift_report(include_store=False)[first_row:]
    read = {(r["url"], r["version"]) for r in last_epoch if r["action"] == "passed"}
    local = [store.get_profile(url, version) for url, version in sorted(read)]
    merged = merge_profiles(Profile.merged(local) if local else None)  # collective
    report = gather_reports(ds.drift_report())  # collective: all rows to rank 0
    if rank == 0:
        print(f"{world} ranks, {EPOCHS} epochs, batches per rank: {counts}")
        decided = {(Path(r["url"]).name, r["action"], r["score"]) for r in report}
        for name, action, score in sorted(decided):
            print(f"  {action:<8} {name:<26} score {score:8.1f}")
        print(f"merged profile of the shards read in the last epoch: {merged.n:,} samples")
    dist.barrier()
    dist.destroy_process_group()
    if owned:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
