"""ServingMonitor: windows compared and stored, callbacks, preprocessing, threads, backpressure,
and the serving example."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from driftloader.errors import FingerprintMismatch
from driftloader.features import FeatureSpec
from driftloader.profiling import profile_shards
from driftloader.serving import MonitorWarning, PreprocessingWarning, ServingMonitor
from driftloader.store import ProfileStore

from .test_records import npy, rows, write_tar

N = 300


@pytest.fixture(autouse=True)
def spool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's default spool folder under its tmp_path, not the user's cache."""
    monkeypatch.setenv("DRIFTLOADER_SPOOL", str(tmp_path / "spool"))
    return tmp_path / "spool"


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    """Reference "v1" of 3 x 300 samples (4-vector and label), preprocessing "resize-v1"."""
    refs = [write_tar(tmp_path / f"ref-{i}.tar", rows(N, i)) for i in range(3)]
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(refs, store, progress=False, metadata=lambda url: {"preprocessing": "resize-v1"})
    store.build_reference("v1", refs)
    return store


def requests(n: int, seed: int, shift: float = 0.0) -> list[dict]:
    """Decoded request samples (no label)."""
    return [{"x.npy": np.asarray(r["x.npy"], dtype=np.float32)} for r in rows(n, seed, shift)]


def test_windows_are_compared_and_stored(store):
    with ServingMonitor(store, "v1", window=N, unserved=["cls"]) as monitor:
        monitor.observe(requests(2 * N, 20))
        for sample in requests(N + 50, 21, shift=1.0):
            monitor.observe(sample)
    report = monitor.report()
    assert [r["window"] for r in report] == [0, 1, 2, 3]
    assert [r["n"] for r in report] == [N, N, N, 50]  # close() stores the partial last window
    assert [r["drifted"] for r in report] == [False, False, True, True]
    assert report[2]["top"][0].startswith(("x.npy[", "joint:x.npy/")) and report[2]["score"] >= 1
    assert all(r["stored"] and r["start"] <= r["end"] for r in report)
    for row in report:
        profile = store.get_profile(row["url"], None)
        assert profile.source == "serving" and profile.n == row["n"]
        assert profile.meta["serving"]["start"] == row["start"]
    catalog = {r["url"]: r for r in store.catalog() if r.get("source") == "serving"}
    assert len(catalog) == 4
    stored = catalog[report[2]["url"]]
    assert stored["reference"] == "v1" and stored["drifted"] and stored["action"] == "served"
    assert stored["end"] == report[2]["end"] and stored["top"][0]["name"] == report[2]["top"][0]


def test_labels_missing_from_requests_are_schema_drift_unless_unserved(store):
    with ServingMonitor(store, "v1", window=N) as monitor:
        monitor.observe(requests(N, 20))
    (row,) = monitor.report()
    assert row["drifted"] and row["top"] == ["cls"]


def test_callback_once_per_drifted_window(store):
    seen: list[int] = []
    monitor = ServingMonitor(store, "v1", window=N, unserved=["cls"])
    monitor.on_drift(lambda row: seen.append(row["window"]))
    monitor.observe(requests(N, 30))
    monitor.observe(requests(3 * N, 31, shift=1.0))
    monitor.observe(requests(N, 32))
    monitor.close()
    monitor.close()  # idempotent: nothing called twice
    assert seen == [1, 2, 3]
    assert [r["drifted"] for r in monitor.report()] == [False, True, True, True, False]
    with pytest.raises(RuntimeError, match="closed"):
        monitor.observe(requests(1, 0))


def test_callback_errors_do_not_stop_the_monitor(store):
    monitor = ServingMonitor(store, "v1", window=N, unserved=["cls"])
    monitor.on_drift(lambda row: 1 / 0)
    with pytest.warns(MonitorWarning, match="ZeroDivisionError"):
        monitor.observe(requests(N, 30, shift=1.0))
        monitor.flush()
        monitor.observe(requests(N, 31, shift=1.0))
        monitor.close()
    assert [r["drifted"] for r in monitor.report()] == [True, True]


