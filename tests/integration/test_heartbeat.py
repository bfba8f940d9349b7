"""Heartbeats extend the lease on their own connection and notice loss and cancellation."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import sqlalchemy as sa

from py_experimenter.heartbeat import Heartbeat
from py_experimenter.queue import ExperimentQueue, WorkerIdentity

KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2]}}


def _wait_for(event, seconds: float = 5.0) -> bool:
    return event.wait(seconds)


def test_heartbeat_extends_the_lease_while_the_function_runs(make_experimenter):
    exp = make_experimenter(KEYFIELDS, {"lease_seen": "DOUBLE"},
                            Execution={"lease_seconds": 2, "heartbeat_seconds": 0.3})
    exp.fill_table_from_config()
    main = exp.db.schema.main

    def slow(keyfields, rp, custom):
        with exp.db.begin() as conn:
            first = conn.execute(sa.select(main.c.lease_until).where(main.c.ID == rp.experiment_id)).scalar_one()
        time.sleep(1.2)
        with exp.db.begin() as conn:
            later = conn.execute(sa.select(main.c.lease_until).where(main.c.ID == rp.experiment_id)).scalar_one()
        rp.process_results({"lease_seen": (later - first).total_seconds()})

    exp.execute(slow, max_experiments=1)
    row = exp.get_table().iloc[0]
    assert row["status"] == "done"
    assert row["lease_seen"] > 0.5, "lease_until was not pushed forward by the heartbeat"
    assert row["heartbeat_at"] > row["start_date"]


def test_heartbeat_notices_a_lost_attempt(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    running = queue.claim()
    assert running is not None
    heartbeat = Heartbeat(exp.db, lease_seconds=5, interval=0.1)
    stops: list[tuple[str, str]] = []
    watch = heartbeat.watch(running, on_stop=lambda kind, why: stops.append((kind, why)))
    try:
        exp.reset_experiments("running")  # back to created: this attempt is over
        assert _wait_for(watch.lost)
        assert stops and stops[0][0] == "lost" and "no longer ours" in stops[0][1]
        assert watch.stop_reason() == stops[0]
    finally:
        heartbeat.close()
        queue.close()


def test_one_heartbeat_thread_serves_experiment_after_experiment(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    first, second = queue.claim(), queue.claim()
    assert first is not None and second is not None
    heartbeat = Heartbeat(exp.db, lease_seconds=5, interval=0.1)
    try:
        old = heartbeat.watch(first)
        assert _until(lambda: old.beats >= 1)
        thread = heartbeat._thread
        new = heartbeat.watch(second)
        beats_of_old = old.beats
        assert _until(lambda: new.beats >= 2)
        assert heartbeat._thread is thread, "a new thread was started for the second experiment"
        assert old.beats <= beats_of_old + 1, "the old attempt was still beaten"  # one beat may be in flight
        heartbeat.unwatch()
        beats_of_new = new.beats
        time.sleep(1.0)  # ten intervals
        assert new.beats <= beats_of_new + 1, "still beaten after unwatch"  # one beat may be in flight
    finally:
        heartbeat.close()
        queue.close()


def _until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_heartbeat_reports_cancel_requested(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    running = queue.claim()
    assert running is not None
    heartbeat = Heartbeat(exp.db, lease_seconds=5, interval=0.1)
    stops: list[str] = []
    watch = heartbeat.watch(running, on_stop=lambda kind, why: stops.append(kind))
    try:
        main = exp.db.schema.main
        with exp.db.begin() as conn:
            conn.execute(sa.update(main).where(main.c.ID == running.id).values(cancel_requested=True))
        assert _wait_for(watch.cancel_requested)
        assert not watch.lost.is_set() and watch.beats >= 1
        time.sleep(0.3)
        assert stops == ["cancelled"], "on_stop must be called once"
    finally:
        heartbeat.close()
        queue.close()


class _HeartbeatPoolTimeouts:
    """Makes ``db.begin()`` raise a pool timeout in the heartbeat thread (``times`` times, or
    always); every other thread, and the database itself, stay real."""

    def __init__(self, db, times: int | None):
        self.real = db.begin
        self.left = times
        self.raised = 0

    def __call__(self):
        if threading.current_thread().name == "py-experimenter-heartbeat" and (self.left is None or self.left > 0):
            if self.left is not None:
                self.left -= 1
            self.raised += 1
            raise sa.exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached, connection timed out")
        return self.real()


def _lease_and_now(exp, experiment_id: int):
    main = exp.db.schema.main
    with exp.db.begin() as conn:
        row = conn.execute(sa.select(main.c.lease_until, exp.db.dialect.now().label("now"))
                           .where(main.c.ID == experiment_id)).one()
    now = row.now if not isinstance(row.now, str) else datetime.fromisoformat(row.now)
    return row.lease_until, now


def test_heartbeat_survives_pool_timeouts_and_keeps_beating(make_experimenter, monkeypatch):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity(), lease_seconds=5)
    running = queue.claim()
    assert running is not None
    first_lease, _ = _lease_and_now(exp, running.id)
    failing = _HeartbeatPoolTimeouts(exp.db, times=3)
    monkeypatch.setattr(exp.db, "begin", failing)
    heartbeat = Heartbeat(exp.db, lease_seconds=5, interval=0.1)
    watch = heartbeat.watch(running)
    try:
        assert _until(lambda: watch.beats >= 3), "the heartbeat stopped beating after a pool timeout"
        assert failing.raised == 3
        assert heartbeat._thread is not None and heartbeat._thread.is_alive()
        assert not watch.lost.is_set() and watch.failures == 0
        later_lease, _ = _lease_and_now(exp, running.id)
        assert later_lease > first_lease, "lease_until was not extended after the failures"
    finally:
        heartbeat.close()
        queue.close()


def test_heartbeat_that_cannot_beat_gives_the_attempt_up_before_its_lease_expires(make_experimenter, monkeypatch):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    # A lease of 5 s: given up 1 s (the margin) before it expires, slack enough for a loaded machine
    # between the claim, the give-up and the query below (3 s left 0.6 s).
    queue = ExperimentQueue(exp.db, WorkerIdentity(), lease_seconds=5)
    running = queue.claim()
    assert running is not None
    monkeypatch.setattr(exp.db, "begin", _HeartbeatPoolTimeouts(exp.db, times=None))
    heartbeat = Heartbeat(exp.db, lease_seconds=5, interval=0.2)
    stops: list[tuple[str, str]] = []
    watch = heartbeat.watch(running, on_stop=lambda kind, why: stops.append((kind, why)))
    try:
        assert _wait_for(watch.lost, 20), "an attempt whose lease cannot be renewed was not given up"
        monkeypatch.undo()
        lease_until, now = _lease_and_now(exp, running.id)
        assert now < lease_until, "given up only after the lease had expired (another executor may run it)"
        assert len(stops) == 1 and stops[0][0] == "lost"
        assert "could not renew its lease" in stops[0][1] and "TimeoutError" in stops[0][1]
        assert watch.stop_reason() == stops[0]
        assert heartbeat._thread is not None and heartbeat._thread.is_alive()
    finally:
        heartbeat.close()
        queue.close()


def test_an_experiment_whose_heartbeat_keeps_failing_is_stopped_as_lost(make_experimenter, monkeypatch):
    exp = make_experimenter(KEYFIELDS, Execution={"lease_seconds": 2, "heartbeat_seconds": 0.2})
    exp.fill_table_from_config()
    monkeypatch.setattr(exp.db, "begin", _HeartbeatPoolTimeouts(exp.db, times=None))
    ran: list[float] = []

    def long_running(keyfields, rp, custom):
        started = time.monotonic()
        try:
            while time.monotonic() - started < 8:
                time.sleep(0.02)
        finally:
            ran.append(time.monotonic() - started)

    assert exp.execute(long_running, max_experiments=1) == 0
    monkeypatch.undo()
    assert ran and ran[0] < 5, f"the experiment ran on for {ran[0]:.1f} s without a lease"
    table = exp.get_table().set_index("ID")
    first = table.loc[1]
    # Abandoned like a lost lease: nothing recorded as done, the row's expired lease is recovered later.
    assert first["status"] == "running" and first["attempt"] == 1
    attempts = exp.get_attempts_table()
    assert attempts.loc[attempts["experiment_id"] == 1, "outcome"].isna().all()
