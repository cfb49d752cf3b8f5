"""The skip gate's cost per run and per epoch, apart: one dataset built, then several epochs.

    python benchmarks/gate_epochs.py                       # local, moto, 40 and 100 ms; 0, 2 workers
    python benchmarks/gate_epochs.py --settings proxy-100 --workers 2 --rounds 5

``peers.py`` builds a new dataset for every pass, as a new job does; a gated dataset's build
reads its reference, exclusion list and decision index (one round trip), which a training run
pays once, not once an epoch. Here each round builds plain driftloader and the skip gate once
(every shard clean, decided by a first pass before the rounds) and iterates each through the
same DataLoader for ``--epochs`` epochs (workers are forked again every epoch, as DataLoader
does without ``persistent_workers``). Per cell it reports the build's time, the rate of the
build and the first epoch, and the rate of the later epochs; the two contenders alternate
round by round. Same corpus and settings as ``peers.py`` (vectors, 32 shards x 1,000; moto,
and the latency proxy at 50 MB/s a connection, each in a process of its own).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402

CONTENDERS = ("driftloader", peers.GATE)


def run_epochs(run: peers.Run, contender: str, workers: int, epochs: int) -> tuple[float, list]:
    """(seconds to build the dataset, seconds of each epoch), each epoch's samples checked."""
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    dataset = run.dataset(contender, "")
    built = time.perf_counter() - started
    loader = DataLoader(
        dataset,
        batch_size=peers.BATCH,
        num_workers=workers,
        multiprocessing_context=peers.WORKER_START if workers else None,
    )
    times = []
    for _ in range(epochs):
        seen, started = peers.Checksum(), time.perf_counter()
        for values, classes in loader:
            seen.add_batch(values, classes)
        times.append(time.perf_counter() - started)
        if not seen.matches(run.corpus.truth):
            raise RuntimeError(f"{contender}: read {seen}, expected {run.corpus.truth}")
    return built, times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="local,moto,proxy-40,proxy-100")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=32)
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    with Servers() as servers, tempfile.TemporaryDirectory(prefix="gate-epochs-") as tmp:
        root, scratch = Path(tmp) / "data", Path(tmp) / "scratch"
        scratch.mkdir(parents=True)
        settings = peers.settings_for(args.settings.split(","), servers)
        moto = next((s.upstream or s.endpoint for s in settings if s.endpoint), None)
        corpus = peers.build_corpus("vectors", args.shards, 1000, root)
        urls = [str(p) for p in corpus.tar_paths]
        if any(s.endpoint is None for s in settings):
            peers.build_gate_store(corpus, urls, str(corpus.root / "store"), None)
        if moto:
            peers.upload_corpus(corpus, moto)
            remote = [f"{peers.remote('tar', corpus.name)}/{p.name}" for p in corpus.tar_paths]
            peers.build_gate_store(corpus, remote, peers.remote("store", corpus.name), moto)
        for setting in settings:
            run = peers.Run(corpus, setting, scratch)
            for w in workers:
                run_epochs(run, peers.GATE, w, 1)  # the first pass decides every shard
                cell: dict = {c: {"build": [], "first": [], "later": []} for c in CONTENDERS}
                for r in range(args.rounds):
                    for contender in CONTENDERS[r % 2 :] + CONTENDERS[: r % 2]:
                        built, times = run_epochs(run, contender, w, args.epochs)
                        count = run.corpus.truth.count
                        cell[contender]["build"].append(built)
                        cell[contender]["first"].append(count / (built + times[0]))
                        cell[contender]["later"].append(count / statistics.mean(times[1:]))
                        log(
                            f"{setting.name} workers {w} round {r + 1} {contender}: build "
                            f"{built:.3f} s, epochs {', '.join(f'{t:.3f}' for t in times)} s"
                        )
                rows.append((setting.name, w, cell))
    print(
        f"\n{args.shards} shards x 1,000 vectors, {args.rounds} rounds of {args.epochs} epochs, "
        f"driftloader at {peers.commit_of_driftloader()}\n"
    )
    print(
        "| setting | workers | gate build (s) | plain: build + epoch 1 | gate: build + epoch 1 "
        "| ratio | plain: later epochs | gate: later epochs | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, w, cell in rows:
        plain, gate = cell["driftloader"], cell[peers.GATE]
        first = [g / p for g, p in zip(gate["first"], plain["first"])]
        later = [g / p for g, p in zip(gate["later"], plain["later"])]
        print(
            f"| {name} | {w} | {statistics.median(gate['build']):.3f} | "
            f"{statistics.median(plain['first']):,.0f} | {statistics.median(gate['first']):,.0f} "
            f"| {statistics.median(first):.2f}x | {statistics.median(plain['later']):,.0f} | "
            f"{statistics.median(gate['later']):,.0f} | {statistics.median(later):.2f}x |"
        )


if __name__ == "__main__":
    main()
