"""Read rate of this checkout against an earlier commit of driftloader, in one run.

    python benchmarks/commits.py --base 98a89bb              # issue #12's "today"
    python benchmarks/commits.py --base 98a89bb --shards 32 --rounds 5 --workers 0,2
    python benchmarks/commits.py --base e6335f4 --http 0,40,100   # http:// through the proxy

Issue #12 asks for twice the local rate of its day on its vectors (a 64-float .npy, a class
and a 4 KiB blob per sample). Rates on these machines move by 2x from session to session, so
both commits are measured in the same run: ``--base`` is exported with ``git archive`` into a
scratch folder, and every pass runs in a fresh process whose ``driftloader`` is its commit's
(checked by its ``__file__``). webdataset reads the same shards as a third contender. Passes
are peers.py's: ``.decode().to_tuple("x.npy", "cls")`` through a DataLoader of batch 256, the
count and sums checked against the ground truth. The order of the contenders rotates round by
round; medians and the median of each round's ratio are printed.

With ``--http``, the shards are read as ``http://`` URLs instead of local files: uploaded to
moto (public-read), reached through the latency proxy at each latency given (ms to the first
byte, 50 MB/s a connection; ``servers.py``), as a web server or a CDN serves them. webdataset
reads them with its ``curl`` pipe. ``--origin files`` serves them from the scratch folder with
``file_origin.py`` instead of moto (moto caps every remote row at 60-80 MB/s, below the local
rate), and adds the local files as a setting of the same run: the rows then say what the latency
costs the reader, not what moto costs. With ``--base none``, only this checkout and webdataset
run::

    python benchmarks/commits.py --base none --http 0,40,100 --origin files

With ``--pin``, every pass runs on CPU 0 (its DataLoader workers too), local ones included,
and the servers on the other CPUs: the origin and the proxy then take none of the reader's
CPU, as S3's servers take none of a training machine's. Each pass also reports when its first
batch came (the table's last column, this checkout's).

"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def one_pass(
    tree: str,
    contender: str,
    workers: int,
    tars: str,
    truth: str,
    prefix: str | None,
    pin: bool = False,
) -> None:
    """In the child: time one pass of ``contender`` over the shards (local files, or under
    the URL ``prefix``), print its JSON line (``pin``: on CPU 0 only, its workers too)."""
    if pin:
        os.sched_setaffinity(0, {0})
    sys.path.insert(0, str(ROOT))
    from benchmarks import peers

    sys.path.insert(0, tree)  # after peers put this checkout first: the commit's driftloader
    for module in ("driftloader", "driftloader.dataset", "webdataset"):
        importlib.import_module(module)  # before the clock starts, as in a training job
    if prefix:  # and the URLs' filesystem (aiohttp for http://): once a process, not a pass
        import fsspec

        fsspec.get_filesystem_class(prefix.split("://")[0])

    urls = sorted(str(p) for p in Path(tars).glob("*.tar"))
    if prefix:
        urls = [f"{prefix}/{Path(u).name}" for u in urls]
    started = time.perf_counter()
    if contender == "webdataset":
        ds = peers.read_webdataset("vectors", urls, None)
    else:
        ds = peers.read_driftloader("vectors", urls, None)
    first = []
    seen = peers.loader_pass(ds, workers, lambda: first.append(time.perf_counter()))
    rate = seen.count / (time.perf_counter() - started)
    if not seen.matches(peers.Checksum(**json.loads(Path(truth).read_text()))):
        raise SystemExit(f"{contender}: read {seen}, expected {truth}")
    first_batch = first[0] - started
    module = sys.modules.get("driftloader")
    where = getattr(module, "__file__", None)
    print(json.dumps({"rate": rate, "first": first_batch, "driftloader": where}))


def run_pass(
    tree: Path, contender: str, workers: int, scratch: Path, prefix: str | None, pin: bool
) -> tuple[float, float]:
    """One pass in a fresh process: (samples/s, seconds to the first batch)."""
    args = [sys.executable, __file__, "--one-pass", contender, "--tree", str(tree)]
    args += ["--workers", str(workers), "--scratch", str(scratch)]
    args += ["--prefix", prefix] if prefix else []
    args += ["--pin"] if pin else []
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if contender != "webdataset" and not result["driftloader"].startswith(str(tree)):
        raise SystemExit(f"{contender} imported {result['driftloader']}, not from {tree}")
    return result["rate"], result["first"]


def commit_of(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="98a89bb", help="the earlier commit, or none")
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1000, help="samples per shard")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="0,2", help="DataLoader workers, comma-separated")
    parser.add_argument("--http", help="read http:// URLs through the proxy at these ms (0,40)")
    parser.add_argument(
        "--origin", choices=("moto", "files"), default="moto", help="behind the proxy (--http)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="each pass on CPU 0, the servers on the other CPUs (Linux): storage then costs "
        "the reader no CPU, as S3's servers do not",
    )
    parser.add_argument("--one-pass", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_pass:
        scratch = Path(args.scratch)
        tars, truth = str(scratch / "tar"), str(scratch / "truth")
        one_pass(args.tree, args.one_pass, int(args.workers), tars, truth, args.prefix, args.pin)
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks import peers

    base = None if args.base == "none" else commit_of(args.base)
    head = commit_of("HEAD")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "driftloader"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="dl-commits-") as tmp, contextlib.ExitStack() as stack:
        scratch = Path(tmp)
        contenders = {"webdataset": ROOT}
        if base:
            contenders[f"driftloader {base}"] = export(base, scratch / f"tree-{base}")
        contenders[f"driftloader {head}"] = ROOT
        (scratch / "tar").mkdir()
        print(f"writing {args.shards} shards x {args.samples} samples ...", flush=True)
        peers.write_tars("vectors", args.shards, args.samples, scratch / "tar")
        truth = peers.ground_truth("vectors", args.shards, args.samples)
        (scratch / "truth").write_text(json.dumps(vars(truth)))
        settings: dict = {"local": None}
        if args.http:
            from benchmarks.servers import Servers

            servers = stack.enter_context(Servers())
            latencies = args.http.split(",")
            if args.origin == "files":
                settings.update(served_from_files(servers, scratch / "tar", latencies))
            else:
                settings = served_over_http(servers, scratch / "tar", latencies)
            if args.pin:
                servers.pin(set(range(1, os.cpu_count() or 2)))
        workers = [int(w) for w in args.workers.split(",")]
        cells = [(s, w) for s in settings for w in workers]
        rates: dict = {(c, *cell): [] for c in contenders for cell in cells}
        firsts: dict = {cell: [] for cell in cells}  # this checkout's, seconds
        for r in range(args.rounds):
            names = list(contenders)
            names = names[r % len(names) :] + names[: r % len(names)]
            for setting, w in cells:
                for name in names:
                    prefix = settings[setting]
                    tree = contenders[name]
                    rate, first = run_pass(tree, name.split(" ")[0], w, scratch, prefix, args.pin)
                    rates[name, setting, w].append(rate)
                    if name == f"driftloader {head}":
                        firsts[setting, w].append(first)
                    print(
                        f"round {r + 1} {setting} workers {w} {name}: {rate:,.0f} samples/s, "
                        f"first batch after {first:.3f} s",
                        flush=True,
                    )
    pinned = ", passes on CPU 0 and the servers on the others" if args.pin else ""
    print(
        f"\n{args.shards} shards x {args.samples}, {args.rounds} rounds, "
        f"HEAD {head}{' (uncommitted changes)' if dirty else ''}, {os.cpu_count()} cores{pinned}"
    )
    report(rates, firsts, cells, base, head, "local" in settings)


def export(commit: str, tree: Path) -> Path:
    """``driftloader/`` of ``commit``, extracted under ``tree``."""
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "driftloader"], check=True, capture_output=True, cwd=ROOT
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def report(
    rates: dict, firsts: dict, cells: list, base: str | None, head: str, local: bool
) -> None:
    """The table: medians, the median of the rounds' ratios, and (with local files in the run)
    each cell's rate over the local rate with the same workers (the median of rounds); the
    last column, this checkout's seconds to its first batch (median)."""
    new_name = f"driftloader {head}"
    columns = ["setting", "workers", "webdataset"]
    columns += [f"driftloader {base}", new_name, "new / old"] if base else [new_name]
    columns += ["new / webdataset"] + (["new / its local rate"] if local else [])
    columns += ["new: first batch (s)"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))

    def ratio(a: list, b: list) -> str:
        return f"{statistics.median(x / y for x, y in zip(a, b)):.2f}x"

    for setting, w in cells:
        new, wds = rates[new_name, setting, w], rates["webdataset", setting, w]
        row = [setting, str(w), f"{statistics.median(wds):,.0f}"]
        if base:
            old = rates[f"driftloader {base}", setting, w]
            row += [f"{statistics.median(old):,.0f}", f"{statistics.median(new):,.0f}"]
            row += [ratio(new, old)]
        else:
            row += [f"{statistics.median(new):,.0f}"]
        row += [ratio(new, wds)] + ([ratio(new, rates[new_name, "local", w])] if local else [])
        row += [f"{statistics.median(firsts[setting, w]):.3f}"]
        print("| " + " | ".join(row) + " |")


