"""``execute(random_order=True)`` with several executor processes: every process gets work and
every row runs exactly once, on every backend.

On MySQL / MariaDB ``SELECT … ORDER BY RAND() LIMIT 1 FOR UPDATE SKIP LOCKED`` locks every
row it reads before sorting, i.e. every ``created`` row: the other executors then found
nothing to claim and left. The claim now reads random candidates without locking and locks
one of them (see :meth:`py_experimenter.db.dialects.Dialect.pick_random_candidates`).
"""

from __future__ import annotations

import time

import pytest

ROWS = 120
N_JOBS = 4


def work(keyfields, rp, custom):
    time.sleep(0.02)
    rp.process_results({"value": keyfields["seed"] * 2})


@pytest.mark.timeout(300)
def test_random_order_with_four_processes_shares_the_work_and_runs_each_row_once(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT", "values": list(range(ROWS))}}, {"value": "INT"})
    exp.fill_table_from_config()
    ran = exp.execute(work, random_order=True, n_jobs=N_JOBS)
    table = exp.get_table()
    attempts = exp.get_attempts_table()
    assert ran == ROWS
    assert (table["status"] == "done").all() and (table["attempt"] == 1).all()
    assert (table["value"] == table["seed"] * 2).all()
    assert len(attempts) == ROWS and attempts["experiment_id"].is_unique, "a row ran more than once"
    per_worker = attempts.groupby("worker").size()
    assert len(per_worker) == N_JOBS, f"only {len(per_worker)} of {N_JOBS} processes did any work: {dict(per_worker)}"
    # Random order: the rows were not run in ID order.
    order = list(attempts.sort_values(["started_at", "ID"])["experiment_id"])
    assert order != sorted(order)


def test_random_order_claims_every_row_in_one_process(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT", "values": list(range(30))}}, {"value": "INT"})
    exp.fill_table_from_config()
    assert exp.execute(work, random_order=True, n_jobs=1) == 30
    attempts = exp.get_attempts_table()
    assert sorted(attempts["experiment_id"]) == list(range(1, 31))
    assert list(attempts.sort_values("ID")["experiment_id"]) != list(range(1, 31)), "not in random order"
