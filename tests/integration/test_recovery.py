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


def test_recovery_clears_the_lost_tries_results_and_honours_a_cancel_request(make_experimenter):
    exp = make_experimenter(KEYFIELDS, {"partial": "INT"})
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity(), lease_seconds=60)
    recovery = LeaseRecovery(exp.db, max_attempts=3)
    lost, cancelled = queue.claim(), queue.claim()
    assert lost is not None and cancelled is not None
    queue.write_results(lost, {"partial": 7})  # then the executor dies
    exp.cancel_experiments(cancelled.id)  # a running row: only flagged
    _expire(exp, lost.id)
    _expire(exp, cancelled.id)
    assert recovery.recover() == 2
    table = exp.get_table().set_index("ID")
    assert table.loc[lost.id, "status"] == "created" and pd.isna(table.loc[lost.id, "partial"])
    assert table.loc[cancelled.id, "status"] == "error"
    assert table.loc[cancelled.id, "error"] == "cancelled on request; its last try was lost"
    assert not table.loc[cancelled.id, "cancel_requested"]
    queue.close()


def test_a_row_flagged_before_its_claim_is_cancelled_without_running(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.fill_table_from_config()
    main = exp.db.schema.main
    with exp.db.begin() as conn:  # by SQL, as a user would
        conn.execute(sa.update(main).where(main.c.ID == 1).values(cancel_requested=True))
    ran: list[int] = []
    assert exp.execute(lambda keyfields, rp, custom: ran.append(keyfields["seed"])) == 2
    assert ran == [2]
    row = exp.get_table().set_index("ID").loc[1]
    assert row["status"] == "error" and "before it started" in row["error"] and not row["cancel_requested"]
    attempts = exp.get_attempts_table().set_index("experiment_id")
    assert attempts.loc[1, "outcome"] == "cancelled" and attempts.loc[2, "outcome"] == "done"
