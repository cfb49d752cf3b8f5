"""Profiling on a machine's 2 cores: 1 process, a Dask LocalCluster(2) and a pool of 2.

    python benchmarks/engines.py [--jpeg 48] [--tiny 1200] [--rounds 5] [--moto]

Every engine is timed in a fresh process of its own, round after round in turn, so that only
its own processes exist while it runs. Keeping all of them alive in one process, as
``scale.py`` did until 2 Dec 2026, let the idle ones (Dask's workers and scheduler, a second
pool) take CPU from the one timed. Workers are started and have imported driftloader and PIL
(and connected to moto) before the clock starts. The engines:

* ``1 process``: ``profile_shards(urls, store)``;
* ``pool(2)``: ``executors.local_pool(2)`` (what ``--executor local:2`` runs);
* ``Dask(2)``: ``LocalCluster(n_workers=2, threads_per_worker=1)`` with Dask's default worker
  environment, which sets ``MALLOC_TRIM_THRESHOLD_=65536`` in each worker;
* ``Dask(2), glibc malloc defaults``: the same cluster with that variable left out
  (``distributed.nanny.pre-spawn-environ``). With the variable set, glibc gives heap pages
  back on each large free and stops adapting its mmap threshold, which cost code making an
  image-sized array per image a quarter more until the image features kept their buffers
  (``29607fe``); see docs/dask.md.

Shards: ``--jpeg`` shards of 50 photos 256x192, and ``--tiny`` shards of 8 small vectors
(``scale.tiny_shard``), from local files and, with ``--moto``, from a moto server in its own
process. The first round's stored profiles are compared between engines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.servers import Servers  # noqa: E402

ENGINES = ("1 process", "Dask(2)", "Dask(2), glibc malloc defaults", "pool(2)")


def warm(options: dict | None = None) -> None:
    """In a worker: import what profiling imports (and make the S3 client), off the clock."""
    import PIL.Image  # noqa: F401

    import driftloader.profiling  # noqa: F401

    if options:
        from driftloader.sources import filesystem

        filesystem("s3://engines", options).ls("engines")


def timed_engine(engine: str, urls: list[str], store_url: str, options: dict | None) -> float:
    """Seconds ``profile_shards`` takes on ``engine``, started and warmed before the clock."""
    from driftloader.executors import local_pool
    from driftloader.profiling import profile_shards

    def run(executor) -> float:
        warm(options)
        start = time.perf_counter()
        profile_shards(urls, store_url, executor=executor, storage_options=options, progress=False)
        return time.perf_counter() - start

    if engine == "1 process":
        return run(None)
    if engine == "pool(2)":
        with local_pool(2) as pool:
            list(pool.map(warm, [options, options]))
            return run(pool)
    import dask
    from distributed import Client, LocalCluster

    if engine.endswith("glibc malloc defaults"):  # as docs/dask.md says
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(warm, options)
        return run(client.get_executor())


def in_own_process(engine: str, urls: list[str], store_url: str, options: dict | None) -> float:
    job = json.dumps([engine, urls, store_url, options])  # on stdin: 4,800 URLs are too long
    done = subprocess.run(  # for a command line
        [sys.executable, __file__, "--engine", "-"],
        input=job,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def make_data(folder: Path, kind: str, count: int) -> list[str]:
    from benchmarks.images import make_shards
    from benchmarks.scale import write_local_flat

    data = folder / f"{kind}-data"
    data.mkdir()
    if kind == "jpeg":
        return make_shards(data, count, 50, 256)
    return [str(p) for p in write_local_flat(data, count)]


def compare_round(stores: dict[str, str], urls: list[str], options: dict | None) -> str:
    from benchmarks.scale import stored_documents
    from driftloader.store import ProfileStore

    docs = [stored_documents(ProfileStore(s, options), urls, options) for s in stores.values()]
    same = all(d == docs[0] for d in docs[1:]) and None not in docs[0]
    return "identical" if same else "DIFFERENT"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jpeg", type=int, default=48, help="JPEG shards (0: none)")
    parser.add_argument("--tiny", type=int, default=1200, help="tiny shards (0: none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--moto", action="store_true", help="also from a moto server")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: one timed run
    args = parser.parse_args()
    if args.engine:
        print(timed_engine(*json.loads(sys.stdin.read() if args.engine == "-" else args.engine)))
        return
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        sources = []
        for kind, count in (("jpeg", args.jpeg), ("tiny", args.tiny)):
            if count:
                paths = make_data(folder, kind, count)
                sources.append((f"{count} {kind} shards, local files", paths, str(folder), None))
        if args.moto:
            add_moto_sources(stack.enter_context(Servers()).moto(), sources)
        for label, urls, root, options in sources:
            times: dict[str, list[float]] = {e: [] for e in ENGINES}
            for round_ in range(1, args.rounds + 1):
                stores = {e: f"{root}/stores/r{round_}-{i}" for i, e in enumerate(ENGINES)}
                for engine in ENGINES:
                    seconds = in_own_process(engine, urls, stores[engine], options)
                    times[engine].append(seconds)
                    print(json.dumps({"shards": label, "engine": engine, "s": seconds}))
                if round_ == 1:
                    print(f"{label}: stored profiles {compare_round(stores, urls, options)}")
            for engine in ENGINES[1:]:
                each = [a / b for a, b in zip(times["1 process"], times[engine])]
                median = sorted(each)[len(each) // 2]
                shown = ", ".join(f"{r:.2f}x" for r in each)
                print(f"{label}: {engine} vs 1 process: {shown} (median {median:.2f}x)")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def add_moto_sources(endpoint: str, sources: list) -> None:
    """The local sources' shards uploaded to the moto server at ``endpoint``, as sources."""
    import s3fs

    options = {"client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("engines")
    for label, paths, _, _ in list(sources):
        kind = label.split()[1]
        fs.pipe({f"engines/{kind}/{Path(p).name}": Path(p).read_bytes() for p in paths})
        urls = [f"s3://engines/{kind}/{Path(p).name}" for p in paths]
        sources.append((label.replace("local files", "moto"), urls, "s3://engines", options))


if __name__ == "__main__":
    main()
