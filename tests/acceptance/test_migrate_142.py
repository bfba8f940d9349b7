"""A table made by the real PyExperimenter 1.4.2 (in .venv142, see scripts/venv142) is refused
unmigrated, migrated by ``py-experimenter migrate``, and finished by our executor: the row
1.4.2 left ``running`` when its process was killed is recovered, and 1.4.2's results and logs
are unchanged. On SQLite and on MariaDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import SERVER_URLS, require_server

ROOT = Path(__file__).resolve().parents[2]
PYTHON_142 = ROOT / ".venv142" / "bin" / "python"
SCRIPT_142 = Path(__file__).parent / "compat_142" / "make_142_table.py"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

OUR_FUNCTION = '''
def run(keyfields, result_processor, custom_config):
    result_processor.process_logs({"scores": {"f1": 0.99, "note": "ours"}})
    result_processor.process_results({"accuracy": 0.77, "model": f"ours-{keyfields['seed']}", "score": 0.25})
'''


def _require_venv142() -> None:
    if PYTHON_142.exists():
        return
    message = f"{PYTHON_142} is missing; run scripts/venv142 (PyExperimenter 1.4.2 in its own venv)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip("!!! SKIPPED, NO PYEXPERIMENTER 1.4.2: " + message)


def _config(provider: str, table: str) -> dict[str, Any]:
    return {"PY_EXPERIMENTER": {"n_jobs": 1, "Database": {
        "provider": provider,
        "database": "py_experimenter_test",
        "table": {"name": table,
                  "keyfields": {"dataset": {"type": "VARCHAR(255)", "values": ["iris"]},
                                "seed": {"type": "INT", "values": [1, 2, 3, 4, 5]}},
                  # A bare DECIMAL: 1.4.2 made it DECIMAL(10,0) on MySQL, rounding every value.
                  "resultfields": {"accuracy": "DOUBLE", "model": "VARCHAR(255)", "score": "DECIMAL"},
                  # 1.4.2 makes <field>_timestamp columns VARCHAR(255); we write them all the same.
                  "result_timestamps": True},
        "logtables": {"scores": {"f1": "DOUBLE", "note": "VARCHAR(255)"}},
    }}}


def _read(engine: sa.Engine, table: str) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        return {row.ID: dict(row._mapping) for row in conn.execute(sa.select(reflected))}


def _ours(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "py_experimenter.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("provider", ["sqlite", "mysql"])
def test_table_of_pyexperimenter_142_is_migrated_and_finished(provider: str, tmp_path: Path):
    require_server(provider)
    _require_venv142()
    table = f"m142_{uuid.uuid4().hex[:10]}"
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "experiment.yml"
    config.write_text(yaml.safe_dump(_config(provider, table), sort_keys=False))
    credentials = tmp_path / "config" / "database_credentials.yml"
    if provider == "mysql":
        url = sa.engine.make_url(SERVER_URLS["mysql"])
        credentials.write_text(yaml.safe_dump({"CREDENTIALS": {
            "Database": {"user": url.username, "password": url.password},
            "Connection": {"Standard": {"server": url.host}}}}))
        engine = sa.create_engine(SERVER_URLS["mysql"])
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'py_experimenter_test.db'}")
    (tmp_path / "ours.py").write_text(OUR_FUNCTION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    try:
        _run_142_then_ours(tmp_path, env, engine, table, credentials if provider == "mysql" else None)
    finally:
        if provider == "mysql":
            with engine.begin() as conn:
                for suffix in ("__scores", "__attempts", "_codecarbon", ""):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}{suffix}`")
        engine.dispose()


def _run_142_then_ours(tmp: Path, env: dict[str, str], engine: sa.Engine, table: str,
                       credentials: Path | None) -> None:
    # 1.4.2: fill, one done row with results and logs, one error row ... (never with a
    # PYTHONPATH that could lead it to our package: both are imported as py_experimenter)
    env_142 = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    made = subprocess.run([str(PYTHON_142), str(SCRIPT_142), "prepare"], cwd=tmp, env=env_142,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    # ... and a row left running by a killed executor.
    hanging = subprocess.Popen([str(PYTHON_142), str(SCRIPT_142), "hang"], cwd=tmp, env=env_142,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp / "hanging").exists():
            assert hanging.poll() is None and time.monotonic() < deadline, "1.4.2's hanging run did not start"
            time.sleep(0.1)
    finally:
        os.kill(hanging.pid, signal.SIGKILL)
        hanging.wait(timeout=30)
    rows_142 = _read(engine, table)
    logs_142 = _read(engine, f"{table}__scores")
    assert [rows_142[i]["status"] for i in sorted(rows_142)] == ["done", "error", "running", "created", "created"]
    assert float(rows_142[1]["accuracy"]) == 0.51 and "seed 2 fails" in rows_142[2]["error"]

    config = ["config/experiment.yml"] + (["--credentials", str(credentials)] if credentials else [])
    refused = _ours(["fill", *config], tmp, env)
    assert refused.returncode != 0
    assert "py-experimenter migrate CONFIG" in refused.stderr and "add bookkeeping column 'keyhash'" in refused.stderr
    assert _read(engine, table) == rows_142  # refusing changed nothing

    dry = _ours(["migrate", *config, "--dry-run"], tmp, env)
    assert dry.returncode == 0 and "dry run, nothing written" in dry.stdout, dry.stderr
    assert _read(engine, table) == rows_142
    migrated = _ours(["migrate", *config], tmp, env)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated" in migrated.stdout and "1 running rows have no lease" in migrated.stdout
    assert ("resultfield 'score': change decimal(10, 0)" in migrated.stdout.lower()) == (credentials is not None)

    ran = _ours(["run", *config, "--function", "ours.py:run", "--lease-seconds", "3",
                 "--heartbeat-seconds", "1"], tmp, env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "ran 3 experiments" in ran.stdout  # the recovered row and the two never started

    rows = _read(engine, table)
    assert sorted(rows) == sorted(rows_142)
    assert [rows[i]["status"] for i in sorted(rows)] == ["done", "error", "done", "done", "done"]
    for experiment_id in (1, 2):  # 1.4.2's finished rows: every 1.4.2 column unchanged
        assert {k: rows[experiment_id][k] for k in rows_142[experiment_id]} == rows_142[experiment_id]
    assert rows[3]["attempt"] == 2 and rows[3]["model"] == "ours-3"
    # Our results keep their fraction in the bare-DECIMAL column (migrate widened it on MySQL).
    assert [float(rows[i]["score"]) for i in (3, 4, 5)] == [0.25, 0.25, 0.25]
    assert all(rows[i]["score_timestamp"] for i in (1, 3, 4, 5))
    logs = _read(engine, f"{table}__scores")
    for log_id, log in logs_142.items():
        if log["experiment_id"] in (1, 2):
            assert {k: logs[log_id][k] for k in log} == log
    assert sum(1 for log in logs.values() if log["note"] == "ours") == 3
    attempts = {(a["experiment_id"], a["attempt"]): a["outcome"] for a in _read(engine, f"{table}__attempts").values()}
    assert attempts == {(1, 1): "done", (2, 1): "error", (3, 1): "lost", (3, 2): "done", (4, 1): "done",
                        (5, 1): "done"}
