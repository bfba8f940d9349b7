"""Administration of an experiment table: reset in place, cancellation, status counts.

Unlike :mod:`py_experimenter.queue` (the executors' hot path), these are occasional
operations started by a person, from the Python API or the ``py-experimenter`` command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.db.retry import first_line
from py_experimenter.db.schema import result_columns
from py_experimenter.exceptions import ConfigError
from py_experimenter.status import ExperimentStatus

RUNNING = ExperimentStatus.RUNNING.value
CREATED = ExperimentStatus.CREATED.value


class ExperimentAdmin:
    """Reset, cancel and count the experiments of one table."""

    def __init__(self, db: Database):
        self.db = db

    def reset(self, statuses: Iterable[ExperimentStatus], where: str | None = None) -> int:
        """Put experiments in ``statuses`` back to ``created`` in place; returns how many.

        IDs, logtable rows and attempt history stay. The attempt counter is kept, so a
        still-running executor of a reset experiment is fenced out. Its open attempt is
        closed as ``cancelled``.

        :param where: optional SQL boolean expression over the main table's columns (e.g.
            ``"dataset = 'iris'"``), ANDed with the status filter. It is inserted into the
            statement as written: trusted input only (the caller's own database).
        :raises ConfigError: ``where`` is not a valid condition; nothing was changed.
        """

        values = {s.value for s in statuses}
        if ExperimentStatus.ALL.value in values:
            values = {s.value for s in ExperimentStatus if s is not ExperimentStatus.ALL}
        main, attempts = self.db.schema.main, self.db.schema.attempts
        clear = {c.name: None for c in main.columns if c.name in _reset_columns(self.db)}
        chosen = [] if where is None else [_condition(where)]
        with _where_errors(where), self.db.begin() as conn:
            if RUNNING in values:
                running = sa.select(main.c.ID).where(main.c.status == RUNNING, *chosen).scalar_subquery()
                conn.execute(
                    sa.update(attempts)
                    .where(attempts.c.experiment_id.in_(running), attempts.c.ended_at.is_(None))
                    .values(ended_at=self.db.dialect.now(), outcome="cancelled", error="reset")
                )
            result = conn.execute(
                sa.update(main).where(main.c.status.in_(sorted(values)), *chosen)
                .values(status=CREATED, creation_date=self.db.dialect.now(), cancel_requested=False, **clear)
            )
        return int(result.rowcount)

    def request_cancel(self, ids: Iterable[int] | None = None, where: str | None = None) -> dict[str, int]:
        """Cancel the selected experiments; returns ``{"requested": n, "cancelled": m}``.

        ``running`` rows get ``cancel_requested`` set: their executor's heartbeat notices it
        and ends the try as ``cancelled`` (``requested`` counts them). ``created`` and
        ``paused`` rows never start: they become ``error`` with the reason in ``error``, and
        no attempt is recorded (``cancelled`` counts them). ``done`` and ``error`` rows are
        left alone.

        :param ids: experiment IDs; ANDed with ``where`` when both are given.
        :param where: SQL boolean expression over the main table's columns, inserted as
            written: trusted input only (the caller's own database).
        :raises ConfigError: neither ``ids`` nor ``where`` given, or ``where`` is not a valid
            condition (nothing was changed).
        """

        if ids is None and where is None:
            raise ConfigError("name the experiments to cancel: give experiment IDs or a where condition")
        main = self.db.schema.main
        chosen: list[Any] = [] if ids is None else [main.c.ID.in_(sorted({int(i) for i in ids}))]
        if where is not None:
            chosen.append(_condition(where))
        waiting = [CREATED, ExperimentStatus.PAUSED.value]
        with _where_errors(where), self.db.begin() as conn:
            # Rows not started first: one claimed meanwhile is running by the next statement.
            cancelled = conn.execute(
                sa.update(main).where(main.c.status.in_(waiting), *chosen).values(
                    status=ExperimentStatus.ERROR.value, error="cancelled before it started (cancel requested)",
                    end_date=self.db.dialect.now(), lease_until=None, cancel_requested=False,
                )
            ).rowcount
            requested = conn.execute(
                sa.update(main).where(main.c.status == RUNNING, *chosen).values(cancel_requested=True)
            ).rowcount
        return {"requested": int(requested), "cancelled": int(cancelled)}

    def status_counts(self) -> dict[str, int]:
        """Number of rows per status."""
        main = self.db.schema.main
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(main.c.status, sa.func.count()).group_by(main.c.status)).all()
        return {status: int(count) for status, count in rows}


def _reset_columns(db: Database) -> set[str]:
    fixed = {"start_date", "name", "machine", "end_date", "error", "worker", "job_id", "lease_until",
             "heartbeat_at"}
    return fixed | set(result_columns(db.schema.spec))


def _condition(where: str) -> sa.TextClause:
    """The user's SQL condition, parenthesized (an OR stays inside) with colons escaped (not
    bind parameters: '10:00')."""
    return sa.text("(" + where.replace(":", "\\:") + ")")


@contextlib.contextmanager
def _where_errors(where: str | None) -> Iterator[None]:
    """A condition the database rejects becomes one ConfigError (the transaction rolled back)."""
    try:
        yield
    except sa.exc.DBAPIError as err:
        if where is None or err.connection_invalidated:
            raise
        raise ConfigError(f"invalid where condition {where!r}: {first_line(err.orig)}") from err
