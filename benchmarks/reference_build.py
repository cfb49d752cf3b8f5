"""Where the time of ``build_reference`` goes on moto, and what packs save.

    python benchmarks/reference_build.py [--shards 10000] [--out results.json]

Uploads N tiny shards (``scale.tiny_shard``) to a moto S3 server in its own process, stores a
profile per shard (``scale.store_profiles``: from 64 templates, as profiling would store them,
but no packs: a store written before packs), then measures, in this process:

* ``list (glob)``, ``stat (listing)``: expanding the shards' glob, and the listing that gives
  each shard's version (``build_reference`` does both first);
* ``GET profiles``: the raw bytes of every stored profile, read as ``build_reference`` reads
  them (``read_many``: one ``cat`` on the list, ``READ_BATCH`` in flight);
* ``parse``, ``from_dict``, ``merge``: the CPU of the JSON parse (with the depth check), of
  turning documents into profiles and of merging them, each alone;
* ``reference (loose)``: ``build_reference`` on a store without packs;
  (it writes a pack of each chunk of 512 profiles it read, for the next build);
* ``reference (packed by the first build)``: ``build_reference`` again, from those packs;
* ``reference (packs of 500, ...)``: the packs deleted and written again in groups of 500
  (``packs.pack_stored``, grouped as profiling tasks group shards), then ``build_reference``.

The references are compared: bit for bit, and else by how far their sketches differ.

Requests are counted by the store (``reads``: files asked for) and by a counting wrapper on
the s3fs calls the store makes (``list`` calls). Times depend on the machine's load: run under
``flock /tmp/driftloader-bench.lock`` and record ``uptime``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import store_profiles, upload  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402


def timed(rows: list[dict], name: str, fn, **extra):
    start = time.perf_counter()
    cpu = time.process_time()
    result = fn()
    row = {
        "step": name,
        "s": round(time.perf_counter() - start, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        **extra,
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
    return result


def counted(store, rows: list[dict], name: str, fn):
    """``timed`` with the files the store read and the batches it read them in."""
    reads, batches = store.reads, store.batches
    result = timed(rows, name, fn)
    rows[-1]["files_read"] = store.reads - reads
    rows[-1]["read_batches"] = store.batches - batches
    print(json.dumps(rows[-1]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-packs", action="store_true", help="skip the packed steps")
    args = parser.parse_args()
    import s3fs

    from driftloader.packs import pack_stored
    from driftloader.profile import Profile
    from driftloader.sources import expand_urls, stat_shards
    from driftloader.store import ProfileStore
    from driftloader.store_files import parse_store_json

    rows: list[dict] = []
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    print("load:", uptime[0], flush=True)
    with Servers() as servers:
        endpoint = servers.moto()
        # moto answers a page of a 10k-object listing in seconds (more under load): a read
        # timeout long enough for it, and the data apart from the store (moto's cost per page
        # grows with the bucket's objects, so the store's listings stay small)
        options = {
            "client_kwargs": {"endpoint_url": endpoint},
            "config_kwargs": {"read_timeout": 600},
        }
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("bench-data")
        fs.mkdir("bench-store")
        n = args.shards
        timed(rows, "upload shards (setup)", lambda: upload(fs, "bench-data/n", n))
        store = ProfileStore("s3://bench-store/drift", options)
        glob = "s3://bench-data/n/data/*.tar"
        listed = timed(rows, "list (glob)", lambda: expand_urls(glob, options))
        shards = timed(rows, "stat (listing)", lambda: stat_shards(listed, options))
        timed(
            rows,
            "store profiles (setup)",
            lambda: store_profiles(store, fs, shards, options, rows=False),
        )
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout)
        paths = [store.profile_path(s.url, s.version) for s in shards]
        raw = counted(store, rows, "GET profiles", lambda: store.read_many(paths))
        docs = timed(rows, "parse", lambda: [parse_store_json(b, "x") for b in raw])
        profiles = timed(rows, "from_dict", lambda: [Profile.from_dict(d) for d in docs])
        timed(rows, "merge", lambda: Profile.merged(profiles))
        fresh = ProfileStore(store.url, options)
        counted(
            fresh,
            rows,
            "reference (loose)",
            lambda: fresh.build_reference("loose", glob, storage_options=options),
        )
        if not args.no_packs:
            fresh = ProfileStore(store.url, options)
            packed = counted(
                fresh,
                rows,
                "reference (packed by the first build)",
                lambda: fresh.build_reference("packed", glob, storage_options=options),
            )
            loose = fresh.get_reference("loose")
            rows.append({"step": "packed vs loose", **compared(packed, loose)})
            print(json.dumps(rows[-1]), flush=True)
            store.delete(store.list_json(store.path("packs")))
            timed(rows, "pack by 500 (setup)", lambda: pack_stored(store, shards, size=500))
            fresh = ProfileStore(store.url, options)
            other = counted(
                fresh,
                rows,
                "reference (packs of 500, as profiling tasks write)",
                lambda: fresh.build_reference("tasks", glob, storage_options=options),
            )
            rows.append({"step": "packs of 500 vs loose", **compared(other, loose)})
            print(json.dumps(rows[-1]), flush=True)
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("load:", uptime[1], flush=True)
    if args.out:
        args.out.write_text(json.dumps({"uptime": uptime, "rows": rows}, indent=1))


def compared(a, b) -> dict:
    """How two references of the same shards differ: whether their features are the same bit
    for bit, and else the largest differences: of a moment's mean (relative), and of a KLL's
    CDF at the other's deciles, in units of the two sketches' rank error bound."""
    import numpy as np

    da, db = a.to_dict(), b.to_dict()
    out = {"bit_identical": da["features"] == db["features"], "n_equal": a.n == b.n}
    mean_diff, cdf_ratio, counts_equal = 0.0, 0.0, True
    for name, kind in b.kinds.items():
        if kind == "categorical":
            counts_equal &= a.categorical(name).counts() == b.categorical(name).counts()
        if kind != "numeric":
            continue
        (ma, qa), (mb, qb) = a.numeric(name), b.numeric(name)
        if mb.n:
            mean_diff = max(mean_diff, abs(ma.mean - mb.mean) / max(abs(mb.mean), 1e-300))
        if qb.count:
            at = qb.quantile(np.linspace(0.1, 0.9, 9))
            worst = float(np.max(np.abs(qa.cdf(at) - qb.cdf(at))))
            cdf_ratio = max(cdf_ratio, worst / (qa.rank_error + qb.rank_error))
    out.update(
        categorical_equal=counts_equal,
        max_rel_mean_diff=mean_diff,
        max_cdf_diff_over_rank_error=round(cdf_ratio, 4),
    )
    return out


if __name__ == "__main__":
    main()
