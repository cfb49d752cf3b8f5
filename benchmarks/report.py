"""Rendering time of the HTML report over many shard profiles.

    python benchmarks/report.py [--shards 1000] [--samples 500] [--features 16] [--out PATH]

Builds synthetic shard profiles directly (``Profile.update`` on numpy columns, no tar files) in
a local store, a reference from the first 20, records a decision per shard as ``DriftDataset``
does (one in ten shards shifted, so drifted), then times ``render_report`` twice: with the
catalog's recorded results, and with none (every stored profile compared with the reference).
Also reports the mean time of one ``compare`` (shard profile vs reference, both in memory).
Prints the results; ``--out`` also writes them there (e.g. ``benchmarks/results/report.md``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from driftloader.drift import compare
from driftloader.features import Column
from driftloader.profile import Profile
from driftloader.report import render_report
from driftloader.store import ProfileStore

FINGERPRINT = "benchmark-featurizer"
T0 = 1_700_000_000.0


def make_profile(i: int, samples: int, features: int, shift: float) -> Profile:
    """A shard profile of ``features`` normal features and one categorical feature."""
    rng = np.random.default_rng(i)
    profile = Profile(
        FINGERPRINT,
        url=f"/data/source-{i % 4}/shard-{i:06d}.tar",
        version="v1",
        source=f"source-{i % 4}",
        created=T0 + 600.0 * i,
    )
    batch = {
        f"f{j:02d}": Column("numeric", np.ma.asarray(rng.normal(shift * (j < 3), 1.0, samples)))
        for j in range(features)
    }
    classes = rng.choice(["cat", "dog", "bird"], samples, p=[0.5, 0.3, 0.2]).astype(object)
    batch["cls"] = Column("categorical", classes)
    return profile.update(batch)


def build_store(root: str, shards: int, samples: int, features: int, record: bool) -> float:
    """Profiles, a reference "ref" from the first 20, and (if ``record``) one decision each.

    Returns the mean seconds of one ``compare`` (0.0 if not ``record``).
    """
    store = ProfileStore(root)
    profiles = [
        make_profile(i, samples, features, 1.0 if i % 10 == 9 else 0.0) for i in range(shards)
    ]
    reference = Profile.merged(profiles[:20])
    store.put_reference("ref", reference)
    comparing = 0.0
    for p in profiles:
        store.put_profile(p)
        if record:
            start = time.perf_counter()
            d = compare(p, reference)
            comparing += time.perf_counter() - start
            row = {"reference": "ref", "action": "skipped" if d.drifted else "passed"}
            row.update(drifted=d.drifted, score=d.score, n=p.n, decided=p.created + 60.0)
            store.record(p.url, p.version, {**row, "top": [f.to_dict() for f in d.top(5)]})
    return comparing / shards


def timed(root: str) -> tuple[float, int]:
    start = time.perf_counter()
    document = render_report(ProfileStore(root), "ref")
    return time.perf_counter() - start, len(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--out", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    lines = []
    for record in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            per_compare = build_store(tmp, args.shards, args.samples, args.features, record)
            seconds, size = timed(tmp)
        what = "recorded results" if record else "no results (all compared)"
        block = [
            f"{args.shards} shards, {args.features + 1} features, {what}: "
            f"render_report {seconds:.2f} s, {size / 1e6:.2f} MB of HTML"
        ]
        if record:
            block.append(
                f"compare (shard of {args.samples} samples vs reference of "
                f"{20 * args.samples:,}, in memory): {per_compare * 1e3:.1f} ms per shard profile"
            )
        print("\n".join(block), flush=True)
        lines += block
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
