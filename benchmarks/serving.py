"""Measure ``ServingMonitor``: what ``observe`` costs the caller's thread, and detection by window.

Samples are the demo's (``driftloader.demo.make_samples``): 16 numeric features in one
``x.npy`` field (a 4-class mixture, per-feature std ~1.1). The reference "v1" is 20 x 1,000
clean samples featurized by the default featurizer and stored in a local ``ProfileStore``; every
monitor runs as users run it (background featurizing, comparison and storage of every window,
each window spooled to local disk by the caller's thread until stored).

* cost: ``--samples`` samples observed one call each (decoded float32 arrays, then ``.npy``
  bytes), and in lists of 100; caller's time per sample (mean, and per-call p50 / p99 / max), the
  time until the background had compared and stored every window, and samples dropped;
* detection: ``--trials`` monitors each see 2 windows of 1,000 samples with a 0.25 sigma mean
  shift in one of the 16 features (feature ``trial % 16``); flagged by the first / second window;
* false alarms: one monitor sees ``--clean`` clean windows of 1,000 samples (fresh draws).

Detection and false alarms run with the monitor's default (``alpha=0.001``) and with the
shards' ``alpha=0.01``.

Run ``python benchmarks/serving.py`` (defaults: 100,000 samples, 50 trials, 1,000 clean
windows, of which the first 100 are the goal's); prints a markdown table and writes
``benchmarks/results/serving.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from driftloader.demo import FEATURES, class_centers, make_samples
from driftloader.drift import DriftConfig
from driftloader.features import DefaultFeaturizer
from driftloader.profile import Profile
from driftloader.serving import ServingMonitor
from driftloader.store import ProfileStore

RESULTS = Path(__file__).parent / "results" / "serving.md"
NOTES = """How to read it: the caller's mean per sample includes the time it waits for the GIL while the
background thread featurizes (this loop calls `observe` back to back, leaving the background no
idle time; a server doing inference between calls gives it its gaps), so it is higher than the
single-call p50 / p99. The "compared and stored after" column is the background's throughput on
this machine: sustained traffic faster than that fills `max_pending` and drops samples, counted
in each window's `dropped`. The load average shows how many other processes shared the 2 cores.
The "spool" column: "on" (the default) writes each closed window to the local spool on the
caller's thread when the window closes, "fsync" also fsyncs it there (`spool_fsync=True`),
"off" is `spool=False`.
"""
WINDOW, REFERENCE_WINDOWS, SHIFT = 1000, 20, 0.25
CENTERS = class_centers(0)
CONFIGS = {
    "default (alpha 0.001)": None,
    "DriftConfig(alpha=0.01) (the shards' alpha)": DriftConfig(alpha=0.01),
}


def vectors(n: int, seed: int) -> np.ndarray:
    return make_samples("clean", n, np.random.default_rng(seed), CENTERS)[0]


def reference_store(folder: Path) -> tuple[ProfileStore, np.ndarray]:
    """A store with reference "v1"; returns it and the reference's per-feature std."""
    x = vectors(REFERENCE_WINDOWS * WINDOW, 1)
    featurizer = DefaultFeaturizer()
    profile = Profile(featurizer.fingerprint, source="benchmark")
    for start in range(0, len(x), 1000):
        profile.update(featurizer([{"x.npy": row} for row in x[start : start + 1000]]))
    store = ProfileStore(str(folder / "store"))
    store.put_reference("v1", profile)
    return store, x.std(axis=0)


def npy(row: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, row)
    return buf.getvalue()


def cost(store: ProfileStore, samples: list[dict], per_call: int, spool: str = "on") -> dict:
    """Caller's time per sample observing ``samples`` in calls of ``per_call``, each closed
    window written to the local spool by the caller (``spool`` "on"), also fsynced there
    ("fsync"), or not spooled ("off")."""
    calls = [samples[i : i + per_call] for i in range(0, len(samples), per_call)]
    if per_call == 1:
        calls = [c[0] for c in calls]
    monitor = ServingMonitor(
        store,
        "v1",
        window=WINDOW,
        spool=None if spool != "off" else False,
        spool_fsync=spool == "fsync",
    )
    monitor.observe(calls[0])  # warm up: first window's imports happen in the background
    monitor.flush()
    lap = np.empty(len(calls), dtype=np.int64)
    clock = time.perf_counter_ns
    started = clock()
    for i, call in enumerate(calls):
        t = clock()
        monitor.observe(call)
        lap[i] = clock() - t
    caller = (clock() - started) / 1e9
    monitor.close()
    drained = (clock() - started) / 1e9
    rows = monitor.report()
    return {
        "per_sample_us": caller / len(samples) * 1e6,
        "p50_us": float(np.percentile(lap, 50)) / 1e3,
        "p99_us": float(np.percentile(lap, 99)) / 1e3,
        "max_ms": float(lap.max()) / 1e6,
        "drained_s": drained,
        "dropped": sum(r["dropped"] for r in rows),
        "windows": len(rows),
        "stored": sum(r["stored"] for r in rows),
    }


def detection(store: ProfileStore, std: np.ndarray, trials: int, config=None) -> dict:
    """Share of trials flagged by the first window, and by the first or second."""
    first = by_second = top_right = 0
    for trial in range(trials):
        feature = trial % FEATURES
        x = vectors(2 * WINDOW, 1000 + trial)
        x[:, feature] += SHIFT * std[feature]
        with ServingMonitor(store, "v1", window=WINDOW, config=config) as monitor:
            monitor.observe([{"x.npy": row} for row in x])
        flags = [r["drifted"] for r in monitor.report()]
        first += flags[0]
        by_second += flags[0] or flags[1]
        hit = next((r for r in monitor.report() if r["drifted"]), None)
        top_right += hit is not None and hit["top"][:1] == [f"x.npy[{feature}]"]
    return {"first": first / trials, "second": by_second / trials, "top": top_right / trials}


