"""The HTML report: structure, escaping, embedded images, URL selection and the CLI."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from driftloader.cli import main
from driftloader.drift import compare
from driftloader.errors import ReferenceNotFound
from driftloader.features import Column
from driftloader.profile import Profile
from driftloader.report import render_report, shard_rows, write_report
from driftloader.sources import Shard, stat_shard
from driftloader.store import ProfileStore

pytest.importorskip("matplotlib")

N = 600
FP = "test-featurizer"
EVIL = "<script>alert(1)</script>"
EVIL_URL = f"/data/{EVIL}.tar"
EVIL_FEATURE = "<img src=x onerror=alert(2)>"


def make_profile(
    url: str, seed: int, shift: float = 0.0, dog: float = 0.3, version: str = "v1", source="a"
) -> Profile:
    """Numeric f0, f1 (f0 shifted by ``shift``), categorical cls and a feature named with markup."""
    rng = np.random.default_rng(seed)
    profile = Profile(FP, url=url, version=version, source=source, created=1.7e9 + seed * 3600)
    cls = rng.choice(["cat", "dog", "bird"], N, p=[0.7 - dog, dog, 0.3]).astype(object)
    return profile.update(
        {
            "f0": Column("numeric", np.ma.asarray(rng.normal(shift, 1.0, N))),
            "f1": Column("numeric", np.ma.asarray(rng.normal(0.0, 1.0, N))),
            "cls": Column("categorical", cls),
            EVIL_FEATURE: Column("numeric", np.ma.asarray(rng.normal(shift, 1.0, N))),
        }
    )


def record(store: ProfileStore, profile: Profile, reference: Profile, action: str) -> None:
    """A decision row as DriftDataset records it."""
    d = compare(profile, reference)
    row = {"reference": "ref", "action": action, "drifted": d.drifted, "score": d.score}
    row.update(n=profile.n, decided=profile.created + 60, top=[f.to_dict() for f in d.top(5)])
    store.record(profile.url, profile.version, row)


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    """Reference "ref"; 2 clean, 3 drifted (one named with markup), 1 unrecorded, 1 with creds."""
    store = ProfileStore(str(tmp_path / "store"))
    reference = Profile.merged(make_profile(f"/ref/{i}.tar", 100 + i) for i in range(4))
    store.put_reference("ref", reference)
    shards = {
        "/data/clean-0.tar": make_profile("/data/clean-0.tar", 1),
        "/data/clean-1.tar": make_profile("/data/clean-1.tar", 2, source=f"b{EVIL}"),
        "/data/shifted.tar": make_profile("/data/shifted.tar", 3, shift=1.0),
        "/data/dogs.tar": make_profile("/data/dogs.tar", 4, dog=0.6),
        EVIL_URL: make_profile(EVIL_URL, 5, shift=0.8),
    }
    for url, p in shards.items():
        store.put_profile(p)
        record(store, p, reference, "skipped" if "clean" not in url else "passed")
    store.put_profile(make_profile("/data/unrecorded.tar", 6, shift=0.7))
    store.put_profile(make_profile("s3://AKIAUSER:topsecret@bucket/creds.tar", 7))
    store.record("/data/clean-0.tar", "v1", {"validation": [f"f0 max above {EVIL}"]})
    store.record("/data/clean-0.tar", "v1", {"validation_reference": "ref"})
    return store


class Collector(HTMLParser):
    """Tags, text, table rows of #shards, image sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
        if tag == "tr" and self._table == "shards":
            self.rows.append([])
        if tag == "td" and self._table == "shards":
            self._cell = []
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(document: str) -> Collector:
    c = Collector()
    c.feed(document)
    c.close()
    c.rows = [r for r in c.rows if r]  # the header row has <th> only
    return c


