"""Profiling behind object-storage latency: wall time a shard, 1 process and local:2.

    python benchmarks/profile_latency.py [--shards 200] [--latency 0 40] [--rounds 3]
        [--roots PATH ...]

Tiny shards (``scale.tiny_shard``: 8 samples of a 16-float ``.npy``) on moto's S3 server,
profiled into a store in the same bucket through ``latency_proxy`` (its own process) at each
latency, 50 MB/s a connection. Every run is a fresh process (``PYTHONPATH`` set to one of
``--roots``, checkouts of driftloader to compare: this one by default), timed from the call
to ``profile_shards`` to its return; the roots alternate round by round. Each run profiles
into a store of its own and checks that every shard was profiled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import upload  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402

RUN = r"""
import json, sys, time
from driftloader.profiling import profile_shards
from driftloader.store import ProfileStore

def main():
    urls, store_url, endpoint, executor = json.loads(sys.argv[1])
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    store = ProfileStore(store_url, options)
    start = time.perf_counter()
    summary = profile_shards(
        urls, store, executor=executor, storage_options=options, progress=False
    )
    seconds = time.perf_counter() - start
    assert summary.profiled == len(urls) and not summary.failed, summary.line()
    print(json.dumps({"seconds": seconds}))

if __name__ == "__main__":
    main()
"""


def timed(root: Path, urls: list[str], store_url: str, endpoint: str, executor) -> float:
    job = json.dumps([urls, store_url, endpoint, executor])
    out = subprocess.run(
        [sys.executable, "-c", RUN, job],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--latency", type=float, nargs="*", default=[0, 40])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--roots", type=Path, nargs="*", default=[ROOT])
    args = parser.parse_args()
    import s3fs

    engines = (None, "local:2")
    with Servers() as servers:
        moto = servers.moto()
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto})
        fs.mkdir("latency")
        urls = upload(fs, "latency", args.shards)
        proxies = {ms: servers.proxy(moto, latency_ms=ms, mbps=50) for ms in args.latency}
        times: dict[tuple, list[float]] = {}
        run = 0
        for _ in range(args.rounds):
            for ms, endpoint in proxies.items():
                for executor in engines:
                    for root in args.roots:
                        run += 1
                        store_url = f"s3://latency/store-{run}"
                        seconds = timed(root, urls, store_url, endpoint, executor)
                        times.setdefault((ms, executor or "1 process", str(root)), []).append(
                            seconds
                        )
                        print(f"{ms:>5} ms {executor or '1 process':>9} {root}: {seconds:.2f} s")
    print("\n| latency ms | engine | checkout | median ms a shard | rounds s |")
    print("| --- | --- | --- | --- | --- |")
    for (ms, engine, root), values in times.items():
        per = 1000 * statistics.median(values) / args.shards
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {ms:g} | {engine} | {root} | {per:.1f} | {rounds} |")


if __name__ == "__main__":
    main()
