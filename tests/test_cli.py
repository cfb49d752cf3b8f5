"""The driftloader command: profile, reference, check (exit codes, --json), demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

from driftloader.cli import main

from .conftest import write_shard

N = 300


@pytest.fixture
def shards(tmp_path: Path) -> dict[str, list[str]]:
    data = tmp_path / "data"
    data.mkdir()
    out: dict[str, list[str]] = {"ref": [], "clean": [], "bad": []}
    for i in range(4):
        write_shard(data / f"ref-{i}.tar", N, seed=i, start=i * 1000)
        out["ref"].append(str(data / f"ref-{i}.tar"))
    write_shard(data / "clean-0.tar", N, seed=11, start=11_000)
    out["clean"].append(str(data / "clean-0.tar"))
    write_shard(data / "bad-0.tar", N, seed=12, start=12_000, shift=1.0)
    out["bad"].append(str(data / "bad-0.tar"))
    return out


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
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("DRIFT") >= 6 and "plain webdataset" in out and 'policy="skip"' in out
    assert (
        "accuracy" in out and (tmp_path / "demo" / "store" / "references" / "clean.json").exists()
    )
