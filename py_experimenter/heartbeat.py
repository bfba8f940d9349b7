"""The heartbeat: one background thread per executor keeps the running attempt's lease alive.

It runs on its own connection, so a slow experiment (or one holding the executor's
connection) never delays it, and a failed beat (database briefly away) is simply retried at
the next tick. Each beat is one fenced UPDATE that extends ``lease_until`` on the database
clock and reads the row's ``cancel_requested`` flag. When the UPDATE matches no row the
attempt was taken over: the watch's :attr:`Watch.lost` is set. A set flag sets
:attr:`Watch.cancel_requested`. Either calls the watch's ``on_stop`` callback once, so the
executor can stop the experiment within one heartbeat.

No exception ends the thread (a driver error, a pool timeout, a bug): it is logged and the
beat is retried, first after a short pause that doubles up to ``interval``. When no beat has
succeeded for so long that the lease would expire within a margin (``lease_seconds`` minus
the larger of ``interval`` and a fifth of the lease), the attempt is given up as lost: the
experiment is stopped like one whose lease was taken over, rather than run on unprotected
while another executor may already run it again.

The thread lives as long as the executor and is handed one experiment after the other
(:meth:`Heartbeat.watch`): starting a thread per experiment would cost more than a short
experiment itself.
"""

from __future__ import annotations

import logging
import threading
import time
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
        #: Failed beats in a row (reset by a successful one).
        self.failures = 0
        #: ``time.monotonic()`` before the last successful beat (or the claim): the lease runs
        #: at least ``lease_seconds`` from then.
        self.last_renewed = time.monotonic()
        self._on_stop = on_stop
        self._lost_why: str | None = None

    def stop_reason(self) -> tuple[str, str] | None:
        """``("lost", why)`` or ``("cancelled", why)`` once the heartbeat saw it, else None."""
        if self.lost.is_set():
            return "lost", self._lost_why or (
                f"experiment {self.experiment.id} attempt {self.experiment.attempt} is no longer ours "
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

    @property
    def margin(self) -> float:
        """How long before the lease would expire an attempt that cannot beat is given up."""
        return min(max(self.interval, 0.2 * self.lease_seconds), 0.5 * self.lease_seconds)

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            wait = self.interval
            watch = self._current
            if watch is None:
                continue
            started = time.monotonic()
            try:
                event = self._beat(watch, *_statements(self.db))
            except Exception as err:  # anything: the thread must outlive it (see the module docstring)
                wait = self._failed(watch, err)
                continue
            watch.failures = 0
            watch.last_renewed = started
            if event is not None and watch is self._current:
                self._signal(watch, event)

    def _failed(self, watch: Watch, err: Exception) -> float:
        """Log a failed beat; give the attempt up when its lease is about to expire. The next wait."""
        watch.failures += 1
        orig = getattr(err, "orig", None)
        reason = f"{type(err).__name__}: {first_line(orig or err)}"
        silent = time.monotonic() - watch.last_renewed
        if silent >= self.lease_seconds - self.margin:
            if watch is self._current and not watch.lost.is_set():
                watch._lost_why = (
                    f"experiment {watch.experiment.id} attempt {watch.experiment.attempt}: the heartbeat could "
                    f"not renew its lease for {silent:.1f} s ({watch.failures} failed beats, last: {reason}); "
                    f"its lease of {self.lease_seconds:g} s (Execution.lease_seconds) is about to expire and "
                    "another executor may take it over, so it is stopped here")
                logger.error("%s", watch._lost_why)
                self._signal(watch, watch.lost)
            return self.interval
        logger.warning("heartbeat of experiment %s failed (%d in a row), retrying: %s",
                       watch.experiment.id, watch.failures, reason)
        backoff = min(self.interval, 0.05 * 2 ** (watch.failures - 1))
        # Never wait past the moment the attempt must be given up.
        return max(0.01, min(backoff, self.lease_seconds - self.margin - silent))

    @staticmethod
    def _signal(watch: Watch, event: threading.Event) -> None:
        try:
            watch._signal(event)
        except Exception:  # the executor's callback must not end the heartbeat either
            logger.exception("stopping experiment %s failed", watch.experiment.id)

    def _beat(self, watch: Watch, beat: sa.Update, flag: sa.Select[Any]) -> threading.Event | None:
        """One beat; the watch's event to set (lost / cancel requested), or None."""
        params = {"eid": watch.experiment.id, "att": watch.experiment.attempt, "lease": self._lease}
        with self._transaction() as conn:
            if conn.execute(beat, params).rowcount != 1:
                return watch.lost
            watch.beats += 1
            return watch.cancel_requested if conn.scalar(flag, params) else None

    def _transaction(self) -> Any:
        """The beat's transaction on a pooled connection (its own, not the executor's)."""
        return self.db.begin()


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
