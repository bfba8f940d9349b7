"""The heartbeat: a background thread that keeps a running experiment's lease alive.

It runs on its own connection, so a slow experiment (or one holding the executor's
connection) never delays it, and a failed beat (database briefly away) is simply retried at
the next tick. Each beat is one fenced UPDATE; when it matches no row the attempt was taken
over and :attr:`Heartbeat.lost` is set. A set ``cancel_requested`` flag on the row sets
:attr:`Heartbeat.cancel_requested`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from py_experimenter.db.database import Database
    from py_experimenter.queue import Experiment

logger = logging.getLogger("py-experimenter")


class Heartbeat:
    """Extends ``lease_until`` of one attempt every ``interval`` seconds until stopped."""

    def __init__(self, db: Database, experiment: Experiment, *, lease_seconds: float, interval: float):
        self.db = db
        self.experiment = experiment
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{experiment.id}", daemon=True)
        self._beat, self._flag = _statements(db)
        self._params = {"eid": experiment.id, "att": experiment.attempt,
                        "lease": db.dialect.seconds_param(lease_seconds)}

    def start(self) -> None:
        """Start beating in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most one beat)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.db.begin() as conn:
                    if conn.execute(self._beat, self._params).rowcount != 1:
                        self.lost.set()
                        return
                    self.beats += 1
                    if conn.scalar(self._flag, self._params):
                        self.cancel_requested.set()
            except sa.exc.DBAPIError as err:
                logger.warning("heartbeat of experiment %s failed, retrying: %s",
                               self.experiment.id, str(err.orig).splitlines()[0] if err.orig else err)


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
