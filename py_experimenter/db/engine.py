"""Engines tuned per backend: SQLite (WAL, busy timeout, BEGIN IMMEDIATE; one shared connection
for ``:memory:``), MySQL and PostgreSQL (timeouts and keepalives).

Every session runs in UTC so that times written from the database clock compare across
executors regardless of the server's or the node's time zone.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, CursorResult, Engine
from sqlalchemy.sql.expression import UpdateBase

from py_experimenter.db import timeouts
from py_experimenter.exceptions import DatabaseConnectionError

SQLITE_BUSY_TIMEOUT_MS = 60_000

_DRIVER_EXTRA = {"pymysql": "mysql", "psycopg": "postgres"}


def backend_name(url: URL) -> str:
    """``sqlite``, ``mysql`` or ``postgresql`` for a URL (MariaDB counts as ``mysql``)."""
    name = url.get_backend_name()
    if name in ("mysql", "mariadb"):
        return "mysql"
    if name in ("postgresql", "postgres"):
        return "postgresql"
    if name == "sqlite":
        return "sqlite"
    raise DatabaseConnectionError(
        f"unsupported database backend {name!r}; use sqlite, mysql (MariaDB) or postgresql"
    )


def _require_driver(url: URL) -> None:
    driver = url.get_driver_name()
    if driver in _DRIVER_EXTRA and importlib.util.find_spec(driver) is None:
        extra = _DRIVER_EXTRA[driver]
        raise DatabaseConnectionError(
            f"the {driver} driver is not installed; install it with: pip install 'py-experimenter[{extra}]'"
        )


def create_engine(url: URL, *, pool_size: int = 2) -> Engine:
    """Create a pooled engine for ``url`` with per-backend settings applied on every connection.

    MySQL / PostgreSQL connections get connect and read timeouts and TCP keepalives
    (:mod:`py_experimenter.db.timeouts`), so a dropped connection fails instead of hanging.
    """
    _require_driver(url)
    backend = backend_name(url)
    if backend == "sqlite":
        return _sqlite_engine(url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": pool_size,
        "max_overflow": 4,
        "pool_recycle": 3600,
        "isolation_level": "READ COMMITTED",
    }
    query = dict(url.query)
    connection_class: Any
    if backend == "mysql":
        kwargs["connect_args"] = {"init_command": "SET time_zone = '+00:00'", **timeouts.mysql_connect_args(query)}
        connection_class = timeouts.mysql_connection_class() if url.get_driver_name() == "pymysql" else None
    else:
        kwargs["connect_args"] = {"options": "-c timezone=UTC", **timeouts.postgres_connect_args(query)}
        connection_class = timeouts.postgres_connection_class() if url.get_driver_name() == "psycopg" else None
    engine = sa.create_engine(url, **kwargs)
    if connection_class is not None:
        factory = connection_class.connect if backend == "postgresql" else connection_class

        @event.listens_for(engine, "do_connect")
        def _timed_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return factory(*cargs, **cparams)

    return engine


def is_memory_database(url: URL) -> bool:
    """True for an in-memory SQLite database (``sqlite://`` or ``database: ":memory:"``)."""
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def _sqlite_engine(url: URL) -> Engine:
    memory = is_memory_database(url)
    if memory:
        # The database lives in one connection: every checkout shares it (StaticPool), from
        # any thread (the heartbeat too), one transaction at a time (see _serialize_transactions).
        pool_kwargs: dict[str, Any] = {"poolclass": sa.pool.StaticPool}
        connect_args: dict[str, Any] = {"check_same_thread": False}
    else:
        pool_kwargs = {"poolclass": sa.pool.QueuePool, "pool_size": 2, "max_overflow": 4}
        connect_args = {}
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None, **connect_args},
        **pool_kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if memory:
        _serialize_transactions(engine)
        return engine

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Take the write lock up front: a claim's SELECT and UPDATE then see one snapshot,
        # and two executors can never pick the same row.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _serialize_transactions(engine: Engine) -> None:
    """One transaction at a time on an engine whose threads share one SQLite connection.

    A thread's BEGIN waits until the other thread's transaction has committed or rolled
    back. The COMMIT / ROLLBACK is sent here, before the lock is released; the driver's own
    commit() that follows is then a no-op (no transaction is open).
    """
    lock = threading.RLock()
    held = threading.local()  # this thread's open transactions (a rollback may come without one)

    def _dbapi(connection: sa.Connection) -> Any:
        return connection.connection.dbapi_connection

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        lock.acquire()
        try:
            _dbapi(connection).execute("BEGIN IMMEDIATE")
        except BaseException:
            lock.release()
            raise
        held.count = getattr(held, "count", 0) + 1

    def _finish(sql: str) -> Any:
        def end(connection: sa.Connection) -> None:
            if getattr(held, "count", 0) <= 0:
                return
            try:
                dbapi_connection = _dbapi(connection)
                if dbapi_connection is not None and dbapi_connection.in_transaction:
                    dbapi_connection.execute(sql)
            finally:
                held.count -= 1
                lock.release()
        return end

    event.listen(engine, "commit", _finish("COMMIT"))
    event.listen(engine, "rollback", _finish("ROLLBACK"))


