"""Engines tuned per backend: SQLite (WAL, busy timeout, BEGIN IMMEDIATE), MySQL, PostgreSQL.

Every session runs in UTC so that times written from the database clock compare across
executors regardless of the server's or the node's time zone.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

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
    """Create a pooled engine for ``url`` with per-backend settings applied on every connection."""
    _require_driver(url)
    backend = backend_name(url)
    if backend == "sqlite":
        return _sqlite_engine(url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": pool_size,
        "max_overflow": 4,
        "pool_recycle": 3600,
    }
    if backend == "mysql":
        kwargs["connect_args"] = {"init_command": "SET time_zone = '+00:00'"}
        kwargs["isolation_level"] = "READ COMMITTED"
    else:
        kwargs["connect_args"] = {"options": "-c timezone=UTC"}
        kwargs["isolation_level"] = "READ COMMITTED"
    return sa.create_engine(url, **kwargs)


def _sqlite_engine(url: URL) -> Engine:
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        poolclass=sa.pool.QueuePool if url.database not in (None, "", ":memory:") else sa.pool.StaticPool,
        pool_size=2,
        max_overflow=4,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Take the write lock up front: a claim's SELECT and UPDATE then see one snapshot,
        # and two executors can never pick the same row.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def describe(url: URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    return url.render_as_string(hide_password=True)
