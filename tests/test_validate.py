"""Validation rules inferred from a reference, checks, the validate and watch commands (moto S3)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from driftloader import ProfileStore
from driftloader.cli import main
from driftloader.profiling import profile_shard, profile_shards
from driftloader.validate import (
    check,
    ensure_rules,
    infer_rules,
    load_rules,
    rules_path,
    save_rules,
    validate_shards,
    watch,
)

from .conftest import make_sample, write_shard

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def write_nan_shard(path: Path, n: int = 40, seed: int = 9) -> None:
    """A shard whose x.npy is all NaN in every other sample."""
    rng = np.random.default_rng(seed)
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sample = make_sample(i, rng)
            if i % 2:
                buf = io.BytesIO()
                np.save(buf, np.full(64, np.nan, dtype=np.float32))
                sample["x.npy"] = buf.getvalue()
            sink.write(sample)


def upload(fs, tmp_path: Path, url: str, seed: int = 0, n: int = 40, nan: bool = False) -> None:
    local = tmp_path / f"up-{uuid.uuid4().hex[:8]}.tar"
    if nan:
        write_nan_shard(local, n, seed)
    else:
        write_shard(local, n, seed=seed)
    fs.put(str(local), url.removeprefix("s3://"))
    fs.invalidate_cache()


@pytest.fixture
def ref_setup(s3_bucket, s3fs_fresh, tmp_path):
    """Reference "r" from two clean S3 shards of 200 samples; returns (store, bucket URL)."""
    base = f"s3://{s3_bucket}"
    for i in range(2):
        upload(s3fs_fresh, tmp_path, f"{base}/ref/shard-{i:06d}.tar", seed=i, n=200)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(f"{base}/ref/*.tar", store, progress=False)
    store.build_reference("r", f"{base}/ref/*.tar")
    return store, base


def test_infer_rules_schema_ranges_missing_and_categories(ref_setup):
    store, _ = ref_setup
    rules = infer_rules(store.get_reference("r"))
    features = rules["features"]
    assert features["cls"]["kind"] == "categorical"
    assert features["cls"]["allowed"] == [str(i) for i in range(10)]
    size = features["json.size"]
    assert size["kind"] == "numeric" and size["min"] < 0.05 and size["max"] > 0.95
    assert features["x.npy[0]"]["max_missing_rate"] == pytest.approx(0.01)
    assert features["txt.tokens"] == {"kind": "tokens", "max_missing_rate": 0.01}
    quantile = infer_rules(store.get_reference("r"), quantile=0.01)["features"]["x.npy[0]"]
    assert quantile["max_outside_rate"] == 0.01 and quantile["max"] < size["max"] + 10


def test_check_names_features_and_rules_are_editable(ref_setup, tmp_path):
    store, _ = ref_setup
    rules = ensure_rules(store, "r")
    assert Path(rules_path(store, "r")).name == "r.rules.json"
    assert load_rules(store, "r")["features"] == rules["features"]
    write_nan_shard(tmp_path / "nan.tar")
    write_shard(tmp_path / "clean.tar", 40, seed=5)
    assert check(profile_shard(str(tmp_path / "clean.tar")), rules) == []
    broken = profile_shard(str(tmp_path / "nan.tar"))
    failures = check(broken, rules)
    assert any("'x.npy[0]'" in f and "NaN" in f for f in failures)
    for rule in rules["features"].values():
        rule["max_missing_rate"] = 1.0
    save_rules(store, "r", rules)
    assert check(broken, load_rules(store, "r")) == []


def test_check_schema_ranges_and_unknown_categories(ref_setup, tmp_path):
    store, _ = ref_setup
    rules = ensure_rules(store, "r")
    rules["features"]["json.size"]["max"] = 0.5
    rules["features"]["cls"]["allowed"] = ["0", "1"]
    rules["features"]["extra"] = {"kind": "numeric"}
    del rules["features"]["txt.len"]
    write_shard(tmp_path / "clean.tar", 40, seed=5)
    failures = check(profile_shard(str(tmp_path / "clean.tar")), rules)
    text = "\n".join(failures)
    for expected in ("'json.size': values", "'cls':", "'extra' (numeric) is missing"):
        assert expected in text
    assert "'txt.len' (numeric) is not in the rules" in text


def test_validate_command_records_results(ref_setup, s3fs_fresh, tmp_path, capsys):
    store, base = ref_setup
    clean, nan = f"{base}/new/clean.tar", f"{base}/new/nan.tar"
    upload(s3fs_fresh, tmp_path, clean, seed=5)
    upload(s3fs_fresh, tmp_path, nan, nan=True)
    argv = ["validate", "--store", store.url, "--reference", "r"]
    assert main([*argv, clean]) == 0
    assert main([*argv, clean, nan, "--json"]) == 1
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [s["passed"] for s in out["shards"]] == [True, False]
    rows = {r["url"]: r for r in store.catalog()}
    assert rows[clean]["validation"] == [] and rows[clean]["valid"]
    assert any("NaN" in f for f in rows[nan]["validation"])
    assert Path(rules_path(store, "r")).exists()


def test_unreadable_shard_fails_validation_without_stopping(ref_setup, s3fs_fresh, tmp_path):
    store, base = ref_setup
    s3fs_fresh.pipe(f"{base}/new/bad.tar".removeprefix("s3://"), b"not a tar" * 100)
    upload(s3fs_fresh, tmp_path, f"{base}/new/good.tar", seed=5)
    results = validate_shards(f"{base}/new/*.tar", store, "r")
    assert [r.passed for r in results] == [False, True]
    assert "could not be read" in results[0].failures[0]


def test_watch_once_picks_up_new_shards_and_new_versions(ref_setup, s3fs_fresh, tmp_path, capsys):
    store, base = ref_setup
    prefix = f"{base}/incoming"
    upload(s3fs_fresh, tmp_path, f"{prefix}/a.tar", seed=5)
    argv = ["watch", prefix, "--store", store.url, "--reference", "r", "--once"]
    assert main(argv) == 0
    assert "1 shards validated, 0 failed" in capsys.readouterr().out
    assert watch(prefix, store, "r", once=True).validated == 0  # nothing new
    upload(s3fs_fresh, tmp_path, f"{prefix}/a.tar", seed=6)  # a new version
    upload(s3fs_fresh, tmp_path, f"{prefix}/b.tar", nan=True)  # a new, broken shard
    seen = []
    summary = watch(prefix, store, "r", once=True, on_result=seen.append)
    assert summary.validated == 2 and summary.failed == 1
    assert sorted((r.url.rsplit("/", 1)[-1], r.passed) for r in seen) == [
        ("a.tar", True),
        ("b.tar", False),
    ]
    assert main(argv) == 0 and "0 shards validated" in capsys.readouterr().out


def test_watch_is_bounded_and_stops_on_ctrl_c(ref_setup, tmp_path):
    store, base = ref_setup
    naps = []
    summary = watch(f"{base}/empty", store, "r", max_passes=3, interval=5, sleep=naps.append)
    assert summary.passes == 3 and naps == [5, 5]

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    summary = watch(f"{base}/empty", store, "r", interval=1, sleep=interrupt)
    assert summary.passes == 1


def test_watch_goes_on_after_a_failed_pass(ref_setup, monkeypatch):
    import driftloader.validate as validate

    store, base = ref_setup
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("storage unreachable")
        return []

    monkeypatch.setattr(validate, "pending_shards", flaky)
    errors = []
    summary = watch(base, store, "r", max_passes=2, interval=0, on_error=errors.append)
    assert summary.passes == 2 and len(summary.errors) == 1 and isinstance(errors[0], OSError)
    monkeypatch.setattr(
        validate, "pending_shards", lambda *a, **k: (_ for _ in ()).throw(OSError("x"))
    )
    with pytest.raises(OSError):
        watch(base, store, "r", once=True)


def test_watch_with_unknown_reference_fails_at_once(ref_setup):
    from driftloader.errors import ReferenceNotFound

    store, base = ref_setup
    with pytest.raises(ReferenceNotFound):
        watch(base, store, "nope", max_passes=5, interval=0)