def served_from_files(servers, tars: Path, latencies: list[str]) -> dict:
    """``file_origin`` serving ``tars`` and a proxy per latency in front of it ("direct": the
    origin itself, no proxy), started by ``servers``: {setting: prefix of the shards' http://
    URLs}."""
    from benchmarks import peers

    origin = servers.files(tars)
    settings = {}
    for ms in latencies:
        if ms == "direct":
            settings["files direct"] = origin
        else:
            settings[f"files {ms} ms"] = servers.proxy(origin, float(ms), peers.MBPS)
    return settings


def served_over_http(servers, tars: Path, latencies: list[str]) -> dict:
    """Upload ``tars`` to moto, public-read, and start a proxy per latency (by ``servers``):
    {setting: prefix of the shards' http:// URLs}."""
    import s3fs

    from benchmarks import peers

    moto = servers.moto()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto}, skip_instance_cache=True)
    fs.mkdir("commits-http")
    for path in sorted(tars.glob("*.tar")):
        fs.put(str(path), f"commits-http/{path.name}")
        fs.chmod(f"commits-http/{path.name}", acl="public-read")
    return {
        f"http {ms} ms": f"{servers.proxy(moto, float(ms), peers.MBPS)}/commits-http"
        for ms in latencies
    }


if __name__ == "__main__":
    main()
