"""``driftloader demo``: drifted data, a reference, and one model trained four ways.

The data: 16-feature vectors (``x.npy``) and a 4-class label (``cls``), in shards of 1,000.
Clean shards follow the reference distribution; three kinds of bad shard are mixed in:

* ``shifted``: a new source whose preprocessing flips and offsets eight features;
* ``labels``: a label shift, class 0 drawn seven times as often (a skewed crawl);
* ``nan``: a broken preprocessing step that writes NaN into 30% of one feature.

The reference is built from clean shards; the same model is trained on the mixed shards with
plain webdataset and with ``policy="skip"``, ``"reweight"`` and ``"resample"``, and evaluated on
a clean held-out set. The numbers are whatever this run measures.
"""

from __future__ import annotations

import io
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

FEATURES, CLASSES, PER_SHARD = 16, 4, 1000
KINDS = {"clean": 6, "shifted": 3, "labels": 3, "nan": 2}
REFERENCE_SHARDS = 6


def class_centers(seed: int) -> np.ndarray:
    """The mean feature vector of each class for a demo seed (what ``make_samples`` needs)."""
    return np.random.default_rng(seed).normal(0.0, 0.45, (CLASSES, FEATURES))


def make_samples(kind: str, n: int, rng: np.random.Generator, centers: np.ndarray):
    """Features and labels of one shard of the given kind."""
    probs = np.full(CLASSES, 1.0 / CLASSES)
    if kind == "labels":
        probs = np.array([7.0, 1.0, 1.0, 1.0]) / 10.0
    y = rng.choice(CLASSES, size=n, p=probs)
    x = centers[y] + rng.normal(0.0, 1.0, (n, FEATURES))
    if kind == "shifted":
        x[:, :8] = 1.0 - x[:, :8]  # new source: flipped sign and offset, same labels
    if kind == "nan":
        x[rng.random(n) < 0.3, 5] = np.nan
    return x.astype(np.float32), y


def write_shard(path: Path, kind: str, seed: int, centers: np.ndarray) -> None:
    rng = np.random.default_rng(seed)
    x, y = make_samples(kind, PER_SHARD, rng, centers)
    with wds.TarWriter(str(path)) as sink:
        for i in range(PER_SHARD):
            buf = io.BytesIO()
            np.save(buf, x[i])
            sink.write(
                {
                    "__key__": f"{path.stem}-{i:05d}",
                    "x.npy": buf.getvalue(),
                    "cls": str(int(y[i])).encode(),
                }
            )


def build_data(folder: Path, seed: int) -> dict[str, list[str]]:
    """Write reference, training and held-out shards; return their paths by role."""
    centers = class_centers(seed)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    roles: dict[str, list[str]] = {"reference": [], "train": [], "holdout": []}
    counter = 0

    def shard(name: str, kind: str) -> str:
        nonlocal counter
        counter += 1
        path = data / f"{name}.tar"
        write_shard(path, kind, seed * 1000 + counter, centers)
        return str(path)

    roles["reference"] = [shard(f"ref-{i:03d}", "clean") for i in range(REFERENCE_SHARDS)]
    for kind, count in KINDS.items():
        roles["train"] += [shard(f"train-{kind}-{i:03d}", kind) for i in range(count)]
    roles["holdout"] = [shard(f"holdout-{i:03d}", "clean") for i in range(2)]
    return roles


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
    )


def _batches(dataset, weighted: bool):
    for batch in dataset:
        x = torch.nan_to_num(torch.as_tensor(np.asarray(batch[0])))  # a common "fillna" step
        y = torch.as_tensor(np.asarray(batch[1]), dtype=torch.long)
        w = torch.as_tensor(np.asarray(batch[2]), dtype=torch.float32) if weighted else None
        yield x, y, w


def train(make_dataset, weighted: bool, epochs: int, seed: int) -> tuple[torch.nn.Module, int]:
    """Train the small model; the loss uses ``__weight__`` when ``weighted``."""
    torch.manual_seed(seed)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    seen = 0
    for epoch in range(epochs):
        dataset = make_dataset(epoch)
        for x, y, w in _batches(dataset, weighted):
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            loss = (loss * w).sum() / w.sum() if w is not None else loss.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
    return model, seen


