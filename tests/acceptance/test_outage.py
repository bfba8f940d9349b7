"""Database outages: the real MariaDB / PostgreSQL server restarts under running executors.

``scripts/services restart`` stops the server (connections drop, new ones are refused),
keeps it down, and starts it again. Executors must ride it out: every experiment done,
each run exactly once (counted in a ledger file outside the database). When the server
stays away longer than ``Execution.database_outage_seconds``, they exit non-zero and say so.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, Backend, experiment_yaml, require_server

ROOT = Path(__file__).resolve().parents[2]
SERVICE = {"mysql": "mariadb", "postgresql": "postgresql"}

FUNCTION = textwrap.dedent('''
    import os, time

    def run(keyfields, result_processor, custom_fields):
        time.sleep(float(custom_fields["sleep"]))
        result_processor.process_logs({"progress": {"who": str(os.getpid())}})
        result_processor.process_results({"value": keyfields["seed"] * 2})
        with open(custom_fields["ledger"], "a") as ledger:
            ledger.write(f"{keyfields['seed']}\\n")
''')


@pytest.fixture(params=["mysql", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    require_server(request.param)
    return Backend(request.param, SERVER_URLS[request.param], tmp_path)


def _setup(server: Backend, rows: int, outage_seconds: float, sleep: float) -> tuple[PyExperimenter, list[str]]:
    work = server.workdir
    (work / "outage_fn.py").write_text(FUNCTION)
    table = f"outage_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(server.provider, table, {"seed": {"type": "INT", "values": list(range(rows))}},
                           {"value": "INT"}, {"progress": {"who": "VARCHAR(40)"}},
                           Custom={"ledger": str(work / "ledger"), "sleep": sleep},
                           Execution={"lease_seconds": 15, "heartbeat_seconds": 1,
                                      "database_outage_seconds": outage_seconds})
    config = work / "outage.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = str(server.credentials_file())
    experimenter = PyExperimenter(str(config), credentials, use_codecarbon=False)
    experimenter.fill_table_from_config()
    command = [sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials", credentials,
               "--function", "outage_fn:run", "--n-jobs", "4"]
    return experimenter, command


def _ledger(work: Path) -> list[str]:
    path = work / "ledger"
    return path.read_text().split() if path.exists() else []


def _restart(server: Backend, down_seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / "services"), "restart", SERVICE[server.provider],
                           str(down_seconds)], capture_output=True, text=True, timeout=120)


def _wait_for_ledger(work: Path, entries: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(_ledger(work)) < entries:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the executors made no progress"
        time.sleep(0.05)


def test_server_restart_under_four_executors_loses_nothing_and_runs_nothing_twice(server: Backend):
    experimenter, command = _setup(server, rows=200, outage_seconds=120, sleep=0.05)
    work = server.workdir
    executors = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_ledger(work, 40, executors)
        restart = _restart(server, down_seconds=3)
        assert restart.returncode == 0, restart.stderr
        during = len(_ledger(work))
        _out, err = executors.communicate(timeout=240)
    finally:
        executors.kill()
    assert executors.returncode == 0, err[-3000:]
    assert during < 200, "the restart came too late to test anything"
    assert "unreachable" in err and "reachable again" in err, err[-3000:]
    runs = Counter(_ledger(work))
    assert sorted(runs) == sorted(str(seed) for seed in range(200))
    assert set(runs.values()) == {1}, {seed: n for seed, n in runs.items() if n != 1}
    table = experimenter.get_table()
    assert set(table["status"]) == {"done"}
    assert list(table.sort_values("seed")["value"]) == [2 * seed for seed in range(200)]
    attempts = experimenter.get_attempts_table()
    done = attempts[attempts["outcome"] == "done"]
    assert sorted(done["experiment_id"]) == sorted(table["ID"])
    experimenter.delete_table()


def test_executor_gives_up_when_the_server_stays_away(server: Backend):
    experimenter, command = _setup(server, rows=100, outage_seconds=2, sleep=0.05)
    work = server.workdir
    executors = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    restarter = threading.Thread(target=lambda: result.setdefault("restart", _restart(server, down_seconds=8)))
    try:
        _wait_for_ledger(work, 10, executors)
        started = time.monotonic()
        restarter.start()
        _out, err = executors.communicate(timeout=60)
        gave_up_after = time.monotonic() - started
    finally:
        executors.kill()
        restarter.join(timeout=120)
    assert result["restart"].returncode == 0, result["restart"].stderr
    assert executors.returncode != 0
    assert gave_up_after < 8, f"the executors waited {gave_up_after:.1f} s, longer than the outage"
    assert "database_outage_seconds=2" in err and "unreachable" in err, err[-3000:]
    assert "pyexp-test" not in err  # never the password
    experimenter.delete_table()


def test_executor_started_while_the_database_is_away_waits_then_gives_up(tmp_path: Path):
    data = experiment_yaml("mysql", "never", {"seed": {"type": "INT", "values": [1]}},
                           Execution={"database_outage_seconds": 1.5})
    config = tmp_path / "away.yml"
    config.write_text(yaml.safe_dump(data))
    credentials = tmp_path / "credentials.yml"  # nothing listens on port 1
    credentials.write_text(yaml.safe_dump(
        {"CREDENTIALS": {"Database": {"url": "mysql+pymysql://pyexp:s3cret-pw@127.0.0.1:1/py_experimenter_test"}}}))
    (tmp_path / "away_fn.py").write_text("def run(keyfields, result_processor, custom):\n    pass\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials",
                           str(credentials), "--function", "away_fn:run"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert 1.5 <= time.monotonic() - started < 30
    assert "unreachable" in done.stderr and "database_outage_seconds=1.5" in done.stderr
    assert "s3cret-pw" not in done.stderr
