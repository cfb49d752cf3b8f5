"""The benchmarks' stand-ins for object storage, each in a process of its own: moto's S3 server
(or ``file_origin``, a fast HTTP origin) and ``latency_proxy`` in front of it.

Run in the benchmark's own process, as threads, they would share its GIL with the readers being
measured: at 40 ms and eight connections the proxy's pacing and moto's responses took the
interpreter from the pure-Python readers (webdataset, driftloader, MosaicML streaming) and not
from the Rust ones (LitData's obstore, s3torchconnector). Real S3 costs the reader no CPU.

Example::

    with Servers() as servers:
        moto = servers.moto()                        # http://127.0.0.1:PORT
        slow = servers.proxy(moto, latency_ms=40, mbps=50)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, seconds: float = 20.0) -> None:
    """Return once ``port`` accepts connections; ``RuntimeError`` if ``proc`` dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on port {port} within {seconds:.0f} s")


class Servers:
    """Server processes started for a benchmark, all stopped on exit."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        os.environ.setdefault("AWS_REGION", "us-east-1")

    def _start(self, argv: list[str], port: int, what: str) -> str:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(proc)
        wait_listening(port, proc, what)
        return f"http://127.0.0.1:{port}"

    def moto(self) -> str:
        """moto's S3 server; its endpoint."""
        port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        return self._start(argv, port, "moto's server")

    def files(self, root: Path, lifetime_s: float = 3 * 3600) -> str:
        """``file_origin`` serving the files of ``root`` (Range, keep-alive); its endpoint."""
        return self._script("file_origin.py", "the file origin", root=root, lifetime=lifetime_s)

    def proxy(
        self, upstream: str, latency_ms: float, mbps: float, lifetime_s: float = 3 * 3600
    ) -> str:
        """``latency_proxy`` in front of ``upstream``; its endpoint."""
        flags = {"upstream": upstream, "latency-ms": latency_ms, "mbps": mbps}
        return self._script(
            "latency_proxy.py", f"the {latency_ms:g} ms proxy", **flags, lifetime=lifetime_s
        )

    def _script(self, script: str, what: str, **flags: object) -> str:
        """``benchmarks/<script> --flag=value ... --port=<free>`` started; its endpoint."""
        port = free_port()
        argv = [sys.executable, str(ROOT / "benchmarks" / script), f"--port={port}"]
        argv += [f"--{name}={value}" for name, value in flags.items()]
        return self._start(argv, port, what)

    def pin(self, cpus: set[int]) -> None:
        """Run every server started so far on ``cpus`` only (Linux)."""
        for proc in self.processes:
            os.sched_setaffinity(proc.pid, cpus)

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes.clear()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
