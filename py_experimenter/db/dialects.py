"""What differs between backends: the database clock, lease arithmetic, the claim, insert-or-skip.

Everything else in the queue is portable SQLAlchemy Core. Times always come from the
database clock (in UTC, see :mod:`py_experimenter.db.engine`), never from an executor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from py_experimenter.status import ExperimentStatus

CREATED = ExperimentStatus.CREATED.value


class Dialect:
    """Backend-specific SQL fragments; one subclass per backend."""

    name = "base"
    #: Whether the claim can lock one row and let others skip it (``FOR UPDATE SKIP LOCKED``).
    skip_locked = True

    def now(self) -> sa.ColumnElement[Any]:
        raise NotImplementedError

    def now_plus(self, param: str) -> sa.ColumnElement[Any]:
        """``now + <seconds given by bind parameter param>`` (see :meth:`seconds_param`)."""
        raise NotImplementedError

    def seconds_param(self, seconds: float) -> Any:
        """The value to bind for a :meth:`now_plus` parameter."""
        raise NotImplementedError

    def random_order(self) -> sa.ColumnElement[Any]:
        return sa.func.random()

    def insert_skipping_duplicates(self, table: sa.Table) -> sa.Insert:
        """An INSERT that silently skips rows whose keyhash already exists."""
        raise NotImplementedError

    def pick_created(
        self, table: sa.Table, columns: Sequence[sa.ColumnElement[Any]], *, random_order: bool
    ) -> sa.Select[Any]:
        """SELECT the next claimable row (priority, then ID), skipping rows others hold."""
        order = [self.random_order()] if random_order else [table.c.priority, table.c.ID]
        stmt = sa.select(*columns).where(table.c.status == CREATED).order_by(*order).limit(1)
        if self.skip_locked:
            stmt = stmt.with_for_update(skip_locked=True)
        return stmt

    #: How many random candidate IDs a random-order claim reads without locking before it
    #: locks one of them (:meth:`pick_random_candidates`); 0: one locking SELECT ordered at random.
    random_candidates = 0

    def pick_random_candidates(self, table: sa.Table) -> sa.Select[Any]:
        """IDs of up to :attr:`random_candidates` random ``created`` rows, read without locking."""
        return (sa.select(table.c.ID).where(table.c.status == CREATED).order_by(self.random_order())
                .limit(self.random_candidates))

    def pick_among(self, table: sa.Table, columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
        """Lock one still ``created`` row among the IDs bound to ``candidates``, skipping held ones."""
        stmt = (sa.select(*columns).where(table.c.ID.in_(sa.bindparam("candidates", expanding=True)),
                                          table.c.status == CREATED).limit(1))
        return stmt.with_for_update(skip_locked=True) if self.skip_locked else stmt


class SQLiteDialect(Dialect):
    name = "sqlite"
    # One writer at a time: BEGIN IMMEDIATE (see engine.py) already serializes claims.
    skip_locked = False

    _FORMAT = "%Y-%m-%d %H:%M:%f"

    def now(self) -> sa.ColumnElement[Any]:
        return sa.func.strftime(self._FORMAT, "now")

    def now_plus(self, param: str) -> sa.ColumnElement[Any]:
        return sa.func.strftime(self._FORMAT, "now", sa.bindparam(param, type_=sa.String))

    def seconds_param(self, seconds: float) -> Any:
        return f"{seconds:+.6f} seconds"

    def insert_skipping_duplicates(self, table: sa.Table) -> sa.Insert:
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["keyhash"])


class MySQLDialect(Dialect):
    name = "mysql"

    def now(self) -> sa.ColumnElement[Any]:
        return sa.literal_column("NOW(6)")

    def now_plus(self, param: str) -> sa.ColumnElement[Any]:
        return sa.func.timestampadd(
            sa.literal_column("MICROSECOND"), sa.bindparam(param, type_=sa.BigInteger), self.now()
        )

    def seconds_param(self, seconds: float) -> Any:
        return round(seconds * 1_000_000)

    def random_order(self) -> sa.ColumnElement[Any]:
        return sa.func.rand()

    # InnoDB locks every row a locking read examines, before ORDER BY RAND() sorts them: one
    # "ORDER BY RAND() LIMIT 1 FOR UPDATE SKIP LOCKED" locked every created row, and the other
    # executors found nothing to claim. Random candidates are read without locking instead.
    random_candidates = 16

    def insert_skipping_duplicates(self, table: sa.Table) -> sa.Insert:
        # Not INSERT IGNORE: that would also turn truncation and type errors into warnings.
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(keyhash=stmt.inserted.keyhash)


class PostgreSQLDialect(Dialect):
    name = "postgresql"

    def now(self) -> sa.ColumnElement[Any]:
        return sa.literal_column("LOCALTIMESTAMP")

    def now_plus(self, param: str) -> sa.ColumnElement[Any]:
        return self.now() + sa.bindparam(param, type_=sa.Interval)

    def seconds_param(self, seconds: float) -> Any:
        return dt.timedelta(seconds=seconds)

    def insert_skipping_duplicates(self, table: sa.Table) -> sa.Insert:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["keyhash"])


def dialect_for(backend: str) -> Dialect:
    """The :class:`Dialect` for ``sqlite``, ``mysql`` or ``postgresql``."""
    return {"sqlite": SQLiteDialect, "mysql": MySQLDialect, "postgresql": PostgreSQLDialect}[backend]()
