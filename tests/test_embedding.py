"""EmbeddingFeaturizer: a user's torch module in batches; values against calling the module
directly; a fingerprint of the weights; running inside DataLoader workers while training."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import driftloader as dl
from driftloader.features import EmbeddingFeaturizer, joint_name_parts
from driftloader.profiling import profile_shards
from driftloader.sources import Shard, stat_shard


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def linear(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(64, width)


def test_embeddings_match_the_module_and_errors_are_counted() -> None:
    model = linear()
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((10, 64)).astype(np.float32)
    samples = [{"__key__": str(i), "__url__": "u", "x.npy": npy(x)} for i, x in enumerate(xs)]
    samples.append({"__key__": "bad", "__url__": "u", "x.npy": b"garbage"})
    featurizer = EmbeddingFeaturizer(model, field="x.npy", batch_size=3)
    batch = featurizer(samples)
    with torch.no_grad():
        want = model(torch.from_numpy(xs)).numpy().astype(np.float64)
    for i in range(4):
        got = batch[f"x.npy.emb[{i}]"].values
        np.testing.assert_allclose(got[:10], want[:, i], rtol=1e-6)
        assert got.mask.tolist() == [False] * 10 + [True]
    np.testing.assert_allclose(batch["x.npy.emb.norm"].values[:10], np.linalg.norm(want, axis=1))
    joints = sorted(joint_name_parts(n) for n in batch if n.startswith("joint:"))
    assert joints == [("x.npy.emb", j) for j in range(16)]
    assert featurizer.errors == 1


def test_wide_embeddings_keep_norm_and_projections_only() -> None:
    featurizer = EmbeddingFeaturizer(linear(width=32), field="x.npy", max_vector=8)
    batch = featurizer([{"__key__": "a", "x.npy": npy(np.ones(64, np.float32))}])
    assert not any("emb[" in n for n in batch) and "x.npy.emb.norm" in batch


def test_images_go_through_a_small_cnn() -> None:
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    raws = []
    for level in (40, 200):
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), (level, level, level)).save(buf, "PNG")
        raws.append(buf.getvalue())
    featurizer = EmbeddingFeaturizer(cnn, field="png")
    batch = featurizer([{"__key__": str(i), "png": r} for i, r in enumerate(raws)])
    assert batch["png.emb.norm"].values[0] != batch["png.emb.norm"].values[1]
    assert featurizer.errors == 0


def test_fingerprint_follows_weights_transform_and_options() -> None:
    fp = EmbeddingFeaturizer(linear(0), field="x.npy").fingerprint
    assert EmbeddingFeaturizer(linear(0), field="x.npy").fingerprint == fp
    assert EmbeddingFeaturizer(linear(1), field="x.npy").fingerprint != fp  # other weights
    assert EmbeddingFeaturizer(linear(0), field="y.npy").fingerprint != fp
    assert EmbeddingFeaturizer(linear(0), field="x.npy", joint={"k": 4}).fingerprint != fp
    assert (
        EmbeddingFeaturizer(linear(0), field="x.npy", transform=torch.as_tensor).fingerprint != fp
    )
    assert EmbeddingFeaturizer(linear(0), field="x.npy", batch_size=7).fingerprint == fp
    with pytest.raises(ValueError, match="batch_size"):
        EmbeddingFeaturizer(linear(0), field="x.npy", batch_size=0)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        EmbeddingFeaturizer(lambda x: x, field="x.npy")  # type: ignore[arg-type]


def test_runs_in_a_dataloader_with_two_workers_and_compares(local_shards, tmp_path) -> None:
    featurizer = EmbeddingFeaturizer(linear(), field="x.npy", batch_size=8)
    store = dl.ProfileStore(str(tmp_path / "store"))
    ds = dl.DriftDataset(local_shards, store=store, featurizer=featurizer, shuffle=False)
    keys = [s["__key__"] for s in DataLoader(ds, batch_size=None, num_workers=2)]
    assert len(keys) == len(set(keys)) == 100
    for url in local_shards:  # the workers profiled every shard with the embedding
        profile = store.get_profile(url, stat_shard(Shard(url)).version)
        assert profile.n == 25 and profile.fingerprint == featurizer.fingerprint
        assert "x.npy.emb.norm" in profile.kinds and "joint:x.npy.emb/dir0" in profile.kinds
    store.build_reference("emb", local_shards[:2])
    summary = profile_shards(local_shards, store, featurizer=featurizer, progress=False)
    assert summary.skipped == 4  # already stored, same fingerprint
    # the last shard's profile; 25 samples: lower min_samples so the distribution tests run (a
    # projection has no rate tests of its own, its coordinates carry them)
    config = dl.drift.DriftConfig(min_samples=20)
    drift = dl.compare(profile, store.get_reference("emb"), config)
    assert drift.n == 25 and any(f.name == "joint:x.npy.emb/dir3" for f in drift.features)


def test_import_driftloader_features_does_not_import_torch() -> None:
    code = (
        "import sys, driftloader.features as f; print('torch' in sys.modules);"
        "f.EmbeddingFeaturizer; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
