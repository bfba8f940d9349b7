"""Two tables with the same name in two databases (two SQLite files) share a container engine
and a ``results_dir``: an executor of one never removes the other's running container nor
replaces its attempt folder (issue 8 C.1)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from py_experimenter.adapters.scope import OWNER_FILE, table_scope
from py_experimenter.experimenter import PyExperimenter
from tests.conftest import experiment_yaml
from tests.container_support import PROBE_IMAGE, docker_client, leftover_containers

__all__ = ["docker_client"]


def _table(workdir: Path, table: str, mode: str, results: Path) -> tuple[PyExperimenter, list[str]]:
    workdir.mkdir()
    credentials = workdir / "credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": f"sqlite:///{workdir / 'x.db'}"}}}))
    data = experiment_yaml("sqlite", table, {"mode": {"type": "VARCHAR(20)", "values": [mode]}},
                           {"echo": "TEXT", "argv": "TEXT"}, {"events": {"step": "INT"}},
                           Execution={"adapter": "docker", "image": PROBE_IMAGE, "results_dir": str(results),
                                      "grace_seconds": 0.5, "lease_seconds": 30, "heartbeat_seconds": 1})
    config = workdir / f"{table}.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    experimenter.fill_table_from_config()
    return experimenter, [sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials",
                          str(credentials)]


def _containers(client: Any, table: str) -> list[Any]:
    return leftover_containers(client, f"py_experimenter.table={table}")


def test_a_table_of_the_same_name_in_another_database_never_touches_our_container_or_folder(
        tmp_path: Path, docker_client: Any):
    table = f"box_{uuid.uuid4().hex[:10]}"
    results = tmp_path / "results"
    ours, run_ours = _table(tmp_path / "a", table, "sleep", results)
    theirs, run_theirs = _table(tmp_path / "b", table, "ok", results)
    executor = subprocess.Popen(run_ours, cwd=tmp_path / "a", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(c.status == "running" for c in _containers(docker_client, table)):
            assert executor.poll() is None, executor.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "our container never started"
            time.sleep(0.1)
        [running] = _containers(docker_client, table)
        our_folder = results / table / "1" / "attempt-1"
        params = (our_folder / "params.json").read_text()
        # The other database's executor: its row 1, attempt 1 has the same table name, ID and
        # attempt as ours; to it our container looks like one of its own lost attempts.
        other = subprocess.run(run_theirs, cwd=tmp_path / "b", capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr[-3000:]
        assert "left behind by a lost attempt" not in other.stderr, other.stderr[-3000:]
        running.reload()
        assert running.status == "running", "the other database's executor removed our running container"
        assert (our_folder / "params.json").read_text() == params, "our attempt folder was replaced"
        assert executor.poll() is None
        row = theirs.get_table().iloc[0]
        assert row["status"] == "done" and json.loads(row["echo"])["mode"] == "ok"
        # The other table's attempts went to a folder of its own, next to ours.
        [their_folder] = [p for p in results.glob(f"{table}.*/1/attempt-1")]
        assert (their_folder / "results.json").exists()
        assert (results / table / OWNER_FILE).read_text().split()[0] == table_scope(ours.db)[0]
        assert their_folder.parents[1].name == f"{table}.{table_scope(theirs.db)[0]}"
        executor.send_signal(signal.SIGTERM)
        _out, err = executor.communicate(timeout=60)
    finally:
        executor.kill()
    assert executor.returncode == 0, err[-3000:]
    assert list(ours.get_attempts_table()["outcome"]) == ["interrupted"]
    assert _containers(docker_client, table) == []
    ours.delete_table()
    theirs.delete_table()


def test_the_scope_names_the_database_and_table_and_never_the_password(tmp_path: Path):
    from sqlalchemy.engine import make_url

    from py_experimenter.db.database import Database
    from py_experimenter.db.schema import build_schema

    exp, _command = _table(tmp_path / "a", "box_scope", "ok", tmp_path / "results")
    schema = build_schema(exp.config.table)

    def scope(url: str) -> tuple[str, str]:
        return table_scope(Database(make_url(url), schema))

    mysql = "mysql+pymysql://alice:s3cret-pw@DB.example.org:3306/lab"
    assert scope(mysql) == scope("mysql+pymysql://bob:other@db.example.org/lab"), "user/password must not matter"
    assert "s3cret" not in " ".join(scope(mysql)) and "alice" not in scope(mysql)[1]
    assert scope(mysql)[1] == "mysql db.example.org:3306/lab table box_scope"
    others = {scope(u)[0] for u in (mysql, "mysql+pymysql://a@db.example.org:3307/lab",
                                    "mysql+pymysql://a@db2.example.org/lab", "mysql+pymysql://a@db.example.org/lab2",
                                    "postgresql+psycopg://a@db.example.org:3306/lab",
                                    f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}")}
    assert len(others) == 7
    assert scope(f"sqlite:///{tmp_path / 'one.db'}") == table_scope(Database(make_url(
        f"sqlite:///{tmp_path / 'x' / '..' / 'one.db'}"), schema))
    assert table_scope(exp.db)[0] != scope(f"sqlite:///{tmp_path / 'one.db'}")[0]
