"""The one progress reporter: a tqdm bar on a terminal, appended lines in logs, silence off."""

from __future__ import annotations

import io

import pytest

from driftloader.profiling import ProfilingSummary
from driftloader.progress import Progress, reporting, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_cls", [io.StringIO, _Terminal], ids=["log", "terminal"])
def test_progress_rewrites_a_terminal_line_and_appends_lines_to_a_log(stream_cls):
    stream = stream_cls()
    bar = Progress(3, "profiled", enabled=True, stream=stream)
    for done in (1, 2):
        bar.update(done, done * 10, force=True)
    bar.close(ProfilingSummary(profiled=3, samples=30).line())
    text = stream.getvalue()
    if stream_cls is _Terminal:  # tqdm redraws in place; only the summary stays as a line
        assert "\r" in text and "2/3" in text and text.count("\n") == 1
    else:
        assert "\r" not in text and text.count("\n") == 3
        assert text.splitlines()[0].startswith("profiled 1/3 shards, 10 samples")
    assert text.rstrip().endswith(
        "profiled 3 shards (30 samples) in 0.0 s; 0 skipped as already profiled; 0 failed"
    )


def test_a_disabled_progress_prints_nothing():
    stream = _Terminal()
    bar = Progress(3, "checked", enabled=False, stream=stream)
    bar.update(2, force=True)
    bar.close("done")
    assert stream.getvalue() == ""


def test_track_shows_progress_only_when_reporting(capsys, monkeypatch):
    assert list(track(range(3), "checked")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("driftloader.progress._is_terminal", lambda stream: True)
    with reporting():
        assert list(track(iter(range(3)), "checked")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "checked:" in err and "/3" in err and "\r" in err
