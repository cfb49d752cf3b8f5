"""Local read rate of this checkout against an earlier commit of driftloader, in one run.

    python benchmarks/commits.py --base 98a89bb              # issue #12's "today"
    python benchmarks/commits.py --base 98a89bb --shards 32 --rounds 5 --workers 0,2

Issue #12 asks for twice the local rate of its day on its vectors (a 64-float .npy, a class
and a 4 KiB blob per sample). Rates on these machines move by 2x from session to session, so
both commits are measured in the same run: ``--base`` is exported with ``git archive`` into a
scratch folder, and every pass runs in a fresh process whose ``driftloader`` is its commit's
(checked by its ``__file__``). webdataset reads the same shards as a third contender. Passes
are peers.py's: ``.decode().to_tuple("x.npy", "cls")`` through a DataLoader of batch 256, the
count and sums checked against the ground truth. The order of the contenders rotates round by
round; medians and the median of each round's ratio are printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def one_pass(tree: str, contender: str, workers: int, tars: str, truth: str) -> None:
    """In the child: time one pass of ``contender`` over the shards, print its JSON line."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import peers

    sys.path.insert(0, tree)  # after peers put this checkout first: the commit's driftloader
    for module in ("driftloader", "driftloader.dataset", "webdataset"):
        importlib.import_module(module)  # before the clock starts, as in a training job

    urls = sorted(str(p) for p in Path(tars).glob("*.tar"))
    started = time.perf_counter()
    if contender == "webdataset":
        ds = peers.read_webdataset("vectors", urls, None)
    else:
        ds = peers.read_driftloader("vectors", urls, None)
    seen = peers.loader_pass(ds, workers)
    rate = seen.count / (time.perf_counter() - started)
    if not seen.matches(peers.Checksum(**json.loads(Path(truth).read_text()))):
        raise SystemExit(f"{contender}: read {seen}, expected {truth}")
    module = sys.modules.get("driftloader")
    print(json.dumps({"rate": rate, "driftloader": getattr(module, "__file__", None)}))


def run_pass(tree: Path, contender: str, workers: int, scratch: Path) -> float:
    args = [sys.executable, __file__, "--one-pass", contender, "--tree", str(tree)]
    args += ["--workers", str(workers), "--scratch", str(scratch)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if contender != "webdataset" and not result["driftloader"].startswith(str(tree)):
        raise SystemExit(f"{contender} imported {result['driftloader']}, not from {tree}")
    return result["rate"]


def commit_of(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="98a89bb", help="the earlier commit")
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1000, help="samples per shard")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="0,2", help="DataLoader workers, comma-separated")
    parser.add_argument("--one-pass", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_pass:
        scratch = Path(args.scratch)
        one_pass(args.tree, args.one_pass, int(args.workers), scratch / "tar", scratch / "truth")
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks import peers

    base, head = commit_of(args.base), commit_of("HEAD")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "driftloader"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="dl-commits-") as tmp:
        scratch = Path(tmp)
        tree = scratch / f"tree-{base}"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", base, "driftloader"], check=True, capture_output=True, cwd=ROOT
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (scratch / "tar").mkdir()
        print(f"writing {args.shards} shards x {args.samples} samples ...", flush=True)
        peers.write_tars("vectors", args.shards, args.samples, scratch / "tar")
        truth = peers.ground_truth("vectors", args.shards, args.samples)
        (scratch / "truth").write_text(json.dumps(vars(truth)))
        contenders = {"webdataset": ROOT, f"driftloader {base}": tree, f"driftloader {head}": ROOT}
        workers = [int(w) for w in args.workers.split(",")]
        rates: dict = {(c, w): [] for c in contenders for w in workers}
        for r in range(args.rounds):
            names = list(contenders)
            names = names[r % len(names) :] + names[: r % len(names)]
            for w in workers:
                for name in names:
                    rate = run_pass(contenders[name], name.split(" ")[0], w, scratch)
                    rates[name, w].append(rate)
                    print(f"round {r + 1} workers {w} {name}: {rate:,.0f} samples/s", flush=True)
    print(
        f"\n{args.shards} shards x {args.samples}, {args.rounds} rounds, "
        f"HEAD {head}{' (uncommitted changes)' if dirty else ''}, {os.cpu_count()} cores"
    )
    print(
        "| workers | webdataset | driftloader "
        + base
        + " | driftloader "
        + head
        + " | new / old (median of rounds) | new / webdataset |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for w in workers:
        old, new, wds = (
            rates[f"driftloader {base}", w],
            rates[f"driftloader {head}", w],
            rates["webdataset", w],
        )
        gain = statistics.median(n / o for n, o in zip(new, old))
        over = statistics.median(n / o for n, o in zip(new, wds))
        print(
            f"| {w} | {statistics.median(wds):,.0f} | {statistics.median(old):,.0f} | "
            f"{statistics.median(new):,.0f} | {gain:.2f}x | {over:.2f}x |"
        )


if __name__ == "__main__":
    main()
