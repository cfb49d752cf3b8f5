"""Peers side by side: the same samples, each peer's own format and writer, read in one run.

    python benchmarks/peers.py --quick                    # local, moto, proxy 40 ms; 0 workers
    python benchmarks/peers.py                            # every setting, 0 and 2 workers
    python benchmarks/peers.py --settings local,proxy-40 --workers 0 --corpora vectors

Corpora: "vectors" (a 64-float .npy, a class and a 4 KiB blob per sample) and "images" (a
~20 KB JPEG and a class). The samples are written with each peer's own writer: webdataset's
TarWriter (read by webdataset, driftloader and s3torchconnector), ``litdata.optimize`` and
``streaming.MDSWriter``. Each contender yields (array or decoded image tensor, class) through a
torch DataLoader (batch 256, 0 or 2 workers); the count, the class sum and the value sum are
checked against the ground truth on every pass. Settings: local files, moto's S3 server on
loopback, and moto behind ``latency_proxy`` at 0/10/40/100 ms to the first byte with 50 MB/s per
connection; moto and each proxy run in processes of their own (``servers.py``), so they never
take the measured process's GIL. Contenders alternate round by round (the order rotates);
medians are reported. LitData and MosaicML streaming download into a fresh local cache on every pass (cold reads).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.servers import Servers  # noqa: E402

ALL_SETTINGS = ("local", "moto", "proxy-0", "proxy-10", "proxy-40", "proxy-100")
CONTENDERS = (
    "webdataset",
    "driftloader",
    "driftloader skip gate",
    "LitData",
    "MosaicML streaming",
    "s3torchconnector",
)
GATE = "driftloader skip gate"
WORKER_START = "fork" if sys.platform == "linux" else None  # DataLoader workers' start method
BUCKET = "peers"  # each format in a bucket of its own: peers-tar, peers-lit, peers-mds, ...
BATCH = 256
MBPS = 50.0


# --- the samples (deterministic per shard, so every writer regenerates the same ones) ---
def shard_samples(
    corpus: str, shard: int, per_shard: int
) -> Iterator[tuple[str, bytes, int, bytes]]:
    """(key, value bytes: .npy or JPEG, class, blob) for each sample of one shard."""
    rng = np.random.default_rng(shard)
    for i in range(per_shard):
        key = f"s{shard:04d}_{i:06d}"
        cls = int(rng.integers(10))
        if corpus == "vectors":
            buf = io.BytesIO()
            np.save(buf, rng.standard_normal(64).astype(np.float32))
            yield key, buf.getvalue(), cls, rng.bytes(4096)
        else:
            yield key, make_jpeg(rng), cls, b""


def make_jpeg(rng: np.random.Generator) -> bytes:
    """A 160x160 RGB JPEG of about 20 KB: smooth colour blobs plus noise."""
    from PIL import Image

    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((160, 160), Image.BILINEAR), np.int16)
    image = np.clip(image + rng.integers(-80, 80, image.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decode_value(corpus: str, data: bytes):
    """.npy -> float32 array; JPEG -> uint8 HWC tensor (PIL), the same for every contender."""
    if corpus == "vectors":
        return np.load(io.BytesIO(data))
    return decode_jpeg(data)


def decode_jpeg(data: bytes):
    import torch
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@dataclass
class Checksum:
    count: int = 0
    classes: int = 0
    values: float = 0.0

    def add_batch(self, values, classes) -> None:
        self.count += len(classes)
        self.classes += int(classes.sum())
        self.values += float(values.double().sum())

    def matches(self, other: Checksum) -> bool:
        close = abs(self.values - other.values) <= 1e-6 * max(1.0, abs(other.values))
        return self.count == other.count and self.classes == other.classes and close


def ground_truth(corpus: str, shards: int, per_shard: int) -> Checksum:
    truth = Checksum()
    for shard in range(shards):
        for _, value, cls, _ in shard_samples(corpus, shard, per_shard):
            decoded = decode_value(corpus, value)
            truth.count += 1
            truth.classes += cls
            truth.values += float(np.asarray(decoded, dtype=np.float64).sum())
    return truth


# --- writers: each peer's own ---
def write_tars(corpus: str, shards: int, per_shard: int, folder: Path) -> list[Path]:
    import webdataset as wds

    ext = "x.npy" if corpus == "vectors" else "jpg"
    paths = []
    for shard in range(shards):
        path = folder / f"shard-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for key, value, cls, blob in shard_samples(corpus, shard, per_shard):
                sample = {"__key__": key, ext: value, "cls": str(cls).encode()}
                if blob:
                    sample["bin"] = blob
                sink.write(sample)
        paths.append(path)
    return paths


def litdata_items(job: tuple[str, int, int]) -> Iterator[dict]:
    """litdata.optimize's function: one shard's samples as LitData items."""
    corpus, shard, per_shard = job
    for _, value, cls, blob in shard_samples(corpus, shard, per_shard):
        if corpus == "vectors":
            yield {"x": np.load(io.BytesIO(value)), "cls": cls, "blob": blob}
        else:
            yield {"jpg": value, "cls": cls}


def write_litdata(corpus: str, shards: int, per_shard: int, folder: Path) -> None:
    import litdata

    jobs = [(corpus, shard, per_shard) for shard in range(shards)]
    litdata.optimize(
        litdata_items, jobs, str(folder), chunk_bytes="64MB", num_workers=1, verbose=False
    )


def write_mds(corpus: str, shards: int, per_shard: int, folder: Path) -> None:
    mds_writer = import_streaming().MDSWriter
    if corpus == "vectors":
        columns = {"x": "ndarray:float32", "cls": "int", "blob": "bytes"}
    else:
        columns = {"jpg": "bytes", "cls": "int"}
    with mds_writer(out=str(folder), columns=columns) as out:
        for shard in range(shards):
            for _, value, cls, blob in shard_samples(corpus, shard, per_shard):
                if corpus == "vectors":
                    out.write({"x": np.load(io.BytesIO(value)), "cls": cls, "blob": blob})
                else:
                    out.write({"jpg": value, "cls": cls})


def import_streaming() -> types.ModuleType:
    """``streaming.base`` without ``streaming/__init__``: the top-level package imports its
    vision datasets, which need torchvision, and torchvision does not load beside the CPU torch
    of this environment. The reader and writer themselves do not use it."""
    if "streaming" not in sys.modules:
        spec = importlib.util.find_spec("streaming")
        if spec is None:
            raise ImportError("mosaicml-streaming is not installed (pip install .[bench])")
        package = types.ModuleType("streaming")
        package.__path__ = list(spec.submodule_search_locations or [])
        sys.modules["streaming"] = package
    import streaming.base

    return streaming.base


# --- readers: each yields (value, class) per sample ---
def decode_pair(corpus: str):
    def decode(pair):
        value, cls = pair
        return (decode_jpeg(value) if corpus == "images" else value), int(cls)

    return decode


def read_webdataset(corpus: str, urls: list[str], endpoint: str | None):
    import webdataset as wds

    if endpoint:
        register_webdataset_s3(endpoint)
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node)
    if corpus == "vectors":
        return ds.decode().to_tuple("x.npy", "cls")
    return ds.to_tuple("jpg", "cls").map(decode_pair(corpus))


def read_driftloader(
    corpus: str, urls: list[str], endpoint: str | None, store=None, **options
) -> object:
    """``DriftDataset`` over ``urls`` (gated by ``store``'s reference "ref" with the skip
    policy when given; ``options``: more of its keywords, e.g. ``read_options``)."""
    import driftloader as dl

    storage = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else None
    gate = {"store": store, "reference": "ref", "policy": "skip"} if store is not None else {}
    ds = dl.DriftDataset(urls, shuffle=False, storage_options=storage, **gate, **options)
    if corpus == "vectors":
        return ds.decode().to_tuple("x.npy", "cls")
    return ds.to_tuple("jpg", "cls").map(decode_pair(corpus))


class LitDataPairs:
    """LitData's StreamingDataset mapped to (value, class); a fresh cache for each pass."""

    def __new__(cls, corpus: str, input_dir: str, endpoint: str | None, cache_dir: str):
        import litdata
        from litdata.streaming import downloader

        # obstore (LitData's chunk downloader) refuses plain http unless told; real S3 is https.
        downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
        options = {"endpoint_url": endpoint} if endpoint else None
        key = "x" if corpus == "vectors" else "jpg"
        remote = input_dir.startswith("s3://")
        return litdata.StreamingDataset(
            input_dir,
            cache_dir=cache_dir if remote else None,
            storage_options=options,
            transform=ItemPair(corpus, key),
        )


