"""Profiling image shards by content vs decoding them with webdataset's ``.decode("pil")``.

    python benchmarks/images.py [--shards 4] [--samples 250] [--width 640] [--rounds 3]

Writes JPEG shards (photo-like images, quality 90, one ``cls`` label each) to a temporary folder,
then measures in one run, best of the rounds, samples per second on one process:
* ``webdataset .decode("pil")``: reading and fully decoding every image, nothing else;
* ``driftloader profile``: ``profile_shards`` with the default featurizer (content features by
  draft-mode decoding, sketches, profiles written to a local store);
* ``DefaultFeaturizer`` alone over the same samples (read time excluded).
The goal (issue 13): the profile row at least as fast as the webdataset row.

Then detection with the default featurizer and ``DriftConfig``: a reference of ``--ref-shards``
clean shards of ``--detect-samples`` images (``--detect-width`` wide), and ``--detect-shards``
shards per family: clean, 20/255 brighter, R and B swapped, blurred (box blur radius 2). Results
go to benchmarks/results/images.md.

``--clean-shards N`` runs only the false-alarm part, longer: the same reference and random
stream (so its first clean shards are those of the full run), then N clean shards, printing one
line per shard as it goes and a last line with the count flagged and the exact (Clopper-Pearson)
one-sided 95% upper bound on the false-alarm rate; results/images.md is not written. With
``--clean-seed S`` the clean shards come from a fresh random stream of seed S instead (same
reference), so a measurement can be extended by shards independent of those already run.

``--changed-shards N`` runs only the changed families (brighter, R and B swapped, blurred), N
shards each, against the same reference: one line per shard, then per family the count flagged
and the exact (Clopper-Pearson) one-sided 95% lower bound on the rate flagged; results/images.md
is not written. Family number i draws its shards from its own random stream, seeded
``[--changed-seed, i]``, so families do not depend on each other's shard counts.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image, ImageFilter
from scipy import stats

import driftloader as dl
from driftloader.drift import compare
from driftloader.features import DefaultFeaturizer
from driftloader.profile import Profile

RESULTS = Path(__file__).resolve().parent / "results" / "images.md"


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.zeros((height, width, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 110 + 60 * np.sin(3 * a * x + 2 * b * y + 6 * p)
    img += rng.normal(0, 4, img.shape) + [15, 0, -15]  # warm, as photos under sunlight are
    return np.clip(img, 0, 255).astype(np.uint8)


def make_shards(folder: Path, shards: int, samples: int, width: int) -> list[str]:
    rng = np.random.default_rng(0)
    height = width * 3 // 4
    urls = []
    for s in range(shards):
        path = folder / f"img-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(samples):
                buf = io.BytesIO()
                Image.fromarray(photo(rng, width, height)).save(buf, "JPEG", quality=90)
                sink.write({"__key__": f"{s:03d}{i:05d}", "jpg": buf.getvalue(), "cls": b"1"})
        urls.append(str(path))
    return urls


FAMILIES = {
    "clean": lambda a: a,
    "20/255 brighter": lambda a: np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8),
    "R and B swapped": lambda a: a[..., ::-1],
    "blurred": lambda a: np.asarray(Image.fromarray(a).filter(ImageFilter.BoxBlur(2))),
}


def encoded_images(rng: np.random.Generator, n: int, width: int, change) -> list[dict]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(change(photo(rng, width, width * 3 // 4))).save(buf, "JPEG", quality=90)
        out.append({"__key__": str(i), "jpg": buf.getvalue()})
    return out


def image_profile(samples: list[dict], url: str) -> Profile:
    featurizer = DefaultFeaturizer()
    profile = Profile(featurizer.fingerprint, url=url, version="1")
    for start in range(0, len(samples), 256):
        profile.update(featurizer(samples[start : start + 256]))
    return profile


def detection_reference(rng: np.random.Generator, args: argparse.Namespace) -> Profile:
    """The merged profile of ``--ref-shards`` clean shards, drawn first from ``rng``."""
    n, width = args.detect_samples, args.detect_width
    reference = image_profile(encoded_images(rng, n, width, FAMILIES["clean"]), "ref-0")
    for i in range(1, args.ref_shards):
        reference.merge(image_profile(encoded_images(rng, n, width, FAMILIES["clean"]), f"r{i}"))
    return reference


def detection_rows(args: argparse.Namespace) -> list[str]:
    rng = np.random.default_rng(1)
    n, width = args.detect_samples, args.detect_width
    reference = detection_reference(rng, args)
    rows = []
    for family, change in FAMILIES.items():
        flagged, names = 0, {}
        for i in range(args.detect_shards):
            result = compare(
                image_profile(encoded_images(rng, n, width, change), f"s{i}"), reference
            )
            flagged += result.drifted
            for f in result.top(2):
                if f.drifted:
                    names[f.name] = names.get(f.name, 0) + 1
        top = ", ".join(f"`{k}`" for k, _ in sorted(names.items(), key=lambda kv: -kv[1])[:3])
        rows.append(f"| {family} | {flagged / args.detect_shards:.0%} | {top or '-'} |")
    return rows


def upper_bound_95(flagged: int, shards: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95% upper bound on a rate seen flagged/shards times."""
    if flagged >= shards:
        return 1.0
    return float(stats.beta.ppf(0.95, flagged + 1, shards - flagged))


