"""Measure the sketch defaults: quantile rank error, serialized size and profile merge time.

Run ``python benchmarks/sketches.py``; prints a markdown table and saves it to
``benchmarks/results/sketches.md``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import datasketches as ds
import numpy as np

from driftloader.features import Column
from driftloader.profile import Profile
from driftloader.sketches import DEFAULT_QUANTILE_K, Moments, Quantiles

RESULTS = Path(__file__).parent / "results" / "sketches.md"
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
                targets.setdefault(name, ds.kll_floats_sketch(q.k)).merge(q._sk)
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
    RESULTS.write_text("# Sketch benchmarks\n\n" + text)
