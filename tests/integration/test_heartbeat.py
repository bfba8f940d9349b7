"""Heartbeats extend the lease on their own connection and notice loss and cancellation."""

from __future__ import annotations

import time

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
        time.sleep(0.25)
        beats_of_new = new.beats
        time.sleep(0.35)
        assert new.beats == beats_of_new
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
