"""What DataLoader workers tell the process that made the dataset: their read statistics and
the decision rows of shards that failed mid-read (decisions reach it through the catalog).

Each worker process rewrites one small JSON file after each shard, atomically, in a private
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

STATS, FAILED = "stats", "failed"


class WorkerReports:
    """The channel from worker processes to the process that made it (its ``owner``)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.folder = os.path.join(tempfile.gettempdir(), f"driftloader-{uuid.uuid4().hex}")
        self._file: str | None = None
        weakref.finalize(self, _remove, self.folder, self.owner)

    def in_owner(self) -> bool:
        return os.getpid() == self.owner

    def publish(self, stats: ReadStats, failed: list[dict]) -> None:
        """This worker process's totals so far (replacing what it published before)."""
        if self._file is None or not self._file.startswith(f"{os.getpid()}-"):
            self._file = f"{os.getpid()}-{uuid.uuid4().hex}.json"
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self._file)
        temp = f"{path}.tmp"
        with open(temp, "w") as f:
            json.dump({STATS: asdict(stats), FAILED: failed}, f)
        os.replace(temp, path)

    def with_failed(self, rows: list[dict]) -> list[dict]:
        """``rows`` and, in the owner, the workers' failed-shard rows not among them."""
        if not self.in_owner():
            return rows
        seen = {_row_key(r) for r in rows}
        _, failed = self.gathered()
        return rows + [r for r in failed if _row_key(r) not in seen]

    def gathered(self) -> tuple[ReadStats, list[dict]]:
        """The workers' statistics, summed, and their failed-shard rows."""
        stats, failed = ReadStats(), []
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return stats, failed
        for name in names:
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.folder, name)) as f:
                report = json.load(f)
            stats.merge(ReadStats(**report[STATS]))
            failed.extend(report[FAILED])
        return stats, failed


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _row_key(row: dict) -> tuple:
    return (row.get("url"), row.get("version"), row.get("decided"))
