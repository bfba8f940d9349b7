"""One experiment's database: engine (per process), tables, creation and verification."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from py_experimenter.db.dialects import Dialect, dialect_for
from py_experimenter.db.engine import backend_name, create_engine, describe
from py_experimenter.db.inspection import TableComparison, compare_tables
from py_experimenter.db.retry import first_line, retry_outage
from py_experimenter.db.schema import Schema
from py_experimenter.exceptions import DatabaseConnectionError, TableError

T = TypeVar("T")
#: How often ``create_tables`` tries CREATE TABLE (a concurrent creator may be half-way).
CREATE_TRIES = 3


class Database:
    """Engine, dialect and tables for one experiment table.

    The engine is created lazily and again after a fork, so one ``Database`` can be handed
    to executor processes: each gets its own connections.
    """

    def __init__(self, url: URL, schema: Schema, *, outage_seconds: float = 300.0):
        self.url = url
        #: How long :meth:`run` rides out an unreachable server before giving up.
        self.outage_seconds = outage_seconds
        self.backend = backend_name(url)
        self.dialect: Dialect = dialect_for(self.backend)
        self.schema = schema
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._max_packet: int | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"Database({describe(self.url)!r}, table={self.schema.main.name!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_engine=None, _engine_pid=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        _LIVE.add(self)

    @property
    def engine(self) -> Engine:
        """This process's engine (a forked child never reuses its parent's connections)."""
        self._after_fork()
        with self._lock:
            if self._engine is None or self._engine_pid != os.getpid():
                self._engine = create_engine(self.url)
                self._engine_pid = os.getpid()
            return self._engine

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock and no engine, leaving the parent's connections alone.

        The child inherits the lock in whatever state it was (held by the parent's heartbeat
        thread, which does not exist here, it would never be released) and the parent's pool,
        whose sockets the parent still uses: ``dispose(close=False)`` forgets them without
        closing them. Runs at fork (``os.register_at_fork``) and, for safety, on first use.
        """
        if self._lock_pid == os.getpid():
            return
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        engine, self._engine = self._engine, None
        if engine is not None and self._engine_pid != os.getpid():
            engine.dispose(close=False)
        self._engine_pid = None

    def connect(self) -> Connection:
        """A new connection from the pool; a clear error (no password) when unreachable."""
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as err:
            raise DatabaseConnectionError(
                f"cannot connect to {describe(self.url)}: {first_line(err.orig)}"
            ) from None

    def max_packet_bytes(self) -> int | None:
        """MySQL/MariaDB's ``max_allowed_packet`` (read once); None on other backends.

        A statement larger than this makes the server drop the connection, which would look
        like an outage and be retried: writes of large values are checked against it first.
        """
        if self.backend != "mysql":
            return None
        if getattr(self, "_max_packet", None) is None:
            with self.connect() as conn:
                self._max_packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one())
        return self._max_packet

    def dispose(self) -> None:
        """Close every pooled connection of this process (in a forked child: only the child's)."""
        self._after_fork()
        with self._lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None

    def ensure_database(self) -> None:
        """Create the database itself if missing (MySQL / PostgreSQL; SQLite creates files)."""
        if self.backend == "sqlite" or not self.url.database:
            return
        name = self.url.database
        server = create_engine(self.url.set(database="postgres" if self.backend == "postgresql" else None))
        try:
            with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                quoted = conn.dialect.identifier_preparer.quote(name)
                if self.backend == "mysql":
                    conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4")
                else:
                    exists = conn.execute(
                        sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                    ).first()
                    if not exists:
                        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        except sa.exc.OperationalError as err:
            raise DatabaseConnectionError(
                f"cannot create database {name!r} on {describe(self.url)}: {first_line(err.orig)}"
            ) from None
        finally:
            server.dispose()

    def create_tables(self) -> None:
        """Create missing tables; existing ones must match the configuration.

        A table that ``py-experimenter migrate`` can bring up to date (PyExperimenter 1.4.2's,
        or one of an older configuration) is refused with the command to run; one whose
        keyfields or columns differ in ways that cannot be migrated is refused with every
        difference listed. Nothing is changed in either case.
        """
        with self.connect() as conn:
            with conn.begin():
                before = compare_tables(conn, self.schema, read_rows=False)
            if before.main_exists:
                self._refuse_differences(before)
            failure: sa.exc.DBAPIError | None = None
            for attempt in range(CREATE_TRIES):
                try:
                    with conn.begin():
                        self.schema.metadata.create_all(conn, tables=self.schema.all_tables, checkfirst=True)
                    failure = None
                    break
                except sa.exc.DBAPIError as err:
                    # Perhaps another process is creating them at the same moment: try again
                    # (checkfirst skips what it made); verification decides, and reports the
                    # server's reason if a table really is missing.
                    failure = err
                    time.sleep(0.1 * (attempt + 1))
            self.verify_tables(conn, failure)

    def verify_tables(self, conn: Connection, failure: sa.exc.DBAPIError | None = None) -> None:
        """Raise :class:`TableError` when a table is missing or differs from the configuration.

        :param failure: the error the creation attempt raised; its first line (the server's
            reason, never a password) is reported when a table is missing afterwards.
        """
        comparison = compare_tables(conn, self.schema, read_rows=False)
        missing = [t.name for t in self.schema.all_tables if not comparison.has_table(t)]
        if missing:
            reason = f": {first_line(failure.orig)}" if failure is not None else ""
            raise TableError(f"tables {missing} could not be created in {describe(self.url)}{reason}")
        self._refuse_differences(comparison)

    def _refuse_differences(self, comparison: TableComparison) -> None:
        # Missing side tables (a new logtable, the attempts table) are simply created.
        if all(d.optional for d in comparison.differences):
            return
        name = self.schema.main.name
        if comparison.unsafe:
            raise TableError(comparison.refusal(name))
        raise TableError(comparison.needs_migration(name))

    def drop_tables(self) -> None:
        """Drop the main table with its logtables, attempts and codecarbon tables."""
        with self.connect() as conn, conn.begin():
            self.schema.metadata.drop_all(conn, checkfirst=True)

    def begin(self) -> Any:
        """``with db.begin() as conn``: a transaction on a pooled connection."""
        return self.engine.begin()

    def run(self, action: Callable[[], T], on_disconnect: Callable[[], None] | None = None) -> T:
        """Run ``action`` (one transaction), retrying deadlocks and riding out outages.

        :raises DatabaseUnavailableError: the server stayed away ``outage_seconds``.
        """
        return retry_outage(action, outage_seconds=self.outage_seconds, where=describe(self.url),
                            on_disconnect=on_disconnect)


#: Every Database of this process, reset in a forked child right after the fork.
_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()


def _reset_in_child() -> None:
    for database in list(_LIVE):
        database._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
