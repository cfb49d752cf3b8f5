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
    rgb = img.convert("RGB")
    return rgb.reduce(factor) if factor > 1 else rgb


def pixel_stats(rgb: np.ndarray) -> tuple[float, ...]:
    """(brightness, contrast, red, green, blue, saturation, sharpness) of an (h, w, 3) array."""
    r, g, b = np.ascontiguousarray(np.moveaxis(rgb, 2, 0), dtype=np.float32)  # planes: fast
    luma = r * np.float32(_LUMA[0]) + g * np.float32(_LUMA[1]) + b * np.float32(_LUMA[2])
    means = np.array([r.mean(dtype=np.float64), g.mean(dtype=np.float64), b.mean(dtype=np.float64)])
    total = means.sum()
    relative = means / total if total > 0 else np.full(3, 1 / 3)
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    if luma.shape[0] >= 3 and luma.shape[1] >= 3:
        lap = (
            4 * luma[1:-1, 1:-1]
            - luma[:-2, 1:-1]
            - luma[2:, 1:-1]
            - luma[1:-1, :-2]
            - luma[1:-1, 2:]
        )
        sharpness = float(lap.var(dtype=np.float64))
    else:
        sharpness = float("nan")
    return (
        float(luma.mean(dtype=np.float64)),
        float(luma.std(dtype=np.float64)),
        *map(float, relative),
        float(saturation.mean(dtype=np.float64)),
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
