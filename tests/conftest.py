"""Shared fixtures: a real S3 endpoint (moto's server mode) reached through s3fs, and shard writers."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# The tests run in parallel (pytest-xdist) on a 2-core machine and start many subprocesses
# (DataLoader workers, torchrun, examples): one intra-op thread each keeps them from spinning
# against each other. Subprocesses inherit the variable; this process sets torch's own below.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)
# Hypothesis deadlines are timings: on a loaded machine they fail tests that are correct.
settings.register_profile("driftloader", deadline=None)
settings.load_profile("driftloader")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's ThreadedMotoServer on 127.0.0.1 at a free port; yield its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS environment variables pointing at the moto endpoint, as users set them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_endpoint


def new_bucket(endpoint: str, versioned: bool = True) -> str:
    """A fresh bucket at ``endpoint`` (versioning enabled unless ``versioned`` is False); its
    name."""
    import boto3

    name = f"bucket-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh versioned bucket on the moto server; yields its name."""
    return new_bucket(s3_env)


@pytest.fixture
def s3fs_fresh(s3_env: str):
    """An s3fs filesystem on the moto endpoint, with no cached listings."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env})
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_proxy(s3_env: str) -> Iterator:
    """A ``benchmarks.latency_proxy.LatencyProxy`` in front of the moto server, with no latency,
    no cap and no faults until a test sets them. Give ``s3_proxy.endpoint`` to s3fs/boto3; set
    ``latency_ms``/``mbps``, call ``add_fault(...)``, read ``counts``/``max_in_flight``/
    ``requests`` on the object. Credentials come from ``s3_env``."""
    from benchmarks.latency_proxy import LatencyProxy

    with LatencyProxy(s3_env, lifetime_s=600) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certificate, key) PEM paths of a self-signed certificate for 127.0.0.1 and localhost,
    its own CA: give the certificate as ``verify=`` / ``AWS_CA_BUNDLE`` to trust it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "driftloader test S3")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert), str(private)


@pytest.fixture
def s3_tls_proxy(s3_env: str, tls_certificate: tuple[str, str]) -> Iterator:
    """``s3_proxy``, spoken to over https (as S3 is) with ``tls_certificate``'s certificate:
    ``s3_tls_proxy.endpoint`` is ``https://127.0.0.1:PORT``; pass the certificate as
    ``client_kwargs={"verify": ...}`` to trust it."""
    import ssl

    from benchmarks.latency_proxy import LatencyProxy

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_certificate)
    with LatencyProxy(s3_env, lifetime_s=600, tls=context) as proxy:
        yield proxy


@pytest.fixture
def s3fs_proxy(s3_proxy):
    """An s3fs filesystem reaching moto through ``s3_proxy``, with no cached instances."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_proxy.endpoint})
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()


def make_sample(index: int, rng: np.random.Generator, shift: float = 0.0) -> dict:
    """One webdataset sample: a 64-float .npy, a class, a small JSON, a text and a blob."""
    x = (rng.standard_normal(64) + shift).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps"], size=8))
    return {
        "__key__": f"sample{index:06d}",
        "x.npy": buf.getvalue(),
        "cls": str(int(rng.integers(0, 10))).encode(),
        "json": json.dumps({"size": float(rng.random()), "src": "cam"}).encode(),
        "txt": words.encode(),
        "bin": rng.bytes(256),
    }


