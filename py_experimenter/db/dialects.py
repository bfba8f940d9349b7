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