def test_interval_closes_a_quiet_window(store):
    monitor = ServingMonitor(store, "v1", window=None, interval=0.3, unserved=["cls"])
    monitor.observe(requests(40, 1))
    deadline = time.monotonic() + 10
    while not monitor.report() and time.monotonic() < deadline:
        time.sleep(0.05)
    report = monitor.report()
    assert len(report) == 1 and report[0]["n"] == 40  # closed with no further traffic
    monitor.observe(requests(10, 2))
    monitor.close()
    assert [r["n"] for r in monitor.report()] == [40, 10]


def test_bytes_and_decoded_samples_give_the_same_window(store):
    decoded = requests(N, 5)
    encoded = [{"x.npy": npy(s["x.npy"])} for s in decoded]
    results = []
    for samples in (decoded, encoded):
        with ServingMonitor(store, "v1", window=N, unserved=["cls"]) as monitor:
            monitor.observe(samples)
        profile = store.get_profile(monitor.report()[0]["url"], None)
        results.append([profile.numeric(f"x.npy[{j}]")[0].mean for j in range(4)])
    assert results[0] == results[1]


def test_preprocessing_mismatch_warns_once_and_labels_windows(store):
    with pytest.warns(PreprocessingWarning, match="'resize-v2'.*'resize-v1'") as caught:
        monitor = ServingMonitor(store, "v1", window=N, preprocessing="resize-v2", unserved=["cls"])
        monitor.observe(requests(3 * N, 7))
        monitor.close()
    assert sum(issubclass(w.category, PreprocessingWarning) for w in caught) == 1
    report = monitor.report()
    assert [r["preprocessing"] for r in report] == ["resize-v2"] * 3
    assert not any(r["drifted"] for r in report)  # the data decides, not the label
    profile = store.get_profile(report[0]["url"], None)
    assert profile.meta["metadata"] == {"preprocessing": "resize-v2"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingWarning)
        ServingMonitor(store, "v1", preprocessing="resize-v1").close()


def test_another_featurizer_is_refused(store):
    spec = FeatureSpec({"x.npy": "summary"})
    with pytest.raises(FingerprintMismatch, match=r"reference 'v1'.*featurizer=\.\.\."):
        ServingMonitor(store, "v1", featurizer=spec)


def test_arguments_are_checked(store):
    with pytest.raises(ValueError, match="window"):
        ServingMonitor(store, "v1", window=0)
    with pytest.raises(ValueError, match="both are None"):
        ServingMonitor(store, "v1", window=None)
    with pytest.raises(ValueError, match="unserved"):
        ServingMonitor(store, "v1", unserved="cls")
    with ServingMonitor(store, "v1") as monitor, pytest.raises(TypeError, match="sample dict"):
        monitor.observe("x")


