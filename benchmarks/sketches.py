"""Measure the sketch defaults: quantile rank error, serialized size and profile merge time.

Run ``python benchmarks/sketches.py``; prints a markdown table and saves it to
``benchmarks/results/sketches.md``.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import datasketches as ds
import numpy as np

from driftloader.features import Column, DefaultFeaturizer
from driftloader.profile import Profile
from driftloader.sketches import DEFAULT_QUANTILE_K, Moments, Quantiles

RESULTS = Path(__file__).parent / "results" / "sketches.md"
BEFORE = """
Before typed arrays (profile format 1, commit 98a89bb, same profile, same machine): 551,566 B,
8,357 B per feature, of which the reservoir as JSON text 346,165 B; loading it took 29.6 ms.
"""
FLOAT32 = """
Before the reservoir kept float32 values (commit 62f932e: rows stored as float64 unless
lossless as float32), the 20,000-sample 64-float64 `.npy` profile took 8,526 B per feature, and
the 1,000-sample profile above 6,104 B per feature (its reservoir 180,402 B).
"""
QS = np.linspace(0.01, 0.99, 99)


def max_rank_error(values: np.ndarray, k: int = DEFAULT_QUANTILE_K, chunks: int = 100) -> float:
    """Worst |exact rank - q| over 99 quantiles of a stream fed in ``chunks`` batches."""
    sketch = Quantiles(k)
    for chunk in np.array_split(values, chunks):
        sketch.update(chunk)
    estimates = sketch.quantile(QS)
    exact = (
        np.searchsorted(np.sort(values.astype(np.float32)), estimates, side="right") / values.size
    )
    return float(np.abs(exact - QS).max())


def numeric_feature_bytes(n: int, rng: np.random.Generator) -> int:
    """JSON size of one numeric feature (Moments + Quantiles) after ``n`` values."""
    moments, quantiles = Moments(), Quantiles()
    for start in range(0, n, 100_000):
        chunk = rng.standard_normal(min(100_000, n - start))
        moments.update(chunk)
        quantiles.update(chunk)
    payload = {"moments": moments.to_dict(), "quantiles": quantiles.to_dict()}
    return len(json.dumps(payload, allow_nan=False, separators=(",", ":")))


def shard_profiles(shards: int, features: int, samples: int, seed: int = 0) -> list[Profile]:
    """``shards`` profiles of ``features`` numeric features, each from ``samples`` samples."""
    rng = np.random.default_rng(seed)
    names = [f"f{i:03d}" for i in range(features)]
    profiles = []
    for _ in range(shards):
        data = rng.standard_normal((samples, features))
        batch = {name: Column("numeric", np.ma.asarray(data[:, j])) for j, name in enumerate(names)}
        profiles.append(Profile("bench").update(batch))
    return profiles


def stored_profile(samples: int = 1000, vector: int = 64, seed: int = 0) -> Profile:
    """A shard's profile as the default featurizer makes it from ``samples`` samples of a
    ``vector``-float ``.npy``, a class and a blob: ``vector`` numeric features, a categorical
    and the blob's byte size (a constant), with the default ``ProfileConfig``."""
    rng = np.random.default_rng(seed)
    batch = {
        f"npy.{j:02d}": Column("numeric", np.ma.asarray(rng.standard_normal(samples)))
        for j in range(vector)
    }
    classes = np.array([f"c{i}" for i in rng.integers(0, 10, samples)], dtype=object)
    batch["cls"] = Column("categorical", classes)
    batch["bin.bytes"] = Column("numeric", np.ma.asarray(np.full(samples, 4096.0)))
    return Profile("bench").update(batch)


