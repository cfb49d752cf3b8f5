"""Train with Hugging Face Accelerate on drift-gated shards: ``python examples/accelerate_train.py``.

CPU only. Writes a few shards to a temporary folder (four clean training shards, one drifted
"shifted" shard and two reference shards), profiles them and builds the reference "clean"; then
trains a tiny model for two epochs with ``DriftDataset(policy="skip")`` and prints the samples
seen per epoch and process, the loss per epoch and the drift report. Two ways to feed the loader:

* ``--mode split`` (default): ``DriftDataset`` splits the shards by rank (``equalize=True`` keeps
  the ranks in lockstep); the DataLoader is *not* passed to ``accelerator.prepare``.
* ``--mode dispatch``: ``DriftDataset(split_by_node=False)`` and a prepared DataLoader: process 0
  reads every shard and sends each process its slice of every batch.

Several processes on CPU (gloo):
``torchrun --standalone --nproc_per_node=2 examples/accelerate_train.py [--mode dispatch]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from gated_shards import build, print_summary, to_tensors  # examples/gated_shards.py

import driftloader as dl
from driftloader.demo import CLASSES, FEATURES
from driftloader.distributed import gather_reports

EPOCHS, BATCH = 2, 64


def train(
    accelerator: Accelerator, urls: list[str], store_url: str, mode: str, epochs: int = EPOCHS
) -> dict:
    """Train; return (on every process) per process the sample ids seen and the steps and mean
    loss per epoch, plus the drift report gathered on process 0."""
    store = dl.ProfileStore(store_url)
    if mode == "split":  # each process reads its own shards; the loader is not prepared
        ds = dl.DriftDataset(urls, store=store, reference="clean", policy="skip", equalize=True)
    elif mode == "dispatch":  # process 0 reads every shard; the prepared loader dispatches
        ds = dl.DriftDataset(
            urls, store=store, reference="clean", policy="skip", split_by_node=False
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    ds = ds.shuffle(1000).decode().to_tuple("__key__", "x.npy", "cls").batched(BATCH)
    ds = ds.map(to_tensors)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    if mode == "dispatch":
        loader = accelerator.prepare(loader)

    seen: dict[str, list[int]] = {}
    losses: dict[str, list[float]] = {}
    for epoch in range(epochs):
        if mode == "dispatch":
            loader.set_epoch(epoch)  # a prepared loader calls ds.set_epoch(its own count) itself
        else:
            ds.set_epoch(epoch)
        for ids, x, y in loader:
            x, y = x.to(accelerator.device), y.to(accelerator.device)  # prepared: already there
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            accelerator.backward(loss)  # an all-reduce per step: every process the same count
            optimizer.step()
            seen.setdefault(str(epoch), []).extend(ids.tolist())
            losses.setdefault(str(epoch), []).append(loss.item())
    mine = {
        "seen": seen,
        "steps": {e: len(v) for e, v in losses.items()},
        "loss": {e: float(np.mean(v)) for e, v in losses.items()},
    }
    ranks = gather_object([mine])  # every process's summary, on every process
    report = gather_reports(ds.drift_report())  # with dispatch only process 0 read anything
    return {"mode": mode, "processes": accelerator.num_processes, "ranks": ranks, "report": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["split", "dispatch"], default="split")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--json", help="also write the summary to this file (process 0)")
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=True)
    message = [None]
    if accelerator.is_main_process:
        folder = Path(tempfile.mkdtemp(prefix="accelerate-train-"))
        message = [(str(folder), build(folder))]
    broadcast_object_list(message)  # also a barrier: the data exists after it
    folder, urls = Path(message[0][0]), message[0][1]
    try:
        summary = train(accelerator, urls, str(folder / "store"), args.mode, args.epochs)
    finally:  # train() ends in collectives: every process is done reading by then
        if accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()  # let every process finish its collectives, then
    accelerator.end_training()  # destroy the process group
    if not accelerator.is_main_process:
        return
    print_summary(summary, args.epochs, "process", args.json)


if __name__ == "__main__":
    main()
