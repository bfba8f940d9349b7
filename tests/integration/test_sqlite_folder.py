"""execute() on a SQLite file whose folder does not exist: one DatabaseConnectionError at once
(it was ridden out as an outage for database_outage_seconds, 300 s by default, then exit 1)."""

from __future__ import annotations

import time

import pytest
import yaml

from py_experimenter.exceptions import DatabaseConnectionError
from py_experimenter.experimenter import PyExperimenter


def test_execute_on_a_sqlite_file_in_a_missing_folder_fails_at_once(tmp_path):
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump({"PY_EXPERIMENTER": {"n_jobs": 1, "Database": {
        "provider": "sqlite", "database": str(tmp_path / "no_such_folder" / "x"),
        "table": {"name": "t", "keyfields": {"seed": {"type": "INT", "values": [1]}}}}}}))
    exp = PyExperimenter(str(path), use_codecarbon=False)
    started = time.monotonic()
    with pytest.raises(DatabaseConnectionError, match=r"the folder .*no_such_folder does not exist"):
        exp.execute(lambda k, rp, c: None)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "no_such_folder").exists()
