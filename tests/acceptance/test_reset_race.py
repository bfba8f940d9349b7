"""``reset`` racing executors that finish rows, on MariaDB and PostgreSQL.

Several executor processes claim and finish the experiments of one table while another
process resets done and running rows over and over. Reset locks main-table rows before
attempt rows, like the executors, so nobody deadlocks; a lock timeout or deadlock that
happens anyway is retried. Afterwards no row is lost or failed, every attempt is closed, and
every row is done by its latest attempt.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import Backend, experiment_yaml

ENTRY = Path(sys.executable).with_name("py-experimenter")
ROWS = 60
RESET_SECONDS = 8.0

FUNCTION = textwrap.dedent("""
    import random
    import time

    def run(keyfields, result_processor, custom_fields):
        time.sleep(random.uniform(0.005, 0.03))
        result_processor.process_results({"score": float(keyfields["seed"])})
""")

RESETTER = textwrap.dedent("""
    import sys
    import time

    from py_experimenter.experimenter import PyExperimenter

    config, credentials, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    experimenter = PyExperimenter(config, credentials, use_codecarbon=False)
    deadline, rounds, total = time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline:
        # Every other round: all done and running rows; else a slice chosen by a condition.
        where = None if rounds % 2 else "seed % 3 = 0 OR seed < 10"
        total += experimenter.reset_experiments("done", "running", where=where)
        rounds += 1
        time.sleep(0.02)
    print(f"rounds={rounds} reset={total}")
""")


def _executors(config: Path, credentials: Path, cwd: Path, jobs: int = 3) -> subprocess.Popen[str]:
    return subprocess.Popen([str(ENTRY), "run", str(config), "--credentials", str(credentials),
                             "--function", "race_fn.py:run", "--n-jobs", str(jobs),
                             "--heartbeat-seconds", "1", "--lease-seconds", "30"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_executor(process: subprocess.Popen[str]) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    lowered = err.lower()
    assert "deadlock" not in lowered and "lock wait timeout" not in lowered, err[-3000:]
    assert "Traceback" not in err or "LeaseLostError" in err, err[-3000:]


def test_reset_racing_finish_never_deadlocks_or_loses_rows(backend: Backend):
    if backend.provider == "sqlite":
        pytest.skip("a server race: SQLite serialises writers with BEGIN IMMEDIATE")
    work = backend.workdir
    table = f"race_{uuid.uuid4().hex[:10]}"
    config = work / "race.yml"
    keyfields = {"seed": {"type": "INT", "values": {"start": 0, "stop": ROWS}}}
    config.write_text(yaml.safe_dump(experiment_yaml(backend.provider, table, keyfields, {"score": "DOUBLE"}),
                                     sort_keys=False))
    credentials = backend.credentials_file()
    (work / "race_fn.py").write_text(FUNCTION)
    (work / "resetter.py").write_text(RESETTER)
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    try:
        experimenter.fill_table_from_config()
        resetter = subprocess.Popen([sys.executable, "resetter.py", str(config), str(credentials),
                                     str(RESET_SECONDS)], cwd=work, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        runs = 0
        while resetter.poll() is None:  # executors stop when nothing is open: start them again
            _check_executor(_executors(config, credentials, work))
            runs += 1
            time.sleep(0.05)
        out, err = resetter.communicate(timeout=60)
        assert resetter.returncode == 0, err[-3000:]
        rounds, total = (int(part.split("=")[1]) for part in out.split())
        assert rounds > 10 and total > 0, out
        _check_executor(_executors(config, credentials, work))  # drain what the last resets put back

        table_rows = experimenter.get_table()
        attempts = experimenter.get_attempts_table()
        assert len(table_rows) == ROWS and sorted(table_rows["seed"]) == list(range(ROWS))
        assert set(table_rows["status"]) == {"done"}, table_rows["status"].value_counts()
        assert table_rows["score"].notna().all()
        assert attempts["ended_at"].notna().all(), "every attempt is closed"
        assert set(attempts["outcome"]) <= {"done", "cancelled"}, attempts["outcome"].value_counts()
        reset_attempts = attempts[attempts["outcome"] == "cancelled"]
        assert set(reset_attempts["error"]) <= {"reset"}
        # Every row is done by its latest attempt, which came after any reset of it.
        done = attempts[attempts["outcome"] == "done"].groupby("experiment_id")["attempt"].max()
        latest = table_rows.set_index("ID")["attempt"]
        assert (done.reindex(latest.index) == latest).all()
        for experiment_id, attempt in reset_attempts.groupby("experiment_id")["attempt"].max().items():
            assert latest[experiment_id] > attempt
        assert len(attempts) > ROWS, "resets made experiments run again"
        with experimenter.db.begin() as conn:  # attempt numbers never repeat for a row
            duplicates = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(experimenter.db.schema.attempts.c.experiment_id)
                    .group_by(experimenter.db.schema.attempts.c.experiment_id,
                              experimenter.db.schema.attempts.c.attempt)
                    .having(sa.func.count() > 1).subquery()
                )
            ).scalar()
        assert duplicates == 0
        print(f"{backend.provider}: {rounds} reset rounds reset {total} rows; {len(attempts)} attempts, "
              f"{len(reset_attempts)} running tries reset; executors started {runs + 1} times")
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()
