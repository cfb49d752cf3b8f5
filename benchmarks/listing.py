"""Listing a long S3 folder: ranges at once against pages one after the other.

    python benchmarks/listing.py [--keys 20000] [--latencies 0 40 100] [--rounds 3]

Uploads ``--keys`` tiny objects named ``shards/shard-000000.tar`` ... to a moto S3 server (its
own process), then, behind ``latency_proxy.LatencyProxy`` at each latency, lists the folder
round after round, alternating:

* ``pages``: ListObjectsV2 page after page, each asked for once the last came back (what
  driftloader did before ``listing.py``, and what s3fs's ``find`` does);
* ``ranges``: ``listing.objects`` (the first page, a few one-key probes, then up to 32 ranges
  at once), each page a presigned GET from the range's thread (``presign.SignedGets``);
* ``glob``: ``expand_urls("s3://.../shard-*.tar")``, the dataset's own call (ranges, plus the
  bucket's versioning asked beside the first page, and the ``Shard`` objects);
* ``ranges, botocore requests``: ``ranges`` with each page asked for by s3fs's client
  (botocore's request path on s3fs's loop thread), as before the presigned pages;
* ``ranges, botocore requests and parse``: the same with each page's objects parsed by
  botocore, as before ``listing_pages.quick_objects``.

Each listing is checked to give the same keys in the same order. Reports the median seconds,
the requests each made (counted by the proxy) and the most it had in flight. moto answers a
page in time proportional to the bucket's objects, on one of this machine's 2 cores, so at 0 ms
the figures are moto's; real S3 answers pages at once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.latency_proxy import LatencyProxy  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402


def pages(fs, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix``, ListObjectsV2 page after page."""
    keys, kwargs = [], {}
    while True:
        page = fs.call_s3(
            "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=1000, **kwargs
        )
        keys += [item["Key"] for item in page.get("Contents", ())]
        if not page.get("IsTruncated"):
            return keys
        kwargs = {"ContinuationToken": page["NextContinuationToken"]}


def botocore_parse(options: dict):
    """A filesystem as ``sources.filesystem`` makes it, but with botocore parsing the objects
    of each page (before ``listing_pages.quick_objects``) and checking it for an error first."""
    import s3fs

    from driftloader import listing_pages
    from driftloader.sources import _s3_options

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **_s3_options(options))
    listing_pages.quick_timestamps(fs)
    fs.session.unregister("before-parse.s3.ListObjectsV2", listing_pages.quick_objects)
    from botocore import handlers  # and its own check of each page for an <Error>, as before

    fs.session.register("before-parse.s3.ListObjectsV2", handlers._handle_200_error)
    return fs


def measure(label: str, upstream: str, bucket: str, prefix: str, args) -> None:
    """Each contender listing ``bucket/prefix*`` behind a proxy in front of ``upstream``, at
    each latency, round after round; a table row per latency and contender."""
    from driftloader import listing
    from driftloader.sources import expand_urls, filesystem

    expected = [f"{prefix}{i:06d}.tar" for i in range(args.keys)]
    with LatencyProxy(upstream, lifetime_s=3600) as proxy:
        options = {"client_kwargs": {"endpoint_url": proxy.endpoint}}
        fs, slow = filesystem(f"s3://{bucket}", options), botocore_parse(options)
        contenders = {
            "pages": lambda: pages(fs, bucket, prefix),
            "ranges": lambda: [
                i["Key"].split("/", 1)[1] for i in listing.objects(fs, bucket, prefix)
            ],
            "glob": lambda: [
                s.url.split("/", 3)[3] for s in expand_urls(f"s3://{bucket}/{prefix}*.tar", options)
            ],
            "ranges, botocore requests": lambda: [
                i["Key"].split("/", 1)[1]
                for i in listing.objects(fs, bucket, prefix, call=fs.call_s3)
            ],
            "ranges, botocore requests and parse": lambda: [
                i["Key"].split("/", 1)[1]
                for i in listing.objects(slow, bucket, prefix, call=slow.call_s3)
            ],
        }
        for latency in args.latencies:
            proxy.latency_ms = latency
            times: dict[str, list[float]] = {name: [] for name in contenders}
            requests: dict[str, int] = {}
            most: dict[str, int] = {}
            for _ in range(args.rounds):
                for name, run in contenders.items():
                    listing._VERSIONED_BUCKETS.clear()
                    proxy.reset_stats()
                    started = time.perf_counter()
                    keys = run()
                    times[name].append(time.perf_counter() - started)
                    assert keys == expected, f"{name} listed {len(keys)} keys, not the {args.keys}"
                    requests[name], most[name] = sum(proxy.counts.values()), proxy.max_in_flight
            base = statistics.median(times["pages"])
            for name, seconds in times.items():
                rounds = " ".join(f"{s:.2f}" for s in seconds)
                median = statistics.median(seconds)
                print(
                    f"| {label} | {latency:g} | {name} | {median:.2f} | {base / median:.1f}x | "
                    f"{rounds} | {requests[name]} | {most[name]} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--latencies", type=float, nargs="*", default=[0, 40, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--origins", nargs="*", default=["origin", "moto"])
    args = parser.parse_args()
    import s3fs

    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(
        "| origin | latency ms | contender | median s | vs pages | rounds s | requests | most in flight |"
    )
    print("| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |")
    with Servers() as servers, tempfile.TemporaryDirectory() as folder:
        if "origin" in args.origins:  # empty files named as the keys, listed by file_origin
            for i in range(args.keys):
                Path(folder, f"shard-{i:06d}.tar").touch()
            measure("file_origin", servers.files(Path(folder)), "listing", "shard-", args)
        if "moto" in args.origins:
            endpoint = servers.moto()  # Servers sets moto's dummy credentials
            direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
            direct.mkdir("listing")
            started = time.perf_counter()
            names = [f"listing/shards/shard-{i:06d}.tar" for i in range(args.keys)]
            for start in range(0, len(names), 2000):
                direct.pipe({n: b"x" for n in names[start : start + 2000]})
            print(f"(moto: uploaded {args.keys:,} keys in {time.perf_counter() - started:.1f} s)")
            measure("moto", endpoint, "listing", "shards/shard-", args)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
