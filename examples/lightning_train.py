"""Train with PyTorch Lightning on drift-gated shards: ``python examples/lightning_train.py``.

CPU only. Writes a few shards to a temporary folder (four clean training shards, one drifted
"shifted" shard and two reference shards), profiles them and builds the reference "clean"; then a
``LightningDataModule`` streams the training shards through
``DriftDataset(policy="skip", equalize=True)`` into a tiny ``LightningModule`` for two epochs.
It prints the samples seen per epoch and rank, the loss per epoch and the drift report.

    python examples/lightning_train.py               # one process
    python examples/lightning_train.py --devices 2   # DDP, two CPU processes (gloo)

Lightning puts no ``DistributedSampler`` on an ``IterableDataset``: ``DriftDataset`` splits the
shards by rank itself. Lightning does not call ``set_epoch`` on a dataset either, and it makes the
first epoch's iterator before ``on_train_epoch_start``, so the epoch is set in both places
(``train_dataloader`` for the first epoch, including one resumed from a checkpoint, and
``on_train_epoch_start`` for the later ones). The data module's ``state_dict`` puts every rank's
dataset position into Lightning's checkpoints (with ``num_workers=0``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from gated_shards import build, print_summary, to_tensors  # examples/gated_shards.py

import driftloader as dl
from driftloader.demo import CLASSES, FEATURES
from driftloader.distributed import gather_reports

EPOCHS, BATCH = 2, 64
DATA_ENV = "LIGHTNING_EXAMPLE_DATA"  # lets the DDP ranks Lightning starts find rank 0's data

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class DriftData(L.LightningDataModule):
    def __init__(self, urls: list[str], store_url: str, num_workers: int = 0) -> None:
        super().__init__()
        self.urls, self.store_url, self.num_workers = urls, store_url, num_workers

    def setup(self, stage: str) -> None:
        store = dl.ProfileStore(self.store_url)
        ds = dl.DriftDataset(
            self.urls, store=store, reference="clean", policy="skip", equalize=True
        )
        self.ds = ds.shuffle(1000).decode().to_tuple("__key__", "x.npy", "cls").batched(BATCH)
        self.ds = self.ds.map(to_tensors)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # Lightning makes the first epoch's iterator before on_train_epoch_start, and a run resumed
        # from a checkpoint keeps that iterator for its first epoch: set the epoch it will run
        # (the one Lightning gives samplers; trainer.current_epoch lags behind on resume).
        self.ds.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return torch.utils.data.DataLoader(self.ds, batch_size=None, num_workers=self.num_workers)

    # Lightning checkpoints hold these (exact at epoch ends; see docs/distributed.md). Lightning
    # writes rank 0's checkpoint only, so every rank's dataset state is gathered into it.
    def state_dict(self) -> dict:
        states = [self.ds.state_dict()]
        if dist.is_available() and dist.is_initialized():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, self.ds.state_dict())
        return {"datasets": states}

    def load_state_dict(self, state: dict) -> None:
        self.ds.load_state_dict(state["datasets"][self.trainer.global_rank])


class TinyClassifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
        )
        self.seen: dict[int, list[int]] = {}  # epoch -> sample ids, in training order
        self.losses: dict[int, list[float]] = {}
        self.summary: dict = {}

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.ds.set_epoch(self.current_epoch)  # same order on every rank

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        ids, x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.seen.setdefault(self.current_epoch, []).extend(ids.tolist())
        self.losses.setdefault(self.current_epoch, []).append(loss.item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)

    def on_train_end(self) -> None:
        """Collect every rank's sample ids and steps per epoch, and the drift report, on rank 0."""
        ds = self.trainer.datamodule.ds
        mine = {
            "seen": self.seen,
            "steps": {e: len(v) for e, v in self.losses.items()},
            "loss": {e: float(np.mean(v)) for e, v in self.losses.items()},
        }
        ranks = [mine]
        if dist.is_available() and dist.is_initialized():  # DDP: a collective on every rank
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, mine)
        report = gather_reports(ds.drift_report())  # collective too: every row on rank 0
        self.summary = {"ranks": ranks, "report": report}


def train(
    urls: list[str],
    store_url: str,
    *,
    devices: int = 1,
    epochs: int = EPOCHS,
    num_workers: int = 0,
    ckpt_path: str | None = None,
    save_to: str | None = None,
    **trainer_options,
) -> tuple[TinyClassifier, dict]:
    """Fit ``epochs`` epochs (resuming from ``ckpt_path`` if given; ``save_to`` saves a checkpoint
    at the end); return the model and a JSON-safe summary, complete on rank 0: per rank the sample
    ids seen, the steps and the mean loss per epoch, and the drift report."""
    torch.manual_seed(0)
    options = dict(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = L.Trainer(**{**options, **trainer_options})
    model, data = TinyClassifier(), DriftData(urls, store_url, num_workers)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    if save_to:
        trainer.save_checkpoint(save_to)
    summary = model.summary
    summary["ranks"] = [
        {key: {str(e): v for e, v in value.items()} for key, value in rank.items()}
        for rank in summary["ranks"]
    ]
    summary["global_rank"] = trainer.global_rank
    return model, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--save", help="save a checkpoint here at the end")
    parser.add_argument("--resume", help="resume from this checkpoint")
    parser.add_argument("--json", help="also write rank 0's summary to this file")
    args = parser.parse_args(argv)

    owned = DATA_ENV not in os.environ  # the ranks Lightning starts inherit the variable
    folder = Path(os.environ.get(DATA_ENV) or tempfile.mkdtemp(prefix="lightning-train-"))
    if owned:
        build(folder)
        os.environ[DATA_ENV] = str(folder)
    urls = sorted(str(p) for p in (folder / "data").glob("train-*.tar"))
    try:
        _, summary = train(
            urls,
            str(folder / "store"),
            devices=args.devices,
            epochs=args.epochs,
            ckpt_path=args.resume,
            save_to=args.save,
        )
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
    if summary["global_rank"] != 0:
        return
    print_summary(summary, args.epochs, "rank", args.json)


if __name__ == "__main__":
    main()
