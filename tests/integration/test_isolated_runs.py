"""Experiments in a child process (``isolation: process``): timeout, memory limit, cancellation,
resource usage in the attempts table; cancellation of inline experiments too. All backends."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

KEYFIELDS = {"seed": {"type": "INT", "values": [1]}}
FAST = {"lease_seconds": 5, "heartbeat_seconds": 0.2}


def _attempt(exp: Any) -> Any:
    attempts = exp.get_attempts_table()
    assert len(attempts) == 1
    return attempts.iloc[0]


def test_isolated_experiment_writes_results_and_logs_from_the_child(make_experimenter):
    exp = make_experimenter(KEYFIELDS, {"pid": "INT"}, {"progress": {"step": "INT"}},
                            Execution={**FAST, "isolation": "process"})
    exp.fill_table_from_config()

    def work(keyfields, rp, custom):
        import os

        rp.process_logs({"progress": {"step": 1}})
        rp.process_results({"pid": os.getpid()})
        sum(i * i for i in range(300_000))  # some CPU time to measure

    import os

    assert exp.execute(work) == 1
    row = exp.get_table().iloc[0]
    assert row["status"] == "done" and row["pid"] != os.getpid()
    assert list(exp.get_logtable("progress")["step"]) == [1]
    attempt = _attempt(exp)
    assert attempt["outcome"] == "done"
    assert attempt["cpu_seconds"] > 0 and attempt["max_rss_mb"] > 10 and attempt["duration_seconds"] > 0


def test_timeout_kills_the_child_and_records_timeout(make_experimenter):
    exp = make_experimenter(KEYFIELDS, Execution={**FAST, "isolation": "process", "timeout": 1})
    exp.fill_table_from_config()

    def sleepy(keyfields, rp, custom):
        time.sleep(60)

    started = time.monotonic()
    exp.execute(sleepy)
    assert time.monotonic() - started < 15
    row = exp.get_table().iloc[0]
    assert row["status"] == "error" and "timeout of 1 s" in row["error"]
    attempt = _attempt(exp)
    assert attempt["outcome"] == "timeout" and attempt["duration_seconds"] >= 1


def test_memory_limit_records_oom(make_experimenter):
    exp = make_experimenter(KEYFIELDS, Execution={**FAST, "isolation": "process", "memory": "1g"})
    exp.fill_table_from_config()

    def greedy(keyfields, rp, custom):
        hog = bytearray(4 * 1024**3)
        return len(hog)

    exp.execute(greedy)
    row = exp.get_table().iloc[0]
    assert row["status"] == "error" and "out of memory" in row["error"] and "1024 MiB" in row["error"]
    assert _attempt(exp)["outcome"] == "oom"


def _cancel_when_started(exp: Any, flag: Path) -> threading.Thread:
    def cancel() -> None:
        deadline = time.monotonic() + 30
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        main = exp.db.schema.main
        with exp.db.begin() as conn:
            conn.execute(sa.update(main).values(cancel_requested=True))

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def _cancel_test(make_experimenter: Any, tmp_path: Path, isolation: str) -> None:
    exp = make_experimenter(KEYFIELDS, {"reached": "INT"}, Execution={**FAST, "isolation": isolation})
    exp.fill_table_from_config()
    flag = tmp_path / f"started-{isolation}"

    def long_running(keyfields, rp, custom):
        flag.write_text("x")
        time.sleep(60)
        rp.process_results({"reached": 1})

    canceller = _cancel_when_started(exp, flag)
    started = time.monotonic()
    exp.execute(long_running)
    canceller.join()
    assert time.monotonic() - started < 10, "cancellation took longer than a few heartbeats"
    row = exp.get_table().iloc[0]
    assert row["status"] == "error" and "cancel" in row["error"]
    assert row["reached"] is None or row["reached"] != row["reached"]  # NULL / NaN: never reached
    assert _attempt(exp)["outcome"] == "cancelled"


def test_cancel_stops_an_isolated_experiment_within_a_heartbeat(make_experimenter, tmp_path):
    _cancel_test(make_experimenter, tmp_path, "process")


def test_cancel_stops_an_inline_experiment_within_a_heartbeat(make_experimenter, tmp_path):
    _cancel_test(make_experimenter, tmp_path, "inline")


def test_inline_attempts_record_resource_usage(make_experimenter):
    exp = make_experimenter(KEYFIELDS, Execution=FAST)
    exp.fill_table_from_config()

    def work(keyfields, rp, custom):
        sum(i * i for i in range(300_000))

    exp.execute(work)
    attempt = _attempt(exp)
    assert attempt["outcome"] == "done"
    assert attempt["cpu_seconds"] > 0 and attempt["max_rss_mb"] > 10 and attempt["duration_seconds"] > 0


def test_a_child_killed_by_a_signal_is_an_error_and_the_next_experiment_runs(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT", "values": [1, 2]}}, Execution={**FAST, "isolation": "process"})
    exp.fill_table_from_config()

    def crashy(keyfields, rp, custom):
        import faulthandler
        import os
        import signal

        if keyfields["seed"] == 1:
            faulthandler.disable()  # pytest's dump of every thread would only clutter the output
            os.kill(os.getpid(), signal.SIGSEGV)

    assert exp.execute(crashy) == 2
    table = exp.get_table().sort_values("seed")
    assert list(table["status"]) == ["error", "done"]
    assert "SIGSEGV" in table["error"].iloc[0]
