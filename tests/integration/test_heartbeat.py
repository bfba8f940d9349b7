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


def test_heartbeat_notices_a_lost_attempt_and_a_cancel_request(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    first, second = queue.claim(), queue.claim()
    assert first is not None and second is not None
    lost = Heartbeat(exp.db, first, lease_seconds=5, interval=0.1)
    cancelled = Heartbeat(exp.db, second, lease_seconds=5, interval=0.1)
    lost.start()
    cancelled.start()
    try:
        main = exp.db.schema.main
        with exp.db.begin() as conn:
            conn.execute(sa.update(main).where(main.c.ID == second.id).values(cancel_requested=True))
        exp.reset_experiments("running")  # both rows back to created: both attempts are over
        assert _wait_for(lost.lost)
        assert _wait_for(cancelled.lost)
    finally:
        lost.stop()
        cancelled.stop()
        queue.close()


def test_heartbeat_reports_cancel_requested(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    running = queue.claim()
    assert running is not None
    beat = Heartbeat(exp.db, running, lease_seconds=5, interval=0.1)
    beat.start()
    try:
        main = exp.db.schema.main
        with exp.db.begin() as conn:
            conn.execute(sa.update(main).where(main.c.ID == running.id).values(cancel_requested=True))
        assert _wait_for(beat.cancel_requested)
        assert not beat.lost.is_set() and beat.beats >= 1
    finally:
        beat.stop()
        queue.close()