class ItemPair:
    """(value, class) of a LitData or MosaicML item; a module-level class, so DataLoader
    workers started by spawn can unpickle it."""

    def __init__(self, corpus: str, key: str) -> None:
        self.corpus, self.key = corpus, key

    def __call__(self, item: dict):
        value = decode_jpeg(item[self.key]) if self.corpus == "images" else item[self.key]
        return value, item["cls"]


def read_mosaic(corpus: str, remote: str, endpoint: str | None, cache_dir: str):
    base = import_streaming()
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    if endpoint:
        os.environ["S3_ENDPOINT_URL"] = endpoint
    local = remote if not remote.startswith("s3://") else cache_dir
    key = "x" if corpus == "vectors" else "jpg"
    ds = base.StreamingDataset(
        remote=remote if remote.startswith("s3://") else None,
        local=local,
        shuffle=False,
        batch_size=BATCH,
    )

    return MosaicPairs(ds, ItemPair(corpus, key))


class MosaicPairs(torch.utils.data.IterableDataset):
    """A MosaicML StreamingDataset's items as (value, class) (module-level: picklable)."""

    def __init__(self, ds, pair: ItemPair) -> None:
        self.ds, self.pair = ds, pair

    def __iter__(self):
        for item in self.ds:
            yield self.pair(item)


