"""The package's public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import driftloader


def test_every_public_name_resolves():
    assert sorted(driftloader.__all__) == sorted(driftloader._WHERE)
    for name in driftloader.__all__:
        assert getattr(driftloader, name).__name__ == name
    assert set(driftloader.__all__) <= set(dir(driftloader))


def test_profiling_and_check_do_not_import_torch():
    # Profiling worker processes and the `profile` / `check` commands start faster without
    # torch (~2 s); profiling needs no scipy either.
    code = (
        "import sys, driftloader, driftloader.profiling, driftloader.store;"
        "print('torch' in sys.modules, 'scipy' in sys.modules);"
        "import driftloader.check; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_profiling_shards_end_to_end_does_not_import_scipy(local_shards, tmp_path):
    # the check for a catalog to compact, after profiling, imported the drift tests (0.2 s)
    code = (
        f"import sys, driftloader as dl; dl.profile_shards({local_shards!r}, "
        f"{str(tmp_path / 'store')!r}, progress=False); print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_profiling_that_compacts_the_catalog_does_not_import_scipy(local_shards, tmp_path):
    # compacting the catalog went through decisions.compact_store, which imports the drift
    # tests (0.22 s) to fold decision indexes that profiling never writes
    store = str(tmp_path / "store")
    code = (
        "import sys, driftloader as dl; from driftloader import compaction; "
        "compaction.COMPACT_OVER = 1; "
        f"dl.profile_shards({local_shards!r}, {store!r}, progress=False); "
        "print('scipy' in sys.modules, len(compaction.list_folder("
        f"dl.ProfileStore({store!r}), compaction.catalog_folder(dl.ProfileStore({store!r})))[1]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0"]  # and no small row is left: it did compact


def test_a_dataset_does_not_import_scipy_stats(tmp_path):
    # scipy.stats takes ~1 s to import; only the rate test of categorical drift needs it, and a
    # plain DriftDataset compares nothing
    code = (
        f"import sys, driftloader as dl; ds = dl.DriftDataset([{str(tmp_path / 'a.tar')!r}]);"
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="DriftDatasett"):
        driftloader.DriftDatasett  # noqa: B018
