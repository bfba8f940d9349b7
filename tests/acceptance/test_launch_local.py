"""``launch --on local``: detached executors drain a real table; --stop leaves no process behind.

The executors are real ``python -m py_experimenter run`` processes started by the real CLI (or
the Python API); nothing is mocked.
"""

from __future__ import annotations

import collections
import json
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
from py_experimenter.launchers import local, procs
from tests.conftest import SERVER_URLS, experiment_yaml, require_server

FUNCTION = textwrap.dedent('''
    import os, time

    def run(keyfields, result_processor, custom_fields):
        fd = os.open(custom_fields["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{result_processor.experiment_id}\\n".encode())
        os.close(fd)
        time.sleep(float(custom_fields["sleep"]))
        result_processor.process_results({"score": keyfields["seed"]})
''')


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "py_experimenter", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def make_table(tmp_path: Path, provider: str, rows: int, sleep: float, **execution: object
               ) -> tuple[PyExperimenter, Path, Path]:
    """A filled table (the table name is unique: it marks the executors' command lines)."""
    require_server(provider)
    table = f"lloc_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path / 'exp.db'}" if provider == "sqlite" else SERVER_URLS[provider]
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": url}}}))
    extra = {"Execution": {"heartbeat_seconds": 1, **execution}} if execution else {}
    data = experiment_yaml(provider, table, {"seed": {"type": "INT", "values": list(range(rows))}},
                           {"score": "INT"}, Custom={"ledger": str(tmp_path / "ledger.txt"), "sleep": sleep}, **extra)
    config = tmp_path / f"{table}.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "fn.py").write_text(FUNCTION)
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    experimenter.fill_table_from_config()
    return experimenter, config, credentials


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes containing ``marker`` (pgrep -f)."""
    found = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def launch_and_time_first_claim(experimenter: PyExperimenter, args: list[str], cwd: Path
                                ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``py-experimenter launch ARGS`` and measure the seconds until the first row is claimed
    (polling the table meanwhile)."""
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "py_experimenter", "launch", *args], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = float("nan")
    admin = experimenter._admin()
    while process.poll() is None and time.monotonic() - start < 120:
        counts = admin.status_counts()
        if counts.get("created", 0) < sum(counts.values()):
            first = time.monotonic() - start
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), first


@pytest.mark.parametrize("provider", ["sqlite", "mysql"])
def test_three_local_executors_drain_the_table_each_row_once(tmp_path: Path, provider: str):
    experimenter, config, credentials = make_table(tmp_path, provider, rows=30, sleep=0.15)
    try:
        done, first = launch_and_time_first_claim(
            experimenter, [str(config), "--on", "local", "-n", "3", "--credentials", str(credentials),
                           "--function", "fn.py:run", "--wait"], tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "started 3 executors" in done.stdout and "drained" in done.stdout

        table = experimenter.get_table()
        assert list(table["status"].unique()) == ["done"] and len(table) == 30
        ledger = collections.Counter(Path(tmp_path / "ledger.txt").read_text().split())
        assert len(ledger) == 30 and set(ledger.values()) == {1}
        attempts = experimenter.get_attempts_table()
        assert len(attempts) == 30 and set(attempts["outcome"]) == {"done"}

        [record_path] = (tmp_path / "py_experimenter_logs" / experimenter.config.table.name).glob("launch-local-*.json")
        record = json.loads(record_path.read_text())
        pids = {entry["pid"] for entry in record["executors"]}
        workers = {int(worker.rpartition(":")[2]) for worker in table["worker"]}
        assert workers <= pids and len(workers) >= 2, (workers, pids)
        logs = sorted(Path(record["run_dir"]).glob("local-*.log"))
        assert len(logs) == 3
        # The executors leave by themselves once nothing is left.
        limit = time.monotonic() + 30
        while local.alive_record(record) and time.monotonic() < limit:
            time.sleep(0.2)
        assert local.alive_record(record) == 0
        print(f"\nlocal ({provider}): first row claimed {first:.2f} s after launch")
    finally:
        experimenter.delete_table()


def test_stop_leaves_no_process_and_hands_the_rows_back(tmp_path: Path):
    experimenter, config, credentials = make_table(tmp_path, "mysql", rows=6, sleep=600)
    marker = experimenter.config.table.name
    try:
        record = local.launch_local(config, executors=2, function=f"{tmp_path / 'fn.py'}:run", credentials=credentials,
                                    run_args=["--grace-seconds", "1"], log_dir=tmp_path / "logs")
        assert local.alive_record(record) == 2
        limit = time.monotonic() + 60
        while experimenter._admin().status_counts().get("running", 0) < 2 and time.monotonic() < limit:
            time.sleep(0.2)
        assert experimenter._admin().status_counts().get("running") == 2
        assert len(processes_with(marker)) == 2

        status = cli("status", str(config), "--credentials", str(credentials), "--log-dir", str(tmp_path / "logs"),
                     cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "running experiments per executor" in status.stdout
        launched = status.stdout.split("launched executors")[1]
        assert "local" in launched and "2" in launched

        stopped = cli("launch", str(config), "--stop", "--stop-timeout", "20", "--log-dir", str(tmp_path / "logs"),
                      cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped 2 of 2 executors" in stopped.stdout
        assert processes_with(marker) == []
        assert local.alive_record(record) == 0
        counts = experimenter._admin().status_counts()
        assert counts == {"created": 6}, counts
        attempts = experimenter.get_attempts_table()
        assert sorted(attempts["outcome"]) == ["interrupted", "interrupted"]
        assert json.loads(Path(record["record_path"]).read_text())["stopped_at"] > record["launched_at"]

        again = cli("launch", str(config), "--stop", "--log-dir", str(tmp_path / "logs"), cwd=tmp_path)
        assert again.returncode == 0 and "no launch" in again.stdout
    finally:
        for line in processes_with(marker):  # never leave an executor behind, even on failure
            os.killpg(int(line.split()[0]), signal.SIGKILL)
        experimenter.delete_table()


def test_a_reused_pid_is_never_signalled(tmp_path: Path):
    """An entry whose pid now belongs to another process (another start time) is not ours."""
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        entry = {"pid": stranger.pid, "start": "1", "log": str(tmp_path / "x.log")}
        assert procs.start_time(stranger.pid) not in (None, "1")
        assert procs.alive([entry]) == 0
        assert procs.stop([entry], timeout=1) == 0
        assert stranger.poll() is None
        ours = {**entry, "start": procs.start_time(stranger.pid)}
        assert procs.alive([ours]) == 1
        assert procs.stop([ours], timeout=5) == 1
        stranger.wait(timeout=5)
        assert procs.start_time(stranger.pid) is None
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def test_wait_returns_when_the_executors_ended_with_rows_left(tmp_path: Path):
    """``--wait`` follows the executors too: they stop after --max-experiments, rows are left, exit 1."""
    experimenter, config, credentials = make_table(tmp_path, "sqlite", rows=6, sleep=0.05)
    done = cli("launch", str(config), "--on", "local", "-n", "2", "--credentials", str(credentials), "--function",
               "fn.py:run", "--wait", "--", "--max-experiments", "1", cwd=tmp_path, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert experimenter._admin().status_counts() == {"done": 2, "created": 4}
    assert "created 4" in done.stdout or "4 left" in done.stdout, done.stdout