def test_report_structure_rows_sorted_by_score(store):
    doc = render_report(store, "ref")
    c = parse(doc)
    assert doc.startswith("<!DOCTYPE html>") and "</html>" in doc
    assert len(c.rows) == 7
    by_url = {r[1]: r for r in c.rows}
    scores = [float(r[5]) for r in c.rows if r[5]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 7
    for url in ("/data/shifted.tar", "/data/dogs.tar", EVIL_URL, "/data/unrecorded.tar"):
        assert by_url[url][6] == "yes", url
    assert by_url["/data/clean-0.tar"][6] == "no"
    assert by_url["/data/unrecorded.tar"][7] == "compared"
    assert by_url["/data/shifted.tar"][7] == "skipped"
    assert "f0" in by_url["/data/shifted.tar"][8] and "cls" in by_url["/data/dogs.tar"][8]
    assert by_url["/data/clean-0.tar"][10] == "1"  # one validation failure
    text = "".join(c.text)
    assert "drifted shards" in text and "Most drifted features" in text


def test_markup_in_data_is_escaped_never_injected(store):
    doc = render_report(store, "ref")
    c = parse(doc)
    assert "script" not in c.tags
    assert EVIL not in doc and EVIL_FEATURE not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert {"img"} >= {t for t in c.tags if t in ("img", "script", "iframe", "object")}
    assert len(c.images) == sum(1 for t in c.tags if t == "img")
    text = "".join(c.text)
    assert EVIL_URL in text  # shown, as text
    assert EVIL_FEATURE in text  # the feature named with markup is a top feature, as text
    assert f"f0 max above {EVIL}" in text  # validation failure, as text
    assert f"b{EVIL}" in text  # source, as text


def test_credentials_never_embedded(store):
    doc = render_report(store, "ref")
    assert "topsecret" not in doc and "AKIAUSER" not in doc
    assert "s3://***@bucket/creds.tar" in doc


def test_every_embedded_image_is_a_png_that_decodes(store):
    from matplotlib.image import imread

    c = parse(render_report(store, "ref", top_features=3))
    assert len(c.images) == 1 + 3  # overview + one per top feature
    for src in c.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix) :], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(io.BytesIO(data), format="png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_top_features_zero_and_no_compare(store):
    doc = render_report(store, "ref", top_features=0, compare_stored=False)
    c = parse(doc)
    assert len(c.images) == 1
    row = {r[1]: r for r in c.rows}["/data/unrecorded.tar"]
    assert row[5] == "" and "no result recorded" in row[7]
    with pytest.raises(ValueError, match="top_features"):
        render_report(store, "ref", top_features=-1)
    with pytest.raises(ReferenceNotFound):
        render_report(store, "nope")


def test_fingerprint_mismatch_is_listed_not_compared(store):
    other = Profile("another-featurizer", url="/data/other.tar", version="v1")
    other.update({"f0": Column("numeric", np.ma.asarray(np.zeros(10)))})
    store.put_profile(other)
    rows = {r.url: r for r in shard_rows(store, "ref")}
    assert rows["/data/other.tar"].score is None
    assert "featurized differently" in rows["/data/other.tar"].error


def test_each_unrecorded_profile_is_compared_once(store, monkeypatch):
    """Shards without a recorded result are compared once each, and the row is that result."""
    import driftloader.report as report_module

    calls: list[str | None] = []

    def counting(profile, reference, config=None):
        calls.append(profile.url)
        return compare(profile, reference, config)

    monkeypatch.setattr(report_module, "compare", counting)
    render_report(store, "ref")
    assert sorted(calls) == sorted(["/data/unrecorded.tar", "s3://***@bucket/creds.tar"])
    ref = store.get_reference("ref")
    for row in shard_rows(store, "ref"):
        if row.action == "compared":
            expected = compare(store.get_profile(row.url, row.version), ref)
            assert (row.score, row.drifted) == (expected.score, expected.drifted)
            assert row.top == [f.to_dict() for f in expected.top(5)]


def _real_shards(tmp_path: Path, store: ProfileStore) -> list[str]:
    """Two files on disk whose profiles are stored at their current versions (one drifted)."""
    urls = []
    for i, shift in enumerate((0.0, 1.0)):
        path = tmp_path / "real" / f"shard-{i}.tar"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(100))
        version = stat_shard(Shard(str(path))).version
        store.put_profile(make_profile(str(path), 20 + i, shift=shift, version=version))
        urls.append(str(path))
    return urls


def test_urls_restrict_the_report_to_those_shards(store, tmp_path):
    urls = _real_shards(tmp_path, store)
    rows = shard_rows(store, "ref", str(tmp_path / "real" / "shard-*.tar"))
    assert sorted(r.url for r in rows) == sorted(urls)
    assert [r.drifted for r in rows] == [True, False]  # sorted by score
    path = write_report(tmp_path / "r.html", store, "ref", urls[:1])
    assert len(parse(Path(path).read_text()).rows) == 1


