"""A forked child never blocks on, nor closes, what it inherited from its parent's ``Database``."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import sqlalchemy as sa

KEYFIELDS = {"seed": {"type": "INT", "values": [1]}}


def _wait_child(pid: int, seconds: float) -> int | None:
    """The child's exit status, or None (after killing it) when it did not end in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _fork(child) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, never return into pytest
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def test_a_child_forked_while_another_thread_holds_the_lock_disposes_and_connects(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    db = exp.db
    parent_conn = db.connect()  # a connection the parent keeps using across the fork
    assert parent_conn.execute(sa.text("SELECT 1")).scalar() == 1
    parent_conn.rollback()  # open but idle (an open SQLite transaction would block the child's claim)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # like the heartbeat thread in the middle of engine()
        with db._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert held.wait(5)

    def child() -> int:
        db.dispose()  # blocked forever on the inherited, held lock before the fix
        with db.begin() as conn:
            ok = conn.execute(sa.text("SELECT 1")).scalar() == 1
        db.dispose()
        return 0 if ok else 2

    try:
        pid = _fork(child)
        status = _wait_child(pid, 30)
    finally:
        release.set()
        holder.join(5)
    assert status is not None, "the forked child blocked on the lock its parent's thread held"
    assert status == 0, f"the child could not use the database (exit {status})"
    # The parent's own connection was neither closed nor disturbed by the child.
    assert parent_conn.execute(sa.text("SELECT 2")).scalar() == 2
    main = db.schema.main
    assert parent_conn.execute(sa.select(sa.func.count()).select_from(main)).scalar() == 1
    parent_conn.rollback()
    parent_conn.close()
    with db.begin() as conn:  # and the parent's pool still works after the child left
        assert conn.execute(sa.text("SELECT 3")).scalar() == 3


def test_a_forked_child_gets_its_own_engine_and_the_parents_pool_survives(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    db = exp.db
    parent_engine = db.engine
    with db.begin() as conn:  # one pooled, checked-in connection the child inherits
        conn.execute(sa.text("SELECT 1"))
    pooled_before = parent_engine.pool.checkedin()

    def child() -> int:
        if db._engine is not None:  # reset at fork, before any use
            return 3
        if db.engine is parent_engine:
            return 4
        with db.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
        db.dispose()
        return 0

    status = _wait_child(_fork(child), 30)
    assert status == 0, f"child exit status {status} (3: engine kept after fork, 4: parent's engine reused)"
    assert db.engine is parent_engine
    assert parent_engine.pool.checkedin() == pooled_before
    with db.begin() as conn:  # the inherited pooled connection was not closed by the child
        assert conn.execute(sa.text("SELECT 5")).scalar() == 5
