"""A connection that stops answering: the executor must give up by its own timeouts.

A killed server refuses connections at once; a partition does not. Here a TCP forwarder of
ours (tests/tcp_forwarder.py) sits between ``py-experimenter run`` and the real MariaDB /
PostgreSQL server, and freezes while an experiment runs: no byte moves any more, sockets stay
open, and new connections are accepted but never answered. The executor's statements (the
finish, the heartbeats on their own connection, every reconnect) must time out and count
against ``Execution.database_outage_seconds``; then it exits non-zero with a clear message
and no password. Without read / connect timeouts it would wait forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from py_experimenter.db.timeouts import CONNECT_TIMEOUT_ENV, READ_TIMEOUT_ENV
from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, Backend, experiment_yaml, require_server
from tests.tcp_forwarder import Forwarder

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 3.0
READ_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2.0
#: Scheduling slack on a loaded 2-core machine, shutdown of the heartbeat (one more read
#: timeout at most), the process exit.
MARGIN_S = 12.0

FUNCTION = textwrap.dedent('''
    import time

    def run(keyfields, result_processor, custom_fields):
        with open(custom_fields["ledger"], "a") as ledger:
            ledger.write(f"{keyfields['seed']}\\n")
        time.sleep(float(custom_fields["sleep"]))
        result_processor.process_results({"value": keyfields["seed"]})
''')


@pytest.fixture(params=["mysql", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    require_server(request.param)
    return Backend(request.param, SERVER_URLS[request.param], tmp_path)


def _ledger(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_executor_gives_up_when_the_connection_freezes(server: Backend) -> None:
    work = server.workdir
    url = make_url(server.url)
    table = f"frozen_{uuid.uuid4().hex[:10]}"
    ledger = work / "ledger"
    data = experiment_yaml(server.provider, table, {"seed": {"type": "INT", "values": list(range(20))}},
                           {"value": "INT"}, Custom={"ledger": str(ledger), "sleep": 2.0},
                           Execution={"lease_seconds": 60, "heartbeat_seconds": 0.5,
                                      "database_outage_seconds": OUTAGE_S})
    config = work / "frozen.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    (work / "frozen_fn.py").write_text(FUNCTION)
    direct = PyExperimenter(str(config), str(server.credentials_file()), use_codecarbon=False)
    direct.fill_table_from_config()
    with Forwarder((url.host or "127.0.0.1", url.port or 0)) as forwarder:
        through = work / "through_forwarder.yml"
        through.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {
            "url": url.set(port=forwarder.port).render_as_string(hide_password=False)}}}))
        env = {**os.environ, READ_TIMEOUT_ENV: str(READ_TIMEOUT_S), CONNECT_TIMEOUT_ENV: str(CONNECT_TIMEOUT_S),
               "PYTHONPATH": str(ROOT)}
        executor = subprocess.Popen(
            [sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials", str(through),
             "--function", "frozen_fn:run"],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while len(_ledger(ledger)) < 2:  # the second experiment runs: heartbeats are beating
                assert executor.poll() is None, executor.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the executor made no progress through the forwarder"
                time.sleep(0.05)
            forwarder.freeze()
            frozen_at = time.monotonic()
            _out, err = executor.communicate(timeout=120)
            gave_up_after = time.monotonic() - frozen_at
        finally:
            executor.kill()
        held = forwarder.accepted_while_frozen
    limit = READ_TIMEOUT_S + OUTAGE_S + CONNECT_TIMEOUT_S + MARGIN_S
    print(f"{server.provider}: gave up {gave_up_after:.1f} s after the freeze (limit {limit:g} s)")
    assert executor.returncode != 0, err[-3000:]
    assert OUTAGE_S <= gave_up_after < limit, f"gave up after {gave_up_after:.1f} s (limit {limit:g} s)\n{err[-3000:]}"
    assert f"database_outage_seconds={OUTAGE_S:g}" in err and "unreachable" in err, err[-3000:]
    assert "heartbeat of experiment" in err, err[-3000:]  # the heartbeat connection timed out too
    assert held >= 1, "no reconnect was attempted while frozen"
    assert url.password and url.password not in err
    assert len(_ledger(ledger)) == 2  # it claimed nothing more while the database was away
    table_now = direct.get_table()
    assert (table_now["status"] == "done").sum() == 1  # the first one finished before the freeze
    direct.delete_table()
    direct.db.dispose()
