"""Launch records: what one ``launch`` started, kept as JSON next to its logs.

Layout under the log folder (default ``./py_experimenter_logs``)::

    <log-dir>/<table>/launch-<backend>-<UTC stamp>.json   the record (read by --stop and status)
    <log-dir>/<table>/<backend>-<UTC stamp>/               that launch's logs (``run_dir``)

A record is a JSON object with at least ``backend``, ``table``, ``launched_at`` (Unix time) and
whatever the backend needs to stop exactly what it started (pids with start times, hosts, job
ids). ``--stop`` adds ``stopped_at``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LOG_DIR", "Launch", "launch_records", "new_launch", "save_record"]

#: Where launches keep their records and logs unless told otherwise (relative to the current folder).
DEFAULT_LOG_DIR = "py_experimenter_logs"


@dataclass(frozen=True)
class Launch:
    """Where one launch writes: its record file and its log folder."""

    backend: str
    table: str
    record_path: Path
    run_dir: Path
    launched_at: float

    def base_record(self) -> dict[str, Any]:
        """The fields every record has; the backend adds its own."""
        return {"backend": self.backend, "table": self.table, "launched_at": self.launched_at,
                "run_dir": str(self.run_dir)}

    def discard(self) -> None:
        """Remove the log folder of a launch that started nothing (if it is still empty)."""
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()

    def run(self, start: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """``start(run_dir)`` (the backend's fields of what it started), then the saved record.

        A ``start`` that raises has started nothing: the empty log folder goes and no record is written.
        """
        try:
            fields = start(self.run_dir)
        except BaseException:
            self.discard()
            raise
        record = {**self.base_record(), **fields, "record_path": str(self.record_path)}
        save_record(self.record_path, record)
        return record


def table_dir(log_dir: str | os.PathLike[str], table: str) -> Path:
    """``<log-dir>/<table>``, absolute."""
    return Path(log_dir).absolute() / table


def new_launch(log_dir: str | os.PathLike[str], table: str, backend: str) -> Launch:
    """A fresh record path and log folder for a launch now (the folder is created)."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = table_dir(log_dir, table)
    run_dir = folder / f"{backend}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return Launch(backend, table, folder / f"launch-{backend}-{stamp}.json", run_dir, now)


def save_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (a half-written record never confuses --stop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def launch_records(log_dir: str | os.PathLike[str], table: str, backend: str | None = None,
                   *, include_stopped: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The records of launches of ``table`` (oldest first), optionally of one backend only.

    Records already stopped are left out unless ``include_stopped``; unreadable files are skipped.
    """
    folder = table_dir(log_dir, table)
    pattern = f"launch-{backend}-*.json" if backend else "launch-*.json"
    for path in sorted(folder.glob(pattern)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or "backend" not in record:
            continue
        if record.get("stopped_at") and not include_stopped:
            continue
        yield path, record
