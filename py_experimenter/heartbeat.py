"""The heartbeat: one background thread per executor keeps the running attempt's lease alive.

It runs on its own connection, so a slow experiment (or one holding the executor's
connection) never delays it, and a failed beat (database briefly away) is simply retried at
the next tick. Each beat is one fenced UPDATE that extends ``lease_until`` on the database
clock and reads the row's ``cancel_requested`` flag. When the UPDATE matches no row the
attempt was taken over: the watch's :attr:`Watch.lost` is set. A set flag sets
:attr:`Watch.cancel_requested`. Either calls the watch's ``on_stop`` callback once, so the
executor can stop the experiment within one heartbeat.

The thread lives as long as the executor and is handed one experiment after the other
(:meth:`Heartbeat.watch`): starting a thread per experiment would cost more than a short
experiment itself.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from py_experimenter.db.retry import first_line

if TYPE_CHECKING:
    from py_experimenter.db.database import Database
    from py_experimenter.queue import Experiment

logger = logging.getLogger("py-experimenter")


class Watch:
    """What the heartbeat learned about one attempt while it ran."""

    def __init__(self, experiment: Experiment, on_stop: Callable[[str, str], None] | None = None):
        self.experiment = experiment
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self.beats = 0
        self._on_stop = on_stop

    def stop_reason(self) -> tuple[str, str] | None:
        """``("lost", why)`` or ``("cancelled", why)`` once the heartbeat saw it, else None."""
        if self.lost.is_set():
            return "lost", (f"experiment {self.experiment.id} attempt {self.experiment.attempt} is no longer ours "
                            "(its lease expired, or it was reset or taken over)")
        if self.cancel_requested.is_set():
            return "cancelled", "cancelled on request (cancel_requested was set on the row)"
        return None

    def _signal(self, event: threading.Event) -> None:
        if event.is_set():
            return
        event.set()
        reason = self.stop_reason()
        if self._on_stop is not None and reason is not None:
            self._on_stop(*reason)


class Heartbeat:
    """Extends ``lease_until`` of the watched attempt every ``interval`` seconds."""

    def __init__(self, db: Database, *, lease_seconds: float, interval: float):
        self.db = db
        self.lease_seconds = lease_seconds
        self.interval = interval
        self._current: Watch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease = db.dialect.seconds_param(lease_seconds)

    def watch(self, experiment: Experiment, on_stop: Callable[[str, str], None] | None = None) -> Watch:
        """Keep ``experiment``'s lease alive from now on (replacing the previous one)."""
        watch = Watch(experiment, on_stop)
        self._current = watch
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="py-experimenter-heartbeat", daemon=True)
            self._thread.start()
        return watch

    def unwatch(self) -> None:
        """Stop beating for the current experiment (the thread stays for the next one)."""
        self._current = None

    def close(self) -> None:
        """Stop the thread and wait for it (at most one beat)."""
        self._current = None
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        statements = _statements(self.db)
        while not self._stop.wait(self.interval):
            watch = self._current
            if watch is None:
                continue
            try:
                event = self._beat(watch, *statements)
            except sa.exc.DBAPIError as err:
                logger.warning("heartbeat of experiment %s failed, retrying: %s",
                               watch.experiment.id, first_line(err.orig or err))
                continue
            if event is not None and watch is self._current:
                watch._signal(event)

    def _beat(self, watch: Watch, beat: sa.Update, flag: sa.Select[Any]) -> threading.Event | None:
        """One beat; the watch's event to set (lost / cancel requested), or None."""
        params = {"eid": watch.experiment.id, "att": watch.experiment.attempt, "lease": self._lease}
        with self.db.begin() as conn:
            if conn.execute(beat, params).rowcount != 1:
                return watch.lost
            watch.beats += 1
            return watch.cancel_requested if conn.scalar(flag, params) else None


_STATEMENTS: weakref.WeakKeyDictionary[sa.Table, tuple[sa.Update, sa.Select[Any]]] = weakref.WeakKeyDictionary()


def _statements(db: Database) -> tuple[sa.Update, sa.Select[Any]]:
    """The beat and the cancel-flag query, built once per table (bound parameters)."""
    main = db.schema.main
    if main not in _STATEMENTS:
        dialect = db.dialect
        fence = sa.and_(main.c.ID == sa.bindparam("eid"), main.c.attempt == sa.bindparam("att"),
                        main.c.status == "running")
        beat = sa.update(main).where(fence).values(lease_until=dialect.now_plus("lease"), heartbeat_at=dialect.now())
        _STATEMENTS[main] = (beat, sa.select(main.c.cancel_requested).where(fence))
    return _STATEMENTS[main]