def read_s3torch(corpus: str, uris: list[str], endpoint: str):
    """s3torchconnector's S3IterableDataset over the tar objects, tars expanded with webdataset's
    own tar iterator (the combination s3torchconnector's documentation shows)."""
    from s3torchconnector import S3ClientConfig, S3IterableDataset

    objects = S3IterableDataset.from_objects(
        uris,
        region="us-east-1",
        endpoint=endpoint,
        s3client_config=S3ClientConfig(force_path_style=True),
        enable_sharding=True,
    )
    return S3TarPairs(objects, corpus)


class S3TarPairs(torch.utils.data.IterableDataset):
    """s3torchconnector's tar objects expanded to (value, class) (module-level: picklable)."""

    def __init__(self, objects, corpus: str) -> None:
        self.objects, self.corpus = objects, corpus

    def __iter__(self):
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        ext = "x.npy" if self.corpus == "vectors" else "jpg"
        for reader in self.objects:
            members = ({**m, "__url__": reader.key} for m in tar_file_iterator(reader))
            for sample in group_by_keys(members):
                yield decode_value(self.corpus, sample[ext]), int(sample["cls"])


def register_webdataset_s3(endpoint: str) -> None:
    """webdataset over s3fs, as its users wire it: an fsspec opener for the s3 scheme."""
    import importlib

    import fsspec

    gopen_module = importlib.import_module("webdataset.gopen")

    def gopen_s3(url, mode="rb", bufsize=8192, **kw):
        return fsspec.open(url, mode, client_kwargs={"endpoint_url": endpoint}).open()

    gopen_module.gopen_schemes["s3"] = gopen_s3


# --- the run ---
@dataclass
class Corpus:
    name: str
    root: Path
    truth: Checksum
    tar_paths: list[Path]


def build_corpus(name: str, shards: int, per_shard: int, root: Path) -> Corpus:
    folder = root / name
    for sub in ("tar", "lit", "mds"):
        (folder / sub).mkdir(parents=True)
    tars = write_tars(name, shards, per_shard, folder / "tar")
    write_litdata(name, shards, per_shard, folder / "lit")
    write_mds(name, shards, per_shard, folder / "mds")
    return Corpus(name, folder, ground_truth(name, shards, per_shard), tars)


def remote(sub: str, corpus: str) -> str:
    """Where the ``sub`` part of ``corpus`` lives on S3, e.g. ``s3://peers-tar/vectors/tar``.

    Each part has a bucket of its own, as a user's formats would: moto lists a prefix by
    scanning its whole bucket (about 0.3 ms per object version: 0.4 s once LitData's and MDS's
    chunks and the store's objects share it), where S3 lists a prefix in tens of ms."""
    return f"s3://{BUCKET}-{sub}/{corpus}/{sub}"


