"""The store's scale curve on moto: profile, reference, check, compact, report and the gate.

    python benchmarks/scale.py [--sizes 1000 10000] [--profile-shards 1000]
                               [--index-decisions 100000] [--out benchmarks/results/scale.md]
                               [--local-sizes 1000 10000 100000] [--gate-local 100000]
                               [--gate-moto 10000] [--gate-moto-braces 100000]
                               [--gate-origin 100000]

For each size N it uploads N tiny shards (8 samples: a 16-float ``.npy`` and a class) to a moto
S3 server (its own process), stores a profile and catalog row for each (written directly from a
few templates: profiling itself is measured separately), then times on that store, each through
a counting proxy (``latency_proxy.LatencyProxy``, no latency) so every request is counted:

* ``reference``: ``build_reference`` over the N shards (listing, batched profile reads, merge);
* ``check``: ``iter_checks`` over the N shards, as ``driftloader check`` (every profile stored:
  reads, compares and records; no result kept);
* ``compact``: ``driftloader compact`` (catalog rows and the decisions ``check`` wrote);
* ``report``: ``report.shard_rows(..., compare_stored=False)`` (the compacted catalog);
* ``gate first sample``: ``DriftDataset(glob, store, reference, policy="skip")`` made and its
  first sample drawn (listing the N shards, the reference, the decision index).

``--local-sizes`` runs the same steps on local files (shards and store on local disk, no
request to count): what the library's own code costs per shard, at sizes moto would take hours
to serve. ``--gate-local`` / ``--gate-moto`` time only the gate's first sample over that many
decided shards, named by a glob (listed); ``--gate-origin`` the same with the glob listed
from ``file_origin.py`` (pages at once, as S3 gives them), straight and at 40 ms;
``--gate-moto-braces`` names them by a brace range
(``shard-{0000000..0099999}.tar``), which a gated dataset does not list when every shard's
decision is clean (each is versioned by its first GET).

Profiling is timed on the first ``--profile-shards`` shards with one process,
``executor="local:2"`` and a Dask ``LocalCluster`` of 2 worker processes, with their request
counts (for the speedup of 2 workers over one, each engine timed alone, see ``engines.py``).
``--index-decisions`` writes a compacted catalog and a decision index of that many synthetic
decisions (one object each) and times ``report`` over it and the gate's read of the index. Peak
memory is the process's max RSS (``resource``), which only grows: read it as the peak up to
that step. Each step run in this process also has its CPU a shard, this process's (the
library and the counting proxy) and moto's (``Steps``): moto's time per request grows with
its bucket, S3's does not. Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.latency_proxy import LatencyProxy  # noqa: E402
from benchmarks.servers import Servers  # noqa: E402


def tiny_shard(seed: int) -> bytes:
    """A tar of 8 samples: a 16-float .npy and a class."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(8):
            npy = io.BytesIO()
            np.save(npy, rng.standard_normal(16).astype(np.float32))
            for ext, data in (("x.npy", npy.getvalue()), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"s{seed:07d}-{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Steps:
    """Timed steps with the proxy's request counts; rows for the results table. Each step
    run here also has the CPU it took: this process's (driftloader, and the counting proxy
    in a thread of it) and the server's (``server_pid``: moto), so that what grows with the
    bucket on the server is told apart from what the library spends a shard."""

    def __init__(self, proxy: LatencyProxy | None, server_pid: int | None = None) -> None:
        self.proxy, self.server_pid = proxy, server_pid
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def run(self, size: int, name: str, fn, per: int | None = None):
        if self.proxy is not None:
            self.proxy.reset_stats()
        cpu, server = time.process_time(), process_cpu(self.server_pid)
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        cpus = (time.process_time() - cpu, process_cpu(self.server_pid) - server)
        self.add(size, name, seconds, per, cpus)
        return result

    def add(
        self,
        size: int,
        name: str,
        seconds: float,
        per: int | None = None,
        cpus: tuple[float, float] | None = None,
    ) -> None:
        """A row for a step (timed elsewhere, in a process of its own, say: no ``cpus``)."""
        counts = self.proxy.counts if self.proxy is not None else {}
        row = {
            "shards": size,
            "step": name,
            "seconds": seconds,
            "ms_per_shard": 1000 * seconds / (per or size),
            "cpu_ms_per_shard": None if cpus is None else 1000 * cpus[0] / (per or size),
            "server_cpu_ms_per_shard": (
                None if cpus is None or self.server_pid is None else 1000 * cpus[1] / (per or size)
            ),
            "requests": sum(counts.values()),
            "GET": counts.get("GET", 0),
            "PUT": counts.get("PUT", 0),
            "peak_mb": peak_mb(),
        }
        self.rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))


