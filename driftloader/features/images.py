"""Image features by content, decoded small: brightness, contrast, colour balance, saturation,
geometry, sharpness, JPEG quality, mode and byte size.

An image is decoded small: reduced by the largest factor of 2, 4 or 8 that keeps its longer side
at least ``ImageOptions.size`` pixels (default 128; so 128-255 px). A JPEG is decoded through
PIL's draft mode, which lets libjpeg scale by that factor in the DCT (the cheap part); other
formats are decoded in full and box-reduced by the same factor. Features (``<field>.<name>``):

* ``bytes``: size of the encoded image; ``width``, ``height``, ``aspect`` (width / height),
  ``area`` (pixels): of the full image, from its header;
* ``brightness``: mean luma (ITU-R 601, 0-255); ``contrast``: RMS contrast, the standard
  deviation of luma; ``red``, ``green``, ``blue``: each channel's mean divided by the sum of
  the three means (1/3 each for grey); ``saturation``: mean HSV saturation (0-1);
* ``sharpness``: variance of the 4-neighbour Laplacian of luma of the reduced image;
* ``quality``: JPEG quality (1-100) estimated from the luminance quantization table against the
  IJG standard table (missing for other formats);
* ``mode``: categorical PIL mode and channel count, e.g. ``"RGB/3"``, ``"L/1"``.

Documented error of the analysis size against the same statistic computed on a full-size
decode (checked by tests/test_images.py on photos-like test images): brightness and colour means
within 1 unit (0-255) and 0.01, saturation within 0.02; contrast lower by at most 10% (the detail
finer than the reduced image is averaged away); sharpness is defined on the reduced image and
matches a full decode box-reduced by the same factor within 15% (the DCT scaling and the box
filter smooth slightly differently). A decode failure counts one error and leaves the sample's image
features missing; nothing raises.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftloader.features.base import BatchBuilder, as_bytes, check_flag, check_int

IMAGE_STATS = (
    "bytes",
    "width",
    "height",
    "aspect",
    "area",
    "brightness",
    "contrast",
    "red",
    "green",
    "blue",
    "saturation",
    "sharpness",
    "quality",
)
BYTES_ONLY = ("bytes",)
_LUMA = np.array([0.299, 0.587, 0.114])
# IJG standard luminance quantization table (JPEG Annex K.1); order does not matter: only sums.
_STD_LUMA_TABLE_SUM = float(
    sum(
        [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55]
        + [14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62]
        + [18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92]
        + [49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
    )
)


@dataclass(frozen=True)
class ImageOptions:
    """``decode``: compute content features (False: byte size only); ``size``: the smallest
    longer side, in pixels, that images are reduced to (see ``reduction``)."""

    decode: bool = True
    size: int = 128

    def __post_init__(self) -> None:
        check_flag("decode_images", self.decode)
        check_int("image size", self.size, 8)

    def to_dict(self) -> dict[str, Any]:
        return {"decode": self.decode, "size": self.size}

    @classmethod
    def from_dict(cls, d: Any) -> ImageOptions:
        if not isinstance(d, dict) or not set(d) <= {"decode", "size"}:
            raise ValueError(f"image options must be a dict with 'decode' and 'size', got {d!r}")
        return cls(**d)


def jpeg_quality(tables: dict[int, Any] | None) -> float:
    """IJG quality (1-100) estimated from JPEG quantization tables; NaN without tables."""
    if not tables or 0 not in tables:
        return float("nan")
    scale = 100.0 * float(sum(tables[0])) / _STD_LUMA_TABLE_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, round(quality))))


def reduction(width: int, height: int, size: int) -> int:
    """The reduction factor (1, 2, 4 or 8) of the analysis image: the largest that keeps the
    longer side at least ``size`` pixels (what JPEG draft mode picks for that request)."""
    longest = max(width, height)
    factor = 1
    while factor < 8 and -(-longest // (factor * 2)) >= size:
        factor *= 2
    return factor


def analysis_image(img: Any, size: int) -> Any:
    """``img`` decoded small, as RGB: a JPEG through draft mode (libjpeg's DCT scaling by the
    ``reduction`` factor), other formats decoded in full and box-reduced by the same factor."""
    factor = reduction(*img.size, size)
    if factor > 1 and img.format == "JPEG":
        width, height = img.size
        img.draft("RGB", (-(-width // factor), -(-height // factor)))
        factor = max(1, factor // round(width / img.size[0]))  # left after draft (CMYK: all)
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # no copy of what is RGB already
    return rgb.reduce(factor) if factor > 1 else rgb


class _Scratch(threading.local):
    """This thread's float buffers for ``pixel_stats``, kept from image to image and grown to
    the largest, so that no array the size of an image is made per image. Made and freed each
    time, they cost a quarter more where ``MALLOC_TRIM_THRESHOLD_`` is set, as in every Dask
    worker: glibc then gives heap pages back on each free and faults them in again."""

    # pixels: 255 x 255, the largest analysis image at the default size (2.4 MB kept a
    # thread, e.g. a server's); a larger one gets buffers of its own, not kept
    LIMIT = 1 << 16

    def __init__(self) -> None:
        self.f32 = np.empty((7, 0), np.float32)
        self.f64 = np.empty(0, np.float64)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Seven float32 rows and one float64 row of ``n`` elements each."""
        if n > self.LIMIT:
            return np.empty((7, n), np.float32), np.empty(n, np.float64)
        if self.f32.shape[1] < n:
            self.f32, self.f64 = np.empty((7, n), np.float32), np.empty(n, np.float64)
        return self.f32[:, :n], self.f64[:n]


