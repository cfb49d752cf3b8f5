"""moto's own time per request as its bucket grows: what the scale curve on moto measures
besides driftloader.

    python benchmarks/moto_requests.py [--sizes 1000 10000 100000 400000] [--requests 2000]

A moto S3 server in a process of its own is filled with tiny objects (threads, 16 at once, not
timed) up to each size; at each size one client (botocore, one connection, one request after
the other, as a profile read or a catalog write is) times ``--requests`` GETs of random existing
keys, as many PUTs of new keys and HEADs, and a page of ListObjectsV2 under a prefix that holds
1,000 keys. The check of 100k shards runs against a bucket of ~400k objects (shards, profiles,
catalog rows, decisions); its time per shard can only stay flat if moto's time per request
does. Figures are medians and 90th percentiles in ms, and depend on the machine's load.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.servers import Servers  # noqa: E402

BUCKET = "grow"
BODY = b"x" * 200  # about a catalog row's or a decision record's size


def client(endpoint: str, connections: int = 1):
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=connections, retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def fill(endpoint: str, start: int, stop: int) -> None:
    """Objects ``start`` .. ``stop - 1``: ``o/<i % 100>/<i>`` (spread over 100 prefixes)."""
    s3 = client(endpoint, 16)

    def put(i: int) -> None:
        s3.put_object(Bucket=BUCKET, Key=key(i), Body=BODY)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(start, stop), chunksize=256))


def key(i: int) -> str:
    return f"o/{i % 100:02d}/{i:07d}"


def timed(calls) -> tuple[float, float]:
    """(median, 90th percentile) in ms of calling each of ``calls``."""
    times = []
    for call in calls:
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def measure(endpoint: str, size: int, requests: int, fresh: int) -> dict:
    s3 = client(endpoint)
    rng = random.Random(size)
    picks = [rng.randrange(size) for _ in range(requests)]
    row = {"objects": size}
    row["GET"] = timed(
        lambda i=i: s3.get_object(Bucket=BUCKET, Key=key(i))["Body"].read() for i in picks
    )
    row["HEAD"] = timed(lambda i=i: s3.head_object(Bucket=BUCKET, Key=key(i)) for i in picks)
    row["PUT"] = timed(
        lambda j=j: s3.put_object(Bucket=BUCKET, Key=f"new/{fresh + j:07d}", Body=BODY)
        for j in range(requests)
    )
    prefix = f"p{size}/"  # a folder of its own with 1,000 keys, as a shard folder's page
    for j in range(1000):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{j:04d}", Body=BODY)
    row["LIST page"] = timed(
        lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=1000) for _ in range(20)
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000, 400000])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rows = []
    with Servers() as servers:
        endpoint = servers.moto()
        client(endpoint).create_bucket(Bucket=BUCKET)
        have, fresh = 0, 0
        for size in sorted(args.sizes):
            t = time.perf_counter()
            fill(endpoint, have, size)
            have = size
            print(f"filled to {size:,} objects in {time.perf_counter() - t:.1f} s", flush=True)
            rows.append(measure(endpoint, size, args.requests, fresh))
            fresh += args.requests
            print(rows[-1], flush=True)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    kinds = ["GET", "HEAD", "PUT", "LIST page"]
    print("\n| objects in the bucket | " + " | ".join(f"{k} ms (p50 / p90)" for k in kinds) + " |")
    print("|---:|" + "---:|" * len(kinds))
    for row in rows:
        cells = " | ".join(f"{row[k][0]:.2f} / {row[k][1]:.2f}" for k in kinds)
        print(f"| {row['objects']:,} | {cells} |")


if __name__ == "__main__":
    main()