def process_cpu(pid: int | None) -> float:
    """Seconds of CPU (user and system) process ``pid`` has used, from ``/proc`` (Linux);
    0.0 for None or where it cannot be read."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def upload(fs, bucket: str, size: int) -> list[str]:
    contents = [tiny_shard(i) for i in range(64)]
    blobs = {f"{bucket}/data/shard-{i:07d}.tar": contents[i % 64] for i in range(size)}
    keys = list(blobs)
    for start in range(0, size, 2000):
        fs.pipe({k: blobs[k] for k in keys[start : start + 2000]})
    return [f"s3://{k}" for k in keys]


def fill_store(store, fs, urls: list[str], options: dict) -> None:
    """A profile and a catalog row per shard, from 64 templates (profiles of the 64 contents)."""
    from driftloader.sources import expand_urls, stat_shards

    shards = stat_shards(expand_urls(urls[0].rsplit("/", 1)[0] + "/*.tar", options), options)
    store_profiles(store, fs, shards, options)


def store_profiles(store, fs, shards: list, options: dict, rows: bool = True) -> None:
    """A stored profile per shard (and its catalog row, unless ``rows`` is False), from 64
    templates: the profiles of the 64 contents ``upload`` cycles through."""
    from driftloader.catalog import CatalogRow
    from driftloader.profiling import profile_shard

    templates = {}
    for shard in shards[:64]:
        templates[int(shard.url[-11:-4]) % 64] = profile_shard(shard, None, storage_options=options)
    documents = {}
    for shard in shards:
        profile = templates[int(shard.url[-11:-4]) % 64]
        document = {**profile.to_dict(), "url": shard.url, "version": shard.version}
        path = store.profile_path(shard.url, shard.version)
        documents[path] = json.dumps(document, separators=(",", ":")).encode()
        if not rows:
            continue
        row = CatalogRow.from_dict({**profile.summary(), "url": shard.url})
        row.version, row.profile = shard.version, store.display(path)
        row.profile_bytes = len(documents[path])  # as put_profile records it
        documents[store.catalog_path(shard.url, shard.version)] = json.dumps(row.to_dict()).encode()
    keys = list(documents)
    for start in range(0, len(keys), 2000):
        fs.pipe({k: documents[k] for k in keys[start : start + 2000]})


def first_sample(glob: str, store, options: dict):
    from driftloader.dataset import DriftDataset  # imported before the clock starts (run_size)

    ds = DriftDataset(glob, store=store, reference="ref", policy="skip", storage_options=options)
    samples = iter(ds)  # returned open: the clock stops at the first sample, not at the close
    return next(samples), samples


def stored_documents(store, urls: list[str], options: dict) -> list[dict | None]:
    """Each shard's stored profile as JSON, without what differs between runs (when it was
    made and the store it is in)."""
    from driftloader.sources import expand_urls, stat_shards

    out = []
    for shard in stat_shards(expand_urls(urls, options), options):
        document = store.read_json(store.profile_path(shard.url, shard.version))
        if document is not None:
            document.pop("created", None)
        out.append(document)
    return out


def profile_engines(
    steps: Steps, urls: list[str], store_url: str, options: dict, label: str = ""
) -> str:
    """Profile ``urls`` with 1 process, ``local:2`` and a Dask ``LocalCluster`` of 2 workers,
    each into its own store; returns whether the three stored profiles are bit for bit equal."""
    from driftloader.profiling import profile_shards
    from driftloader.store import ProfileStore

    count = len(urls)
    stores = {}
    engines = [(f"profile{label} 1 process", None), (f"profile{label} local:2", "local:2")]
    for name, executor in engines:
        stores[name] = ProfileStore(f"{store_url}-{len(stores)}", options)
        steps.run(
            count,
            name,
            lambda s=stores[name], e=executor: profile_shards(
                urls, s, executor=e, storage_options=options, progress=False
            ),
        )
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        name = f"profile{label} Dask LocalCluster(2)"
        stores[name] = ProfileStore(f"{store_url}-dask2", options)
        client.run(lambda: None)  # the workers are up before the clock starts
        steps.run(
            count,
            name,
            lambda: profile_shards(
                urls,
                stores[name],
                executor=client.get_executor(),
                storage_options=options,
                progress=False,
            ),
        )
    documents = [stored_documents(s, urls, options) for s in stores.values()]
    same = all(d == documents[0] for d in documents[1:]) and None not in documents[0]
    verdict = "identical" if same else "DIFFERENT"
    print(f"stored profiles of the three engines: {verdict}")
    return verdict


def image_profiling(
    steps: Steps, fs, bucket: str, options: dict, shards: int, samples: int
) -> None:
    """Profile ``shards`` JPEG shards (``samples`` 256x192 photos each: decoding and content
    features make profiling CPU-bound) with the three engines."""
    from benchmarks.images import make_shards

    with tempfile.TemporaryDirectory() as folder:
        paths = make_shards(Path(folder), shards, samples, 256)
        blobs = {f"{bucket}/images/{Path(p).name}": Path(p).read_bytes() for p in paths}
    fs.pipe(blobs)
    urls = [f"s3://{k}" for k in blobs]
    verdict = profile_engines(
        steps, urls, f"s3://{bucket}/images-profiled", options, f" {samples}-JPEG shards,"
    )
    steps.notes.append(
        f"{shards} JPEG shards of {samples} images profiled by 1 process, local:2 and Dask(2): "
        f"stored profiles {verdict}"
    )


def write_local_flat(folder: Path, size: int) -> list[Path]:
    blobs = [tiny_shard(i) for i in range(64)]
    paths = [folder / f"shard-{i:07d}.tar" for i in range(size)]
    for i, path in enumerate(paths):
        path.write_bytes(blobs[i % 64])
    return paths


def synthetic_index(steps: Steps, fs, store, count: int) -> None:
    """A compacted catalog and decision index of ``count`` decisions: report and gate reads."""
    from driftloader.decisions import DecisionIndex
    from driftloader.report import shard_rows

    reference = store.get_reference("ref")
    index = DecisionIndex.of(store, "ref", reference, None)
    rows, decisions = [], []
    for i in range(count):
        url = f"s3://elsewhere/data/shard-{i:07d}.tar"
        drifted = i % 50 == 0
        decisions.append(
            {
                "url": url,
                "version": f"e:{i:032x}",
                "n": 8,
                "drifted": drifted,
                "score": 3.0 if drifted else 0.4,
            }
        )
        rows.append(
            {
                **decisions[-1],
                "reference": "ref",
                "policy": "skip",
                "epoch": 0,
                "decided": 1.7e9,
                "action": "skipped" if drifted else "passed",
                "source": "s3://elsewhere/data",
                "fingerprint": reference.fingerprint,
            }
        )
    lines = "\n".join(json.dumps(r, separators=(",", ":")) for r in rows) + "\n"
    fs.pipe(store.path("catalog", "compacted.jsonl"), lines.encode())
    lines = "\n".join(json.dumps(d, separators=(",", ":")) for d in decisions) + "\n"
    fs.pipe(index.index_path, lines.encode())
    fresh = type(store)(store.url, store.storage_options)
    steps.run(
        count,
        f"report over {count:,} decisions",
        lambda: shard_rows(fresh, "ref", compare_stored=False),
    )
    again = DecisionIndex.of(fresh, "ref", reference, None)
    first = decisions[0]  # what the gate asks before its first sample: one shard's decision
    steps.run(
        count,
        f"gate reads an index of {count:,}",
        lambda: again.get(first["url"], first["version"]),
    )


def decided_store(
    store, urls: list[str], options: dict, templates: int = 64, etags: bool = False
) -> None:
    """``store`` with reference "ref" (from the profiles of the first ``templates`` shards)
    and a compacted decision index holding a decision for every shard of ``urls``: the
    decisions ``check_shards`` took on the first ``templates`` shards, copied to the others by
    content (shard ``i`` holds ``tiny_shard(i % 64)``), keyed by each shard's real version:
    stat'ed, or with ``etags`` (a bucket never versioned) the MD5 of its bytes, which is its
    ETag (S3's and moto's for a one-part upload; checked against the first shards' HEADs)."""
    from driftloader.check import check_shards
    from driftloader.decisions import DecisionIndex, compact_store
    from driftloader.profiling import profile_shards
    from driftloader.sources import Shard, expand_urls, stat_shards
    from driftloader.store import shard_key

    first = urls[:templates]
    profile_shards(first, store, storage_options=options, progress=False)
    store.build_reference("ref", first, storage_options=options)
    check_shards(first, store, "ref", storage_options=options)
    compact_store(store)
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    by_key = {key: record for key, record in index.load_all().items()}
    records = {int(url[-11:-4]) % 64: d.to_dict() for (url, _), d in by_key.items()}
    lines = []
    shards = stat_shards(expand_urls(urls[:templates], options), options)
    if etags:
        contents = [tiny_shard(i) for i in range(64)]
        tags = [f"e:{hashlib.md5(c).hexdigest()}" for c in contents]
        assert [s.version for s in shards] == [tags[i % 64] for i in range(len(shards))]
        shards = [Shard(url, tags[i % 64], len(contents[i % 64])) for i, url in enumerate(urls)]
    else:
        shards = stat_shards(expand_urls(urls, options), options)
    for shard in shards:
        record = records[int(shard.url[-11:-4]) % 64]
        record = {**record, "url": shard_key(shard.url), "version": shard.version}
        lines.append(json.dumps(record, separators=(",", ":")))
    store.write_bytes(index.index_path, ("\n".join(lines) + "\n").encode())
    compact_store(store)  # one compacted file and its copy (``index_copy.Latest``), as in use


def gate_at_scale(
    steps: Steps,
    root: str,
    size: int,
    options: dict | None,
    where: str,
    direct=None,
    braces: bool = False,
) -> None:
    """The gate's time to the first sample over ``size`` shards in ``root`` (a folder or an
    S3 prefix) whose decisions are all recorded and compacted: ``DriftDataset`` constructed
    (listing, versions, reference, exclusions) and its first sample drawn (decision index).
    On S3 it runs through the counting proxy (``options``) and then, for a time without the
    proxy in this process, straight to moto (``direct``). ``braces``: the shards are named by
    a brace range instead of a glob."""
    import driftloader.dataset  # noqa: F401  (torch and the loader: not part of the gate's time)
    from driftloader.store import ProfileStore

    if root.startswith("s3://"):
        fs = ProfileStore(root, direct).fs
        urls = steps.run(size, f"upload {where} shards (setup)", lambda: upload(fs, root[5:], size))
    else:
        urls = steps.run(size, f"write {where} shards (setup)", lambda: write_local(root, size))
    store = ProfileStore(f"{root}/drift", direct or options)
    steps.run(
        size,
        f"decisions {where} (setup)",
        lambda: decided_store(store, urls, direct or options, etags=braces),
    )
    glob = f"{root}/data/*.tar"
    if braces:
        glob, where = f"{root}/data/shard-{{0000000..{size - 1:07d}}}.tar", f"{where}, braces"
    runs = [("counted", options), ("direct", direct)] if direct is not None else [("", options)]
    for attempt in (1, 2):
        for how, opts in runs:
            steps.run(
                size,
                f"gate first sample, {size:,} decided shards, {where} {how} (run {attempt})",
                lambda o=opts: first_sample(glob, ProfileStore(store.url, o), o),
            )


_FRESH_GATE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.scale import first_sample
import driftloader.dataset  # torch and the loader: imported before the clock, as by a trainer
from driftloader.store import ProfileStore
start = time.perf_counter()
import s3fs  # what any S3 reader imports once per process, whatever the number of shards
imported = time.perf_counter() - start
store, options = ProfileStore(sys.argv[2]), {"client_kwargs": {"endpoint_url": sys.argv[3]}}
start = time.perf_counter()
_, samples = first_sample(sys.argv[4], store, options)
seconds = time.perf_counter() - start
samples.close()
print(json.dumps([imported, seconds]))
"""


def fresh_first_sample(
    root: Path | str, store_url: str, endpoint: str, glob: str
) -> tuple[float, float]:
    """(seconds to import s3fs, seconds to the gate's first sample: ``first_sample``) in a new
    Python process that has imported torch and driftloader, as a training job starts, with
    the library at ``root``. s3fs (botocore, aiobotocore, and pyOpenSSL where it is installed)
    takes 0.3-0.4 s to import in a fresh process, once, whatever the number of shards: it is
    timed apart. In the benchmark's own process the garbage collector walks what its setup
    made (100k shards and decisions), and whether a full collection fell in the timed step
    made runs 0.95-2.0 s apart."""
    argv = [sys.executable, "-c", _FRESH_GATE, str(root), store_url, endpoint, glob]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the gate's first sample failed:\n{done.stderr[-3000:]}")
    imported, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return imported, seconds


def gate_on_origin(steps: Steps, servers: Servers, folder: Path, size: int) -> None:
    """The gate's first sample over ``size`` decided shards named by an S3 glob, listed from
    ``file_origin.py`` (ListObjectsV2 pages answered at once, as S3 answers them; moto takes
    ~0.1-0.5 s a page of a big bucket), straight and behind the latency proxy at 40 ms (each
    in a process of its own), each run in a fresh process (``fresh_first_sample``). The
    shards are hard links to 64 tiny shards; the store is a local folder, so its reads take
    no round trip."""
    from driftloader.store import ProfileStore

    data = folder / "origin"
    data.mkdir()
    urls = steps.run(size, "write origin shards (setup)", lambda: write_linked(data, size))
    endpoint = servers.files(data)
    origins = [("origin", endpoint), ("origin behind 40 ms", servers.proxy(endpoint, 40, 50))]
    urls = [f"s3://origin/{Path(u).name}" for u in urls]
    store = ProfileStore(str(folder / "origin-store"))
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    steps.run(size, "decisions origin (setup)", lambda: decided_store(store, urls, options))
    for attempt in (1, 2, 3):
        for where, url in origins:
            imported, seconds = fresh_first_sample(ROOT, store.url, url, "s3://origin/shard-*.tar")
            name = f"gate first sample, {size:,} decided shards, {where}, fresh process"
            steps.add(size, f"{name} (run {attempt})", seconds)
            steps.notes.append(f"{name} (run {attempt}): s3fs imported first in {imported:.2f} s")


def write_linked(folder: Path, size: int) -> list[str]:
    """``size`` shards in ``folder``, each a hard link to one of 64 tiny shards."""
    paths = [folder / f"shard-{i:07d}.tar" for i in range(size)]
    for i, path in enumerate(paths):
        if i < 64:
            path.write_bytes(tiny_shard(i))
        else:
            os.link(paths[i % 64], path)
    return [str(p) for p in paths]


def write_local(root: str, size: int) -> list[str]:
    folder = Path(root) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [tiny_shard(i) for i in range(64)]
    paths = [folder / f"shard-{i:07d}.tar" for i in range(size)]
    for i, path in enumerate(paths):
        path.write_bytes(blobs[i % 64])
    return [str(p) for p in paths]


def run_size(
    steps: Steps, fs, bucket: str, size: int, options: dict | None, profile_shards_n: int
) -> None:
    """The curve's steps at ``size`` shards: on moto (``fs`` an s3fs, ``bucket`` a bucket), or
    on local files (``fs`` None, ``bucket`` a folder; no request to count)."""
    import driftloader.dataset  # noqa: F401  (torch and the loader: not part of the gate's time)
    from driftloader.store import ProfileStore

    prefix = f"{bucket}/n{size}"
    if fs is None:
        fs = fsspec.filesystem("file", auto_mkdir=True)
        urls = steps.run(size, "write local shards (setup)", lambda: write_local(prefix, size))
        glob, store_url = f"{prefix}/data/*.tar", f"{prefix}/drift"
    else:
        urls = steps.run(size, "upload shards (setup)", lambda: upload(fs, prefix, size))
        glob, store_url = f"s3://{prefix}/data/*.tar", f"s3://{prefix}/drift"
    store = ProfileStore(store_url, options)
    if profile_shards_n:
        urls_p = urls[:profile_shards_n]
        steps.notes.append(
            f"{len(urls_p):,} shards profiled by 1 process, local:2 and Dask(2): stored profiles "
            + profile_engines(steps, urls_p, f"s3://{prefix}/profiled", options)
        )
    steps.run(size, "store profiles + rows (setup)", lambda: fill_store(store, fs, urls, options))
    store = ProfileStore(store.url, options)
    steps.run(
        size, "reference", lambda: store.build_reference("ref", glob, storage_options=options)
    )
    if size > 2000 or not store_url.startswith("s3://"):  # the tree: on moto, at 1k only
        run_checks(steps, store, glob, size, options)
        return
    tree = steps.run(
        size,
        "reference local:2 (tree)",
        lambda: store.build_reference(
            "ref-tree", glob, storage_options=options, executor="local:2"
        ),
    )
    alone = store.get_reference("ref")
    same = tree.to_dict()["features"] == alone.to_dict()["features"]
    summary = {k: v for k, v in tree.summary().items() if k != "created"}
    equal = summary == {k: v for k, v in alone.summary().items() if k != "created"}
    steps.notes.append(
        f"{size:,}: reference local:2 against one process: summary equal {equal}, sketch "
        f"bytes equal {same} (a quantile sketch depends on the order of its merges)"
    )
    run_checks(steps, store, glob, size, options)


def run_checks(steps: Steps, store, glob: str, size: int, options: dict) -> None:
    """check, compact, report and the gate's first sample on a store with a reference."""
    from driftloader.check import iter_checks
    from driftloader.decisions import compact_store
    from driftloader.report import shard_rows
    from driftloader.store import ProfileStore

    def check() -> int:  # as `driftloader check` does: each result counted, none kept
        run = iter_checks(glob, store, "ref", storage_options=options, details=False)
        checked = sum(1 for _ in run)
        assert checked == size and not run.failed, (checked, run.failed[:3])
        return checked

    steps.run(size, "check", check)
    steps.run(size, "compact", lambda: compact_store(store))
    steps.run(
        size,
        "report",
        lambda: shard_rows(ProfileStore(store.url, options), "ref", compare_stored=False),
    )
    steps.run(
        size,
        "gate first sample",
        lambda: first_sample(glob, ProfileStore(store.url, options), options),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_markdown(rows: list[dict], path: Path, load: str, notes: list[str] = ()) -> None:
    head = (
        "| shards | step | s | ms/shard | CPU ms/shard | server CPU ms/shard | requests | GET "
        "| PUT | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    notes = [*notes, *(r["note"] for r in rows if "note" in r)]

    def count(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    body = "".join(
        f"| {r['shards']:,} | {r['step']} | {r['seconds']:.2f} | {r['ms_per_shard']:.3f} | "
        f"{_ms(r.get('cpu_ms_per_shard'))} | {_ms(r.get('server_cpu_ms_per_shard'))} | "
        f"{count(r['requests'])} | {count(r['GET'])} | {count(r['PUT'])} | {r['peak_mb']:.0f} |\n"
        for r in rows
        if "note" not in r
    )
    tail = "".join(f"\n* {n}" for n in notes)
    path.write_text(f"<!-- raw; load at start: {load} -->\n\n" + head + body + tail + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--profile-shards", type=int, default=1000)
    parser.add_argument("--index-decisions", type=int, default=100_000)
    parser.add_argument("--image-shards", type=int, default=0, help="JPEG shards to profile")
    parser.add_argument("--image-samples", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="write the raw table here")
    parser.add_argument("--gate-local", type=int, default=0, help="decided local shards")
    parser.add_argument("--gate-moto", type=int, default=0, help="decided shards on moto")
    parser.add_argument(
        "--gate-origin", type=int, default=0, help="decided shards listed from file_origin.py"
    )
    parser.add_argument(
        "--gate-moto-braces", type=int, default=0, help="decided shards on moto, brace URLs"
    )
    parser.add_argument(
        "--local-sizes", type=int, nargs="*", default=[], help="the curve on local files too"
    )
    args = parser.parse_args()
    import s3fs

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load:", load)
    with Servers() as servers:  # moto in a process of its own (not sharing this one's GIL)
        endpoint = servers.moto()  # Servers sets moto's dummy credentials
        with LatencyProxy(endpoint, lifetime_s=6 * 3600) as proxy:  # counts every request
            options = {"client_kwargs": {"endpoint_url": proxy.endpoint}}
            os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
            fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
            bucket = "scale"
            fs.mkdir(bucket)
            steps = Steps(proxy, servers.processes[0].pid)  # moto's
            with tempfile.TemporaryDirectory() as folder:
                if args.gate_local:
                    gate_at_scale(steps, folder + "/gate", args.gate_local, None, "local files")
                if args.gate_origin:
                    gate_on_origin(steps, servers, Path(folder), args.gate_origin)
                for size in args.local_sizes:
                    run_size(steps, None, f"{folder}/local", size, None, 0)
                    if args.out:
                        write_markdown(steps.rows, args.out, load, steps.notes)
            if args.gate_moto:
                gate_at_scale(
                    steps,
                    f"s3://{bucket}/gate{args.gate_moto}",
                    args.gate_moto,
                    options,
                    "moto",
                    {"client_kwargs": {"endpoint_url": endpoint}},
                )
            if args.gate_moto_braces:
                gate_at_scale(
                    steps,
                    f"s3://{bucket}/braces{args.gate_moto_braces}",
                    args.gate_moto_braces,
                    options,
                    "moto",
                    {"client_kwargs": {"endpoint_url": endpoint}},
                    braces=True,
                )
            if args.out and steps.rows:
                write_markdown(steps.rows, args.out, load, steps.notes)
            if args.image_shards:
                image_profiling(steps, fs, bucket, options, args.image_shards, args.image_samples)
            for i, size in enumerate(args.sizes):
                run_size(steps, fs, bucket, size, options, args.profile_shards if i == 0 else 0)
                if args.out:
                    write_markdown(steps.rows, args.out, load, steps.notes)  # so far
                if i == 0 and args.index_decisions:
                    from driftloader.store import ProfileStore

                    store = ProfileStore(f"s3://{bucket}/n{size}/drift", options)
                    synthetic_index(steps, fs, store, args.index_decisions)
            if args.out:
                write_markdown(steps.rows, args.out, load, steps.notes)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