def test_many_threads_observe_without_loss(store):
    monitor = ServingMonitor(store, "v1", window=250, batch_size=64, unserved=["cls"])
    samples = requests(2000, 9)

    def serve(part: list[dict]) -> None:
        for i in range(0, len(part), 3):
            monitor.observe(part[i : i + 3])

    threads = [threading.Thread(target=serve, args=(samples[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monitor.close()
    report = monitor.report()
    assert [r["n"] for r in report] == [250] * 8
    assert [r["window"] for r in report] == list(range(8))
    assert sum(r["dropped"] + r["errors"] for r in report) == 0


_gate = threading.Event()


def _label(sample: dict) -> str | None:
    value = sample.get("cls")
    return value.decode() if isinstance(value, bytes) else value


def _blocked_featurizer(sample: dict) -> dict:
    _gate.wait(10)
    return {"cls": _label(sample)}


def test_the_caller_never_waits_and_drops_are_counted(tmp_path):
    refs = [write_tar(tmp_path / "ref.tar", rows(100, 0))]
    store = ProfileStore(str(tmp_path / "store"))
    _gate.set()
    profile_shards(refs, store, progress=False, featurizer=_blocked_featurizer)
    store.build_reference("v1", refs)
    _gate.clear()
    monitor = ServingMonitor(
        store, "v1", window=100, batch_size=10, max_pending=30, featurizer=_blocked_featurizer
    )
    started = time.perf_counter()
    with pytest.warns(MonitorWarning, match="dropping"):
        monitor.observe([{"cls": "1"}] * 100)  # the featurizer is blocked: nothing is processed
    assert time.perf_counter() - started < 5
    _gate.set()
    monitor.close()
    (row,) = monitor.report()
    assert row["observed"] == 100 and row["dropped"] == 70 and row["n"] == 30


def _failing_featurizer(sample: dict) -> dict:
    if _label(sample) == "bad":
        raise RuntimeError("boom")
    return {"cls": _label(sample)}


def test_featurizer_failures_are_counted_not_fatal(tmp_path):
    refs = [write_tar(tmp_path / "ref.tar", rows(100, 0))]
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(refs, store, progress=False, featurizer=_failing_featurizer)
    store.build_reference("v1", refs)
    monitor = ServingMonitor(store, "v1", window=20, batch_size=10, featurizer=_failing_featurizer)
    with pytest.warns(MonitorWarning, match="boom"):
        monitor.observe([{"cls": "1"}] * 10 + [{"cls": "bad"}] * 10 + [{"cls": "2"}] * 20)
        monitor.close()
    assert [(r["n"], r["errors"]) for r in monitor.report()] == [(10, 10), (20, 0)]


def test_windows_stored_on_s3(s3_bucket, tmp_path):
    refs = [write_tar(tmp_path / "ref.tar", rows(N, 0))]
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    profile_shards(refs, store, progress=False)
    store.build_reference("v1", refs)
    with ServingMonitor(f"s3://{s3_bucket}/drift", "v1", window=N, unserved=["cls"]) as monitor:
        monitor.observe(requests(N, 3, shift=1.0))
    (row,) = monitor.report()
    assert row["stored"] and row["drifted"]
    assert store.get_profile(row["url"], None).n == N


def test_serving_example_flags_the_broken_preprocessing(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "serving_monitor.py"
    spec = importlib.util.spec_from_file_location("serving_monitor_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(tmp_path)
    assert result["first_flagged"] is not None
    assert result["broken_at"] <= result["first_flagged"] <= result["broken_at"] + 1
    assert result["false_alarms"] == 0


def test_readme_snippet(store, capsys):
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (code,) = [s for s in re.findall(r"```python\n(.*?)```", readme, re.S) if "ServingMonitor" in s]
    x = [s["x.npy"] for s in requests(N, 40)] + [s["x.npy"] for s in requests(N, 41, shift=1.0)]
    namespace = {"store": store, "requests": x}
    exec(code.replace("window=1000", f"window={N}"), namespace)
    assert [r["drifted"] for r in namespace["rows"]] == [False, True]
    out = capsys.readouterr().out
    assert "serving drift: 1 ['x.npy[" in out or "serving drift: 1 ['joint:x.npy/" in out


def test_exit_without_close_stores_the_open_window(store, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "serve.py"
    script.write_text(
        "import numpy as np, sys\n"
        "import driftloader as dl\n"
        f"monitor = dl.ServingMonitor({store.url!r}, 'v1', window={N}, unserved=['cls'])\n"
        "x = np.random.default_rng(0).standard_normal((450, 4)).astype(np.float32)\n"
        "monitor.observe([{'x.npy': row} for row in x])\n"
        "sys.exit(0)  # no close(): the interpreter's exit closes the monitor\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120)
    served = sorted((r["window"], r["n"]) for r in store.catalog() if r.get("action") == "served")
    assert served == [(0, N), (1, 150)]


CRASHING_SERVER = """
import sys, time
import numpy as np
import driftloader as dl

url, spool, spooling = sys.argv[1], sys.argv[2], sys.argv[3] == "spool"
monitor = dl.ServingMonitor(
    url, "v1", window=50, unserved=["cls"], spool=spool if spooling else False
)
x = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
for row in x:
    monitor.observe({"x.npy": row})
print("observed", flush=True)  # 4 windows closed; the parent kills us now
time.sleep(600)
"""


def serve_and_get_killed(tmp_path: Path, url: str, endpoint: str, spooling: bool) -> None:
    """Run CRASHING_SERVER against the store at ``url`` through S3 ``endpoint`` and SIGKILL it
    right after its 4 windows closed."""
    import os
    import subprocess
    import sys

    script = tmp_path / "crashing_server.py"
    script.write_text(CRASHING_SERVER)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "AWS_ENDPOINT_URL": endpoint}
    mode = "spool" if spooling else "none"
    args = [sys.executable, str(script), url, str(tmp_path / "spool"), mode]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) as server:
        try:
            line = server.stdout.readline()
        finally:
            server.kill()  # SIGKILL: no atexit, no close()
    assert line.strip() == "observed"


def served_windows(store: ProfileStore) -> list[tuple[str, int, int]]:
    rows = [r for r in store.catalog() if r.get("action") == "served"]
    return sorted((r["run"], r["window"], r["n"]) for r in rows)


@pytest.mark.parametrize("spooling", [True, False], ids=["spool", "no-spool"])
def test_a_killed_server_loses_no_closed_window(s3_proxy, s3_bucket, tmp_path, spooling):
    refs = [write_tar(tmp_path / "ref.tar", rows(N, 0))]
    url = f"s3://{s3_bucket}/drift"
    store = ProfileStore(url)
    profile_shards(refs, store, progress=False)
    store.build_reference("v1", refs)
    s3_proxy.latency_ms = 400  # the server's store answers slowly: windows queue for it
    serve_and_get_killed(tmp_path, url, s3_proxy.endpoint, spooling)
    assert len(served_windows(store)) < 4  # killed before the slow store took them all
    s3_proxy.latency_ms = 0
    seen: list[int] = []
    monitor = ServingMonitor(url, "v1", window=50, unserved=["cls"], spool=tmp_path / "spool")
    monitor.on_drift(lambda row: seen.append(row["window"]))
    recovered = monitor.recover()
    monitor.close()
    served = served_windows(store)
    if not spooling:  # what the monitor did before the spool: closed windows lost
        assert len(served) < 4 and recovered == []
        return
    assert [(w, n) for _, w, n in served] == [(0, 50), (1, 50), (2, 50), (3, 50)]
    assert len({run for run, _, _ in served}) == 1  # the crashed run's keys, each stored once
    assert {r["window"] for r in recovered} | {w for _, w, _ in served} == {0, 1, 2, 3}
    assert all(r["recovered"] and r["stored"] and not r["drifted"] for r in recovered)
    assert seen == []
    assert not list((tmp_path / "spool").rglob("*.log"))  # stored, so deleted
    again = ServingMonitor(url, "v1", window=50, unserved=["cls"], spool=tmp_path / "spool")
    assert again.recover() == []  # nothing is recovered twice
    again.close()
    assert served_windows(store) == served


def test_spooled_samples_come_back_as_they_were():
    from PIL import Image

    from driftloader.serving_spool import Unkept, decode_chunk, encode_chunk

    image = Image.new("RGB", (5, 4), (10, 20, 30))
    samples = [
        {"x.npy": np.arange(4, dtype=np.float32), "a.jpg": image, "cls": 3, "txt": "hi"},
        {"x.npy": np.ones((2, 2)), "b.bin": b"\x00\xff", "meta.json": {"k": [1, None]}},
        {"cls": None, "odd": object()},
    ]
    line, parts = encode_chunk(samples)
    back = decode_chunk(__import__("json").loads(line), b"".join(bytes(p) for p in parts))
    assert [set(s) for s in back] == [set(s) for s in samples]
    assert back[0]["x.npy"].dtype == np.float32 and back[0]["x.npy"].tolist() == [0, 1, 2, 3]
    assert back[1]["x.npy"].tolist() == [[1, 1], [1, 1]]
    assert back[0]["a.jpg"].mode == "RGB" and back[0]["a.jpg"].tobytes() == image.tobytes()
    assert (back[0]["cls"], back[0]["txt"], back[1]["b.bin"]) == (3, "hi", b"\x00\xff")
    assert back[1]["meta.json"] == {"k": [1, None]} and back[2]["cls"] is None
    assert isinstance(back[2]["odd"], Unkept)
    stacked = [{"x.npy": np.full(3, i, dtype=np.int16)} for i in range(5)]
    line, parts = encode_chunk(stacked)
    assert b'"stack"' in line
    back = decode_chunk(__import__("json").loads(line), b"".join(bytes(p) for p in parts))
    assert [s["x.npy"].tolist() for s in back] == [[i] * 3 for i in range(5)]
    blobs = [{"x.npy": bytes([i]) * i} for i in range(4)]
    line, parts = encode_chunk(blobs)
    assert b'"blob"' in line
    back = decode_chunk(__import__("json").loads(line), b"".join(bytes(p) for p in parts))
    assert back == blobs


def test_a_recovered_window_is_the_window_the_dead_run_would_have_stored(store, tmp_path):
    from driftloader.serving_spool import RunSpool

    samples = requests(N, 44, shift=1.0)
    with ServingMonitor(store, "v1", window=N, unserved=["cls"], spool=False) as live:
        live.observe(samples)
    (expected,) = live.report()
    # a dead run's spool, written as a monitor writes it: one closed window, one open one
    header = {
        "run": "dead-run",
        "store": store.url,
        "reference": "v1",
        "source": "serving",
        "fingerprint": store.get_reference("v1").fingerprint,
        "preprocessing": "resize-v9",
    }
    dead = RunSpool.create(tmp_path / "spool", "dead-run", header)
    dead.append(0, samples[:100])
    dead.append(0, samples[100:])
    dead.seal(0, {"start": 10.0, "end": 20.0, "observed": N, "dropped": 0})
    dead.append(1, samples[:7])
    assert RunSpool.take(tmp_path / "spool" / "dead-run") is None  # alive: never taken
    seen = []
    monitor = ServingMonitor(store, "v1", window=N, unserved=["cls"], spool=tmp_path / "spool")
    monitor.on_drift(lambda row: seen.append(row["url"]))
    assert monitor.recover() == []  # the run still holds its lock
    dead.release()  # the process dies: its lock goes, its files stay
    with pytest.warns(MonitorWarning, match="open window of 7 samples, lost"):
        (row,) = monitor.recover()
    monitor.close()
    assert row["url"] == "serving://dead-run/window-000000" and seen == [row["url"]]
    assert (row["window"], row["run"], row["start"], row["end"]) == (0, "dead-run", 10.0, 20.0)
    assert row["preprocessing"] == "resize-v9" and row["stored"] and row["recovered"]
    assert (row["n"], row["drifted"], row["top"]) == (N, True, expected["top"])
    assert row["score"] == pytest.approx(expected["score"])
    stored = store.get_profile(row["url"], None)
    assert stored.meta["serving"]["run"] == "dead-run" and stored.n == N
    assert stored.meta["metadata"] == {"preprocessing": "resize-v9"}
    assert not (tmp_path / "spool" / "dead-run").exists()


def test_report_shows_serving_windows_with_their_preprocessing(store):
    import re

    from driftloader.report import render_report

    with ServingMonitor(store, "v1", window=N, unserved=["cls"], preprocessing="resize-v1") as m:
        m.observe(requests(2 * N, 50))
    with pytest.warns(PreprocessingWarning):
        late = ServingMonitor(store, "v1", window=N, unserved=["cls"], preprocessing="<b>v2")
    with late:
        late.observe(requests(N, 51, shift=1.0))
    html = render_report(store, "v1", top_features=0)
    assert (
        "<h2>Serving windows</h2>" in html
        and "3 windows stored by ServingMonitor, 1 drifted" in html
    )
    table = re.search(r'<table id="serving">.*?</table>', html, re.S).group(0)
    heads = re.findall(r"<th>(.*?)</th>", table)
    assert heads[:8] == [
        "window",
        "start",
        "end",
        "n",
        "drifted",
        "score",
        "top features",
        "preprocessing",
    ]
    rows = re.findall(r"<tr( class=\"drifted\")?>(.*?)</tr>", table.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", body) for _, body in rows]
    assert [c[7] for c in cells] == ["resize-v1", "resize-v1", "&lt;b&gt;v2"]  # in time order
    assert [c[0] for c in cells] == ["0", "1", "0"] and [c[3] for c in cells] == [str(N)] * 3
    assert [c[4] for c in cells] == ["no", "no", "yes"] and [bool(d) for d, _ in rows] == [0, 0, 1]
    assert cells[2][6].startswith(("x.npy[", "joint:x.npy/")) and float(cells[2][5]) >= 1
    assert cells[0][1].endswith("UTC") and "<b>v2" not in html
    assert 'alt="serving windows and training shards over time"' in html
    no_windows = ProfileStore(store.url + "-empty")
    no_windows.put_reference("v1", store.get_reference("v1"))
    assert "Serving windows" not in render_report(no_windows, "v1", top_features=0)


def test_default_alpha_is_the_documented_serving_alpha(store):
    import re

    from driftloader.drift import DriftConfig

    docs = (Path(__file__).resolve().parent.parent / "docs" / "serving.md").read_text()
    (documented,) = set(re.findall(r"default `alpha=([0-9.]+)`", docs))
    with ServingMonitor(store, "v1", spool=False) as monitor:
        assert monitor.config.alpha == float(documented) == 0.001  # not the shards' 0.01
        assert DriftConfig().alpha == 0.01
    with ServingMonitor(store, "v1", config=DriftConfig(alpha=0.01), spool=False) as monitor:
        assert monitor.config.alpha == 0.01 and monitor.config.metadata is False


def test_a_window_writes_its_catalog_row_once(s3_proxy, s3_bucket, tmp_path):
    """A closed window's profile and its served fields go into one catalog row write (before:
    the profile's row, then the served fields merged into it: two reads and two writes)."""
    refs = [write_tar(tmp_path / "ref.tar", rows(N, 0))]
    url = f"s3://{s3_bucket}/drift"
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(url, options)
    profile_shards(refs, store, progress=False)
    store.build_reference("v1", refs)
    s3_proxy.reset_stats()
    with ServingMonitor(store, "v1", window=N, unserved=["cls"]) as monitor:
        monitor.observe(requests(2 * N, 3))
    assert [r["stored"] for r in monitor.report()] == [True, True]
    puts = [r.target for r in s3_proxy.requests if r.method == "PUT" and "/catalog/" in r.target]
    assert len(puts) == 2, puts  # one a window
    served = [r for r in store.catalog() if r.get("source") == "serving"]
    assert len(served) == 2 and all(r["action"] == "served" and r["n"] == N for r in served)


def test_a_window_whose_catalog_row_is_refused_is_not_reported_stored(
    s3_proxy, s3_bucket, tmp_path
):
    """The profile is written but the store refuses the row (403 on the catalog): the window
    is not stored, as when the row was written on its own (its spooled samples are kept)."""
    refs = [write_tar(tmp_path / "ref.tar", rows(N, 0))]
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    profile_shards(refs, store, progress=False)
    store.build_reference("v1", refs)
    s3_proxy.add_fault("status", method="PUT", path="/catalog/", status=403, times=None)
    with (
        pytest.warns(RuntimeWarning),
        ServingMonitor(store, "v1", window=N, unserved=["cls"]) as monitor,
    ):
        monitor.observe(requests(N, 3))
    (row,) = monitor.report()
    assert not row["stored"]  # before: True, with no served row in the catalog
