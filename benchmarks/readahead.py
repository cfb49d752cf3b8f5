"""driftloader's read-ahead bounds against latency: the same pass under a few ``ReadOptions``.

    python benchmarks/readahead.py [--rounds 3] [--shards 32] [--workers 2]
                                   [--variants 128/16/32/8,128/16/64/4]

The issue's vectors (peers.py's corpus: 32 shards x 1,000 samples, ~9.3 MB a shard) on moto,
behind the latency proxy at 0, 40 and 100 ms (50 MB/s a connection), and locally; 0 DataLoader
workers unless ``--workers`` (each worker keeps its own bounds), batch 256. Each variant sets
the bytes in flight (``max_inflight``), the shards read ahead (``lookahead``) and the requests
in flight (``max_requests``) and the size of a ranged request (``block_size``); ``--variants``
names them as ``MiB/shards/requests/block MiB``. Variants and settings alternate round by round,
and medians are printed. This chose the defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peers  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402

DEFAULT_VARIANTS = "64/8/16/8,128/8/16/8,128/16/32/8,256/16/32/8"


def parse_variants(text: str) -> dict[str, tuple[int, int, int, int]]:
    """``"128/16/32/8,..."`` -> {"128 MiB, 16 shards, 32 requests, 8 MiB blocks": (128, 16, 32, 8)}."""
    variants = {}
    for item in text.split(","):
        mib, lookahead, requests, block = (int(part) for part in item.split("/"))
        name = f"{mib} MiB, {lookahead} shards, {requests} requests, {block} MiB blocks"
        variants[name] = (mib, lookahead, requests, block)
    return variants


def one_pass(
    urls: list[str],
    endpoint: str | None,
    bounds: tuple[int, int, int, int],
    workers: int,
    truth,
) -> float:
    """Samples/s of one pass under ``bounds`` (max_inflight MiB, lookahead, max_requests, block
    MiB), checked against ``truth`` (peers.py's checksum)."""
    import driftloader as dl

    mib, lookahead, requests, block = bounds
    read = dl.ReadOptions(
        max_inflight=mib << 20, lookahead=lookahead, max_requests=requests, block_size=block << 20
    )
    started = time.perf_counter()
    ds = peers.read_driftloader("vectors", urls, endpoint, read_options=read)
    seen = peers.loader_pass(ds, workers)
    elapsed = time.perf_counter() - started
    if not seen.matches(truth):
        raise RuntimeError(f"read {seen} under {bounds}, expected {truth}")
    return seen.count / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="MiB/shards/requests/block")
    parser.add_argument("--latencies", default="0,40,100", help="proxy ms, comma-separated")
    args = parser.parse_args(argv)
    variants = parse_variants(args.variants)
    import s3fs

    with Servers() as servers, tempfile.TemporaryDirectory(prefix="readahead-") as tmp:
        moto = servers.moto()
        settings = {"local": None}
        settings.update(
            {f"{ms} ms": servers.proxy(moto, ms, peers.MBPS) for ms in _ints(args.latencies)}
        )
        folder = Path(tmp) / "tar"
        folder.mkdir()
        paths = peers.write_tars("vectors", args.shards, 1000, folder)
        truth = peers.ground_truth("vectors", args.shards, 1000)
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto})
        fs.mkdir("readahead")
        fs.put(str(folder), "readahead/", recursive=True)
        remote = [f"s3://readahead/tar/{p.name}" for p in paths]
        local = [str(p) for p in paths]
        rates: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for setting, endpoint in settings.items():
                for name, bounds in variants.items():
                    urls = remote if endpoint else local
                    rate = one_pass(urls, endpoint, bounds, args.workers, truth)
                    rates.setdefault((setting, name), []).append(rate)
                    print(f"round {r + 1} {setting} {name}: {rate:,.0f} samples/s", flush=True)
    print("\n| setting | " + " | ".join(variants) + " |")
    print("| --- |" + " ---: |" * len(variants))
    for setting in settings:
        cells = [f"{statistics.median(rates[setting, name]):,.0f}" for name in variants]
        print(f"| {setting} | " + " | ".join(cells) + " |")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


if __name__ == "__main__":
    main()
