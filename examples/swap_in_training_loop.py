"""The one-line swap: an existing webdataset training loop, reading through driftloader.

    python examples/swap_in_training_loop.py [SHARDS]   # default: a small generated dataset

Only the first call of the pipeline changes; ``store=`` makes training fill the profile store
as a side effect (one JSON profile per shard and version), ready for a reference or a check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import driftloader as dl
from driftloader.demo import build_data


def main(urls: list[str], store_url: str) -> None:
    # before: ds = wds.WebDataset(urls, shardshuffle=True).shuffle(1000).decode().to_tuple("x.npy", "cls")
    ds = dl.DriftDataset(urls, store=store_url).shuffle(1000).decode().to_tuple("x.npy", "cls")
    loader = torch.utils.data.DataLoader(ds.batched(64), batch_size=None, num_workers=2)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        x = torch.nan_to_num(torch.as_tensor(np.asarray(x)))
        loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    profiled = sum(1 for row in dl.ProfileStore(store_url).catalog() if "n" in row)
    print(
        f"trained one epoch; last loss {loss.item():.3f}; {profiled} shard profiles in {store_url}"
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        shards = sys.argv[1:] or build_data(Path(tmp), seed=0)["train"]
        main(shards, str(Path(tmp) / "store"))
