"""The driftloader command: profile, reference, check (exit codes, --json), demo."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

from driftloader.cli import main

N = 300


@pytest.fixture
def shards(shard_families) -> dict[str, list[str]]:
    return shard_families(N, refs=4)


def test_profile_reference_check(shards, tmp_path, capsys):
    store = str(tmp_path / "store")
    pattern = str(Path(shards["ref"][0]).parent / "ref-{0..3}.tar")
    assert main(["profile", pattern, "--store", store, "--workers", "2"]) == 0
    assert "profiled 4 shards" in capsys.readouterr().err
    assert main(["reference", "v1", pattern, "--store", store]) == 0
    assert "4 shards, 1,200 samples" in capsys.readouterr().out
    assert main(["check", *shards["clean"], "--store", store, "--reference", "v1"]) == 0
    assert "0 of 1 shards drifted" in capsys.readouterr().out
    code = main(
        ["check", *shards["clean"], *shards["bad"], "--store", store, "--reference", "v1", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["reference"] == "v1"
    by_name = {Path(s["url"]).name: s for s in report["shards"]}
    assert by_name["bad-0.tar"]["drifted"] and not by_name["clean-0.tar"]["drifted"]
    assert set(by_name["bad-0.tar"]) >= {"url", "version", "n", "drifted", "score", "features"}
    assert {"name", "metric", "value", "drifted"} <= set(by_name["bad-0.tar"]["features"][0])


def test_errors_exit_2_with_a_clear_message(shards, tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["check", *shards["clean"], "--store", store, "--reference", "missing"]) == 2
    assert "no reference 'missing'" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "none-*.tar"), "--store", store]) == 2
    assert "matches no shard" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2


def test_check_reports_every_readable_shard_then_exits_2_naming_the_unreadable(
    shards, tmp_path, capsys
):
    store = str(tmp_path / "store")
    assert main(["profile", *shards["ref"], "--store", store, "--quiet"]) == 0
    assert main(["reference", "v1", *shards["ref"], "--store", store]) == 0
    corrupt = tmp_path / "data" / "corrupt-0.tar"
    corrupt.write_bytes(Path(shards["clean"][0]).read_bytes()[:5000])  # truncated mid-member
    empty = tmp_path / "data" / "empty-0.tar"
    with wds.TarWriter(str(empty)):
        pass
    capsys.readouterr()
    missing = str(tmp_path / "data" / "missing-0.tar")
    urls = [*shards["clean"], str(corrupt), missing, str(empty), *shards["bad"]]
    code = main(["check", *urls, "--store", store, "--reference", "v1", "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 2
    assert [Path(s["url"]).name for s in report["shards"]] == ["clean-0.tar", "bad-0.tar"]
    errors = {Path(e["url"]).name: e["error"] for e in report["errors"]}
    assert set(errors) == {"corrupt-0.tar", "missing-0.tar", "empty-0.tar"}
    assert "no samples" in errors["empty-0.tar"] and "does not exist" in errors["missing-0.tar"]
    assert "corrupt-0.tar" in err and "empty-0.tar" in err
    # one rule for empty shards: a data error in profile as in check, and never profiled, so
    # a reference of empty shards (which would call every shard drifted) cannot be built
    assert main(["profile", str(empty), "--store", store, "--quiet"]) == 2
    assert "shard has no samples" in capsys.readouterr().err
    assert main(["reference", "nothing", str(empty), "--store", store]) == 2
    assert "have no profile" in capsys.readouterr().err


def test_unexpected_errors_still_exit_2(shards, tmp_path, capsys):
    # s3fs refuses an unknown option with a TypeError: exit 1 would read as "drift found"
    code = main(
        ["check", "s3://bucket/x.tar", "--store", str(tmp_path / "store"), "--reference", "v1"]
        + ["--storage-option", "no_such_option=1"]
    )
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_check_on_s3_with_storage_from_environment(s3_bucket, s3fs_fresh, shards, capsys):
    for url in [*shards["ref"], *shards["bad"]]:
        s3fs_fresh.put(url, f"{s3_bucket}/data/{Path(url).name}")
    store = f"s3://{s3_bucket}/drift"
    assert main(["profile", f"s3://{s3_bucket}/data/ref-*.tar", "--store", store, "--quiet"]) == 0
    assert main(["reference", "v1", f"s3://{s3_bucket}/data/ref-*.tar", "--store", store]) == 0
    code = main(
        [
            "check",
            f"s3://{s3_bucket}/data/bad-0.tar",
            "--store",
            store,
            "--reference",
            "v1",
            "--json",
        ]
    )
    assert code == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["shards"][0]["drifted"]


def test_python_dash_m_and_demo_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "driftloader", "demo", "--folder", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,  # ~2 min alone; a hang guard on a busy 2-core machine
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("DRIFT") >= 6 and "plain webdataset" in out and 'policy="skip"' in out
    assert (
        "accuracy" in out and (tmp_path / "demo" / "store" / "references" / "clean.json").exists()
    )
    assert "score >= 1 means drifted; effect is" in out
    # the commands it prints run as printed (with --store), on the folder it kept
    commands = [
        line.strip() for line in out.splitlines() if line.strip().startswith("driftloader ")
    ]
    check = next(c for c in commands if c.startswith("driftloader check"))
    assert "--store" in check
    assert main(shlex.split(check)[1:] + ["--quiet"]) == 1  # the training mix has drift


# -- what a new user runs into (#14, #15 items 12-13) -------------------------------------------


@pytest.fixture
def checked(shards, tmp_path, capsys) -> str:
    """A store with reference "v1" of the ref shards; returns the store path."""
    store = str(tmp_path / "store")
    assert main(["profile", *shards["ref"], "--store", store, "--quiet"]) == 0
    assert main(["reference", "v1", *shards["ref"], "--store", store]) == 0
    capsys.readouterr()
    return store


def test_version_and_a_help_line_for_every_argument_and_an_example_per_command(capsys):
    from driftloader.cli import EXAMPLES, build_parser

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("driftloader 0.")
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(EXAMPLES)
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.dest} has no help line"
        assert f"example:\n  {EXAMPLES[name]}" in command.format_help()
        assert EXAMPLES[name] in parser.format_help()


@pytest.mark.parametrize("command", ["check", "diff"])
def test_json_commands_print_one_object_with_errors_on_early_errors(
    command, shards, checked, tmp_path, capsys, monkeypatch
):
    def run(*args: str) -> dict:
        code = main([command, *args, "--store", checked, "--json"])
        out = capsys.readouterr().out
        assert code == 2
        (line,) = out.splitlines()  # one JSON object, nothing else on stdout
        return json.loads(line)

    if command == "check":
        missing_ref = run(*shards["clean"], "--reference", "typo")
        no_match = run(str(tmp_path / "none-*.tar"), "--reference", "v1")
        refused = run("s3://bucket/x.tar", "--reference", "v1", "--storage-option", "bad=1")
        assert no_match["shards"] == [] and "matches no shard" in no_match["errors"][0]["error"]
        assert "bad" in refused["errors"][0]["error"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        code = main(
            ["check", "s3://bucket/x.tar", "--store", "s3://bucket/drift", "--reference", "v1"]
            + ["--json", "--storage-option", "endpoint_url=http://127.0.0.1:1"]  # nothing there
        )
        unreachable = json.loads(capsys.readouterr().out)
        assert code == 2 and "127.0.0.1:1" in unreachable["errors"][0]["error"]
    else:
        missing_ref = run("typo", "v1")
    assert "'typo'" in missing_ref["errors"][0]["error"]


def test_diff_exits_1_when_its_json_says_drifted(shards, checked, capsys):
    assert main(["profile", *shards["bad"], "--store", checked, "--quiet"]) == 0
    assert main(["reference", "bad", *shards["bad"], "--store", checked]) == 0
    assert main(["reference", "v1b", *shards["ref"], "--store", checked]) == 0
    capsys.readouterr()
    assert main(["diff", "v1", "bad", "--store", checked, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["drifted"] is True and report["drift"]["drifted"] and report["errors"] == []
    assert main(["diff", "v1", "v1b", "--store", checked]) == 0


def test_validate_exits_2_for_an_unreadable_shard_as_check_does(shards, checked, tmp_path):
    corrupt = tmp_path / "data" / "corrupt-0.tar"
    corrupt.write_bytes(Path(shards["clean"][0]).read_bytes()[:5000])
    assert main(["validate", *shards["clean"], "--store", checked, "--reference", "v1"]) == 0
    code = main(["validate", str(corrupt), "--store", checked, "--reference", "v1"])
    assert code == 2


def test_a_folder_is_read_as_its_tar_files_and_an_empty_one_says_what_to_give(
    shards, tmp_path, capsys
):
    store = str(tmp_path / "store")
    folder = Path(shards["ref"][0]).parent
    assert main(["profile", str(folder), "--store", store, "--quiet"]) == 0
    assert "profiled 6 shards" not in capsys.readouterr().err  # --quiet: no summary line
    assert main(["reference", "all", str(folder) + "/", "--store", store]) == 0
    assert "6 shards" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["profile", str(tmp_path / "empty"), "--store", store]) == 2
    assert f"did you mean {tmp_path / 'empty'}/*.tar?" in capsys.readouterr().err


def test_a_misspelled_reference_lists_the_ones_that_exist(shards, checked, tmp_path, capsys):
    assert main(["check", *shards["clean"], "--store", checked, "--reference", "v2"]) == 2
    err = capsys.readouterr().err
    assert "no reference 'v2'" in err and "it has 'v1'" in err
    nowhere = str(tmp_path / "no-store")
    assert main(["check", *shards["clean"], "--store", nowhere, "--reference", "v1"]) == 2
    assert "the store itself does not exist" in capsys.readouterr().err


def test_a_wrong_url_is_named_once_without_a_0_of_0_line(checked, tmp_path, capsys):
    wrong = str(tmp_path / "data" / "nope-0.tar")
    assert main(["check", wrong, "--store", checked, "--reference", "v1"]) == 2
    out, err = capsys.readouterr()
    assert "0 of 0" not in out and err.count(wrong) == 1 and "does not exist" in err


def test_a_brace_range_with_missing_shards_names_them_all_and_skip_profiles_the_rest(
    shards, tmp_path, capsys
):
    store = str(tmp_path / "store")
    pattern = str(tmp_path / "data" / "ref-{0..5}.tar")  # ref-4 and ref-5 do not exist
    assert main(["profile", pattern, "--store", store, "--on-error", "raise"]) == 2
    err = capsys.readouterr().err
    assert "ref-4.tar" in err and "ref-5.tar" in err
    assert main(["profile", pattern, "--store", store]) == 2
    err = capsys.readouterr().err
    assert "profiled 4 shards" in err and "ref-4.tar" in err and "ref-5.tar" in err


def test_watch_warns_on_a_prefix_matching_nothing_and_exits_2_once(checked, tmp_path, capsys):
    empty = tmp_path / "incoming"
    empty.mkdir()
    code = main(["watch", str(empty), "--store", checked, "--reference", "v1", "--once"])
    assert code == 2 and "matches no shard" in capsys.readouterr().err


def test_quarantine_on_a_local_store_prints_one_line_naming_the_exclusion_list(
    shards, checked, capsys
):
    assert (
        main(["check", *shards["bad"], *shards["clean"], "--store", checked, "--reference", "v1"])
        == 1
    )
    capsys.readouterr()
    assert main(["quarantine", "--store", checked, "--reference", "v1"]) == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert err == "" and "quarantined 1 drifted shards" in line
    assert "1 not tagged: object tagging needs S3" in line
    assert str(Path(checked) / "exclusions" / "v1.json") in line


LONG_COMMANDS = [
    ["check", "{clean}", "--reference", "v1"],
    ["validate", "{clean}", "--reference", "v1"],
    ["report", "--reference", "v1", "-o", "{tmp}/r.html", "--top-features", "1"],
    ["snapshot", "{clean}", "-o", "{tmp}/s.json"],
    ["quarantine", "--reference", "v1"],
]


def test_long_commands_show_progress_on_a_terminal_only(
    shards, checked, tmp_path, capsys, monkeypatch
):
    main(["check", *shards["bad"], "--store", checked, "--reference", "v1", "--quiet"])
    assert main(["check", *shards["clean"], "--store", checked, "--reference", "v1"]) == 0
    assert "\r" not in capsys.readouterr().err  # not a terminal (a log): no bar
    monkeypatch.setattr("driftloader.progress._is_terminal", lambda stream: True)
    for command in LONG_COMMANDS:
        args = [a.format(clean=shards["clean"][0], tmp=tmp_path) for a in command]
        assert main([*args, "--store", checked]) == 0
        assert "\r" in capsys.readouterr().err, command[0]
        assert main([*args, "--store", checked, "--quiet"]) == 0
        assert "\r" not in capsys.readouterr().err, command[0]


def test_compact_folds_small_records_and_exits_like_the_others(shards, checked, tmp_path, capsys):
    assert main(["check", *shards["clean"], "--store", checked, "--reference", "v1"]) == 0
    capsys.readouterr()
    catalog = tmp_path / "store" / "catalog"
    assert len(list(catalog.glob("*.json"))) == 5  # four reference shards and the checked one
    assert main(["compact", "--store", checked, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["errors"] == [] and summary["folded"] == 6  # 5 rows and 1 decision
    assert list(catalog.glob("*.json")) == [] and len(list(catalog.glob("*.compacted.jsonl"))) == 1
    assert main(["compact", "--store", checked]) == 0
    assert "compacted 0 small records" in capsys.readouterr().out
    decisions = tmp_path / "store" / "decisions" / "v1"
    (stale,) = [p.name for p in decisions.iterdir() if p.is_dir()]  # and the copy of its index
    assert main(["reference", "v1", *shards["clean"], "--store", checked]) == 0  # rebuilt
    assert main(["compact", "--store", checked, "--prune"]) == 0
    assert f"pruned {decisions / stale} (decisions against" in capsys.readouterr().out
    assert list(decisions.iterdir()) == []
    assert main(["compact", "--store", checked, "--prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pruned"] == []
    (compacted,) = catalog.glob("*.compacted.jsonl")
    assert main(["compact", "--store", str(compacted)]) == 2  # a file, not a store
