"""Drift of image embeddings: your own small CNN, run by ``dl.EmbeddingFeaturizer``.

    python examples/embedding_drift.py [--weights cnn.pt]

Writes small JPEG shards (two reference shards, one clean shard, one whose images are darker and
bluer), profiles them with the CNN's embeddings (8 dimensions, their norm and 16 joint
projections), builds a reference and checks the other two shards against it. ``--weights`` loads
a state dict you trained (``torch.save(model.state_dict(), path)``; loaded with
``weights_only=True``); without it the CNN keeps its seeded random initialisation, which is
enough to see a shift in the input distribution. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

import driftloader as dl
from driftloader.sources import stat_shard


class SmallCNN(torch.nn.Module):
    """Two convolutions and a global average: an 8-dimensional embedding of an RGB image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """The transform: a fixed 32x32 RGB tensor in [0, 1] (the CNN's input)."""
    array = np.asarray(image.resize((32, 32)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def write_shard(path: Path, seed: int, shift: tuple[int, int, int] = (0, 0, 0)) -> str:
    rng = np.random.default_rng(seed)
    with wds.TarWriter(str(path)) as sink:
        for i in range(120):
            base = rng.integers(40, 200, 3)
            noise = rng.normal(0, 25, (48, 64, 3))
            pixels = np.clip(base + noise + np.array(shift), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=85)
            sink.write({"__key__": f"{path.stem}-{i:04d}", "jpg": buf.getvalue()})
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="a state dict saved with torch.save (optional)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = SmallCNN()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, weights_only=True, map_location="cpu"))
    featurizer = dl.EmbeddingFeaturizer(model, field="jpg", transform=to_tensor, batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = [write_shard(folder / f"ref-{i}.tar", seed=i) for i in range(2)]
        clean = write_shard(folder / "clean.tar", seed=10)
        shifted = write_shard(folder / "shifted.tar", seed=11, shift=(-30, -30, 10))
        store = dl.ProfileStore(str(folder / "store"))
        urls = [*reference, clean, shifted]
        dl.profile_shards(urls, store, featurizer=featurizer, progress=False)
        store.build_reference("cnn", reference)
        ref = store.get_reference("cnn")
        for url in (clean, shifted):
            profile = store.get_profile(url, stat_shard(dl.Shard(url)).version)
            result = dl.compare(profile, ref)
            top = ", ".join(f.name for f in result.top(3) if f.drifted) or "-"
            verdict = "DRIFTED" if result.drifted else "ok"
            print(f"{Path(url).name:<12} {verdict:<8} score {result.score:7.1f}  top: {top}")


if __name__ == "__main__":
    main()
