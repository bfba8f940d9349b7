"""``add_experiment_and_execute`` / ``unpause_experiment`` close what they open and shut down
gracefully like ``execute()``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from py_experimenter.status import ExperimentStatus

KEYFIELDS = {"seed": {"type": "INT", "values": [0]}}
CALLS = 20


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_twenty_calls_leave_no_thread_and_no_connection_behind(make_experimenter):
    exp = make_experimenter(KEYFIELDS, {"value": "INT"}, Execution={"heartbeat_seconds": 0.2})
    exp.create_table()
    before = _threads()

    def pause_first(keyfields, rp, custom):
        rp.process_results({"value": keyfields["seed"]})
        return ExperimentStatus.PAUSED

    def finish(keyfields, rp, custom):
        time.sleep(0.05)  # long enough for the heartbeat thread to start beating
        rp.process_results({"value": 2 * keyfields["seed"]})

    for seed in range(CALLS):
        exp.add_experiment_and_execute({"seed": seed}, pause_first)
    for experiment_id in exp.get_table()["ID"]:
        exp.unpause_experiment(int(experiment_id), finish)

    left = [t.name for t in _threads() - before if t.is_alive()]
    assert not left, f"threads left behind after {2 * CALLS} calls: {left}"
    pool = exp.db.engine.pool
    assert pool.checkedout() == 0, f"{pool.checkedout()} connections still checked out"
    table = exp.get_table()
    assert len(table) == CALLS and (table["status"] == "done").all()
    assert sorted(table["value"]) == [2 * s for s in range(CALLS)]


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from py_experimenter.experimenter import PyExperimenter
    from py_experimenter.status import ExperimentStatus

    config, credentials, marker, how = sys.argv[1:5]
    exp = PyExperimenter(config, credentials, use_codecarbon=False)

    def pause(keyfields, rp, custom):
        return ExperimentStatus.PAUSED

    def long_running(keyfields, rp, custom):
        Path(marker).write_text("running")
        time.sleep(60)

    if how == "unpause":
        exp.add_experiment_and_execute({"seed": 7}, pause)
        exp.unpause_experiment(int(exp.get_table()["ID"].iloc[0]), long_running)
    else:
        exp.add_experiment_and_execute({"seed": 7}, long_running)
    print("returned")
""")


def _sigterm_during(exp, backend, tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    marker = tmp_path / f"{how}.running"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    child = subprocess.Popen([sys.executable, str(script), exp.config.source, str(backend.credentials_file()),
                              str(marker), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, f"the child ended early: {child.communicate()}"
        assert time.monotonic() < deadline, "the experiment never started"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise AssertionError(f"the child did not end after SIGTERM: {err[-2000:]}") from None
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _assert_handed_back(exp, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0 and "returned" in done.stdout, \
        f"the child died of the signal (exit {done.returncode}): {done.stderr[-2000:]}"
    row = exp.get_table().iloc[0]
    assert row["status"] == "created", f"the row was not handed back: {row['status']}"
    attempts = exp.get_attempts_table()
    assert attempts["outcome"].iloc[-1] == "interrupted"


def test_sigterm_during_add_experiment_and_execute_hands_the_row_back(make_experimenter, backend, tmp_path):
    exp = make_experimenter(KEYFIELDS, Execution={"grace_seconds": 0})
    exp.create_table()
    _assert_handed_back(exp, _sigterm_during(exp, backend, tmp_path, "add"))


def test_sigterm_during_unpause_experiment_hands_the_row_back(make_experimenter, backend, tmp_path):
    exp = make_experimenter(KEYFIELDS, Execution={"grace_seconds": 0})
    exp.create_table()
    _assert_handed_back(exp, _sigterm_during(exp, backend, tmp_path, "unpause"))
