"""Retrying database work through deadlocks, lock timeouts and server outages.

Two kinds of failure are retried, differently:

* **transient** (deadlock, lock wait timeout, serialization failure, SQLite "database is
  locked"): the transaction simply runs again after a short jittered pause, a few times.
* **disconnect** (server restarting, connection refused or dropped, a connect or read timeout
  of :mod:`py_experimenter.db.timeouts`): the work is retried with exponential backoff (0.2 s
  doubling to 5 s, jittered) until the server answers again, for at most ``outage_seconds``;
  then :class:`DatabaseUnavailableError` says so, without a password. When the first failure
  is a timeout, the outage is counted from the start of that try: the time spent waiting on a
  silent connection (until its read timeout) counts too.

Every action retried here must be safe to run again: one transaction that either committed
or did not. SQLAlchemy invalidates the whole pool on a disconnect, so the next try gets a
fresh connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from py_experimenter.exceptions import DatabaseConnectionError, DatabaseUnavailableError

T = TypeVar("T")
logger = logging.getLogger("py-experimenter")

_RETRYABLE_MYSQL = {1205, 1213}  # lock wait timeout, deadlock
_RETRYABLE_POSTGRES = {"40001", "40P01"}  # serialization failure, deadlock
#: Can't connect (socket / TCP), server gone away, lost connection, shutdown in progress,
#: connection killed, disconnected for inactivity, lost connection (PyMySQL 2055).
_DISCONNECT_MYSQL = {2002, 2003, 2006, 2013, 1053, 1927, 4031, 2055}
#: admin / crash shutdown, cannot connect now (starting up or shutting down).
_DISCONNECT_POSTGRES = {"57P01", "57P02", "57P03"}

FIRST_DELAY = 0.2
MAX_DELAY = 5.0
TRANSIENT_TRIES = 8


def is_transient(error: BaseException) -> bool:
    """True for errors after which the same transaction may simply be tried again."""
    orig = getattr(error, "orig", error)
    if getattr(orig, "sqlstate", None) in _RETRYABLE_POSTGRES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL:
        return True
    return "database is locked" in str(orig)


def is_disconnect(error: BaseException) -> bool:
    """True when the server is unreachable, dropped the connection or stopped answering
    (connect / read timeouts), not for SQL errors."""
    if isinstance(error, (DatabaseConnectionError, TimeoutError, ConnectionError)):
        return True
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    if isinstance(orig, (TimeoutError, ConnectionError)):
        return True
    module = type(orig).__module__
    if module.startswith("psycopg"):
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate is None:  # connection refused / closed: no server answer at all
            return isinstance(error, sa.exc.OperationalError)
        return sqlstate.startswith("08") or sqlstate in _DISCONNECT_POSTGRES
    if module.startswith("pymysql"):
        code = next(iter(getattr(orig, "args", ())), None)
        return code in _DISCONNECT_MYSQL
    return False


def is_timeout(error: BaseException) -> bool:
    """True for a connect / read / write timeout: the server (or the network) stopped answering."""
    orig = getattr(error, "orig", None) or error
    if isinstance(orig, TimeoutError):
        return True
    text = str(orig).lower()
    return "timed out" in text or "timeout" in text


def first_line(error: BaseException | None) -> str:
    """The first non-empty line of an error's text (drivers add SQL and hints below it)."""
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


def retry_transient(action: Callable[[], T], attempts: int = TRANSIENT_TRIES) -> T:
    """Run ``action`` again (with jittered backoff) after a deadlock or lock timeout."""
    for attempt in range(attempts):
        try:
            return action()
        except sa.exc.DBAPIError as err:
            if attempt == attempts - 1 or not is_transient(err):
                raise
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


def retry_outage(
    action: Callable[[], T],
    *,
    outage_seconds: float,
    where: str,
    on_disconnect: Callable[[], None] | None = None,
) -> T:
    """Run ``action``, retrying transient errors and riding out a database outage.

    :param outage_seconds: how long the server may stay unreachable before giving up.
    :param where: the database, as shown in messages (no password).
    :param on_disconnect: called after each disconnect, e.g. to drop a persistent connection.
    :raises DatabaseUnavailableError: the server was unreachable for ``outage_seconds``.
    """
    transient_tries = 0
    outage_started: float | None = None
    delay = FIRST_DELAY
    while True:
        started = time.monotonic()
        try:
            result = action()
        except Exception as err:
            if is_transient(err) and transient_tries < TRANSIENT_TRIES - 1:
                transient_tries += 1
                time.sleep(random.uniform(0, 0.05 * 2**transient_tries))
                continue
            if not is_disconnect(err):
                raise
            if on_disconnect is not None:
                on_disconnect()
            now = time.monotonic()
            if outage_started is None:
                # A timeout fails a try only after waiting that long: the server stopped
                # answering at the latest when the try began.
                outage_started = started if is_timeout(err) else now
                logger.warning("database %s unreachable (%s); retrying for up to %g s",
                               where, first_line(getattr(err, "orig", None) or err), outage_seconds)
            waited = now - outage_started
            if waited >= outage_seconds:
                raise DatabaseUnavailableError(
                    f"the database {where} was unreachable for {waited:.0f} s, longer than "
                    f"Execution.database_outage_seconds={outage_seconds:g}: "
                    f"{first_line(getattr(err, 'orig', None) or err)}. Experiments this executor had claimed "
                    "return to the queue when their leases expire"
                ) from None
            time.sleep(min(random.uniform(0.5, 1.0) * delay, outage_seconds - waited))
            delay = min(2 * delay, MAX_DELAY)
            continue
        if outage_started is not None:
            logger.warning("database %s reachable again after %.1f s", where, time.monotonic() - outage_started)
        return result