def lower_bound_95(flagged: int, shards: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95% lower bound on a rate seen flagged/shards times."""
    if flagged <= 0:
        return 0.0
    return float(stats.beta.ppf(0.05, flagged, shards - flagged + 1))


def changed_families(args: argparse.Namespace) -> None:
    """Reference, then ``--changed-shards`` shards of each changed family, one line per shard."""
    n, width = args.detect_samples, args.detect_width
    start = time.perf_counter()
    reference = detection_reference(np.random.default_rng(1), args)
    print(f"reference: {args.ref_shards} clean shards of {n} images", flush=True)
    summary = []
    for index, (family, change) in enumerate(FAMILIES.items()):
        if family == "clean":
            continue
        rng = np.random.default_rng([args.changed_seed, index])
        flagged, names = 0, {}
        for i in range(args.changed_shards):
            result = compare(
                image_profile(encoded_images(rng, n, width, change), f"s{i}"), reference
            )
            flagged += result.drifted
            drifted = [f.name for f in result.top(2) if f.drifted]
            for name in drifted:
                names[name] = names.get(name, 0) + 1
            print(
                f"{family} shard {i + 1}: drifted={result.drifted} top={','.join(drifted) or '-'} "
                f"flagged={flagged} elapsed={time.perf_counter() - start:.0f}s",
                flush=True,
            )
        top = ", ".join(k for k, _ in sorted(names.items(), key=lambda kv: -kv[1])[:3])
        summary.append(
            f"{family}: {flagged} of {args.changed_shards} shards flagged "
            f"({flagged / args.changed_shards:.1%}); exact one-sided 95% lower bound "
            f"{lower_bound_95(flagged, args.changed_shards):.2%}; most often drifted: {top or '-'}"
        )
    print("\n".join(summary), flush=True)


def false_alarms(args: argparse.Namespace) -> None:
    """Reference, then ``--clean-shards`` clean shards, one printed line per shard."""
    rng = np.random.default_rng(1)
    n, width = args.detect_samples, args.detect_width
    start = time.perf_counter()
    reference = detection_reference(rng, args)
    if args.clean_seed is not None:
        rng = np.random.default_rng(args.clean_seed)
    print(f"reference: {args.ref_shards} clean shards of {n} images", flush=True)
    flagged = 0
    for i in range(args.clean_shards):
        result = compare(
            image_profile(encoded_images(rng, n, width, FAMILIES["clean"]), f"s{i}"), reference
        )
        flagged += result.drifted
        top = result.top(1)[0]
        print(
            f"shard {i + 1}: drifted={result.drifted} top={top.name} p={top.p_value:.3g} "
            f"flagged={flagged} bound95={upper_bound_95(flagged, i + 1):.4f} "
            f"elapsed={time.perf_counter() - start:.0f}s",
            flush=True,
        )
    print(
        f"clean JPEG: {flagged} of {args.clean_shards} shards flagged; exact one-sided 95% "
        f"upper bound on the false-alarm rate {upper_bound_95(flagged, args.clean_shards):.2%}",
        flush=True,
    )


def best_rate(fn, samples: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return samples / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detect-shards", type=int, default=10)
    parser.add_argument("--detect-samples", type=int, default=1000)
    parser.add_argument("--detect-width", type=int, default=128)
    parser.add_argument("--ref-shards", type=int, default=5)
    parser.add_argument(
        "--clean-shards",
        type=int,
        default=None,
        help="run only the false-alarm measurement on this many clean shards",
    )
    parser.add_argument(
        "--clean-seed",
        type=int,
        default=None,
        help="with --clean-shards: draw the clean shards from this seed, not after the reference",
    )
    parser.add_argument(
        "--changed-shards",
        type=int,
        default=None,
        help="run only the changed families' detection, this many shards per family",
    )
    parser.add_argument(
        "--changed-seed",
        type=int,
        default=3,
        help="with --changed-shards: family i draws its shards from the seed [S, i]",
    )
    args = parser.parse_args()
    if args.changed_shards is not None:
        if args.changed_shards < 1:
            raise ValueError(f"--changed-shards must be >= 1, got {args.changed_shards}")
        changed_families(args)
        return
    if args.clean_shards is not None:
        if args.clean_shards < 1:
            raise ValueError(f"--clean-shards must be >= 1, got {args.clean_shards}")
        false_alarms(args)
        return
    total = args.shards * args.samples
    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.shards, args.samples, args.width)
        samples = [s for url in urls for s in wds.WebDataset(url, shardshuffle=False)]

        def webdataset_pil() -> None:
            for _ in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
                pass

        def profile() -> None:
            store = dl.ProfileStore(tempfile.mkdtemp(dir=tmp))
            dl.profile_shards(urls, store, progress=False)

        def featurize_only() -> None:
            featurizer = DefaultFeaturizer()
            for start in range(0, total, 256):
                featurizer(samples[start : start + 256])

        rows = [
            ('webdataset `.decode("pil")`', best_rate(webdataset_pil, total, args.rounds)),
            (
                "driftloader `profile_shards` (default features)",
                best_rate(profile, total, args.rounds),
            ),
            ("`DefaultFeaturizer` alone (no read)", best_rate(featurize_only, total, args.rounds)),
        ]
    ratio = rows[1][1] / rows[0][1]
    lines = [
        "# Image profiling vs webdataset decoding",
        "",
        f"`python benchmarks/images.py --shards {args.shards} --samples {args.samples} "
        f"--width {args.width} --rounds {args.rounds}`: {total} JPEG images "
        f"{args.width}x{args.width * 3 // 4}, quality 90, local disk, one process, best of "
        f"{args.rounds}.",
        "",
        "| path | samples/s |",
        "| --- | ---: |",
        *(f"| {name} | {value:,.0f} |" for name, value in rows),
        "",
        f"Profiling (content features, sketches, profiles written) runs at {ratio:.2f}x the speed "
        'of `.decode("pil")` alone (goal: >= 1.0x).',
        "",
        "## Detection with the default features",
        "",
        f"Reference: {args.ref_shards} clean shards; {args.detect_shards} shards per family of "
        f"{args.detect_samples} JPEG images {args.detect_width}x{args.detect_width * 3 // 4}; "
        "default `DriftConfig`. Goal (issue 13): changed families flagged on >= 90%, clean <= 1%.",
        "",
        "| family | flagged | most often drifted |",
        "| --- | ---: | --- |",
        *detection_rows(args),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
