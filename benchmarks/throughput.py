"""Read throughput: webdataset vs DriftDataset on the same shards, alternating, in one run.

    python benchmarks/throughput.py [--shards 8] [--samples 1000] [--rounds 3] [--no-s3]

Shards of 1,000 samples (a 64-float .npy, a class, a 4 KiB blob), read locally and from a moto
S3 server on 127.0.0.1, with ``.decode().to_tuple("x.npy", "cls")``. Prints samples/s, MB/s and
the ratio to webdataset measured in the same run (best of the rounds for each). The DataLoader
rows add ``.batched(256)`` and compare 2 workers with none, alternating: best vs best, and the
median of each round's ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

import driftloader as dl


def make_shards(folder: Path, shards: int, samples: int) -> list[str]:
    rng = np.random.default_rng(0)
    urls = []
    for s in range(shards):
        path = folder / f"shard-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(samples):
                buf = io.BytesIO()
                np.save(buf, rng.standard_normal(64).astype(np.float32))
                sink.write(
                    {
                        "__key__": f"s{s}_{i:06d}",
                        "x.npy": buf.getvalue(),
                        "cls": str(int(rng.integers(10))).encode(),
                        "bin": rng.bytes(4096),
                    }
                )
        urls.append(str(path))
    return urls


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server, endpoint


def upload(urls: list[str], endpoint: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("bench")
    for url in urls:
        fs.put(url, f"bench/{Path(url).name}")
    return [f"s3://bench/{Path(url).name}" for url in urls]


def register_webdataset_s3(endpoint: str) -> None:
    """webdataset over s3fs, as its users wire it: an fsspec opener for the s3 scheme."""
    import fsspec

    def gopen_s3(url, mode="rb", bufsize=8192, **kw):
        return fsspec.open(url, mode, client_kwargs={"endpoint_url": endpoint}).open()

    import importlib

    gopen_module = importlib.import_module("webdataset.gopen")

    gopen_module.gopen_schemes["s3"] = gopen_s3


def time_pipeline(make) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in make())
    return count / (time.perf_counter() - start)


def readers(urls: list[str], storage_options: dict | None = None) -> dict:
    return {
        "webdataset": lambda: (
            wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("x.npy", "cls")
        ),
        "driftloader": lambda: (
            dl.DriftDataset(urls, shuffle=False, storage_options=storage_options)
            .decode()
            .to_tuple("x.npy", "cls")
        ),
        "driftloader `read_shards` (shards read ahead) + np.load": lambda: read_ahead_tuples(
            urls, storage_options
        ),
    }


def read_ahead_tuples(urls: list[str], storage_options: dict | None):
    """The reader API the dataset is to use: blocks of the next shards requested while the
    current one is parsed; decoded here as ``.decode().to_tuple("x.npy", "cls")`` would."""
    from driftloader.reader import read_shards

    for _, samples in read_shards(urls, storage_options):
        for sample in samples:
            yield np.load(io.BytesIO(sample["x.npy"])), int(sample["cls"])


def loader_rate(urls: list[str], workers: int, handoff: bool = True) -> float:
    from torch.utils.data import DataLoader

    # Four passes over the shards: worker start-up must not be most of what is timed.
    ds = dl.DriftDataset(urls * 4, shuffle=False, worker_handoff=handoff)
    ds = ds.decode().to_tuple("x.npy", "cls").batched(256)
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(cls) for _, cls in loader)
    return count / (time.perf_counter() - start)


def measure(
    label: str,
    urls: list[str],
    rounds: int,
    bytes_per_sample: float,
    storage_options: dict | None = None,
) -> list[str]:
    rates: dict[str, list[float]] = {name: [] for name in readers(urls)}
    for _ in range(rounds):
        for name, make in readers(urls, storage_options).items():
            rates[name].append(time_pipeline(make))
    best = {name: max(values) for name, values in rates.items()}
    rows = []
    for name, rate in best.items():
        spread = statistics.pstdev(rates[name]) / statistics.mean(rates[name])
        ratio = rate / best["webdataset"]
        rows.append(
            f"| {label} | {name} | {rate:,.0f} | {rate * bytes_per_sample / 1e6:,.1f} | "
            f"{ratio:.2f}x | {spread:.0%} |"
        )
    return rows


def measure_loader(urls: list[str], rounds: int) -> list[str]:
    """0 vs 2 DataLoader workers, alternating; 2 workers also with torch's own shared-memory
    hand-off of batches (``worker_handoff=False``) for comparison."""
    configs = {
        "0 workers": (0, True),
        "2 workers": (2, True),
        "2 workers, `worker_handoff=False`": (2, False),
    }
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (workers, handoff) in configs.items():
            rates[name].append(loader_rate(urls, workers, handoff))
    single = rates["0 workers"]
    rows = []
    for name, values in rates.items():
        ratios = [v / s for v, s in zip(values, single)]
        best, median = max(values) / max(single), statistics.median(ratios)
        ratio = f"{best:.2f}x vs 0 workers (median of rounds {median:.2f}x)"
        spread = statistics.pstdev(values) / statistics.mean(values)
        rows.append(
            f"| local | driftloader `.batched(256)`, {name} | {max(values):,.0f} | | "
            f"{ratio} | {spread:.0%} |"
        )
    return rows


def measure_proxied(endpoint: str, urls: list[str], args, per_sample: float) -> list[str]:
    """The same S3 rows through the latency proxy (``--latency-ms``, 50 MB/s per connection)."""
    from benchmarks.latency_proxy import LatencyProxy

    with LatencyProxy(endpoint, latency_ms=args.latency_ms, mbps=50, lifetime_s=3600) as proxy:
        register_webdataset_s3(proxy.endpoint)
        options = {"client_kwargs": {"endpoint_url": proxy.endpoint}}
        label = f"S3, {args.latency_ms:g} ms + 50 MB/s proxy"
        return measure(label, urls, args.rounds, per_sample, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="also read S3 through benchmarks/latency_proxy.py at this latency and 50 MB/s",
    )
    parser.add_argument("-o", "--output", default="benchmarks/results/throughput.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.shards, args.samples)
        per_sample = sum(os.path.getsize(u) for u in urls) / (args.shards * args.samples)
        rows = measure("local", urls, args.rounds, per_sample)
        rows += measure_loader(urls, max(args.rounds, 2))
        if not args.no_s3:
            server, endpoint = start_moto()
            try:
                register_webdataset_s3(endpoint)
                s3_urls = upload(urls, endpoint)
                rows += measure("moto S3", s3_urls, args.rounds, per_sample)
                if args.latency_ms is not None:
                    rows += measure_proxied(endpoint, s3_urls, args, per_sample)
            finally:
                server.stop()
    table = [
        f'{args.shards} shards x {args.samples} samples, `.decode().to_tuple("x.npy", "cls")`, '
        f"best of {args.rounds} alternating rounds, {os.cpu_count()} cores",
        "",
        "| storage | reader | samples/s | MB/s | ratio | run-to-run spread |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    text = "\n".join(table)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
