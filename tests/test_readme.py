"""The README's Python snippets run as written, on data shaped as they assume."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from .conftest import write_shard

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)


def _snippet(marker: str) -> str:
    (code,) = [s for s in SNIPPETS if marker in s]
    return code


def test_the_one_line_swap(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    urls = []
    for s in range(2):
        urls.append(str(tmp_path / f"img-{s}.tar"))
        with wds.TarWriter(urls[-1]) as sink:
            for i in range(70):
                buf = io.BytesIO()
                pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buf, format="JPEG")
                sink.write({"__key__": f"{s}-{i}", "jpg": buf.getvalue(), "cls": b"1"})
    namespace = {"torch": torch, "urls": urls}
    exec(_snippet("before: ds = wds.WebDataset"), namespace)
    images, labels = next(iter(namespace["loader"]))
    assert images.shape == (64, 3, 8, 8) and labels.tolist() == [1] * 64


def test_profiles_reference_and_policy_on_s3(s3_env, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env)
    if "bucket" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="bucket")
    for i in range(128):  # the snippet's shard-{000000..000127}.tar, small
        path = tmp_path / f"{i}.tar"
        write_shard(path, 6, seed=i, start=i * 100)
        client.upload_file(str(path), "bucket", f"train/shard-{i:06d}.tar")
    new_urls = []
    for name, shift in (("clean", 0.0), ("shifted", 3.0)):
        path = tmp_path / f"{name}.tar"
        write_shard(path, 300, seed=1000 + len(new_urls), start=10**6, shift=shift)
        client.upload_file(str(path), "bucket", f"new/{name}.tar")
        new_urls.append(f"s3://bucket/new/{name}.tar")
    namespace: dict = {"new_urls": new_urls}
    exec(_snippet("dl.ProfileStore("), namespace)
    actions = {Path(r["url"]).name: r["action"] for r in namespace["ds"].drift_report()}
    assert actions == {"clean.tar": "passed", "shifted.tar": "dropped after probe"}


@pytest.mark.parametrize("marker", ["before: ds = wds.WebDataset", "dl.ProfileStore("])
def test_the_snippets_are_where_the_tests_look(marker):
    assert marker in README and _snippet(marker)
