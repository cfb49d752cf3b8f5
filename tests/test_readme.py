"""The README's Python snippets run when pasted as a script (a new process, the snippet as its
``__main__``), on data shaped and placed as they assume."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from .conftest import write_shard

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)
# The serving snippet continues the store and the requests of its section; tests/test_serving.py
# runs it with those; tests/test_spec.py runs the FeatureSpec snippet.
RUN_AS_SCRIPTS = ["before: ds = wds.WebDataset", "dl.profile_shards(", "dl.log_drift("]


def _snippet(marker: str) -> str:
    (code,) = [s for s in SNIPPETS if marker in s]
    return code


def _run_as_script(code: str, cwd: Path, name: str) -> str:
    """Run ``code`` as ``python name`` in ``cwd``; returns its stdout."""
    script = cwd / name
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_one_line_swap(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    for s in range(2):
        with wds.TarWriter(str(tmp_path / "shards" / f"train-{s:06d}.tar")) as sink:
            for i in range(70):
                buf = io.BytesIO()
                pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buf, format="JPEG")
                sink.write({"__key__": f"{s}-{i}", "jpg": buf.getvalue(), "cls": b"1"})
    check = (
        "\nimages, labels = next(iter(loader))\n"
        "print(tuple(images.shape), labels.tolist() == [1] * 64)\n"
    )
    out = _run_as_script(_snippet("before: ds = wds.WebDataset") + check, tmp_path, "swap.py")
    assert out.split() == ["(64,", "3,", "8,", "8)", "True"]


def test_profiles_reference_policy_and_tensorboard_on_s3(s3_env, tmp_path):
    import boto3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = boto3.client("s3", endpoint_url=s3_env)
    if "bucket" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="bucket")
    for i in range(128):  # the snippet's shard-{000000..000127}.tar, small
        path = tmp_path / f"{i}.tar"
        write_shard(path, 6, seed=i, start=i * 100)
        client.upload_file(str(path), "bucket", f"train/shard-{i:06d}.tar")
    for n, (name, shift) in enumerate((("clean", 0.0), ("shifted", 3.0))):
        path = tmp_path / f"{name}.tar"
        write_shard(path, 300, seed=1000 + n, start=10**6, shift=shift)
        client.upload_file(str(path), "bucket", f"new/{name}.tar")
    # unguarded, profile_shards(workers=8) would crash: its processes import the script again
    out = _run_as_script(_snippet("dl.profile_shards("), tmp_path, "drift.py")
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"clean.tar", "shifted.tar"}
    assert " passed " in rows["clean.tar"] and " dropped after probe " in rows["shifted.tar"]

    _run_as_script(_snippet("dl.log_drift("), tmp_path, "dashboard.py")
    (events_file,) = (tmp_path / "runs" / "drift").glob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file))
    events.Reload()
    drifted = events.Scalars("drift/shards/drifted")
    assert [(e.step, e.value) for e in drifted] == [(0, 1.0), (1, 1.0)]


@pytest.mark.parametrize("marker", RUN_AS_SCRIPTS)
def test_the_snippets_are_where_the_tests_look(marker):
    assert marker in README and _snippet(marker)


def test_every_snippet_is_run():
    serving = [s for s in SNIPPETS if "ServingMonitor" in s]
    spec = [s for s in SNIPPETS if "FeatureSpec.from_json" in s]  # run by tests/test_spec.py
    assert len(SNIPPETS) == len(RUN_AS_SCRIPTS) + len(serving) + len(spec)
