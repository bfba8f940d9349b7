"""``launch --wait``: follow a table's progress until it is drained or the launched executors ended.

:func:`follow` polls the number of rows per status (one ``GROUP BY status`` query) every
``interval`` seconds and shows finished / total, the rate and an ETA: a rich progress bar on
a terminal (when ``rich`` is installed), else one plain line every ``line_every`` seconds, so
that a batch log or a CI log stays readable. It returns when no row is ``created`` or
``running`` any more, or when ``alive()`` says that none of the executors runs (the rows left
then wait for the next launch).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from py_experimenter.experimenter import PyExperimenter

#: Statuses that still wait for an executor.
PENDING = ("created", "running")


@dataclass(frozen=True)
class Progress:
    """Rows per status at one moment, and what follows from them."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        """All rows of the table."""
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        """Rows that are ``created`` or ``running``."""
        return sum(self.counts.get(status, 0) for status in PENDING)

    @property
    def finished(self) -> int:
        """Rows no executor will run any more (done, error, paused, ...)."""
        return self.total - self.pending

    def describe(self) -> str:
        """``done 12, error 0, running 3, created 15``: every status present, done first."""
        order = ["done", "error", "running", "created", "paused"]
        names = [s for s in order if s in self.counts] + sorted(set(self.counts) - set(order))
        return ", ".join(f"{name} {self.counts[name]}" for name in names) or "no experiments"


def _eta(rate: float | None, pending: int) -> str:
    if pending == 0:
        return "0:00:00"
    if not rate:
        return "unknown"
    return str(timedelta(seconds=round(pending / rate)))


def _experimenter(source: Any, credentials: str | None, table: str | None, database: str | None) -> PyExperimenter:
    from py_experimenter.experimenter import PyExperimenter

    if isinstance(source, PyExperimenter):
        return source
    if isinstance(source, (str, os.PathLike)):
        return PyExperimenter(os.fspath(source), credentials, table_name=table, database_name=database,
                              use_codecarbon=False)
    raise TypeError(f"follow() needs a PyExperimenter or an experiment file, got {type(source).__name__}")


class _Display:
    """A rich progress bar on a terminal, plain lines elsewhere."""

    def __init__(self, out: TextIO, table: str, line_every: float, rich: bool | None):
        self.out = out
        self.table = table
        self.line_every = line_every
        self._last_line = float("-inf")
        self._bar: Any = None
        self._task: Any = None
        use_rich = rich if rich is not None else (hasattr(out, "isatty") and out.isatty())
        if use_rich:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self._bar = Progress(TextColumn(f"[bold]{table}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[detail]}"),
                                 console=Console(file=out), transient=False)
            self._task = self._bar.add_task(table, total=None, detail="")
            self._bar.start()

    def update(self, progress: Progress, rate: float | None, force: bool = False) -> None:
        eta = _eta(rate, progress.pending)
        speed = f"{rate * 60:.1f}/min" if rate else "-/min"
        if self._bar is not None:
            self._bar.update(self._task, total=progress.total, completed=progress.finished,
                             detail=f"{progress.describe()} | {speed} | ETA {eta}")
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.line_every:
            self._last_line = now
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {self.table}: {progress.finished}/{progress.total} finished ({progress.describe()}), "
                  f"{speed}, ETA {eta}", file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _alive(alive: Callable[[], int], out: TextIO) -> int | None:
    """``alive()``, or None when it cannot tell (``squeue`` failing once must not end ``--wait``)."""
    try:
        return alive()
    except Exception as err:  # any backend's failure to look: follow the table regardless
        print(f"note: cannot tell whether the executors still run ({err}); still following the table",
              file=out, flush=True)
        return None


def follow(experimenter: PyExperimenter | str | os.PathLike[str], alive: Callable[[], int] | None = None,
           out: TextIO | None = None, *, interval: float = 2.0, line_every: float = 10.0,
           credentials: str | None = None, table: str | None = None, database: str | None = None,
           timeout: float | None = None, rich: bool | None = None) -> dict[str, int]:
    """Show the table's progress until no experiment is ``created`` or ``running``, or ``alive()``
    returns 0 (the launched executors all ended), or ``timeout`` seconds passed.

    :param experimenter: a :class:`~py_experimenter.experimenter.PyExperimenter`, or an experiment
        file (then ``credentials``, ``table`` and ``database`` as for ``PyExperimenter``).
    :param alive: how many of the launched executors still run (a backend's ``alive_record``);
        None follows until the table is drained.
    :param out: where to write (default stdout); a rich bar when it is a terminal, else plain lines.
    :param interval: seconds between two status queries.
    :param line_every: seconds between two plain lines.
    :param rich: force the bar (True) or plain lines (False); None decides by ``out.isatty()``.
    :returns: the rows per status at the end.
    """
    out = out if out is not None else sys.stdout
    handle = _experimenter(experimenter, credentials, table, database)
    admin = handle._admin()
    display = _Display(out, handle.config.table.name, line_every, rich)
    started = time.monotonic()
    first: Progress | None = None
    reason = "drained"
    try:
        while True:
            progress = Progress(admin.status_counts())
            if first is None:
                first = progress
            elapsed = time.monotonic() - started
            done_since = progress.finished - first.finished
            rate = done_since / elapsed if elapsed > 0 and done_since > 0 else None
            if progress.pending == 0:
                display.update(progress, rate, force=True)
                break
            if alive is not None and _alive(alive, out) == 0:
                progress = Progress(admin.status_counts())  # what the last executors wrote before leaving
                display.update(progress, rate, force=True)
                reason = "ended" if progress.pending else "drained"
                break
            if timeout is not None and elapsed >= timeout:
                display.update(progress, rate, force=True)
                reason = "timeout"
                break
            display.update(progress, rate)
            time.sleep(interval)
    finally:
        display.close()
    took = str(timedelta(seconds=round(time.monotonic() - started)))
    if reason == "drained":
        print(f"{handle.config.table.name}: drained in {took}: {progress.describe()}", file=out, flush=True)
    elif reason == "ended":
        print(f"{handle.config.table.name}: the executors ended with {progress.pending} experiments left "
              f"({progress.describe()}); launch again to run them", file=out, flush=True)
    else:
        print(f"{handle.config.table.name}: stopped following after {took} ({progress.describe()}); "
              "the executors keep running", file=out, flush=True)
    return dict(progress.counts)
