"""Profiling cost: `driftloader profile` and training-time profiling vs reading with webdataset.

    python benchmarks/profiling.py [--shards 8] [--samples 1000] [--rounds 2]

Same shards as benchmarks/throughput.py, all measured in one run, best of the rounds.
"""

from __future__ import annotations

import argparse
import math
import subprocess
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


def cli_seconds(pattern: str, store: str, workers: int) -> float:
    """Wall seconds of ``driftloader profile`` as a user runs it: a new process, start-up and
    worker start-up included."""
    command = [sys.executable, "-m", "driftloader", "profile", pattern, "--store", store]
    start = time.perf_counter()
    subprocess.run(
        [*command, "--workers", str(workers), "--quiet"], check=True, capture_output=True
    )
    return time.perf_counter() - start


def cli_rows(shards: int, samples: int, rounds: int) -> list[str]:
    """``driftloader profile --workers 1`` vs ``2`` on a larger corpus, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        make_shards(Path(tmp), shards, samples)
        pattern = f"{tmp}/*.tar"
        best = {1: math.inf, 2: math.inf}
        for r in range(rounds):
            for workers in best:
                seconds = cli_seconds(pattern, f"{tmp}/store-{workers}-{r}", workers)
                best[workers] = min(best[workers], seconds)
    return [
        f"| `driftloader profile --workers {w}` on {shards} shards (new process, wall) | "
        f"{shards * samples / best[w]:,.0f} | {best[1] / best[w]:.2f}x vs 1 worker |"
        for w in best
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cli-shards", type=int, default=32, help="corpus of the CLI rows")
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
        *cli_rows(args.cli_shards, args.samples, args.rounds),
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
