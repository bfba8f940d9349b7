"""Expired leases are taken back; after max_attempts losses the row fails with a clear reason."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.recovery import LeaseRecovery

KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2]}}


def _expire(exp, experiment_id: int) -> None:
    main = exp.db.schema.main
    with exp.db.begin() as conn:
        conn.execute(sa.update(main).where(main.c.ID == experiment_id).values(lease_until=exp.db.dialect.now_plus("s")),
                     {"s": exp.db.dialect.seconds_param(-60)})


def test_expired_leases_are_requeued_then_failed_after_max_attempts(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity(), lease_seconds=60)
    recovery = LeaseRecovery(exp.db, max_attempts=2)
    healthy = queue.claim()
    assert healthy is not None and healthy.id == 1

    first = queue.claim()
    assert first is not None and first.id == 2
    assert recovery.recover() == 0  # nothing expired yet
    _expire(exp, first.id)
    assert recovery.recover() == 1
    table = exp.get_table().set_index("ID")
    assert table.loc[2, "status"] == "created" and table.loc[1, "status"] == "running"

    second = queue.claim()
    assert second is not None and second.id == 2 and second.attempt == 2
    _expire(exp, second.id)
    assert recovery.recover() == 1
    row = exp.get_table().set_index("ID").loc[2]
    assert row["status"] == "error"
    assert "lost or interrupted 2 times (max_attempts=2)" in row["error"]
    outcomes = exp.get_attempts_table().set_index(["experiment_id", "attempt"])["outcome"]
    assert outcomes[(2, 1)] == "lost" and outcomes[(2, 2)] == "lost" and pd.isna(outcomes[(1, 1)])

    exp.reset_experiments("error")  # a reset starts the count again
    third = queue.claim()
    assert third is not None and third.attempt == 3
    _expire(exp, third.id)
    assert recovery.recover() == 1
    assert exp.get_table().set_index("ID").loc[2, "status"] == "created"
    queue.close()


def test_stale_running_rows_are_reported_for_waiting(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity(), lease_seconds=30)
    recovery = LeaseRecovery(exp.db, max_attempts=3)
    assert recovery.seconds_until_stale_lease_expires(stale_after=1) is None
    running = queue.claim()
    assert running is not None
    assert recovery.seconds_until_stale_lease_expires(stale_after=60) is None  # heartbeat is fresh
    wait = recovery.seconds_until_stale_lease_expires(stale_after=-5)  # "stale" since 5 s in the future
    assert wait is not None and 20 < wait <= 30
    queue.close()
