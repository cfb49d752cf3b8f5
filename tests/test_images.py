"""Image features by content (driftloader.features.images): each value against the same statistic
computed directly with PIL/numpy on a full-size decode, within the error the module documents
for draft-mode decoding; failures counted; names a person understands."""

from __future__ import annotations

import io
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from driftloader.features import IMAGE_STATS, DefaultFeaturizer
from driftloader.features.images import jpeg_quality, pixel_stats, reduction

SIZE = 128  # the default analysis size
LUMA = np.array([0.299, 0.587, 0.114])


def photo(seed: int, width: int = 640, height: int = 480, shift: float = 0.0) -> np.ndarray:
    """A photo-like RGB image: smooth colour gradients, soft blobs, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.zeros((height, width, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 110 + 60 * np.sin(3 * a * x + 2 * b * y + 6 * p)
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.6), rng.uniform(0.03, 0.15)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
        img += blob[..., None] * rng.uniform(-70, 70, 3)
    img += rng.normal(0, 4, img.shape) + shift
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def full_size_stats(raw: bytes) -> dict[str, float]:
    """The documented statistics on a full-size decode (sharpness: box-reduced by the factor)."""
    with Image.open(io.BytesIO(raw)) as img:
        rgb_img = img.convert("RGB")
    rgb = np.asarray(rgb_img, dtype=np.float64)
    luma = rgb @ LUMA
    means = rgb.reshape(-1, 3).mean(axis=0)
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
    w, h = rgb_img.size
    small = rgb_img.reduce(reduction(w, h, SIZE))
    sl = np.asarray(small, dtype=np.float64) @ LUMA
    lap = 4 * sl[1:-1, 1:-1] - sl[:-2, 1:-1] - sl[2:, 1:-1] - sl[1:-1, :-2] - sl[1:-1, 2:]
    return {
        "brightness": luma.mean(),
        "contrast": luma.std(),
        "red": means[0] / means.sum(),
        "green": means[1] / means.sum(),
        "blue": means[2] / means.sum(),
        "saturation": sat.mean(),
        "sharpness": lap.var(),
        "width": w,
        "height": h,
    }


def featurize(*raws: bytes, field: str = "jpg") -> tuple[dict, DefaultFeaturizer]:
    featurizer = DefaultFeaturizer()
    samples = [{"__key__": str(i), "__url__": "u", field: raw} for i, raw in enumerate(raws)]
    return featurizer(samples), featurizer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draft_mode_features_match_full_size_decodes_within_documented_error(seed: int) -> None:
    raw = encode(photo(seed), quality=90)
    batch, featurizer = featurize(raw)
    got = {stat: float(batch[f"jpg.{stat}"].values[0]) for stat in IMAGE_STATS}
    want = full_size_stats(raw)
    assert featurizer.errors == 0
    assert (got["width"], got["height"]) == (640, 480)
    assert got["aspect"] == pytest.approx(640 / 480) and got["area"] == 640 * 480
    assert got["bytes"] == len(raw)
    assert got["brightness"] == pytest.approx(want["brightness"], abs=1.0)
    for c in ("red", "green", "blue"):
        assert got[c] == pytest.approx(want[c], abs=0.01)
    assert got["saturation"] == pytest.approx(want["saturation"], abs=0.02)
    assert 0.9 * want["contrast"] <= got["contrast"] <= 1.01 * want["contrast"]
    assert got["sharpness"] == pytest.approx(want["sharpness"], rel=0.15)
    assert got["quality"] == pytest.approx(90, abs=2)
    assert reduction(640, 480, SIZE) == 4 and reduction(100, 50, SIZE) == 1
    assert batch["jpg.mode"].values.tolist() == ["RGB/3"]


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_quality_is_estimated_from_the_quantization_tables(quality: int) -> None:
    raw = encode(photo(0, 96, 64), quality=quality)
    with Image.open(io.BytesIO(raw)) as img:
        assert jpeg_quality(img.quantization) == pytest.approx(quality, abs=2)
    assert jpeg_quality(None) != jpeg_quality(None)  # NaN: no tables


def test_png_small_grey_and_broken_images() -> None:
    rgb = photo(3, 90, 60)
    grey = rgb.mean(axis=2).astype(np.uint8)
    raws = [encode(rgb, "PNG"), encode(grey, "JPEG"), b"not an image", encode(rgb)[:300]]
    batch, featurizer = featurize(*raws, field="png")
    assert featurizer.errors == 2  # garbage and a truncated JPEG are counted, not raised
    assert batch["png.mode"].values.tolist() == ["RGB/3", "L/1", None, None]
    brightness = batch["png.brightness"].values
    assert brightness[0] == pytest.approx((rgb @ LUMA).mean(), abs=1e-3)  # below SIZE: exact
    assert brightness.mask.tolist() == [False, False, True, True]
    assert batch["png.bytes"].values.tolist() == [float(len(r)) for r in raws]  # always known
    assert np.ma.is_masked(batch["png.quality"].values[0])  # PNG has no JPEG quality
    assert batch["png.saturation"].values[1] == pytest.approx(0.0, abs=0.01)


def test_content_shifts_move_the_named_features() -> None:
    base = photo(4)
    brighter = np.clip(base.astype(int) + 20, 0, 255).astype(np.uint8)
    swapped = base[..., ::-1].copy()
    blurred = np.asarray(Image.fromarray(base).resize((160, 120)).resize((640, 480)))
    batch, _ = featurize(*(encode(a) for a in (base, brighter, swapped, blurred)))
    b = batch["jpg.brightness"].values
    assert b[1] - b[0] == pytest.approx(20, abs=2)
    assert batch["jpg.red"].values[2] == pytest.approx(batch["jpg.blue"].values[0], abs=0.01)
    assert batch["jpg.sharpness"].values[3] < 0.7 * batch["jpg.sharpness"].values[0]


def test_decode_images_false_keeps_byte_size_only() -> None:
    featurizer = DefaultFeaturizer(decode_images=False)
    batch = featurizer([{"__key__": "a", "jpg": encode(photo(0, 32, 32))}])
    assert list(batch) == ["jpg.bytes"]


def float64_stats(rgb: np.ndarray) -> np.ndarray:
    """``pixel_stats`` computed plainly in float64, with fresh arrays for everything."""
    x = rgb.astype(np.float64)
    luma = x @ LUMA
    means = x.reshape(-1, 3).mean(axis=0)
    high, low = x.max(axis=2), x.min(axis=2)
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
    if min(rgb.shape[:2]) >= 3:
        lap = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
        sharpness = (lap - luma[1:-1, :-2] - luma[1:-1, 2:]).var()
    else:
        sharpness = np.nan
    total = means.sum()
    relative = means / total if total else np.full(3, 1 / 3)
    return np.array([luma.mean(), luma.std(), *relative, sat.mean(), sharpness])


@pytest.mark.parametrize(
    "shape",
    [(96, 128), (1, 1), (2, 7), (3, 3), (255, 17), (255, 255), (600, 500)],  # 600x500: not kept
)
def test_pixel_stats_on_kept_buffers_match_a_plain_float64_computation(shape: tuple) -> None:
    rng = np.random.default_rng(sum(shape))
    for rgb in (rng.integers(0, 256, (*shape, 3), dtype=np.uint8), np.zeros((*shape, 3), np.uint8)):
        got = np.array(pixel_stats(rgb))
        np.testing.assert_allclose(got, float64_stats(rgb), rtol=1e-5, atol=1e-6)


def test_pixel_stats_makes_no_array_the_size_of_an_image_once_its_buffers_are_kept() -> None:
    """Per-image arrays cost a third more where glibc's trim threshold is set (Dask workers)."""
    rgb = np.asarray(Image.fromarray(photo(3, 200, 150)))
    pixel_stats(rgb)  # grows this thread's buffers
    tracemalloc.start()
    try:
        first = pixel_stats(rgb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 150 * 4 // 2, f"{peak} bytes at the peak: a float32 plane was made"
    assert first == pixel_stats(rgb)


def test_pixel_stats_from_threads_at_once_equal_one_thread() -> None:
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(90, 120), (40, 250)] * 8
    ]
    expected = [pixel_stats(rgb) for rgb in images]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(pixel_stats, images)) == expected
