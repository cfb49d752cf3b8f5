"""Profiling cost: `driftloader profile` and training-time profiling vs reading with webdataset.

    python benchmarks/profiling.py [--shards 8] [--samples 1000] [--rounds 2]

Same shards as benchmarks/throughput.py, all measured in one run, best of the rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import webdataset as wds

import driftloader as dl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import make_shards  # noqa: E402


def rate(fn, samples: int) -> float:
    start = time.perf_counter()
    fn()
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-o", "--output", default="benchmarks/results/profiling.md")
    args = parser.parse_args()
    total = args.shards * args.samples
    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.shards, args.samples)
        runs = {
            "webdataset `.decode()` (read only)": lambda: sum(
                1 for _ in wds.WebDataset(urls, shardshuffle=False).decode()
            ),
            "DriftDataset `.decode()` (read only)": lambda: sum(
                1 for _ in dl.DriftDataset(urls, shuffle=False).decode()
            ),
            "DriftDataset(store=...) `.decode()` (reads + profiles + stores)": lambda: sum(
                1
                for _ in dl.DriftDataset(
                    urls, shuffle=False, store=f"{tmp}/s-{time.monotonic_ns()}"
                ).decode()
            ),
            "`driftloader profile`, 1 worker": lambda: dl.profile_shards(
                urls, dl.ProfileStore(f"{tmp}/p-{time.monotonic_ns()}"), progress=False
            ),
            "`driftloader profile`, 2 workers": lambda: dl.profile_shards(
                urls, dl.ProfileStore(f"{tmp}/q-{time.monotonic_ns()}"), workers=2, progress=False
            ),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                best[name] = max(best.get(name, 0.0), rate(fn, total))
    base = best["webdataset `.decode()` (read only)"]
    lines = [
        f"{args.shards} shards x {args.samples} samples (64-float .npy, class, 4 KiB blob); best of {args.rounds}",
        "",
        "| what | samples/s | ratio to webdataset `.decode()` |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {value:,.0f} | {value / base:.2f}x |" for name, value in best.items()),
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
