"""Driver timeouts and TCP keepalives, so that a silently dropped connection fails instead of hanging.

A server that is down refuses connections at once; a network partition, a frozen NAT or a
jump host that stops forwarding does not: without timeouts a statement waits forever and
never counts against ``Execution.database_outage_seconds``. Every MySQL / PostgreSQL
connection therefore gets

* a **connect timeout** (:data:`CONNECT_TIMEOUT_S`): TCP connect *and* the server's greeting
  and authentication must finish within it (PyMySQL would otherwise wait for the greeting
  under the read timeout);
* a **read / write timeout** (:data:`READ_TIMEOUT_S`): no answer to a statement for that long
  fails it with a disconnect error, which the retry code rides out like any outage. It is
  far above what our statements take (a claim or finish is milliseconds, a 5,000-row fill a
  second or two) and above InnoDB's default lock wait (50 s), so it never cuts legitimate
  work. On PostgreSQL it bounds one whole round trip (psycopg waits for a statement's
  complete result);
* **TCP keepalives** and ``TCP_USER_TIMEOUT``: a peer that vanished (no ACKs at all) is
  noticed within about a minute even on an idle pooled connection.

Both timeouts can be changed with ``PY_EXPERIMENTER_DB_CONNECT_TIMEOUT`` and
``PY_EXPERIMENTER_DB_READ_TIMEOUT`` (seconds); a URL query parameter the driver knows
(``?read_timeout=300`` for PyMySQL, ``?connect_timeout=5`` for both) wins over both.
"""

from __future__ import annotations

import inspect
import os
import socket
from typing import Any

from py_experimenter.exceptions import ConfigError

CONNECT_TIMEOUT_ENV = "PY_EXPERIMENTER_DB_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "PY_EXPERIMENTER_DB_READ_TIMEOUT"
#: Seconds to establish a connection (TCP, greeting, authentication).
CONNECT_TIMEOUT_S = 10.0
#: Seconds without an answer after which a statement fails as a disconnect.
READ_TIMEOUT_S = 120.0
#: Keepalive probes start after this many idle seconds, every KEEPALIVE_INTERVAL_S, and
#: the connection is dropped after KEEPALIVE_COUNT unanswered probes.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3
#: Sent data unacknowledged for this long (a vanished peer) fails the connection.
TCP_USER_TIMEOUT_MS = 60_000


def _seconds(env: str, default: float) -> float:
    text = os.environ.get(env)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86_400:
        raise ConfigError(f"environment variable {env}={text!r}: expected a number of seconds between 0 and "
                          f"86400 (default {default:g}); fix or unset it")
    return value


def connect_timeout() -> float:
    """The connect timeout in seconds (``PY_EXPERIMENTER_DB_CONNECT_TIMEOUT`` or the default)."""
    return _seconds(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S)


def read_timeout() -> float:
    """The read / write timeout in seconds (``PY_EXPERIMENTER_DB_READ_TIMEOUT`` or the default)."""
    return _seconds(READ_TIMEOUT_ENV, READ_TIMEOUT_S)


def set_keepalive(sock: socket.socket) -> None:
    """Turn on TCP keepalives (and ``TCP_USER_TIMEOUT`` where the OS has it) on ``sock``."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket has no TCP options
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


# ---------------------------------------------------------------- PyMySQL


def mysql_connect_args(query: dict[str, Any]) -> dict[str, Any]:
    """PyMySQL's timeout arguments, leaving out those the URL's query already sets."""
    wanted = {"connect_timeout": connect_timeout(), "read_timeout": read_timeout(),
              "write_timeout": read_timeout()}
    return {key: value for key, value in wanted.items() if key not in query}


def mysql_connection_class() -> type:
    """A PyMySQL connection whose greeting and login are bounded by the connect timeout.

    PyMySQL applies ``connect_timeout`` to the TCP connect only and then waits for the
    server's greeting under ``read_timeout``: a server (or forwarder) that accepts but never
    answers would hold every reconnect attempt for the whole read timeout.
    """
    import pymysql.connections

    class TimedMySQLConnection(pymysql.connections.Connection):
        def connect(self, sock: Any = None) -> None:
            read: Any = getattr(self, "_read_timeout")  # noqa: B009 (PyMySQL leaves it untyped)
            self._read_timeout = self.connect_timeout
            try:
                super().connect(sock)
            finally:
                # The next read resets the socket timeout (PyMySQL compares _current_timeout).
                self._read_timeout = read
            if self._sock is not None:
                set_keepalive(self._sock)

    return TimedMySQLConnection


# ---------------------------------------------------------------- psycopg


def postgres_connect_args(query: dict[str, Any]) -> dict[str, Any]:
    """libpq's connect timeout and keepalive parameters, leaving out those the URL's query sets."""
    wanted: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_timeout())),  # libpq wants whole seconds
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    return {key: value for key, value in wanted.items() if key not in query}


def postgres_connection_class() -> type | None:
    """A psycopg connection whose every round trip gives up after the read timeout.

    libpq has no read timeout; psycopg (3.2+) lets :meth:`wait` time out. On a timeout the
    connection is closed (its state is unknown) and an ``OperationalError`` says why, which
    SQLAlchemy and :func:`py_experimenter.db.retry.is_disconnect` treat as a disconnect.
    None when the installed psycopg cannot time out a wait (only keepalives then apply).
    """
    import psycopg
    from psycopg import errors

    wait_timeout: type[BaseException] | None = getattr(errors, "_WaitTimeout", None)
    if wait_timeout is None or "timeout" not in inspect.signature(psycopg.Connection.wait).parameters:
        return None
    limit = read_timeout()
    timeout_error: type[BaseException] = wait_timeout

    class TimedPostgresConnection(psycopg.Connection):  # type: ignore[type-arg,unused-ignore]
        def wait(self, gen: Any, interval: Any = None, timeout: float | None = None) -> Any:
            kwargs: dict[str, Any] = {"timeout": limit if timeout is None else timeout}
            if interval is not None:
                kwargs["interval"] = interval
            try:
                return super().wait(gen, **kwargs)
            except timeout_error:
                if timeout is not None:  # psycopg's own timeout (notifies, cancel): its business
                    raise
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"no answer from the server within {limit:g} s (read timeout, "
                    f"{READ_TIMEOUT_ENV}); the connection was closed"
                ) from None

    return TimedPostgresConnection
