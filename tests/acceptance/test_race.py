"""Many executor processes racing on one table: every experiment runs exactly once."""

from __future__ import annotations

import collections
import multiprocessing
import os
from pathlib import Path

import pytest

ROWS = 2000
PROCESSES = 8
KEYFIELDS = {
    "dataset": {"type": "VARCHAR(50)", "values": [f"d{i}" for i in range(20)]},
    "seed": {"type": "INT", "values": {"start": 0, "stop": ROWS // 20}},
}


def record_execution(keyfields, result_processor, custom):
    """Counts executions outside the database: one O_APPEND line per run (atomic on Linux)."""
    line = f"{result_processor.experiment_id} {os.getpid()}\n".encode()
    fd = os.open(custom["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    result_processor.process_results({"worker_pid": os.getpid()})


@pytest.mark.timeout(600)
def test_eight_processes_drain_the_table_exactly_once(make_experimenter, tmp_path: Path):
    ledger = tmp_path / "ledger.txt"
    exp = make_experimenter(KEYFIELDS, {"worker_pid": "INT"}, Custom={"ledger": str(ledger)})
    assert exp.fill_table_from_config() == ROWS

    ran = exp.execute(record_execution, n_jobs=PROCESSES)

    executions = collections.Counter(int(line.split()[0]) for line in ledger.read_text().splitlines())
    table = exp.get_table()
    assert ran == ROWS
    assert len(executions) == ROWS
    assert set(executions.values()) == {1}, f"run twice: {[i for i, n in executions.items() if n > 1][:10]}"
    assert set(table["status"]) == {"done"}
    assert set(table["attempt"]) == {1}
    assert table["worker_pid"].nunique() > 1, "only one process did all the work"
    attempts = exp.get_attempts_table()
    assert len(attempts) == ROWS and set(attempts["outcome"]) == {"done"}


def _fill(experimenter, barrier) -> None:
    barrier.wait()
    experimenter.fill_table_from_config()


def test_concurrent_fills_create_no_duplicates(make_experimenter):
    exp = make_experimenter(KEYFIELDS)
    exp.create_table()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    exp.db.dispose()
    fillers = [ctx.Process(target=_fill, args=(exp, barrier)) for _ in range(4)]
    for process in fillers:
        process.start()
    for process in fillers:
        process.join(timeout=300)
    assert [p.exitcode for p in fillers] == [0, 0, 0, 0]
    table = exp.get_table()
    assert len(table) == ROWS
    assert not table.duplicated(["dataset", "seed"]).any()
    assert exp.fill_table_from_config() == 0