def write_shard(
    path: Path | str, n: int, seed: int = 0, start: int = 0, shift: float = 0.0
) -> list[dict]:
    """Write a tar shard with n samples using webdataset's TarWriter; return the samples."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(start + i, rng, shift) for i in range(n)]
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return samples


@pytest.fixture
def shard_families(tmp_path: Path) -> Callable[..., dict[str, list[str]]]:
    """A factory: ``shard_families(n, refs)`` writes under ``tmp_path/data`` ``refs`` reference
    shards ``ref-<i>.tar``, one clean ``clean-0.tar`` and one shifted ``bad-0.tar`` of ``n``
    samples each, and returns their paths by family (``"ref"``, ``"clean"``, ``"bad"``)."""

    def make(n: int, refs: int) -> dict[str, list[str]]:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        out: dict[str, list[str]] = {"ref": [], "clean": [], "bad": []}
        for i in range(refs):
            write_shard(data / f"ref-{i}.tar", n, seed=i, start=i * 1000)
            out["ref"].append(str(data / f"ref-{i}.tar"))
        write_shard(data / "clean-0.tar", n, seed=11, start=11_000)
        out["clean"].append(str(data / "clean-0.tar"))
        write_shard(data / "bad-0.tar", n, seed=12, start=12_000, shift=1.0)
        out["bad"].append(str(data / "bad-0.tar"))
        return out

    return make


def upload_shards(tmp_path: Path, bucket: str, fs, count: int = 12) -> str:
    """``count`` tiny shards (8 samples each) in ``s3://bucket/data``, uploaded with the s3fs
    ``fs``; returns their brace pattern."""
    for i in range(count):
        path = tmp_path / f"shard-{i:03d}.tar"
        write_shard(path, 8, seed=i, start=i * 100)
        fs.put(str(path), f"{bucket}/data/shard-{i:03d}.tar")
    return f"s3://{bucket}/data/shard-{{000..{count - 1:03d}}}.tar"


@pytest.fixture
def local_shards(tmp_path: Path) -> list[str]:
    """Four local shards of 25 samples each with distinct keys."""
    paths = []
    for s in range(4):
        path = tmp_path / f"shard-{s:06d}.tar"
        write_shard(path, 25, seed=s, start=s * 1000)
        paths.append(str(path))
    return paths


def write_gated_corpus(root: Path, clean_sizes: list[int], drifted: int) -> dict:
    """Under ``root``: a reference of 3 x 300 samples, clean shards of ``clean_sizes`` and
    ``drifted`` shards of 60 shifted by 2 sigma, all profiled, reference "ref" built."""
    from driftloader.profiling import profile_shards
    from driftloader.store import ProfileStore

    data = root / "data"
    data.mkdir()

    def shard(name: str, seed: int, n: int, shift: float = 0.0) -> str:
        write_shard(data / f"{name}.tar", n, seed=seed, start=seed * 1000, shift=shift)
        return str(data / f"{name}.tar")

    reference = [shard(f"ref-{i}", i, 300) for i in range(3)]
    clean = [shard(f"clean-{i}", 10 + i, n) for i, n in enumerate(clean_sizes)]
    shifted = [shard(f"drift-{i}", 30 + i, 60, shift=2.0) for i in range(drifted)]
    store = ProfileStore(str(root / "store"))
    profile_shards(reference + clean + shifted, store, progress=False)
    store.build_reference("ref", reference)
    return {"store": store, "clean": clean, "drifted": shifted}


EXIT_ABORT = "terminate called without an active exception"
"""What a torchrun rank prints when a native thread is torn down while joinable as it exits
(exit -6). Seen in two fresh-clone CI runs (the accelerate example once, the DDP example once)
on the 2-core machine under load, never in a rerun: a native thread of torch/gloo's, not one of
driftloader's (those are Python threads, joined at exit)."""


def run_ranks(command: list[str], timeout: float, env: dict | None = None):
    """``subprocess.run`` of a torchrun ``command``, run once more if a rank aborted at exit
    with ``EXIT_ABORT``: any other failure, or the same abort twice, is the test's to see."""
    import subprocess

    env = {**os.environ, **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0 and EXIT_ABORT in result.stderr:
        print(f"a rank aborted at exit ({EXIT_ABORT!r}): running {command[-1]} once more")
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return result


def closed_on_fsspecs_loop(iterator, seconds: float = 20) -> bool:
    """Close ``iterator`` (a generator) on fsspec's loop thread, as the garbage collector may
    when it finalizes one left unfinished there; True when the close returned within
    ``seconds`` (a close that waits there for work needing that thread never returns)."""
    import fsspec.asyn

    closed = threading.Event()

    def close() -> None:
        iterator.close()
        closed.set()

    fsspec.asyn.get_loop().call_soon_threadsafe(close)
    return closed.wait(seconds)
