"""The ``driftloader`` command. It only parses arguments and calls the library.

Exit status: 0 on success (for ``check``: no shard drifted), 1 when ``check`` found drift,
2 on usage or data errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import DriftloaderError

EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


def _storage_options(pairs: Sequence[str]) -> dict:
    options: dict = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option wants key=value, got {pair!r}")
        options[key] = _parse_value(value)
    return options


def _parse_value(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _store(args: argparse.Namespace):
    from .store import ProfileStore

    return ProfileStore(args.store, _storage_options(args.storage_option))


def cmd_profile(args: argparse.Namespace) -> int:
    from .profiling import profile_shards

    summary = profile_shards(
        args.urls,
        _store(args),
        workers=args.workers,
        storage_options=_storage_options(args.storage_option) or None,
        on_error=args.on_error,
        progress=not args.quiet,
        force=args.force,
    )
    for url, error in summary.failed:
        print(f"failed: {url}: {error}", file=sys.stderr)
    return EXIT_ERROR if summary.failed else EXIT_OK


def cmd_reference(args: argparse.Namespace) -> int:
    store = _store(args)
    reference = store.build_reference(
        args.name, args.urls, _storage_options(args.storage_option) or None
    )
    print(
        f"reference {args.name!r}: {reference.meta.get('count')} shards, {reference.n:,} samples, "
        f"{len(reference.kinds)} features -> {store!r}"
    )
    return EXIT_OK


def _print_json(reference: str, results: Sequence, failed: Sequence = ()) -> None:
    """One JSON object: ``{"reference": NAME, "shards": [...]}``, and ``"errors"`` when some
    shards could not be read."""
    out: dict = {"reference": reference, "shards": [r.to_dict() for r in results]}
    if failed:
        out["errors"] = [{"url": url, "error": error} for url, error in failed]
    print(json.dumps(out, allow_nan=False))


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_shards

    # Every readable shard is checked and reported; unreadable ones are named at the end and
    # make the exit status 2 (a data error), whatever the others showed.
    results = check_shards(
        args.urls,
        _store(args),
        args.reference,
        storage_options=_storage_options(args.storage_option) or None,
        workers=args.workers,
        on_error="skip",
    )
    if args.json:
        _print_json(args.reference, results, results.failed)
    else:
        for r in results:
            top = ", ".join(f"{f.name} ({f.metric} {f.effect:.3g})" for f in r.top(3) if f.drifted)
            flag = "DRIFT" if r.drifted else "ok   "
            print(f"{flag} score {r.score:8.2f}  n {r.n:>7}  {r.url}  {top}")
        drifted = sum(r.drifted for r in results)
        print(f"{drifted} of {len(results)} shards drifted from reference {args.reference!r}")
    for url, error in results.failed:
        print(f"driftloader check: error: {url}: {error}", file=sys.stderr)
    if results.failed:
        return EXIT_ERROR
    return EXIT_DRIFT if any(r.drifted for r in results) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(
        args.output,
        _store(args),
        args.reference,
        args.urls or None,
        storage_options=_storage_options(args.storage_option) or None,
        top_features=args.top_features,
        compare_stored=not args.recorded_only,
    )
    print(f"report on reference {args.reference!r} -> {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.folder, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftloader",
        description="Profile WebDataset shards, build references, and check shards for drift.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_store(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument(
            "--store", required=required, help="profile store: a folder or s3://bucket/prefix"
        )
        p.add_argument(
            "--storage-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fsspec storage option (repeatable); values are parsed as JSON when they can be",
        )

    p = sub.add_parser("profile", help="profile shards into the store (resumable)")
    p.add_argument(
        "urls", nargs="+", metavar="URL", help="shards: brace patterns, globs, manifests"
    )
    with_store(p)
    p.add_argument("--workers", type=int, default=1, help="processes profiling in parallel")
    p.add_argument("--on-error", choices=["raise", "skip"], default="skip")
    p.add_argument("--force", action="store_true", help="re-profile shards already stored")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("reference", help="merge stored shard profiles into a named reference")
    p.add_argument("name")
    p.add_argument("urls", nargs="+", metavar="URL")
    with_store(p)
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("check", help="compare shards with a reference (exit 1 on drift)")
    p.add_argument("urls", nargs="+", metavar="URL")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=int, default=1, help="processes profiling unprofiled shards")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("report", help="write an HTML drift report with plots")
    p.add_argument("urls", nargs="*", metavar="URL", help="only these shards (default: all)")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--top-features", type=int, default=6, help="features to plot")
    p.add_argument(
        "--recorded-only",
        action="store_true",
        help="use only results recorded in the catalog (do not compare other stored profiles)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="generate data with drift, train four ways, show the value")
    p.add_argument(
        "--folder", default=None, help="where to write the demo data (default: a temp dir)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    _add_version_commands(sub, with_store)
    return parser


# -- data versions, validation, quarantine ---------------------------------------------------


def _tags(pairs: Sequence[str]) -> dict[str, str] | None:
    tags = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag wants key=value, got {pair!r}")
        tags[key] = value
    return tags or None


def _optional_store(args: argparse.Namespace):
    return _store(args) if args.store else None


def cmd_snapshot(args: argparse.Namespace) -> int:
    from .versions import snapshot, write_manifest

    options = _storage_options(args.storage_option) or None
    manifest = snapshot(args.urls, _optional_store(args), options)
    write_manifest(manifest, args.output, options)
    print(f"snapshot of {len(manifest['shards'])} shards -> {args.output}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from .versions import diff

    result = diff(args.a, args.b, _store(args), _storage_options(args.storage_option) or None)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print("\n".join(result.lines()))
    return EXIT_OK


def _print_validation(r) -> None:
    print(f"{'ok  ' if r.passed else 'FAIL'} n {r.n:>7}  {r.to_dict()['url']}", flush=True)
    for failure in r.failures:
        print(f"       {failure}", flush=True)


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_shards

    results = validate_shards(
        args.urls,
        _store(args),
        args.reference,
        storage_options=_storage_options(args.storage_option) or None,
        workers=args.workers,
    )
    if args.json:
        _print_json(args.reference, results)
    else:
        for r in results:
            _print_validation(r)
        failed = sum(not r.passed for r in results)
        print(f"{failed} of {len(results)} shards failed validation against {args.reference!r}")
    return EXIT_DRIFT if any(not r.passed for r in results) else EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from .validate import watch

    summary = watch(
        args.prefix,
        _store(args),
        args.reference,
        interval=args.interval,
        once=args.once,
        storage_options=_storage_options(args.storage_option) or None,
        on_result=_print_validation,
        on_error=lambda e: print(f"driftloader watch: pass failed: {e}", file=sys.stderr),
    )
    print(summary.line())
    if summary.errors:
        return EXIT_ERROR
    return EXIT_DRIFT if summary.failed else EXIT_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    from .versions import quarantine

    result = quarantine(
        _store(args),
        args.reference,
        _tags(args.tag),
        _storage_options(args.storage_option) or None,
    )
    for url, reason in result.untagged:
        print(f"not tagged: {url}: {reason}", file=sys.stderr)
    print(
        f"quarantined {len(result.shards)} shards ({len(result.tagged)} tagged) "
        f"under {args.reference!r}; exclusion list written"
    )
    return EXIT_OK


def cmd_clean_manifest(args: argparse.Namespace) -> int:
    from .versions import clean_manifest, write_manifest

    options = _storage_options(args.storage_option) or None
    manifest = clean_manifest(args.urls, _store(args), args.reference, options)
    write_manifest(manifest, args.output, options)
    print(f"{len(manifest['shards'])} shards passed -> {args.output}")
    return EXIT_OK


def _add_version_commands(sub, with_store) -> None:
    """Subcommands: snapshot, diff, validate, watch, quarantine, clean-manifest."""
    p = sub.add_parser("snapshot", help="write a manifest pinning each shard's current version")
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("-o", "--output", required=True, help="manifest path or URL (.json)")
    with_store(p, required=False)
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("diff", help="shards added/removed/changed and drift between two versions")
    p.add_argument("a", metavar="A", help="manifest path or reference name")
    p.add_argument("b", metavar="B", help="manifest path or reference name")
    with_store(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("validate", help="check shards against the reference's rules (exit 1)")
    p.add_argument("urls", nargs="+", metavar="URL")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=int, default=1, help="processes profiling unprofiled shards")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("watch", help="poll PREFIX/*.tar, validate new shards and new versions")
    p.add_argument("prefix", metavar="PREFIX")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--once", action="store_true", help="stop after one pass")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("quarantine", help="tag drifted shards on S3 and write an exclusion list")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("clean-manifest", help="write a manifest of only the shards that passed")
    p.add_argument("urls", nargs="+", metavar="URL")
    with_store(p)
    p.add_argument("--reference", required=True)
    p.add_argument("-o", "--output", required=True, help="manifest path or URL (.json)")
    p.set_defaults(func=cmd_clean_manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DriftloaderError, ValueError, OSError) as e:
        print(f"driftloader {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # e.g. a storage option the filesystem refuses: still exit 2, not 1
        print(f"driftloader {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"driftloader {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