def vector_field_profile(dtype: type, samples: int = 20_000, width: int = 64) -> Profile:
    """A profile of ``samples`` samples of a ``width``-value ``.npy`` of ``dtype`` made by the
    default featurizer (``width`` coordinates and the joint projections), 1,000 at a time."""
    rng = np.random.default_rng(5)
    featurizer = DefaultFeaturizer()
    profile = Profile(featurizer.fingerprint)
    for _ in range(samples // 1000):
        batch = []
        for i, row in enumerate(rng.standard_normal((1000, width)).astype(dtype)):
            buf = io.BytesIO()
            np.save(buf, row)
            batch.append({"__key__": str(i), "x.npy": buf.getvalue()})
        profile.update(featurizer(batch))
    return profile


def vector_field_rows() -> list[tuple[str, str, str]]:
    rows = []
    for dtype in (np.float32, np.float64):
        p = vector_field_profile(dtype)
        per_feature = len(p.to_json()) / len(p.kinds)
        label = (
            f"stored profile, 20,000 samples of a 64-{dtype.__name__} .npy, {len(p.kinds)} "
            "features (coordinates + joint projections), per feature"
        )
        rows.append((label, f"{per_feature:,.0f} B", "<= 8192 B"))
    return rows


def load_ms(text: str, decode: bool, rounds: int = 7) -> float:
    """Wall ms of ``Profile.from_json`` (best of ``rounds``), with or without then decoding the
    reservoir (a compare-only load never decodes it)."""
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        p = Profile.from_json(text)
        if decode:
            p.reservoir.rows  # noqa: B018
        best = min(best, time.perf_counter() - start)
    return best * 1000


def stored_profile_rows() -> list[tuple[str, str, str]]:
    p = stored_profile()
    text = p.to_json()
    reservoir = len(json.dumps(json.loads(text)["reservoir"], separators=(",", ":")))
    per_feature = len(text) / len(p.kinds)
    label = f"1,000 samples, {len(p.kinds)} features (64-float .npy, class, blob size)"
    return [
        (f"stored profile, {label}", f"{len(text):,} B", ""),
        ("... per feature, reservoir included", f"{per_feature:,.0f} B", "<= 8192 B"),
        ("... of which the reservoir (256 rows, typed arrays)", f"{reservoir:,} B", ""),
        (
            "load it, compare-only (reservoir left encoded), best of 7",
            f"{load_ms(text, False):.2f} ms",
            "",
        ),
        ("load it and decode the reservoir, best of 7", f"{load_ms(text, True):.2f} ms", ""),
    ]


def merge_seconds(profiles: list[Profile], rounds: int = 3) -> float:
    """CPU seconds for ``Profile.merged`` over all profiles (best of ``rounds``: noise only adds)."""
    best = math.inf
    for _ in range(rounds):
        start = time.process_time()
        merged = Profile.merged(profiles)
        best = min(best, time.process_time() - start)
        if merged.n != sum(p.n for p in profiles):
            raise RuntimeError("merged profile lost samples")
    return best


def kll_merge_seconds(profiles: list[Profile], rounds: int = 3) -> float:
    """CPU seconds for the DataSketches KLL merges alone, in the same order: the floor."""
    best = math.inf
    for _ in range(rounds):
        start = time.process_time()
        targets: dict[str, ds.kll_floats_sketch] = {}
        for p in profiles:
            for name in p.features:
                q = p.numeric(name)[1]
                targets.setdefault(name, ds.kll_floats_sketch(q.k)).merge(q.kll)
        best = min(best, time.process_time() - start)
    return best


def main() -> str:
    rng = np.random.default_rng(0)
    rows = [("measure", "value", "target")]
    for label, values in (
        ("normal", rng.standard_normal(1_000_000)),
        ("lognormal (skewed)", rng.lognormal(0.0, 1.5, 1_000_000)),
    ):
        worst = max(max_rank_error(values if s == 0 else rng.permutation(values)) for s in range(5))
        rows.append(
            (
                f"max rank error, 10^6 {label}, k={DEFAULT_QUANTILE_K}, 5 orders",
                f"{worst:.4%}",
                "<= 1%",
            )
        )
    rows.append(("a priori rank error bound (99%)", f"{Quantiles().rank_error:.4%}", ""))
    for n in (1_000, 100_000, 1_000_000, 10_000_000):
        rows.append(
            (
                f"numeric feature JSON size, n={n:.0e}",
                f"{numeric_feature_bytes(n, rng)} B",
                "<= 8192 B",
            )
        )
    rows += stored_profile_rows()
    rows += vector_field_rows()
    profiles = shard_profiles(1000, 100, 1000)
    rows.append(
        (
            "merge 1,000 profiles x 100 numeric features: CPU s per 100 features, best of 3",
            f"{merge_seconds(profiles):.3f} s",
            "< 1 s",
        )
    )
    rows.append(
        (
            "... of which DataSketches' own KLL merges (the floor at k=400)",
            f"{kll_merge_seconds(profiles):.3f} s",
            "",
        )
    )
    table = "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows[:1] + [("---", "---", "---")] + rows[1:]
    )
    return table + "\n"


if __name__ == "__main__":
    text = main()
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Sketch benchmarks\n\n" + text + BEFORE + FLOAT32)