def false_alarms(store: ProfileStore, windows: int, config=None) -> list[dict]:
    """Clean windows, at a pace the background keeps up with (a flush every 10 windows)."""
    with ServingMonitor(store, "v1", window=WINDOW, config=config) as monitor:
        for w in range(windows):
            monitor.observe([{"x.npy": row} for row in vectors(WINDOW, 100_000 + w)])
            if w % 10 == 9:
                monitor.flush()
    rows = monitor.report()
    short = [r["window"] for r in rows if r["n"] != WINDOW]
    if short:
        raise RuntimeError(f"clean windows {short[:5]} were not full: the result would lie")
    return rows


def alarm_odds(label: str, clean: list[dict]) -> str:
    """What the measured per-window false-alarm rate means for 100 windows."""
    n, alarms = len(clean), sum(r["drifted"] for r in clean)
    if alarms:
        rate = alarms / n
        return (
            f"{label}: per-window false-alarm rate r = {rate:.2%}, so P(no alarm in 100 "
            f"windows) = (1 - r)^100 = {(1 - rate) ** 100:.0%}."
        )
    bound = 3 / n  # the rule of three: 0 events in n bounds the rate below 3/n at 95%
    return (
        f"{label}: 0 of {n:,} clean windows alarmed, which bounds r below {bound:.2%} (95% "
        f"confidence), so P(no alarm in 100 windows) >= {(1 - bound) ** 100:.0%}."
    )


def render(costs: dict, outcomes: dict, args, seconds: float) -> str:
    lines = [
        f"# ServingMonitor (16 numeric features in `x.npy`, windows of {WINDOW:,}, reference "
        f"{REFERENCE_WINDOWS} x {WINDOW:,})",
        "",
        "## What `observe` costs the caller's thread",
        "",
        "| samples as | per call | spool | caller per sample | call p50 | call p99 | call max | "
        "all windows compared and stored after | dropped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (label, per_call, spool), c in costs.items():
        lines.append(
            f"| {label} | {per_call} | {spool} | "
            f"{c['per_sample_us']:.2f} us | {c['p50_us']:.1f} us | "
            f"{c['p99_us']:.1f} us | {c['max_ms']:.1f} ms | {c['drained_s']:.2f} s "
            f"({c['stored']}/{c['windows']} windows) | {c['dropped']:,} |"
        )
    lines += [
        "",
        f"{args.samples:,} samples per row. Goal: <= 20 us per sample as seen by the caller.",
        "",
        "## Detection",
        "",
        "| drift config | case | windows | flagged |",
        "| --- | --- | --- | --- |",
    ]
    for label, (found, clean) in outcomes.items():
        first_100 = sum(r["drifted"] for r in clean[:100])
        total = sum(r["drifted"] for r in clean)
        lines += [
            f"| {label} | 0.25 sigma mean shift in one of 16 features, by the first window "
            f"| {args.trials} | {found['first']:.0%} |",
            f"| {label} | the same, by the second window | {args.trials} | {found['second']:.0%} |",
            f"| {label} | (top feature of the first flagged window is the shifted one) "
            f"| {args.trials} | {found['top']:.0%} |",
            f"| {label} | clean, the first 100 windows (goal: no false alarm) "
            f"| {min(100, len(clean))} | {first_100} |",
            f"| {label} | clean, all windows (per-window false-alarm rate) | {len(clean)} "
            f"| {total} ({total / max(len(clean), 1):.2%}) |",
        ]
    lines.append("")
    for label, (_, clean) in outcomes.items():
        scores = [r["score"] for r in clean]
        lines.append(
            f"Clean windows under {label}: median score {np.median(scores):.2f}, max "
            f"{max(scores):.2f} (drifted when >= 1)."
        )
    lines += ["", NOTES]
    lines += [alarm_odds(label, clean) for label, (_, clean) in outcomes.items()]
    lines.append("")
    lines += [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"`uptime` at the start: {args.uptime_start}; at the end: {uptime()}. "
        f"Runtime {seconds:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def uptime() -> str:
    """The machine's load as `uptime` prints it (load averages over 1, 5, 15 minutes)."""
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out.strip() or "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--clean", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cost-only", action="store_true", help="skip detection")
    args = parser.parse_args()
    args.uptime_start = uptime()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DRIFTLOADER_SPOOL"] = str(Path(tmp) / "spool")  # the spool on local disk
        store, std = reference_store(Path(tmp))
        x = vectors(args.samples, 7)
        decoded = [{"x.npy": row} for row in x]
        encoded = [{"x.npy": npy(row)} for row in x]
        costs = {
            (label, per_call, spool): cost(store, samples, per_call, spool)
            for label, samples, per_call, spool in [
                ("decoded float32 array", decoded, 1, "on"),
                ("decoded float32 array", decoded, 1, "off"),
                ("decoded float32 array", decoded, 1, "fsync"),
                (".npy bytes", encoded, 1, "on"),
                ("decoded float32 array", decoded, 100, "on"),
                ("decoded float32 array", decoded, 100, "off"),
            ]
        }
        outcomes = {
            label: (detection(store, std, args.trials, cfg), false_alarms(store, args.clean, cfg))
            for label, cfg in CONFIGS.items()
            if not args.cost_only
        }
    text = render(costs, outcomes, args, time.perf_counter() - started)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