def accuracy(model: torch.nn.Module, holdout: list[str]) -> float:
    pairs = list(wds.WebDataset(holdout, shardshuffle=False).decode().to_tuple("x.npy", "cls"))
    x = torch.as_tensor(np.stack([p[0] for p in pairs]))
    y = torch.as_tensor([p[1] for p in pairs])
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _four_ways(roles: dict[str, list[str]], store, seed: int, epochs: int = 3) -> list[tuple]:
    from .dataset import DriftDataset

    train_urls = roles["train"]

    def plain(epoch):
        return (
            wds.WebDataset(train_urls, shardshuffle=len(train_urls), seed=seed + epoch)
            .shuffle(2000)
            .decode()
            .to_tuple("x.npy", "cls")
            .batched(64)
        )

    def gated(policy, keys):
        def make(epoch):
            ds = DriftDataset(train_urls, store=store, reference="clean", policy=policy, seed=seed)
            ds.set_epoch(epoch)
            return ds.shuffle(2000).decode().to_tuple(*keys).batched(64)

        return make

    ways = [
        ("plain webdataset", plain, False),
        ('DriftDataset policy="skip"', gated("skip", ("x.npy", "cls")), False),
        ('DriftDataset policy="reweight"', gated("reweight", ("x.npy", "cls", "__weight__")), True),
        ('DriftDataset policy="resample"', gated("resample", ("x.npy", "cls")), False),
    ]
    rows = []
    threads = torch.get_num_threads()
    # a 16-64-4 MLP on batches of 64 runs fastest on one thread: with two, torch's intra-op
    # threads spin against the loader (30x the CPU time on a busy 2-core machine, measured)
    torch.set_num_threads(1)
    try:
        for label, make, weighted in ways:
            start = time.perf_counter()
            model, seen = train(make, weighted, epochs, seed)
            elapsed = time.perf_counter() - start
            rows.append((label, seen, accuracy(model, roles["holdout"]), elapsed))
    finally:
        torch.set_num_threads(threads)
    return rows


def run_demo(folder: str | None = None, seed: int = 0) -> int:
    """Run the whole demo; returns the exit status. ``folder`` is kept afterwards (with its
    data and store, so the printed commands can be run); without it a temporary folder is
    used and removed."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="driftloader-demo-") as tmp:
            return _run(Path(tmp), seed, keep=False)
    return _run(Path(folder), seed, keep=True)


SCORE_LINE = (
    "   score >= 1 means drifted; effect is the test's effect size (e.g. a shift in reference "
    "standard deviations), which counts only above the test's floor (0.1 for most)"
)


def commands(folder: Path) -> list[str]:
    """The CLI commands that repeat the demo's steps on ``folder``, runnable as printed."""
    data, store = shlex.quote(str(folder / "data")), shlex.quote(str(folder / "store"))
    return [
        f"driftloader check {data}/train-*.tar --store {store} --reference clean",
        f"driftloader report --store {store} --reference clean -o {shlex.quote(str(folder))}"
        "/report.html",
        f"driftloader profile {data}/holdout-*.tar --store {store}",
    ]


def _run(folder: Path, seed: int, keep: bool = True) -> int:
    from .check import check_shards
    from .profiling import profile_shards
    from .progress import reporting
    from .store import ProfileStore

    started = time.perf_counter()
    where = folder if keep else "a temporary folder (removed at the end; --folder DIR keeps it)"
    print(f"driftloader demo in {where}")
    roles = build_data(folder, seed)
    print(
        f"1. wrote {sum(map(len, roles.values()))} shards of {PER_SHARD} samples: "
        f"{REFERENCE_SHARDS} clean reference, training mix {KINDS}, 2 clean held-out"
    )
    store = ProfileStore(str(folder / "store"))
    profile_shards(roles["reference"], store, progress=False)
    reference = store.build_reference("clean", roles["reference"])
    print(f"2. reference 'clean': {reference.n:,} samples, {len(reference.kinds)} features")
    print("3. each training shard checked against 'clean' (`driftloader check`):")
    print(SCORE_LINE)
    with reporting(False):  # the demo prints its own lines, not a progress summary
        results = check_shards(roles["train"], store, "clean")
    for result in results:
        name = Path(result.url).name
        top = ", ".join(
            f"{f.name} {f.metric} effect {f.effect:.2f}" for f in result.top(3) if f.drifted
        )
        print(
            f"   {'DRIFT' if result.drifted else 'ok   '} {name:<24} score {result.score:7.1f}  {top}"
        )
    print("4. the same model trained four ways, 3 epochs, accuracy on the clean held-out set:")
    for label, seen, acc, seconds in _four_ways(roles, store, seed):
        print(f"   {label:<32} {seen:>6,} samples seen  accuracy {acc:6.1%}  ({seconds:.1f} s)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    if keep:
        print("try the commands on the demo's data and store:")
        print("\n".join(f"   {c}" for c in commands(folder)))
    else:
        print("run `driftloader demo --folder DIR` to keep the data and get commands to try on it")
    return 0
