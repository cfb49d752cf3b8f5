"""Watching inference traffic against the training reference (training/serving skew).

    python examples/serving_monitor.py

The demo's small classifier is trained on clean shards, whose reference is stored beside them.
Then a plain loop (no web server) serves 8,000 requests one at a time: each raw request goes
through ``preprocess`` and the model, and the monitor observes exactly what the model sees.
Halfway through, a broken preprocessing step is deployed: feature 5 is "converted" from inches
to centimetres although it already was in centimetres, the kind of bug a reimplemented
transform brings. Nothing fails and the model keeps answering; the monitor flags the first
window of 1,000 requests served with it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

import driftloader as dl
from driftloader.demo import CLASSES, FEATURES, class_centers, make_samples, write_shard

SEED, WINDOW, REQUESTS = 0, 1000, 8000


def preprocess_v1(raw: np.ndarray) -> np.ndarray:
    """What training used: the measurements as float32."""
    return np.asarray(raw, dtype=np.float32)


def preprocess_broken(raw: np.ndarray) -> np.ndarray:
    """The new step: divides feature 5 by 2.54 a second time."""
    x = np.array(raw, dtype=np.float32)
    x[5] /= 2.54
    return x


def train(urls: list[str]) -> torch.nn.Module:
    """The demo's classifier, trained on the clean shards (read once, 3 epochs in memory)."""
    pairs = list(wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("x.npy", "cls"))
    x = torch.as_tensor(np.stack([p[0] for p in pairs]))
    y = torch.as_tensor([p[1] for p in pairs])
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in torch.randperm(len(y)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def serve(model: torch.nn.Module, monitor: dl.ServingMonitor, centers: np.ndarray) -> list[bool]:
    """The inference loop: one request at a time; the preprocessing breaks halfway."""
    raw, labels = make_samples("clean", REQUESTS, np.random.default_rng(SEED + 12345), centers)
    correct = []
    for i in range(REQUESTS):
        preprocess = preprocess_v1 if i < REQUESTS // 2 else preprocess_broken
        x = preprocess(raw[i])
        monitor.observe({"x.npy": x})  # cheap: featurized and compared in the background
        with torch.no_grad():
            prediction = int(model(torch.from_numpy(x)[None]).argmax())
        correct.append(prediction == labels[i])
    return correct


def main(folder: Path) -> dict:
    centers = class_centers(SEED)
    urls = []
    for i in range(4):
        urls.append(str(folder / f"train-{i:03d}.tar"))
        write_shard(Path(urls[-1]), "clean", SEED * 100 + i, centers)
    store = dl.ProfileStore(str(folder / "store"))
    dl.profile_shards(
        urls, store, progress=False, metadata={u: {"preprocessing": "v1"} for u in urls}
    )
    store.build_reference("clean", urls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    try:
        model = train(urls)
        alerts = []
        with dl.ServingMonitor(
            store, "clean", window=WINDOW, preprocessing="v1", unserved=["cls"]
        ) as monitor:
            monitor.on_drift(lambda row: alerts.append(row["window"]))
            correct = serve(model, monitor, centers)
    finally:
        torch.set_num_threads(threads)
    broken_at = REQUESTS // 2 // WINDOW
    for row in monitor.report():
        flag = "DRIFT" if row["drifted"] else "ok   "
        accuracy = np.mean(correct[row["window"] * WINDOW : (row["window"] + 1) * WINDOW])
        print(
            f"window {row['window']}  {flag} score {row['score']:6.1f}  accuracy {accuracy:5.1%}"
            f"  {', '.join(row['top'])}"
        )
    flagged = [w for w in alerts if w >= broken_at]
    result = {
        "broken_at": broken_at,
        "first_flagged": flagged[0] if flagged else None,
        "false_alarms": sum(w < broken_at for w in alerts),
        "windows": monitor.report(),
    }
    print(
        f"broken preprocessing from window {broken_at}; first flagged: window "
        f"{result['first_flagged']}; false alarms before it: {result['false_alarms']}"
    )
    return result


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
