"""What DataLoader workers tell the process that made the dataset: their read statistics and
their gate's decision rows (a decision the catalog holds already is not written there again,
so the catalog alone does not show the owner what its workers decided in this run).

Each worker process rewrites one small JSON file of statistics after each shard, atomically,
and appends its new decision rows to a log beside it, one JSON line each, in a private
temporary folder named by the dataset (removed when the dataset is collected); the owner
merges them when asked. Files, not pipes: they work with fork and spawn alike, need nothing
set up before the DataLoader starts its workers, and survive a worker's end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import weakref
from dataclasses import asdict

from .reader import ReadStats

STATS = "stats"
LOG = ".decisions.jsonl"  # a worker's decision rows, appended


class WorkerReports:
    """The channel from worker processes to the process that made it (its ``owner``)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.folder = os.path.join(tempfile.gettempdir(), f"driftloader-{uuid.uuid4().hex}")
        self._file: str | None = None
        self._logged = 0  # decision rows this worker process has appended to its log
        weakref.finalize(self, _remove, self.folder, self.owner)

    def in_owner(self) -> bool:
        return os.getpid() == self.owner

    def publish(self, stats: ReadStats, rows: list[dict]) -> None:
        """This worker process's totals so far (replacing what it published before) and its
        decision rows (``rows``: all so far; those not published yet are appended)."""
        if self._file is None or not self._file.startswith(f"{os.getpid()}-"):
            self._file, self._logged = f"{os.getpid()}-{uuid.uuid4().hex}.json", 0
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self._file)
        if len(rows) < self._logged:  # the gate was reset (a resumed state): log them again
            self._logged = 0
        if len(rows) > self._logged:
            with open(path[: -len(".json")] + LOG, "a") as log:
                log.writelines(json.dumps(row) + "\n" for row in rows[self._logged :])
            self._logged = len(rows)
        temp = f"{path}.tmp"
        with open(temp, "w") as f:
            json.dump({STATS: asdict(stats)}, f)
        os.replace(temp, path)

    def with_workers(self, rows: list[dict]) -> list[dict]:
        """``rows`` and, in the owner, the workers' decision rows not among them."""
        if not self.in_owner():
            return rows
        seen = {_row_key(r) for r in rows}
        _, decided = self.gathered()
        return rows + [r for r in decided if _row_key(r) not in seen]

    def gathered(self) -> tuple[ReadStats, list[dict]]:
        """The workers' statistics, summed, and their decision rows."""
        stats, decided = ReadStats(), []
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return stats, decided
        for name in names:
            if name.endswith(".json"):
                with open(os.path.join(self.folder, name)) as f:
                    stats.merge(ReadStats(**json.load(f)[STATS]))
            elif name.endswith(LOG):
                with open(os.path.join(self.folder, name)) as f:
                    decided.extend(json.loads(line) for line in f if line.endswith("\n"))
        return stats, decided


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _row_key(row: dict) -> tuple:
    return (row.get("url"), row.get("version"), row.get("decided"))
