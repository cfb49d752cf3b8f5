"""The examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", ["weighted_loss.py", "embedding_drift.py"])
def test_example_runs(script):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def _run(*args: str) -> subprocess.CompletedProcess:
    script = str(EXAMPLES / "swap_in_training_loop.py")
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=300
    )


def test_swap_example_takes_help_and_field_names_and_prints_no_deleted_path(tmp_path):
    import io
    import json

    import numpy as np
    import webdataset as wds
    from PIL import Image

    helped = _run("--help")
    assert helped.returncode == 0 and "--input" in helped.stdout and "--label" in helped.stdout
    rng = np.random.default_rng(0)
    shard = tmp_path / "images-0.tar"
    with wds.TarWriter(str(shard)) as sink:  # a user's corpus: JPEGs of varying size, JSON labels
        for i in range(40):
            pixels = rng.integers(0, 255, (12 + i % 5, 10, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG")
            label = json.dumps({"label": i % 3}).encode()
            sink.write({"__key__": f"{i:04d}", "jpg": buf.getvalue(), "json": label})
    store = tmp_path / "store"
    args = ["--input", "jpg", "--label", "json:label", "--classes", "3", "--store", str(store)]
    result = _run(str(shard), *args, "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert f"1 shard profiles in {store}" in result.stdout and store.is_dir()
    generated = _run()  # data and store in a temporary folder, removed after
    assert generated.returncode == 0, generated.stderr
    assert "temporary" in generated.stdout and "/tmp" not in generated.stdout
