"""The ``driftloader`` command. It only parses arguments and calls the library.

Exit status: 0 on success (for ``check``: no shard drifted), 1 when ``check`` found drift,
2 on usage or data errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence

from . import __version__
from .errors import DriftloaderError
from .progress import reporting

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


def _executor_spec(value: str) -> str:
    from .executors import parse_executor

    try:
        parse_executor(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return value


def _executor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        type=_executor_spec,
        default=None,
        metavar="SPEC",
        help="where the work runs: local:N (N processes; --workers N is short for it) or "
        "dask://HOST:PORT (a running Dask scheduler; see docs/dask.md)",
    )


def cmd_profile(args: argparse.Namespace) -> int:
    from .profiling import profile_shards

    summary = profile_shards(
        args.urls,
        _store(args),
        workers=args.workers,
        executor=args.executor,
        storage_options=_storage_options(args.storage_option) or None,
        on_error=args.on_error,
        progress=not args.quiet,
        force=args.force,
        featurizer=_features(args),
    )
    for url, error in summary.failed:
        print(f"failed: {_failure(url, error)}", file=sys.stderr)
    return EXIT_ERROR if summary.failed else EXIT_OK


def _features(args: argparse.Namespace):
    """The ``FeatureSpec`` of ``--features FILE`` (None when not given: the default, or for
    ``check`` the reference's featurizer)."""
    if getattr(args, "features", None) is None:
        return None
    from .features import FeatureSpec

    try:
        with open(args.features, encoding="utf-8") as f:
            return FeatureSpec.from_json(f.read())
    except OSError as e:
        raise ValueError(f"--features {args.features}: cannot read it ({e})") from e
    except ValueError as e:
        raise ValueError(f"--features {args.features}: not a FeatureSpec ({e})") from e


def _with_features(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--features",
        metavar="SPEC.json",
        help=f"a FeatureSpec as JSON (FeatureSpec.to_json()); default: {default}",
    )


def _failure(url: str, error: str) -> str:
    """``url: error``, naming the URL once even when the error message starts with it."""
    return error if error.startswith(url) else f"{url}: {error}"


def cmd_reference(args: argparse.Namespace) -> int:
    store = _store(args)
    reference = store.build_reference(
        args.name,
        args.urls,
        _storage_options(args.storage_option) or None,
        featurizer=_features(args),
        executor=args.executor,
    )
    print(
        f"reference {args.name!r}: {reference.meta.get('count')} shards, {reference.n:,} samples, "
        f"{len(reference.kinds)} features -> {store!r}"
    )
    return EXIT_OK


def _print_json(reference: str, results: Sequence, failed: Sequence = ()) -> None:
    """One JSON object: ``{"reference": NAME, "shards": [...], "errors": [...]}``; ``errors``
    lists the shards that could not be read (empty when all could)."""
    out: dict = {"reference": reference, "shards": [r.to_dict() for r in results]}
    out["errors"] = [{"url": url, "error": error} for url, error in failed]
    print(json.dumps(out, allow_nan=False))


def _print_json_error(args: argparse.Namespace, message: str) -> None:
    """The one JSON object of ``--json`` when the command failed before any result; or the
    end of the object a streaming command (``check``) had begun, with the failure in it."""
    if getattr(args, "json_open", False):
        errors = [{"url": url, "error": error} for url, error in getattr(args, "json_failed", ())]
        print(f'], "errors": {json.dumps([*errors, {"url": None, "error": message}])}}}')
        return
    if args.command == "diff":
        out: dict = {"a": args.a, "b": args.b, "drifted": None}
    else:
        out = {"reference": getattr(args, "reference", None), "shards": []}
    out["errors"] = [{"url": None, "error": message}]
    print(json.dumps(out, allow_nan=False))


def cmd_check(args: argparse.Namespace) -> int:
    from .check import iter_checks

    # Every readable shard is checked and reported as it is checked (no result is held: a
    # million shards' would take ~18 GB); unreadable ones are named at the end and make the
    # exit status 2 (a data error), whatever the others showed.
    run = iter_checks(
        args.urls,
        _store(args),
        args.reference,
        storage_options=_storage_options(args.storage_option) or None,
        workers=args.workers,
        executor=args.executor,
        on_error="skip",
        featurizer=_features(args),
        details=False,  # printed without them: 35 KB a shard otherwise
    )
    checked = drifted = 0
    if args.json:  # a failure from here on closes this object, with run.failed
        args.json_open, args.json_failed = True, run.failed  # (_print_json_error)
        print(f'{{"reference": {json.dumps(args.reference)}, "shards": [', end="")
    with run:  # left early (Ctrl-C): what was printed is recorded
        for r in run:
            if args.json:
                print(", " * (checked > 0) + json.dumps(r.to_dict(), allow_nan=False), end="")
            else:
                top = [f"{f.name} ({f.metric} {f.effect:.3g})" for f in r.top(3) if f.drifted]
                flag = "DRIFT" if r.drifted else "ok   "
                line = f"{flag} score {r.score:8.2f}  n {r.n:>7}  {r.url}  {', '.join(top)}"
                print(line, flush=True)
            checked, drifted = checked + 1, drifted + bool(r.drifted)
    if args.json:
        errors = [{"url": url, "error": error} for url, error in run.failed]
        print(f'], "errors": {json.dumps(errors)}}}')
        args.json_open = False
    elif checked or not run.failed:
        print(f"{drifted} of {checked} shards drifted from reference {args.reference!r}")
    for url, error in run.failed:
        print(f"driftloader check: error: {_failure(url, error)}", file=sys.stderr)
    if run.failed:
        return EXIT_ERROR
    return EXIT_DRIFT if drifted else EXIT_OK


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


def cmd_compact(args: argparse.Namespace) -> int:
    from .decisions import compact_store

    result = compact_store(_store(args), prune=args.prune)
    if args.json:
        print(json.dumps({**result.to_dict(), "errors": []}))
        return EXIT_OK
    for folder in result.pruned:
        print(f"pruned {folder} (decisions against a reference gone or rebuilt)")
    files = ", ".join(f"{path} ({n} records)" for path, n in result.files.items()) or "no file"
    print(f"compacted {result.folded} small records into {files}; removed {result.removed}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.folder, seed=args.seed)


URL_HELP = (
    "shards: paths or URLs, brace patterns (shard-{000..127}.tar), globs, a folder, manifests"
)
STORE = "--store ./drift"
EXAMPLES = {
    "profile": f"driftloader profile 'shards/train-{{000..099}}.tar' {STORE} --workers 4",
    "reference": f"driftloader reference clean 'shards/train-{{000..049}}.tar' {STORE}",
    "check": f"driftloader check 'shards/new-*.tar' {STORE} --reference clean --json",
    "report": f"driftloader report {STORE} --reference clean -o report.html",
    "compact": f"driftloader compact {STORE} --prune",
    "demo": "driftloader demo --folder ./driftloader-demo",
    "snapshot": "driftloader snapshot 's3://bucket/train/*.tar' -o snapshot-v1.json",
    "diff": f"driftloader diff snapshot-v1.json snapshot-v2.json {STORE}",
    "validate": f"driftloader validate 'shards/new-*.tar' {STORE} --reference clean",
    "watch": f"driftloader watch s3://bucket/incoming {STORE} --reference clean --interval 300",
    "quarantine": f"driftloader quarantine {STORE} --reference clean",
    "clean-manifest": f"driftloader clean-manifest 'shards/*.tar' {STORE} --reference clean -o clean.json",
}


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with an example."""
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown on a terminal)")


def _reference(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference", required=True, metavar="NAME", help="name of a reference in the store"
    )


def build_parser() -> argparse.ArgumentParser:
    examples = "\n".join(f"  {line}" for line in EXAMPLES.values())
    parser = argparse.ArgumentParser(
        prog="driftloader",
        description="Profile WebDataset shards, build references, and check shards for drift.",
        epilog=f"one example per command:\n{examples}\n\n"
        "exit status: 0 ok, 1 drift found (check, diff) or rules failed (validate), "
        "2 usage or data error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftloader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    p = _command(sub, "profile", "profile shards into the store (resumable)")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP)
    with_store(p)
    p.add_argument("--workers", type=int, default=1, help="processes profiling in parallel")
    _executor(p)
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="skip",
        help="skip (default): profile the readable shards and name the others, exit 2; "
        "raise: stop at the first unreadable shard",
    )
    p.add_argument("--force", action="store_true", help="re-profile shards already stored")
    _with_features(p, "the default featurizer")
    _quiet(p)
    p.set_defaults(func=cmd_profile)

    p = _command(sub, "reference", "merge stored shard profiles into a named reference")
    p.add_argument("name", help="the reference's name, e.g. clean or v1 (letters, digits, ._-)")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP + " (profiled already)")
    with_store(p)
    _with_features(p, "the default featurizer (the shards' profiles must be made with it)")
    _executor(p)
    p.set_defaults(func=cmd_reference)

    p = _command(sub, "check", "compare shards with a reference (exit 1 on drift)")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP)
    with_store(p)
    _reference(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=int, default=1, help="processes profiling unprofiled shards")
    _with_features(p, "the featurizer the reference recorded")
    _executor(p)
    _quiet(p)
    p.set_defaults(func=cmd_check)

    p = _command(sub, "report", "write an HTML drift report with plots")
    p.add_argument("urls", nargs="*", metavar="URL", help="only these shards (default: all)")
    with_store(p)
    _reference(p)
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--top-features", type=int, default=6, help="features to plot")
    p.add_argument(
        "--recorded-only",
        action="store_true",
        help="use only results recorded in the catalog (do not compare other stored profiles)",
    )
    _quiet(p)
    p.set_defaults(func=cmd_report)

    p = _command(sub, "compact", "fold the catalog's and decisions' small records into one file")
    with_store(p)
    p.add_argument(
        "--prune",
        action="store_true",
        help="first remove the decisions of references that are gone or were rebuilt",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compact)

    p = _command(sub, "demo", "generate data with drift, train four ways, show the value")
    p.add_argument(
        "--folder",
        default=None,
        help="where to write the demo data and store, kept afterwards (default: a temporary "
        "folder, removed at the end)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the data and training")
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
    drifted = result.drift is not None and bool(result.drift.drifted)
    if args.json:
        out = result.to_dict()
        out.update(drifted=drifted, errors=[])
        print(json.dumps(out, allow_nan=False))
    else:
        print("\n".join(result.lines()))
    return EXIT_DRIFT if drifted else EXIT_OK


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
        executor=args.executor,
    )
    if args.json:
        _print_json(args.reference, results)
    else:
        for r in results:
            _print_validation(r)
        failed = sum(not r.passed for r in results)
        print(f"{failed} of {len(results)} shards failed validation against {args.reference!r}")
    if any(_unreadable(r) for r in results):  # a data error, as in `check`
        return EXIT_ERROR
    return EXIT_DRIFT if any(not r.passed for r in results) else EXIT_OK


def _unreadable(result) -> bool:
    """True for a validation that failed because the shard could not be read at all."""
    from .validate import UNREADABLE

    return any(f.startswith(UNREADABLE) for f in result.failures)


def cmd_watch(args: argparse.Namespace) -> int:
    from .validate import watch

    options = _storage_options(args.storage_option) or None
    found = _watched_shards_exist(args.prefix, options)  # warns when nothing is there
    if not found and args.once:
        return EXIT_ERROR
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


def _watched_shards_exist(prefix: str, storage_options: dict | None) -> bool:
    """False, with a warning, when ``prefix`` holds no shard yet."""
    from .errors import NoShardsError
    from .sources import expand_urls
    from .validate import watch_pattern

    pattern = watch_pattern(prefix)
    try:
        expand_urls(pattern, storage_options)
    except NoShardsError:
        print(
            f"driftloader watch: warning: {pattern} matches no shard (yet); check PREFIX",
            file=sys.stderr,
        )
        return False
    return True


def cmd_quarantine(args: argparse.Namespace) -> int:
    from .versions import quarantine

    result = quarantine(
        _store(args),
        args.reference,
        _tags(args.tag),
        _storage_options(args.storage_option) or None,
    )
    print(_quarantine_line(result))
    return EXIT_OK


def _quarantine_line(result) -> str:
    """One summary line: how many shards, how many tagged, why the others were not, and where
    the exclusion list was written."""
    reasons = Counter(reason for _, reason in result.untagged)
    untagged = "".join(f"; {n} not tagged: {reason}" for reason, n in reasons.items())
    return (
        f"quarantined {len(result.shards)} drifted shards under {result.reference!r} "
        f"({len(result.tagged)} tagged on storage{untagged}); "
        f"exclusion list written to {result.path}"
    )


def cmd_clean_manifest(args: argparse.Namespace) -> int:
    from .versions import clean_manifest, write_manifest

    options = _storage_options(args.storage_option) or None
    manifest = clean_manifest(args.urls, _store(args), args.reference, options)
    write_manifest(manifest, args.output, options)
    print(f"{len(manifest['shards'])} shards passed -> {args.output}")
    return EXIT_OK


def _add_version_commands(sub, with_store) -> None:
    """Subcommands: snapshot, diff, validate, watch, quarantine, clean-manifest."""
    p = _command(sub, "snapshot", "write a manifest pinning each shard's current version")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP)
    p.add_argument("-o", "--output", required=True, help="manifest path or URL (.json)")
    with_store(p, required=False)
    _quiet(p)
    p.set_defaults(func=cmd_snapshot)

    p = _command(sub, "diff", "shards added/removed/changed and drift between two versions")
    p.add_argument("a", metavar="A", help="manifest path or reference name")
    p.add_argument("b", metavar="B", help="manifest path or reference name")
    with_store(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_diff)

    p = _command(sub, "validate", "check shards against the reference's rules (exit 1)")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP)
    with_store(p)
    _reference(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=int, default=1, help="processes profiling unprofiled shards")
    _executor(p)
    _quiet(p)
    p.set_defaults(func=cmd_validate)

    p = _command(sub, "watch", "poll PREFIX/*.tar, validate new shards and new versions")
    p.add_argument(
        "prefix",
        metavar="PREFIX",
        help="folder or URL prefix to poll for *.tar (or a glob), e.g. s3://bucket/incoming",
    )
    with_store(p)
    _reference(p)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--once", action="store_true", help="stop after one pass")
    p.set_defaults(func=cmd_watch)

    p = _command(sub, "quarantine", "tag drifted shards on S3 and write an exclusion list")
    with_store(p)
    _reference(p)
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="S3 object tag to set (repeatable; default driftloader-quarantine=REFERENCE)",
    )
    _quiet(p)
    p.set_defaults(func=cmd_quarantine)

    p = _command(sub, "clean-manifest", "write a manifest of only the shards that passed")
    p.add_argument("urls", nargs="+", metavar="URL", help=URL_HELP)
    with_store(p)
    _reference(p)
    p.add_argument("-o", "--output", required=True, help="manifest path or URL (.json)")
    p.set_defaults(func=cmd_clean_manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with reporting(not getattr(args, "quiet", False)):
            return args.func(args)
    except (DriftloaderError, ValueError, OSError) as e:
        return _fail(args, str(e))
    except Exception as e:  # e.g. a storage option the filesystem refuses: still exit 2, not 1
        return _fail(args, f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        if getattr(args, "json_open", False):
            _print_json_error(args, "interrupted")
        print(f"driftloader {args.command}: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, message: str) -> int:
    """Report an error that stopped the command: on stderr, and as JSON under ``--json``."""
    if getattr(args, "json", False):
        _print_json_error(args, message)
    print(f"driftloader {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
