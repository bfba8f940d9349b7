"""Recovery of experiments whose executor vanished (killed, frozen, node lost).

A ``running`` row whose lease expired is taken back: its open attempt is closed as ``lost``
and the row becomes ``created`` again, or ``error`` once its executors were lost
``max_attempts`` times since it was created or last reset. Any executor does this in
passing; there is no cron job and no scheduler. Rows are locked with SKIP LOCKED where the
backend has it, so two executors never recover the same row twice.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.db.schema import DateTime, result_columns
from py_experimenter.status import ExperimentStatus

if TYPE_CHECKING:
    from py_experimenter.queue import Experiment

RUNNING = ExperimentStatus.RUNNING.value
#: Outcomes that count towards ``max_attempts``.
COUNTED_OUTCOMES = ("lost", "interrupted")
BATCH = 50
LOST_REASON = "lease expired: the executor stopped heartbeating (killed, frozen or disconnected)"


class LeaseRecovery:
    """Finds expired leases and hands their rows back (or fails them after ``max_attempts``)."""

    def __init__(self, db: Database, *, max_attempts: int):
        self.db = db
        self.max_attempts = max_attempts
        main, attempts, d = db.schema.main, db.schema.attempts, db.dialect
        self._expired = (
            sa.select(main.c.ID, main.c.attempt, main.c.creation_date, main.c.cancel_requested)
            .where(main.c.status == RUNNING, main.c.lease_until < d.now())
            .order_by(main.c.lease_until)
            .limit(BATCH)
        )
        if d.skip_locked:
            self._expired = self._expired.with_for_update(skip_locked=True)
        self._close_attempt = (
            sa.update(attempts)
            .where(attempts.c.experiment_id == sa.bindparam("eid"), attempts.c.attempt == sa.bindparam("att"),
                   attempts.c.ended_at.is_(None))
            .values(ended_at=d.now(), outcome=sa.bindparam("outcome"), error=sa.bindparam("reason"))
        )
        self._fenced_row = sa.select(main.c.ID, main.c.attempt, main.c.creation_date, main.c.cancel_requested).where(
            main.c.ID == sa.bindparam("eid"), main.c.attempt == sa.bindparam("att"), main.c.status == RUNNING
        )
        if d.skip_locked:
            self._fenced_row = self._fenced_row.with_for_update()
        self._count_lost = (
            sa.select(sa.func.count())
            .select_from(attempts)
            .where(attempts.c.experiment_id == sa.bindparam("eid"), attempts.c.outcome.in_(COUNTED_OUTCOMES),
                   attempts.c.started_at >= sa.bindparam("since", type_=DateTime))
        )
        fence = sa.and_(main.c.ID == sa.bindparam("eid"), main.c.attempt == sa.bindparam("att"),
                        main.c.status == RUNNING)
        # The lost try's partial results must not survive onto the next try's row.
        results = {c: None for c in result_columns(db.schema.spec)}
        self._requeue = sa.update(main).where(fence).values(
            status=ExperimentStatus.CREATED.value, lease_until=None, heartbeat_at=None, worker=None, **results
        )
        self._fail = sa.update(main).where(fence).values(
            status=ExperimentStatus.ERROR.value, error=sa.bindparam("reason"), end_date=d.now(),
            lease_until=None, cancel_requested=False,
        )
        self._stale = sa.select(sa.func.min(main.c.lease_until), sa.type_coerce(d.now(), DateTime)).where(
            main.c.status == RUNNING, main.c.heartbeat_at < d.now_plus("stale")
        )

    def recover(self) -> int:
        """Take back every row whose lease expired; returns how many."""
        return self.db.run(self._recover_once)

    def _recover_once(self) -> int:
        with self.db.begin() as conn:
            rows = conn.execute(self._expired).all()
            for row in rows:
                self._give_back(conn, row, "lost", LOST_REASON)
        return len(rows)

    def hand_back(self, experiment: Experiment, *, reason: str) -> bool:
        """Give a running experiment back on shutdown (attempt ``interrupted``); False if it
        was no longer ours."""

        def attempt() -> bool:
            with self.db.begin() as conn:
                row = conn.execute(self._fenced_row, {"eid": experiment.id, "att": experiment.attempt}).first()
                if row is not None:
                    self._give_back(conn, row, "interrupted", reason)
                return row is not None

        return self.db.run(attempt)

    def _give_back(self, conn: sa.Connection, row: Any, outcome: str, reason: str) -> None:
        # Lock order (as everywhere: claim, finish, logs, reset): the main row is already locked
        # by _expired / _fenced_row (FOR UPDATE), so touching the attempts table first is safe.
        params = {"eid": row.ID, "att": row.attempt}
        conn.execute(self._close_attempt, {**params, "outcome": outcome, "reason": reason})
        lost = conn.scalar(self._count_lost, {"eid": row.ID, "since": row.creation_date}) or 0
        if row.cancel_requested:
            conn.execute(self._fail, {**params, "reason": f"cancelled on request; its last try was {outcome}"})
        elif lost >= self.max_attempts:
            reason = (f"the executor was lost or interrupted {lost} times (max_attempts={self.max_attempts}): "
                      "killed, frozen, disconnected or stopped before finishing; see the attempts table, "
                      "then reset the experiment")
            conn.execute(self._fail, {**params, "reason": reason})
        else:
            conn.execute(self._requeue, params)

    def seconds_until_stale_lease_expires(self, stale_after: float) -> float | None:
        """For running rows without a heartbeat for ``stale_after`` seconds: seconds until the
        first of their leases expires (0 if already), or None when there are none."""
        def query() -> Any:
            with self.db.begin() as conn:
                return conn.execute(self._stale, {"stale": self.db.dialect.seconds_param(-stale_after)}).one()

        first_expiry, now = self.db.run(query)
        if first_expiry is None:
            return None
        if isinstance(first_expiry, str):  # SQLite without type processing
            first_expiry = dt.datetime.fromisoformat(first_expiry)
        return max(0.0, (first_expiry - now).total_seconds())