_scratch = _Scratch()
_F32_EXACT_PIXELS = (1 << 24) // 255  # float32 sums 0-255 values exactly up to this many


def _mean(x: np.ndarray, work: np.ndarray) -> float:
    """``x.mean(dtype=np.float64)``, cast into ``work`` (float64, ``x.size``) and summed as one
    row: numpy makes a 64 KiB buffer to cast, or to sum over two axes."""
    np.copyto(work.reshape(x.shape), x)
    return float(np.add.reduce(work)) / x.size


def _mean_var(x: np.ndarray, work: np.ndarray) -> tuple[float, float]:
    """``x.mean(dtype=np.float64)`` and ``x.var(dtype=np.float64)``, computed in ``work``."""
    mean = _mean(x, work)
    work -= mean
    np.multiply(work, work, out=work)
    return mean, float(np.add.reduce(work)) / x.size


def pixel_stats(rgb: np.ndarray) -> tuple[float, ...]:
    """(brightness, contrast, red, green, blue, saturation, sharpness) of an (h, w, 3) array."""
    h, w = rgb.shape[:2]
    f32, f64 = _scratch.take(h * w)
    r, g, b, luma, high, low, spare = (row.reshape(h, w) for row in f32)
    np.copyto(f32[:3].reshape(3, h, w), np.moveaxis(rgb, 2, 0))  # planes: fast
    np.multiply(r, np.float32(_LUMA[0]), out=luma)
    luma += np.multiply(g, np.float32(_LUMA[1]), out=spare)
    luma += np.multiply(b, np.float32(_LUMA[2]), out=spare)
    if h * w <= _F32_EXACT_PIXELS:  # the channels' sums are integers under 2^24: exact
        sums = np.einsum("ij->i", f32[:3]).astype(np.float64)
    else:
        sums = np.add.reduce(f32[:3], axis=1, dtype=np.float64)
    means = sums / (h * w)
    total = means.sum()
    relative = means / total if total > 0 else np.full(3, 1 / 3)
    np.maximum(np.maximum(r, g, out=high), b, out=high)
    np.minimum(np.minimum(r, g, out=low), b, out=low)
    saturation = np.subtract(high, low, out=low)  # 0 where high is 0 (then all three are)
    np.divide(saturation, np.maximum(high, 1, out=spare), out=saturation)
    brightness, luma_var = _mean_var(luma, f64)
    if h >= 3 and w >= 3:
        # The 4-neighbour Laplacian of rows 1..h-2 over flat rows, every operand one contiguous
        # run (numpy buffers 2-D strided operands); columns 0 and w-1 wrap and are left out.
        flat, inner = luma.reshape(-1), (h - 2) * w
        lap = spare.reshape(-1)[:inner]
        np.multiply(flat[w : w + inner], np.float32(4), out=lap)
        lap -= flat[:inner]
        lap -= flat[2 * w : 2 * w + inner]
        lap -= flat[w - 1 : w - 1 + inner]
        lap -= flat[w + 1 : w + 1 + inner]
        _, sharpness = _mean_var(lap.reshape(h - 2, w)[:, 1:-1], f64[: (h - 2) * (w - 2)])
    else:
        sharpness = float("nan")
    return (
        brightness,
        math.sqrt(luma_var),
        *map(float, relative),
        _mean(saturation, f64),
        sharpness,
    )


def image_stats(raw: bytes | bytearray | memoryview, size: int) -> tuple[tuple[float, ...], str]:
    """All ``IMAGE_STATS`` of one encoded image, and its mode category."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        width, height = img.size
        mode = f"{img.mode}/{len(img.getbands())}"
        quality = (
            jpeg_quality(getattr(img, "quantization", None)) if img.format == "JPEG" else np.nan
        )
        rgb = np.asarray(analysis_image(img, size))
    content = pixel_stats(rgb)
    geometry = (float(width), float(height), width / height if height else np.nan, width * height)
    return (float(len(raw)), *geometry, *content, float(quality)), mode


def image_features(
    batch: BatchBuilder, name: str, field: str, values: list[Any], options: ImageOptions
) -> None:
    """The image columns of a field (byte size only unless ``options.decode``)."""
    stats = IMAGE_STATS if options.decode else BYTES_ONLY
    data = np.zeros((len(stats), batch.n))
    mask = np.ones((len(stats), batch.n), dtype=bool)
    modes: list[str | None] = [None] * batch.n
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            raw = as_bytes(value)
            data[0, i], mask[0, i] = len(raw), False
            if options.decode:
                data[:, i], modes[i] = image_stats(raw, options.size)
                mask[:, i] = False
        except Exception:  # PIL on untrusted bytes: count, never crash (byte size is kept)
            batch.error()
    mask |= np.isnan(data)  # no quality outside JPEG, no sharpness below 3x3 px
    for j, stat in enumerate(stats):
        batch.numeric(f"{name}.{stat}", field, data[j], mask[j])
    if options.decode:
        batch.objects("categorical", f"{name}.mode", field, modes)
