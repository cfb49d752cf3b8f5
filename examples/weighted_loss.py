"""Training with ``policy="reweight"``: a loss that uses ``__weight__``.

    python examples/weighted_loss.py

Each sample of a drifted shard carries ``__weight__`` ~ p_ref(x) / p_shard(x) (mean 1 per
batch; 1.0 on undrifted shards). Name it in ``to_tuple`` and weight the per-sample loss.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import driftloader as dl
from driftloader.demo import build_data


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample losses weighted by ``w`` (normalised, so the scale stays comparable)."""
    per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return (per_sample * w).sum() / w.sum()


def main(folder: Path) -> None:
    roles = build_data(folder, seed=0)
    store = dl.ProfileStore(str(folder / "store"))
    dl.profile_shards(roles["reference"], store, progress=False)
    store.build_reference("clean", roles["reference"])
    ds = dl.DriftDataset(roles["train"], store=store, reference="clean", policy="reweight")
    ds = ds.shuffle(1000).decode().to_tuple("x.npy", "cls", "__weight__").batched(64)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y, w in ds:
        x = torch.nan_to_num(torch.as_tensor(np.asarray(x)))
        loss = weighted_cross_entropy(
            model(x), torch.as_tensor(y), torch.as_tensor(w, dtype=torch.float32)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    for row in ds.drift_report():
        if row["drifted"]:
            print(
                f"{Path(row['url']).name:<24} {row['action']:<11} score {row['score']:6.1f} "
                f"effective samples {row.get('ess', row['n']):,.0f} of {row['n']}"
            )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
