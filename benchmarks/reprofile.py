"""A re-run of ``profile`` over a corpus already profiled, on moto: what telling the profiled
shards costs, read one profile each (as before 8585084, and below ``LISTED_FROM`` shards) or
from the catalog and one listing of the profiles (``store.profiled``).

    python benchmarks/reprofile.py [--shards 5000] [--rounds 2] [--latency-ms 0]

Shards and store are ``scale.py``'s: tiny shards uploaded to moto (its own process), a profile
and catalog row stored for each from templates. Every request goes through an in-process
counting proxy (``latency_proxy.LatencyProxy``, ``--latency-ms`` to the first byte) and is
counted with the bytes it sent. The ways alternate round by round. The store starts as older
versions left it, a small catalog row per shard: the listing way's first run compacts them
(past 2,000, as ``profile`` and ``check`` now do), and its later runs read one compacted file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.latency_proxy import LatencyProxy  # noqa: E402
from benchmarks.scale import fill_store, upload  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()

    import s3fs

    from driftloader import profiling
    from driftloader.store import ProfileStore

    with Servers() as servers:
        moto = servers.moto()
        proxy = LatencyProxy(moto, latency_ms=args.latency_ms).start()
        options = {"client_kwargs": {"endpoint_url": proxy.endpoint}}
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto}, skip_instance_cache=True)
        fs.mkdir("reprofile")
        started = time.perf_counter()
        urls = upload(fs, "reprofile", args.shards)
        glob = "s3://reprofile/data/*.tar"
        store = ProfileStore("s3://reprofile/drift", options)
        fill_store(store, fs, urls, options)
        print(
            f"{args.shards:,} shards and profiles stored in {time.perf_counter() - started:.0f} s"
        )

        def rerun(listed_from: float) -> dict:
            profiling.LISTED_FROM = listed_from
            fresh = ProfileStore(store.url, options)
            proxy.reset_stats()
            started = time.perf_counter()
            summary = profiling.profile_shards(glob, fresh, storage_options=options, progress=False)
            seconds = time.perf_counter() - started
            assert (summary.profiled, summary.skipped) == (0, args.shards), summary
            return {
                "s": seconds,
                "requests": sum(proxy.counts.values()),
                "MB": proxy.bytes_sent / 1e6,
            }

        ways = {"each profile read": float("inf"), "catalog + listing": 1}
        runs: list[tuple[str, str, dict]] = []
        for r in range(args.rounds):
            for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
                rows = len(store.list_json(store.path("catalog")))
                state = f"{rows:,} small rows" if rows else "compacted"
                result = rerun(ways[name])
                runs.append((state, name, result))
                print(state, name, result, flush=True)
        proxy.stop()

    print(f"\n{args.shards:,} tiny shards, {args.rounds} rounds, {args.latency_ms:g} ms latency")
    print("| round | catalog before the run | way | s | requests | MB sent |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for i, (state, name, r) in enumerate(runs):
        print(
            f"| {i // 2 + 1} | {state} | {name} | {r['s']:.2f} | {r['requests']:,} "
            f"| {r['MB']:.1f} |"
        )


if __name__ == "__main__":
    main()
