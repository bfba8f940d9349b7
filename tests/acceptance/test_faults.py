"""Fault injection: kill -9 and SIGSTOP of an executor mid-experiment, on every backend.

The executors are real ``py-experimenter run`` processes; the lease is 2 s and heartbeats
come every 0.5 s so that recovery happens within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import Backend, experiment_yaml

HEARTBEAT = 0.5
SILENT = 2 * HEARTBEAT + 0.5

FUNCTION = textwrap.dedent('''
    import os, time
    from pathlib import Path

    def run(keyfields, result_processor, custom_fields):
        work = Path(custom_fields["work"])
        try:  # the first executor to get here is the one the test kills or freezes
            os.close(os.open(work / "first", os.O_CREAT | os.O_EXCL))
            first = True
        except FileExistsError:
            first = False
        me = f"pid{os.getpid()}"
        result_processor.process_logs({"progress": {"who": me}})
        if first:
            (work / "started").write_text(str(os.getpid()))
            time.sleep(float(custom_fields["first_sleep"]))
        result_processor.process_results({"winner": me})
        with open(work / "ledger", "a") as ledger:
            ledger.write(me + "\\n")
''')


def _setup(backend: Backend, first_sleep: float) -> tuple[PyExperimenter, list[str]]:
    work = backend.workdir
    (work / "fault_fn.py").write_text(FUNCTION)
    table = f"fault_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(backend.provider, table, {"seed": {"type": "INT", "values": [0]}}, {"winner": "VARCHAR(40)"},
                           {"progress": {"who": "VARCHAR(40)"}},
                           Custom={"work": str(work), "first_sleep": first_sleep},
                           Execution={"lease_seconds": 2, "heartbeat_seconds": HEARTBEAT, "max_attempts": 3})
    config = work / "fault.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = str(backend.credentials_file())
    experimenter = PyExperimenter(str(config), credentials, use_codecarbon=False)
    experimenter.fill_table_from_config()
    command = [sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials", credentials,
               "--function", "fault_fn:run"]
    return experimenter, command


def _start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_file(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_killed_executor_is_recovered_by_another(backend: Backend):
    experimenter, command = _setup(backend, first_sleep=600)
    work = backend.workdir
    victim = _start(command, work)
    try:
        _wait_for_file(work / "started")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        time.sleep(SILENT)  # a peer counts as silent after two missed heartbeats
        rescuer = _start(command, work)
        _out, err = rescuer.communicate(timeout=120)
        assert rescuer.returncode == 0, err[-3000:]
    finally:
        victim.kill()
    row = experimenter.get_table().iloc[0]
    assert row["status"] == "done" and row["attempt"] == 2
    assert row["winner"] == f"pid{rescuer.pid}"
    assert (work / "ledger").read_text().split() == [f"pid{rescuer.pid}"]
    attempts = experimenter.get_attempts_table()
    assert list(attempts["outcome"]) == ["lost", "done"]
    assert "lease expired" in attempts["error"][0]
    logs = experimenter.get_logtable("progress")
    assert list(zip(logs["who"], logs["attempt"], strict=True)) == [(f"pid{victim.pid}", 1), (f"pid{rescuer.pid}", 2)]
    experimenter.delete_table()


def test_frozen_executor_cannot_overwrite_the_attempt_that_replaced_it(backend: Backend):
    experimenter, command = _setup(backend, first_sleep=2.5)
    work = backend.workdir
    zombie = _start(command, work)
    try:
        _wait_for_file(work / "started")
        zombie.send_signal(signal.SIGSTOP)
        time.sleep(SILENT)
        rescuer = _start(command, work)
        _out, err = rescuer.communicate(timeout=120)
        assert rescuer.returncode == 0, err[-3000:]
        zombie.send_signal(signal.SIGCONT)
        _zombie_out, zombie_err = zombie.communicate(timeout=60)
        assert zombie.returncode == 0, zombie_err[-3000:]
    finally:
        zombie.send_signal(signal.SIGCONT)
        zombie.kill()
    assert "abandoning experiment" in zombie_err or "discarded" in zombie_err
    row = experimenter.get_table().iloc[0]
    assert row["status"] == "done" and row["attempt"] == 2
    assert row["winner"] == f"pid{rescuer.pid}"
    assert (work / "ledger").read_text().split() == [f"pid{rescuer.pid}"]
    assert list(experimenter.get_attempts_table()["outcome"]) == ["lost", "done"]
    logs = experimenter.get_logtable("progress")
    assert sorted(logs["attempt"]) == [1, 2]
    experimenter.delete_table()
    assert os.path.exists(work / "first")


SLEEPER = textwrap.dedent('''
    import os, time
    from pathlib import Path

    def run(keyfields, result_processor, custom_fields):
        flag = Path(custom_fields["work"], f"started-{keyfields['seed']}")
        flag.with_suffix(".tmp").write_text(str(os.getpid()))
        flag.with_suffix(".tmp").rename(flag)  # atomic: the test never reads it half-written
        time.sleep(float(custom_fields["sleep"]))
''')


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_until_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


def _sleeper_setup(backend: Backend, sleep: float, grace: float, n_jobs: int = 1,
                   isolation: str = "inline") -> tuple[PyExperimenter, list[str]]:
    work = backend.workdir
    (work / "sleeper_fn.py").write_text(SLEEPER)
    table = f"term_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(backend.provider, table, {"seed": {"type": "INT", "values": [0, 1, 2, 3]}},
                           Custom={"work": str(work), "sleep": sleep},
                           Execution={"lease_seconds": 10, "heartbeat_seconds": 1, "grace_seconds": grace,
                                      "isolation": isolation})
    config = work / "term.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = str(backend.credentials_file())
    experimenter = PyExperimenter(str(config), credentials, use_codecarbon=False)
    experimenter.fill_table_from_config()
    command = [sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials", credentials,
               "--function", "sleeper_fn:run", "--n-jobs", str(n_jobs)]
    return experimenter, command


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_sigterm_hands_the_running_experiment_back_and_exits_0(backend: Backend, isolation: str):
    experimenter, command = _sleeper_setup(backend, sleep=600, grace=0.5, n_jobs=2, isolation=isolation)
    work = backend.workdir
    executor = _start(command, work)
    try:
        _wait_for_file(work / "started-0")
        _wait_for_file(work / "started-1")
        executor.send_signal(signal.SIGTERM)
        _out, err = executor.communicate(timeout=60)
    finally:
        executor.kill()
    assert executor.returncode == 0, err[-3000:]
    assert "handed back" in err
    table = experimenter.get_table()
    assert set(table["status"]) == {"created"}
    assert list(table["attempt"]) == [1, 1, 0, 0]
    attempts = experimenter.get_attempts_table()
    assert sorted(attempts["experiment_id"]) == [1, 2]
    assert set(attempts["outcome"]) == {"interrupted"} and attempts["ended_at"].notna().all()
    for seed in (0, 1):  # the experiments' processes (children in process isolation) are gone
        _wait_until_gone(int((work / f"started-{seed}").read_text()))  # they would sleep 600 s
    experimenter.delete_table()


def test_killed_executor_takes_its_isolated_child_along(backend: Backend):
    experimenter, command = _sleeper_setup(backend, sleep=600, grace=30, isolation="process")
    work = backend.workdir
    executor = _start(command, work)
    try:
        _wait_for_file(work / "started-0")
        child = int((work / "started-0").read_text())
        assert child != executor.pid
        executor.send_signal(signal.SIGKILL)
        executor.wait(timeout=30)
        _wait_until_gone(child, seconds=15)  # it would sleep 600 s; a loaded machine needs slack
    finally:
        executor.kill()
    experimenter.delete_table()


def test_experiment_finishing_within_the_grace_period_is_kept(backend: Backend):
    experimenter, command = _sleeper_setup(backend, sleep=1.5, grace=30)
    work = backend.workdir
    executor = _start(command, work)
    try:
        _wait_for_file(work / "started-0")
        executor.send_signal(signal.SIGTERM)
        _out, err = executor.communicate(timeout=60)
    finally:
        executor.kill()
    assert executor.returncode == 0, err[-3000:]
    assert list(experimenter.get_table()["status"]) == ["done", "created", "created", "created"]
    assert list(experimenter.get_attempts_table()["outcome"]) == ["done"]
    experimenter.delete_table()


def test_scancel_signalling_executor_and_child_hands_the_experiment_back(backend: Backend):
    """scancel / Slurm's time limit send SIGTERM to every process of the job, the child too."""
    experimenter, command = _sleeper_setup(backend, sleep=600, grace=30, isolation="process")
    work = backend.workdir
    executor = _start(command, work)
    try:
        _wait_for_file(work / "started-0")
        child = int((work / "started-0").read_text())
        executor.send_signal(signal.SIGTERM)
        os.kill(child, signal.SIGTERM)
        _out, err = executor.communicate(timeout=60)
    finally:
        executor.kill()
    assert executor.returncode == 0, err[-3000:]
    assert list(experimenter.get_table()["status"]) == ["created"] * 4
    attempts = experimenter.get_attempts_table()
    assert list(attempts["outcome"]) == ["interrupted"] and "shutdown requested" in attempts["error"][0]
    experimenter.delete_table()
