"""The one-line swap: an existing webdataset training loop, reading through driftloader.

    python examples/swap_in_training_loop.py                      # a small generated dataset
    python examples/swap_in_training_loop.py 'shards/*.tar' --input jpg --label cls \\
        --classes 10 --store ./drift

Only the first call of the pipeline changes; ``store=`` makes training fill the profile store
as a side effect (one JSON profile per shard and version), ready for a reference or a check.
The input field may be an array (``.npy``), an image (resized to ``--image-size``) or a
number list; the label field an integer (``.cls``) or a key of a JSON field (``json:label``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import driftloader as dl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "shards", nargs="*", help="shard URLs or patterns (default: generate a small dataset)"
    )
    parser.add_argument("--input", default="x.npy", help="field holding the model input")
    parser.add_argument(
        "--label", default="cls", help="field holding the integer label, or FIELD:KEY in JSON"
    )
    parser.add_argument("--classes", type=int, default=4, help="number of label classes")
    parser.add_argument("--image-size", type=int, default=32, help="images are resized to this")
    parser.add_argument("--store", default=None, help="profile store (default: temporary)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    return parser.parse_args(argv)


def to_vector(value, image_size: int) -> np.ndarray:
    """The model input as a flat float vector: images resized, NaN filled with 0."""
    if hasattr(value, "convert"):  # a PIL image
        value = np.asarray(value.convert("RGB").resize((image_size, image_size))) / 255.0
    return np.nan_to_num(np.asarray(value, dtype=np.float32).ravel())


def to_label(sample: dict, label: str, classes: int) -> int:
    field, _, key = label.partition(":")
    if field not in sample:
        raise KeyError(f"no field {field!r} in sample {sample['__key__']}: pass --label FIELD")
    value = sample[field][key] if key else sample[field]
    if not 0 <= int(value) < classes:
        raise ValueError(f"label {value!r} is outside 0..{classes - 1}: pass --classes")
    return int(value)


def train(urls: list[str], store: str, args: argparse.Namespace) -> float:
    # before: ds = wds.WebDataset(urls, shardshuffle=True).shuffle(1000).decode("pil")
    ds = dl.DriftDataset(urls, store=store).shuffle(1000).decode("pil")
    ds = ds.map(
        lambda s: (to_vector(s[args.input], args.image_size), to_label(s, args.label, args.classes))
    )
    loader = torch.utils.data.DataLoader(ds.batched(64), batch_size=None, num_workers=args.workers)
    model = torch.nn.LazyLinear(args.classes)
    opt = None
    for x, y in loader:
        logits = model(torch.as_tensor(np.stack(x)))
        opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def main(args: argparse.Namespace, folder: Path) -> None:
    urls = args.shards
    if not urls:
        from driftloader.demo import build_data

        urls = build_data(folder, seed=0)["train"]
    store = args.store or str(folder / "store")
    loss = train(urls, store, args)
    profiled = sum(1 for row in dl.ProfileStore(store).catalog() if "n" in row)
    where = f"in {store}" if args.store else "(a temporary store; --store DIR keeps them)"
    print(f"trained one epoch; last loss {loss:.3f}; {profiled} shard profiles {where}")


if __name__ == "__main__":
    arguments = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        main(arguments, Path(tmp))