def upload_corpus(corpus: Corpus, endpoint: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    for sub in ("tar", "lit", "mds", "store"):
        if not fs.exists(f"{BUCKET}-{sub}"):
            fs.mkdir(f"{BUCKET}-{sub}")
    for sub in ("tar", "lit", "mds"):
        fs.put(str(corpus.root / sub), f"{BUCKET}-{sub}/{corpus.name}/", recursive=True)


def build_gate_store(corpus: Corpus, urls: list[str], store_url: str, endpoint: str | None):
    """Profile every shard and build reference "ref" from them all: every shard is clean."""
    import driftloader as dl

    options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else None
    store = dl.ProfileStore(store_url, storage_options=options)
    dl.profile_shards(urls, store=store, storage_options=options, progress=False)
    store.build_reference("ref", urls)


@dataclass
class Setting:
    name: str
    endpoint: str | None  # None: local files
    latency_ms: float = 0.0
    upstream: str | None = None  # the moto server behind a proxy


class Run:
    """Builds each contender's dataset for a (corpus, setting) and times one DataLoader pass."""

    def __init__(self, corpus: Corpus, setting: Setting, scratch: Path):
        self.corpus, self.setting, self.scratch = corpus, setting, scratch
        self.remote = setting.endpoint is not None
        self.tar_urls = [f"{self.where('tar')}/{p.name}" for p in corpus.tar_paths]

    def where(self, sub: str) -> str:
        """The folder of the ``sub`` part of the corpus in this setting."""
        if self.remote:
            return remote(sub, self.corpus.name)
        return str(self.corpus.root / sub)

    def dataset(self, contender: str, cache_dir: str):
        import driftloader as dl

        corpus, endpoint = self.corpus.name, self.setting.endpoint
        if contender == "webdataset":
            return read_webdataset(corpus, self.tar_urls, endpoint)
        if contender == "driftloader":
            return read_driftloader(corpus, self.tar_urls, endpoint)
        if contender == GATE:
            options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else None
            store = dl.ProfileStore(self.where("store"), storage_options=options)
            return read_driftloader(corpus, self.tar_urls, endpoint, store)
        if contender == "LitData":
            return LitDataPairs(corpus, self.where("lit"), endpoint, cache_dir)
        if contender == "MosaicML streaming":
            return read_mosaic(corpus, self.where("mds"), endpoint, cache_dir)
        if contender == "s3torchconnector":
            return read_s3torch(corpus, self.tar_urls, endpoint)
        raise ValueError(f"unknown contender {contender!r}")

    def time_pass(self, contender: str, workers: int) -> float:
        """Samples/s of one full pass, from building the dataset to the last batch."""
        cache_dir = tempfile.mkdtemp(dir=self.scratch, prefix="cache-")
        try:
            started = time.perf_counter()
            seen = loader_pass(self.dataset(contender, cache_dir), workers)
            elapsed = time.perf_counter() - started
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        if not seen.matches(self.corpus.truth):
            raise RuntimeError(
                f"{contender} on {self.setting.name}/{self.corpus.name}, {workers} workers: "
                f"read {seen}, expected {self.corpus.truth}"
            )
        return seen.count / elapsed


def loader_pass(dataset, workers: int, on_first=None) -> Checksum:
    """What one pass of ``dataset`` (pairs of value and class) through a DataLoader of batch
    ``BATCH`` and ``workers`` workers reads; ``on_first()``, if given, is called when the first
    batch has come."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        num_workers=workers,
        # litdata.optimize (the LitData writer) sets the process's start method to spawn;
        # every contender gets the platform's default workers instead
        multiprocessing_context=WORKER_START if workers else None,
    )
    seen = Checksum()
    for values, classes in loader:
        if on_first is not None and not seen.count:
            on_first()
        seen.add_batch(values, classes)
    return seen


def contenders_for(setting: Setting, chosen: list[str]) -> list[str]:
    return [c for c in chosen if not (c == "s3torchconnector" and setting.endpoint is None)]


def measure(
    run: Run,
    workers: int,
    contenders: list[str],
    rounds: int,
    log: Callable[[str], None],
    first: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median samples/s per contender over alternating rounds (the order rotates each round).

    With ``first`` (a dict to fill), the skip gate's first pass after its reference was built
    runs before the rounds, and its rate goes in ``first[GATE]``: that pass decides every shard
    from its stored profile and records the decisions, once per reference and drift config;
    the rounds then time the passes after it, as every later epoch and run is."""
    rates: dict[str, list[float]] = {c: [] for c in contenders}
    failures: dict[str, str] = {}
    if first is not None and GATE in contenders:
        first[GATE] = run.time_pass(GATE, workers)
        log(f"  first pass {GATE}: {first[GATE]:,.0f} samples/s")
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            if contender in failures:
                continue
            try:
                rates[contender].append(run.time_pass(contender, workers))
            except Exception as exc:  # a peer that fails here is reported, not fatal
                failures[contender] = f"{type(exc).__name__}: {str(exc)[:300]}"
                log(f"  {contender} failed: {failures[contender]}")
                continue
            log(f"  round {round_index + 1} {contender}: {rates[contender][-1]:,.0f} samples/s")
    return {c: statistics.median(v) for c, v in rates.items() if v and c not in failures}


def settings_for(names: list[str], servers: Servers) -> list[Setting]:
    """Each setting with its endpoint: moto's server, and a proxy process per latency."""
    remote = [n for n in names if n != "local"]
    moto = servers.moto() if remote else None
    settings = []
    for name in names:
        if name == "local":
            settings.append(Setting(name, None))
        elif name == "moto":
            settings.append(Setting(name, moto))
        else:
            latency = float(name.split("-")[1])
            settings.append(Setting(name, servers.proxy(moto, latency, MBPS), latency, moto))
    return settings


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}; load average at the end {load} (the machine was shared "
        "with other sessions)"
    )