def describe(url: URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    return url.render_as_string(hide_password=True)


class DriverStatement:
    """A hot-path write, compiled once per dialect and run as the driver's SQL text.

    ``Connection.execute`` looks the statement up in the compiled cache and runs every
    parameter (every row of an executemany) through SQLAlchemy's parameter construction on
    each call; on the claim/finish path and in large fills that cost more CPU than the driver
    itself. Here the compiled text goes through ``exec_driver_sql``, which keeps SQLAlchemy's
    transaction, event, error-wrapping and disconnect handling, and the parameters get the
    same bind processors SQLAlchemy would apply. A statement that needs more of SQLAlchemy
    (Python-side column defaults, expanding or escaped parameters) is run the ordinary way,
    so the outcome is the same either way.

    Returned rows are not type-processed: use it for writes only. ``executemany_keys``
    makes it a statement for :meth:`executemany` whose rows are mappings of exactly these
    keys (the columns of an INSERT without ``.values()``).
    """

    def __init__(self, statement: UpdateBase, executemany_keys: Sequence[str] | None = None):
        self.statement = statement
        self.executemany_keys = list(executemany_keys) if executemany_keys is not None else None
        self._plan: tuple[sa.Dialect, _DriverPlan | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_plan": None}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        """Run once with ``params``."""
        if self.executemany_keys is not None:
            raise TypeError("this statement was compiled for executemany()")
        plan = self._plan_for(conn.dialect)
        try:
            arguments = plan.arguments(plan.compiled.construct_params(params)) if plan else None
        except Exception:  # a missing or unprocessable value: SQLAlchemy raises its own error
            arguments = None
        if plan is None or arguments is None:
            return conn.execute(self.statement, params)
        return conn.exec_driver_sql(plan.sql, arguments)

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> CursorResult[Any]:
        """Run for every row (each a mapping of exactly ``executemany_keys``) in one executemany."""
        if self.executemany_keys is None:
            raise TypeError("executemany() needs executemany_keys")
        plan = self._plan_for(conn.dialect)
        if plan is None or set(plan.compiled.binds) != set(self.executemany_keys):
            return conn.execute(self.statement, rows)
        if plan.order is None and not plan.processors:
            return conn.exec_driver_sql(plan.sql, list(rows))
        try:
            arguments = [plan.arguments(row) for row in rows]
        except Exception:  # a missing or unprocessable value: SQLAlchemy raises its own error
            return conn.execute(self.statement, rows)
        return conn.exec_driver_sql(plan.sql, arguments)

    def _plan_for(self, dialect: sa.Dialect) -> _DriverPlan | None:
        cached = self._plan
        if cached is None or cached[0] is not dialect:
            cached = self._plan = (dialect, _DriverPlan.compile(self.statement, dialect, self.executemany_keys))
        return cached[1]


class _DriverPlan:
    """Compiled text, parameter order (positional drivers) and bind processors of a statement."""

    def __init__(self, compiled: Any, dialect: sa.Dialect):
        self.compiled = compiled
        self.sql: str = compiled.string
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        self.processors: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            # The processor SQLAlchemy itself applies (TypeEngine._cached_bind_processor).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    @classmethod
    def compile(
        cls, statement: UpdateBase, dialect: sa.Dialect, executemany_keys: list[str] | None
    ) -> _DriverPlan | None:
        """The plan, or None when the statement needs SQLAlchemy's own execution."""
        if executemany_keys is None:
            compiled: Any = statement.compile(dialect=dialect)
        else:  # as Connection.execute compiles for a list of rows (no implicit RETURNING of the key)
            compiled = statement.compile(dialect=dialect, column_keys=executemany_keys, for_executemany=True)
        if (compiled.literal_execute_params or compiled.post_compile_params or compiled.escaped_bind_names
                or compiled.insert_prefetch or compiled.update_prefetch):
            return None
        return cls(compiled, dialect)

    def arguments(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for bound ``values`` (keyed by bind name)."""
        processors = self.processors
        if self.order is not None:
            if not processors:
                return tuple([values[name] for name in self.order])
            return tuple([processors[name](values[name]) if name in processors else values[name]
                          for name in self.order])
        if not processors:
            return values
        processed = dict(values)
        for name, processor in processors.items():
            processed[name] = processor(values[name])
        return processed
