"""Administration of an experiment table: reset in place, cancellation, status counts.

Unlike :mod:`py_experimenter.queue` (the executors' hot path), these are occasional
operations started by a person, from the Python API or the ``py-experimenter`` command.

Lock order, the same as the executors' (claim, finish, recovery, logs): the main table's
rows first, in ID order, then their attempt / logtable rows. A reset first locks the rows it
will change (``SELECT … FOR UPDATE``), then closes their open attempts by ID, then updates
them; it never waits for a main-table row while holding an attempts row, so it cannot
deadlock with an executor finishing an experiment. A deadlock or lock timeout that happens
anyway (e.g. with another administrator) is retried like the executors' transactions.

``where`` conditions are checked and rebuilt by :func:`py_experimenter.where.parse_where`
before any statement runs.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.db.engine import describe
from py_experimenter.db.retry import first_line, is_disconnect, retry_transient
from py_experimenter.db.schema import result_columns
from py_experimenter.exceptions import ConfigError, DatabaseConnectionError, DatabaseError, TableError, WhereError
from py_experimenter.status import ExperimentStatus

T = TypeVar("T")
RUNNING = ExperimentStatus.RUNNING.value
CREATED = ExperimentStatus.CREATED.value
#: IDs per ``IN (...)`` list: a reset of a large table runs in several statements (one transaction).
CHUNK = 500
#: PostgreSQL SQLSTATE classes that mean "this value / condition does not fit the column":
#: data exception (22: '3x' for an integer), syntax / undefined (42).
_PG_VALUE_CLASSES = ("22", "42")
#: MySQL errors for a value that does not fit (truncated value, wrong value for column).
_MYSQL_VALUE_ERRORS = {1292, 1366, 1411}


class ExperimentAdmin:
    """Reset, cancel and count the experiments of one table."""

    def __init__(self, db: Database):
        self.db = db

    def reset(self, statuses: Iterable[ExperimentStatus], where: str | None = None) -> int:
        """Put experiments in ``statuses`` back to ``created`` in place; returns how many.

        IDs, logtable rows and attempt history stay. The attempt counter is kept, so a
        still-running executor of a reset experiment is fenced out. Its open attempt is
        closed as ``cancelled``.

        :param where: optional condition over the main table's columns (e.g.
            ``"dataset = 'iris'"``), ANDed with the status filter; see :mod:`py_experimenter.where`.
        :raises WhereError: ``where`` is not an allowed condition; nothing was changed.
        """
        values = {s.value for s in statuses}
        if ExperimentStatus.ALL.value in values:
            values = {s.value for s in ExperimentStatus if s is not ExperimentStatus.ALL}
        chosen = self._chosen(where)
        main, attempts, d = self.db.schema.main, self.db.schema.attempts, self.db.dialect
        clear = {c.name: None for c in main.columns if c.name in _reset_columns(self.db)}
        lock = sa.select(main.c.ID, main.c.status).where(main.c.status.in_(sorted(values)), *chosen)
        lock = lock.order_by(main.c.ID)
        if d.skip_locked:  # servers: lock the main rows first (SQLite: BEGIN IMMEDIATE locks the file)
            lock = lock.with_for_update()

        def once() -> int:
            with self.db.begin() as conn:
                rows = conn.execute(lock).all()
                running = [row.ID for row in rows if row.status == RUNNING]
                for ids in _chunks(running):
                    conn.execute(
                        sa.update(attempts)
                        .where(attempts.c.experiment_id.in_(ids), attempts.c.ended_at.is_(None))
                        .values(ended_at=d.now(), outcome="cancelled", error="reset")
                    )
                reset = 0
                for ids in _chunks([row.ID for row in rows]):
                    reset += conn.execute(
                        sa.update(main).where(main.c.ID.in_(ids), main.c.status.in_(sorted(values)))
                        .values(status=CREATED, creation_date=d.now(), cancel_requested=False, **clear)
                    ).rowcount
            return int(reset)

        return self._write(once, where)

    def request_cancel(self, ids: Iterable[int] | None = None, where: str | None = None) -> dict[str, int]:
        """Cancel the selected experiments; returns ``{"requested": n, "cancelled": m}``.

        ``running`` rows get ``cancel_requested`` set: their executor's heartbeat notices it
        and ends the try as ``cancelled`` (``requested`` counts them). ``created`` and
        ``paused`` rows never start: they become ``error`` with the reason in ``error``, and
        no attempt is recorded (``cancelled`` counts them). ``done`` and ``error`` rows are
        left alone.

        :param ids: experiment IDs; ANDed with ``where`` when both are given.
        :param where: condition over the main table's columns; see :mod:`py_experimenter.where`.
        :raises ConfigError: neither ``ids`` nor ``where`` given, or an ID is not an integer.
        :raises WhereError: ``where`` is not an allowed condition (nothing was changed).
        """
        if ids is None and where is None:
            raise ConfigError("name the experiments to cancel: give experiment IDs or a where condition")
        main = self.db.schema.main
        chosen: list[Any] = [] if ids is None else [main.c.ID.in_(_experiment_ids(ids))]
        chosen += self._chosen(where)
        waiting = [CREATED, ExperimentStatus.PAUSED.value]

        def once() -> dict[str, int]:
            with self.db.begin() as conn:
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

        return self._write(once, where)

    def status_counts(self) -> dict[str, int]:
        """Number of rows per status.

        :raises TableError: the table does not exist yet (``fill`` creates it).
        """
        main = self.db.schema.main

        def once() -> dict[str, int]:
            with self.db.begin() as conn:
                rows = conn.execute(sa.select(main.c.status, sa.func.count()).group_by(main.c.status)).all()
            return {status: int(count) for status, count in rows}

        return self._write(once, None)

    def table_exists(self) -> bool:
        """True when the main table exists (connection problems raise :class:`DatabaseConnectionError`)."""
        def once() -> bool:
            with self.db.connect() as conn:
                return bool(sa.inspect(conn).has_table(self.db.schema.main.name))

        return self._write(once, None)

    def _chosen(self, where: str | None) -> list[Any]:
        if where is None:
            return []
        from py_experimenter.where import parse_where  # sqlglot only when a condition is given

        return [parse_where(where, self.db.schema.main, self.db.backend)]

    def _write(self, action: Callable[[], T], where: str | None) -> T:
        """Run one admin transaction: deadlocks and lock timeouts are retried; other database
        errors become one :class:`DatabaseError` subclass naming what went wrong."""
        try:
            return retry_transient(action)
        except sa.exc.DBAPIError as err:
            raise self._translate(err, where) from None

    def _translate(self, err: sa.exc.DBAPIError, where: str | None) -> DatabaseError | ConfigError:
        reason = first_line(err.orig)
        if "file is not a database" in reason:
            return DatabaseConnectionError(f"{describe(self.db.url)}: the file is not a SQLite database ({reason})")
        if is_disconnect(err):
            return DatabaseConnectionError(f"cannot reach {describe(self.db.url)}: {reason}")
        if not self._table_present(err):
            return TableError(f"table {self.db.schema.main.name!r} does not exist yet in {describe(self.db.url)}; "
                              "create it with: py-experimenter fill CONFIG")
        if where is not None and _value_error(err):
            return WhereError(f"the database rejected a value in it: {reason}", where=where)
        return DatabaseError(f"{describe(self.db.url)}, table {self.db.schema.main.name!r}: {reason}")

    def _table_present(self, err: sa.exc.DBAPIError) -> bool:
        text = str(err.orig).lower()
        if "no such table" in text or "doesn't exist" in text or "does not exist" in text:
            try:
                with self.db.connect() as conn:
                    return bool(sa.inspect(conn).has_table(self.db.schema.main.name))
            except Exception:  # unreachable now: report the original error
                return True
        return True


def _value_error(err: sa.exc.DBAPIError) -> bool:
    sqlstate = getattr(err.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _PG_VALUE_CLASSES
    code = next(iter(getattr(err.orig, "args", ())), None)
    return code in _MYSQL_VALUE_ERRORS


def _experiment_ids(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ConfigError(f"experiment IDs {ids!r}: expected an integer ID or a list of them, such as [3, 7]")
    chosen: set[int] = set()
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy IDs from get_table() too
            raise ConfigError(f"experiment ID {value!r}: expected an integer ID such as 7")
        value = int(value)
        if not -2**31 <= value < 2**31:  # the ID column is an INT: no row has it (and a driver may not bind it)
            raise ConfigError(f"experiment ID {value}: beyond the ID column's range (INT), not an experiment ID")
        chosen.add(value)
    return sorted(chosen)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


def _reset_columns(db: Database) -> set[str]:
    fixed = {"start_date", "name", "machine", "end_date", "error", "worker", "job_id", "lease_until",
             "heartbeat_at"}
    return fixed | set(result_columns(db.schema.spec))
