"""A PyExperimenter 1.4.2 config file and script run unchanged, on SQLite and on MariaDB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import SERVER_URLS, require_server

HERE = Path(__file__).parent / "compat_142"


def _credentials_142(url: str) -> dict:
    parsed = sa.engine.make_url(url)
    return {"CREDENTIALS": {"Database": {"user": parsed.username, "password": parsed.password},
                            "Connection": {"Standard": {"server": parsed.host}}}}


@pytest.mark.parametrize("provider", ["sqlite", "mysql"])
def test_1_4_2_script_runs_unchanged(provider: str, tmp_path: Path):
    require_server(provider)
    shutil.copytree(HERE, tmp_path, dirs_exist_ok=True)
    config_path = tmp_path / "config" / "example_general_usage.yml"
    table = f"compat_{uuid.uuid4().hex[:10]}"
    text = config_path.read_text().replace("example_general_usage", table)
    if provider == "mysql":
        text = text.replace("provider: sqlite", "provider: mysql").replace(
            "database: py_experimenter", "database: py_experimenter_test")
        (tmp_path / "config" / "database_credentials.yml").write_text(
            yaml.safe_dump(_credentials_142(SERVER_URLS["mysql"])))
    config_path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    try:
        done = subprocess.run([sys.executable, "run_example.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        result = pd.read_csv(tmp_path / "result_table.csv")
    finally:
        if provider == "mysql":
            engine = sa.create_engine(SERVER_URLS["mysql"])
            with engine.begin() as conn:
                for suffix in ("__train_scores", "__test_f1", "__attempts", "_codecarbon", ""):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}{suffix}")
            engine.dispose()
    assert len(result) == 21
    assert list(result["ID"]) == list(range(1, 22))
    assert set(result["status"]) == {"done"}
    assert set(result["name"]) == {"example_notebook"}
    # DECIMAL resultfields keep their fraction (1.4.2 on MySQL rounded them to integers).
    assert result["train_f1"].between(0.5, 1.0).all() and (result["train_f1"] % 1 != 0).any()
    sigmoid_6 = result[(result["kernel"] == "sigmoid") & (result["seed"] == 6)].iloc[0]
    assert sigmoid_6["attempt"] == 2  # failed once, reset in place, then done
    logs = pd.read_csv(tmp_path / "train_scores.csv")
    assert {"experiment_id", "timestamp", "f1", "accuracy", "kernel", "attempt"} <= set(logs.columns)
    assert len(logs) == 21  # 20 grid rows + the paused one (the failed try raised before logging)
