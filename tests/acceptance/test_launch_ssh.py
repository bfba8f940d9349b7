"""``launch --on ssh``: two SSH "hosts" (127.0.0.1 and 127.0.0.2, the real sshd of ``scripts/sshd``)
drain a MariaDB table; --stop leaves no process on either; a refusing host or a remote Python
without py_experimenter stops the launch before anything starts, in one line."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from py_experimenter.exceptions import LaunchError
from py_experimenter.launchers.ssh import launch_ssh
from tests.acceptance.test_launch_local import launch_and_time_first_claim, make_table, processes_with
from tests.ssh_support import SSH_PORT, sshd_answers

KEY = Path("/root/.ssh/py_experimenter_test")
HOSTS = f"root@127.0.0.1:{SSH_PORT},root@127.0.0.2:{SSH_PORT}"
SSH_OPTIONS = [f"--ssh-option=-i {KEY}", "--ssh-option=-oStrictHostKeyChecking=no",
               "--ssh-option=-oUserKnownHostsFile=/dev/null", "--ssh-option=-oLogLevel=ERROR"]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def two_hosts() -> None:
    """The test sshd answering on both addresses (scripts/sshd); skip locally, fail in CI."""
    if not (KEY.exists() and sshd_answers("127.0.0.1") and sshd_answers("127.0.0.2")):
        message = f"no test sshd on 127.0.0.1 and 127.0.0.2 port {SSH_PORT} with key {KEY}; run scripts/sshd"
        if CI:
            pytest.fail(message)
        pytest.skip("!!! SKIPPED, NO SSHD: " + message)


def ssh_launch(config: Path, credentials: Path, *more: str) -> list[str]:
    return [str(config), "--on", "ssh", "--credentials", str(credentials), "--function", "fn.py:run",
            "--remote-python", sys.executable, *SSH_OPTIONS, *more]


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "py_experimenter", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_two_hosts_drain_the_table_each_row_once(tmp_path: Path, two_hosts: None):
    experimenter, config, credentials = make_table(tmp_path, "mysql", rows=40, sleep=0.25)
    try:
        done, first = launch_and_time_first_claim(
            experimenter, ssh_launch(config, credentials, "--hosts", HOSTS, "-n", "2", "--wait", "--remote-dir",
                                     str(tmp_path), "--remote-env", "PY_EXPERIMENTER_NAME=via-ssh"), tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"root@127.0.0.1:{SSH_PORT}: started 2 executors" in done.stdout
        assert f"root@127.0.0.2:{SSH_PORT}: started 2 executors" in done.stdout

        table = experimenter.get_table()
        assert set(table["status"]) == {"done"} and len(table) == 40
        ledger = collections.Counter((tmp_path / "ledger.txt").read_text().split())
        assert len(ledger) == 40 and set(ledger.values()) == {1}
        assert len(experimenter.get_attempts_table()) == 40

        [path] = (tmp_path / "py_experimenter_logs" / experimenter.config.table.name).glob("launch-ssh-*.json")
        record = json.loads(path.read_text())
        by_host = {entry["label"]: {f"{entry['hostname']}:{e['pid']}" for e in entry["executors"]}
                   for entry in record["hosts"]}
        assert sorted(by_host) == [f"root@127.0.0.1:{SSH_PORT}", f"root@127.0.0.2:{SSH_PORT}"]
        workers = set(table["worker"])
        assert all(workers & pids for pids in by_host.values()), (workers, by_host)  # both hosts ran rows
        assert workers <= set().union(*by_host.values())
        assert set(table["machine"]) == {socket.gethostname()}
        assert set(table["name"]) == {"via-ssh"}  # --remote-env reached the executors (run's --name default)
        folder = tmp_path / "py_experimenter_logs" / experimenter.config.table.name
        logs = sorted(path.name for path in folder.rglob("*.log"))
        assert logs == [f"root_127.0.0.{h}_{SSH_PORT}-{i}.log" for h in (1, 2) for i in (0, 1)]
        print(f"\nssh (2 hosts x 2): first row claimed {first:.2f} s after launch")
    finally:
        experimenter.delete_table()


def test_status_per_host_and_stop_leaves_no_process(tmp_path: Path, two_hosts: None):
    experimenter, config, credentials = make_table(tmp_path, "mysql", rows=8, sleep=600)
    marker = experimenter.config.table.name
    try:
        # one executor per host, forking two processes (run --n-jobs 2): the worker column names the forked pids
        started = cli("launch", *ssh_launch(config, credentials, "--hosts", HOSTS, "--", "--grace-seconds", "1",
                                            "--n-jobs", "2"), cwd=tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        limit = time.monotonic() + 60
        while experimenter._admin().status_counts().get("running", 0) < 4 and time.monotonic() < limit:
            time.sleep(0.2)
        assert experimenter._admin().status_counts().get("running") == 4
        assert len(processes_with(marker)) == 6  # per host: the executor and its two processes

        status = cli("status", str(config), "--credentials", str(credentials), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        launched = status.stdout.split("launched executors")[1].splitlines()
        rows = {line.split()[1]: line.split()[2:] for line in launched if line.startswith("ssh ")}
        # per host: started, still running, running experiments
        assert rows == {f"root@127.0.0.1:{SSH_PORT}": ["1", "1", "2"], f"root@127.0.0.2:{SSH_PORT}": ["1", "1", "2"]}

        stopped = cli("launch", str(config), "--on", "ssh", "--stop", "--stop-timeout", "20", cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"root@127.0.0.1:{SSH_PORT}: stopped 1 of 1" in stopped.stdout
        assert f"root@127.0.0.2:{SSH_PORT}: stopped 1 of 1" in stopped.stdout
        assert processes_with(marker) == []
        assert experimenter._admin().status_counts() == {"created": 8}
        assert sorted(set(experimenter.get_attempts_table()["outcome"])) == ["interrupted"]
    finally:
        for line in processes_with(marker):
            os.killpg(int(line.split()[0]), signal.SIGKILL)
        experimenter.delete_table()


def test_a_refusing_host_stops_the_launch_before_anything_starts(tmp_path: Path, two_hosts: None):
    experimenter, config, credentials = make_table(tmp_path, "mysql", rows=4, sleep=0.1)
    marker = experimenter.config.table.name
    try:
        hosts = f"root@127.0.0.2:{SSH_PORT}*2,root@127.0.0.1:2223"
        refused = cli("launch", *ssh_launch(config, credentials, "--hosts", hosts), cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert "host root@127.0.0.1:2223:" in line and "Connection refused" in line, line
        assert "127.0.0.2" not in line and "nothing was started" in line
        assert processes_with(marker) == []
        assert experimenter._admin().status_counts() == {"created": 4}
        assert not list((tmp_path / "py_experimenter_logs").rglob("launch-ssh-*.json"))

        with pytest.raises(LaunchError, match=r"host root@127.0.0.1:2223: .*Connection refused"):  # the Python API
            launch_ssh(config, hosts, function="fn.py:run", credentials=credentials, remote_python=sys.executable,
                       ssh_options=[arg.partition("=")[2] for arg in SSH_OPTIONS[1:]] + ["-i", str(KEY)],
                       log_dir=tmp_path / "api-logs")
        assert processes_with(marker) == [] and not list((tmp_path / "api-logs").rglob("*-*"))  # no record, no logs
    finally:
        experimenter.delete_table()


def test_a_remote_python_without_the_package_names_the_fix(tmp_path: Path, two_hosts: None):
    bare = "/usr/bin/python3"
    if not os.path.exists(bare) or subprocess.run([bare, "-c", "import py_experimenter"], cwd=tmp_path,
                                                  capture_output=True).returncode == 0:
        pytest.skip(f"{bare} is missing or has py_experimenter installed")
    experimenter, config, credentials = make_table(tmp_path, "mysql", rows=4, sleep=0.1)
    try:
        args = ssh_launch(config, credentials, "--hosts", HOSTS, "--remote-dir", str(tmp_path))
        args[args.index(sys.executable)] = bare
        failed = cli("launch", *args, cwd=tmp_path)
        assert failed.returncode == 2, failed.stdout + failed.stderr
        [line] = failed.stderr.strip().splitlines()
        assert f"py_experimenter is not installed for {bare}" in line
        assert "pip install py-experimenter there or pass --remote-python" in line
        assert "root@127.0.0.1" in line and "root@127.0.0.2" in line
        assert experimenter._admin().status_counts() == {"created": 4}

        missing = cli("launch", *ssh_launch(config, credentials, "--hosts", HOSTS, "--remote-dir", "/no/such/dir"),
                      cwd=tmp_path)
        assert missing.returncode == 2 and "/no/such/dir is not usable" in missing.stderr
    finally:
        experimenter.delete_table()