def test_cli_report_end_to_end(store, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--store", store.url, "--reference", "ref", "-o", str(out)]) == 0
    c = parse(out.read_text(encoding="utf-8"))
    assert len(c.rows) == 7 and "script" not in c.tags
    assert str(out) in capsys.readouterr().out
    urls = _real_shards(tmp_path, store)
    out2 = tmp_path / "two.html"
    argv = ["report", "--store", store.url, "--reference", "ref", *urls, "-o", str(out2)]
    assert main([*argv, "--top-features", "2"]) == 0
    assert len(parse(out2.read_text(encoding="utf-8")).rows) == 2
    bad = ["report", "--store", store.url, "--reference", "missing", "-o", str(out)]
    assert main(bad) == 2


def test_chromium_renders_the_report(store, tmp_path):
    """Headless Chromium (Debian's package, which the README's test command installs) draws the
    page: the screenshot is the window's size and shows the plots, not a blank or broken page."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    from PIL import Image

    page = tmp_path / "report.html"
    write_report(page, store, "ref")
    shot = tmp_path / "shot.png"
    quiet = ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *quiet]
    args += [f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}"]
    subprocess.run([*args, "--window-size=1200,2000", page.as_uri()], check=True, timeout=120)
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 100  # text alone is a few greys; the plots bring many colours
    saturated = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 60
    assert saturated.mean() > 0.001  # coloured plot lines and bars were painted


def test_most_drifted_features_lists_only_features_that_drifted(store):
    from driftloader.report import top_features

    rows = shard_rows(store, "ref")
    listed = top_features(rows, 10)
    drifted = {t["name"] for r in rows for t in r.top if t.get("drifted")}
    assert listed and set(listed) == drifted  # every drifted feature, and nothing else
    assert "f1" not in listed  # f1 never moves in any shard


def test_quarantine_leaves_serving_windows_alone(store):
    from driftloader.versions import quarantine

    window = {"reference": "ref", "action": "served", "drifted": True, "score": 3.0}
    store.record("serving://run/window-1", None, window)
    result = quarantine(store, "ref")
    assert result.shards and all(not s["url"].startswith("serving://") for s in result.shards)


def _jpeg_samples(seed: int, n: int, brighter: int = 0) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:64] / 64
    out = []
    for i in range(n):
        img = np.stack([110 + 60 * np.sin(3 * rng.uniform(-1, 1) * x + 6 * y)] * 3, axis=-1)
        img = np.clip(img + rng.normal(0, 4, img.shape) + brighter, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append({"__key__": str(i), "jpg": buf.getvalue()})
    return out


def _vector_samples(seed: int, n: int, rho: float) -> list[dict]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    out = []
    for i, row in enumerate(x):
        buf = io.BytesIO()
        np.save(buf, row)
        out.append({"__key__": str(i), "x.npy": buf.getvalue()})
    return out


def _content_profile(url: str, seed: int, brighter: int = 0, rho: float = 0.8) -> Profile:
    from driftloader.profiling import ShardProfiler

    jpegs, vectors = _jpeg_samples(seed, 200, brighter), _vector_samples(seed, 200, rho)
    profiler = ShardProfiler(Shard(url, "v1"))
    profiler.add_many([{**a, **b} for a, b in zip(jpegs, vectors)])
    return profiler.finish()


def test_image_and_joint_sections_for_a_brightened_and_a_flipped_shard(tmp_path):
    store = ProfileStore(str(tmp_path / "store"))
    reference = Profile.merged([_content_profile(f"/ref/{i}.tar", i) for i in range(3)])
    store.put_reference("ref", reference)
    bright = _content_profile("/data/bright.tar", 10, brighter=20)
    flipped = _content_profile("/data/flipped.tar", 11, rho=-0.8)
    for p in (bright, flipped):
        store.put_profile(p)
        record(store, p, reference, "passed")
    asked: list[str] = []  # profiles read one at a time (the sections read theirs at once)
    get_profile = store.get_profile
    store.get_profile = lambda url, *a, **k: asked.append(url) or get_profile(url, *a, **k)
    render_report(store, "ref", top_features=0)  # no feature plot has read them before
    assert asked == []
    doc = render_report(store, "ref")
    text = "".join(parse(doc).text)
    assert "Image features" in text and "image field jpg" in text
    assert "jpg.brightness" in text and "jpg.sharpness" in text and "/data/bright.tar" in text
    assert 'alt="jpg: brightness, contrast and sharpness' in doc
    assert "Joint drift" in text and "joint: x.npy (direction" in text
    assert "scatter of x.npy[0] and x.npy[1]" in doc or "scatter of x.npy[1] and x.npy[0]" in doc
    # the contact sheet: the reference's and the brightened shard's stored thumbnails
    for label in ("reference", "/data/bright.tar"):
        sheet = re.findall(
            rf'alt="jpg thumbnail, {label}" src="data:image/jpeg;base64,([^"]+)"', doc
        )
        assert len(sheet) == 4
        assert all(base64.b64decode(t)[:2] == b"\xff\xd8" for t in sheet)  # JPEG
    assert len(bright.thumbnails["jpg"]) == 4 and "x.npy" not in bright.thumbnails
    # thumbnails count in the size bound
    assert len(bright.to_json()) / len(bright.kinds) <= 8192


def test_no_image_or_joint_section_without_such_drift(store):
    doc = render_report(store, "ref")
    assert "Image features" not in doc and "Joint drift" not in doc
