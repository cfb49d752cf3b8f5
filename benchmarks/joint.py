"""Joint drift from sliced sketches: a correlation flip with unchanged marginals.

    python benchmarks/joint.py [--shards 100] [--samples 1000] [--ref-shards 20]

Samples carry ``x.npy``, a vector whose coordinates 0 and 1 are standard normal with correlation
rho (+0.8 in the reference and clean shards, -0.8 in flipped ones; the marginals are the same),
plus 6 independent standard-normal coordinates. ``DefaultFeaturizer()`` (the CLI's default)
featurizes them into ``x.npy[i]`` and the projections ``joint:x.npy/dir<j>``; profiles are the
real ``Profile``; the reference merges ``--ref-shards`` clean shards; ``compare`` runs with the
default ``DriftConfig``. Rows: how often a shard is flagged, and how often the joint features
(versus the per-element ones) are among its drifted features. A second family does the same for
two JSON numbers projected together (``FeatureSpec`` with ``joint={"numeric": [...]}``).
Writes benchmarks/results/joint.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from driftloader.drift import compare
from driftloader.features import DefaultFeaturizer, FeatureSpec, Featurizer
from driftloader.profile import Profile

RESULTS = Path(__file__).resolve().parent / "results" / "joint.md"
WIDTH = 8


def vectors(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    x = rng.standard_normal((n, WIDTH))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return x


def vector_samples(rng: np.random.Generator, n: int, rho: float) -> list[dict]:
    return [{"__key__": str(i), "x.npy": row} for i, row in enumerate(vectors(rng, n, rho))]


def json_samples(rng: np.random.Generator, n: int, rho: float) -> list[dict]:
    x = vectors(rng, n, rho)
    return [
        {"__key__": str(i), "json": f'{{"a": {a!r}, "b": {b!r}}}'.encode()}
        for i, (a, b) in enumerate(x[:, :2].tolist())
    ]


def profile_of(featurizer: Featurizer, samples: list[dict], url: str) -> Profile:
    profile = Profile(featurizer.fingerprint, url=url, version="1")
    for start in range(0, len(samples), 256):
        profile.update(featurizer(samples[start : start + 256]))
    return profile


def flag_rates(featurizer: Featurizer, make, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(0)
    reference = profile_of(featurizer, make(rng, args.samples, 0.8), "ref-0")
    for i in range(1, args.ref_shards):
        reference.merge(profile_of(featurizer, make(rng, args.samples, 0.8), f"ref-{i}"))
    out = {}
    for family, rho in (("clean (rho +0.8)", 0.8), ("flipped (rho -0.8)", -0.8)):
        flagged = joint = 0
        for i in range(args.shards):
            result = compare(
                profile_of(featurizer, make(rng, args.samples, rho), f"s{i}"), reference
            )
            flagged += result.drifted
            joint += any(f.drifted and f.name.startswith("joint:") for f in result.features)
        out[family] = (flagged / args.shards, joint / args.shards)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--ref-shards", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = FeatureSpec(None, joint={"numeric": ["json.a", "json.b"]})
    cases = [
        ("`x.npy`, 8 coordinates, default featurizer", DefaultFeaturizer(), vector_samples),
        ("`json.a`, `json.b`, spec `joint.numeric`", spec.featurizer(), json_samples),
    ]
    lines = [
        "# Joint drift: correlation flip with unchanged marginals",
        "",
        f"`python benchmarks/joint.py --shards {args.shards} --samples {args.samples} "
        f"--ref-shards {args.ref_shards}`: shards of {args.samples} samples, reference of "
        f"{args.ref_shards} clean shards, default `DriftConfig`.",
        "",
        "| data | shards | flagged | joint feature drifted |",
        "| --- | --- | ---: | ---: |",
    ]
    for label, featurizer, make in cases:
        for family, (flagged, joint) in flag_rates(featurizer, make, args).items():
            lines.append(f"| {label} | {family} | {flagged:.1%} | {joint:.1%} |")
    lines += [
        "",
        "Goals (issue 13): flipped shards flagged >= 90%, clean shards <= 1%.",
        f"Run time {time.perf_counter() - started:.0f} s.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