def commit_of_driftloader() -> str:
    import driftloader

    folder = Path(driftloader.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "driftloader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip()[:90] + (" (with local changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["webdataset", "litdata", "mosaicml-streaming", "s3torchconnector", "torch", "s3fs"]
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def table(results: dict, settings: list[Setting], contenders: list[str]) -> list[str]:
    lines = [
        "| setting | " + " | ".join(contenders) + " |",
        "| --- |" + " ---: |" * len(contenders),
    ]
    for setting in settings:
        row = results.get(setting.name, {})
        cells = [f"{row[c]:,.0f}" if c in row else "-" for c in contenders]
        lines.append(f"| {setting.name} | " + " | ".join(cells) + " |")
    return lines


def ratio_table(results: dict, settings: list[Setting]) -> list[str]:
    lines = [
        "| setting | driftloader / webdataset | driftloader / LitData | "
        "skip gate / plain driftloader |",
        "| --- | ---: | ---: | ---: |",
    ]

    def ratio(row: dict, a: str, b: str) -> str:
        return f"{row[a] / row[b]:.2f}x" if a in row and b in row else "-"

    for setting in settings:
        row = results.get(setting.name, {})
        lines.append(
            f"| {setting.name} | {ratio(row, 'driftloader', 'webdataset')} | "
            f"{ratio(row, 'driftloader', 'LitData')} | "
            f"{ratio(row, 'driftloader skip gate', 'driftloader')} |"
        )
    return lines


def first_pass_lines(firsts: dict[str, float], results: dict[str, dict[str, float]]) -> list[str]:
    """The skip gate's first pass, apart from the rounds' medians (``measure``)."""
    if not firsts:
        return []
    cells = [
        f"{name} {rate:,.0f} samples/s ({rate / results[name]['driftloader']:.2f}x plain)"
        if "driftloader" in results.get(name, {})
        else f"{name} {rate:,.0f} samples/s"
        for name, rate in firsts.items()
    ]
    return [
        "The skip gate's first pass after its reference was built, before the rounds (it "
        "decides every shard from its stored profile and records the decisions, once per "
        f"reference and drift config): {'; '.join(cells)}. The skip-gate column times the "
        "passes after it.",
        "",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpora; local, moto, 40 ms")
    parser.add_argument("--settings", help=f"comma list of {','.join(ALL_SETTINGS)}")
    parser.add_argument("--workers", help="comma list of DataLoader worker counts (default 0,2)")
    parser.add_argument("--corpora", default="vectors,images")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vector-shards", type=int)
    parser.add_argument("--image-shards", type=int)
    parser.add_argument("-o", "--output", default="benchmarks/results/peers.md")
    args = parser.parse_args(argv)
    quick = args.quick
    args.settings = (
        args.settings or ("local,moto,proxy-40" if quick else ",".join(ALL_SETTINGS))
    ).split(",")
    args.workers = [int(w) for w in (args.workers or ("0" if quick else "0,2")).split(",")]
    args.corpora = args.corpora.split(",")
    args.contenders = args.contenders.split(",")
    for name in args.settings:
        if name not in ALL_SETTINGS:
            raise ValueError(f"setting {name!r} is not one of {ALL_SETTINGS}")
    for name in args.contenders:
        if name not in CONTENDERS:
            raise ValueError(f"contender {name!r} is not one of {CONTENDERS}")
    # shards x samples per shard
    args.shape = {
        "vectors": (args.vector_shards or (8 if quick else 32), 1000),
        "images": (args.image_shards or (4 if quick else 8), 500),
    }
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    out: list[str] = []
    started = time.perf_counter()
    with Servers() as servers, tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        root, scratch = Path(tmp) / "data", Path(tmp) / "scratch"
        scratch.mkdir(parents=True)
        settings = settings_for(args.settings, servers)
        moto = next((s.upstream or s.endpoint for s in settings if s.endpoint), None)
        for corpus_name in args.corpora:
            shards, per_shard = args.shape[corpus_name]
            log(f"writing {corpus_name}: {shards} x {per_shard}")
            corpus = build_corpus(corpus_name, shards, per_shard, root)
            prepare_storage(corpus, args, moto, log)
            decided: set[str] = set()  # settings whose gate store holds its decisions
            for workers in args.workers:
                results: dict[str, dict[str, float]] = {}
                firsts: dict[str, float] = {}
                for setting in settings:
                    log(f"{corpus_name}, {setting.name}, {workers} workers")
                    run = Run(corpus, setting, scratch)
                    chosen = contenders_for(setting, args.contenders)
                    first: dict[str, float] | None = None if setting.name in decided else {}
                    results[setting.name] = measure(run, workers, chosen, args.rounds, log, first)
                    if first:
                        firsts[setting.name] = first[GATE]
                        decided.add(setting.name)
                size = sum(p.stat().st_size for p in corpus.tar_paths) / 1e6
                out += [
                    f"### {corpus_name}: {shards} shards x {per_shard} samples "
                    f"({size:,.0f} MB of tar), {workers} DataLoader workers",
                    "",
                    "Samples/s, median of the rounds:",
                    "",
                    *table(results, settings, args.contenders),
                    "",
                    *ratio_table(results, settings),
                    "",
                    *first_pass_lines(firsts, results),
                ]
    minutes = (time.perf_counter() - started) / 60
    header = [
        f"## Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"({minutes:.0f} min)",
        "",
        f"- command: `python benchmarks/peers.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- driftloader at commit {commit_of_driftloader()}",
        f"- machine: {machine_line()}",
        f"- {versions_line()}",
        f"- settings: {', '.join(args.settings)} (proxy: latency to the first byte of each "
        f"response, {MBPS:.0f} MB/s per connection); {args.rounds} alternating rounds; "
        f"DataLoader batch {BATCH}",
        "",
    ]
    text = "\n".join(header + out)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")


def prepare_storage(corpus: Corpus, args: argparse.Namespace, moto: str | None, log) -> None:
    """Upload the corpus to moto and build the skip gate's stores, as the settings need."""
    gated = GATE in args.contenders
    if gated and "local" in args.settings:
        log(f"profiling {corpus.name} locally for the skip gate")
        urls = [str(p) for p in corpus.tar_paths]
        build_gate_store(corpus, urls, str(corpus.root / "store"), None)
    if moto is not None:
        upload_corpus(corpus, moto)
        if gated:
            log(f"profiling {corpus.name} on moto for the skip gate")
            urls = [f"{remote('tar', corpus.name)}/{p.name}" for p in corpus.tar_paths]
            build_gate_store(corpus, urls, remote("store", corpus.name), moto)


if __name__ == "__main__":
    main()
