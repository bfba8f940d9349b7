"""``py-experimenter init``: the files it writes are valid as written, on SQLite and the servers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import SERVER_URLS, require_server


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    return subprocess.run([sys.executable, "-m", "py_experimenter", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})})


def test_init_then_fill_and_run_on_sqlite_stores_results(tmp_path: Path) -> None:
    made = cli("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "py-experimenter run experiment.yml --function experiment.py:run" in made.stdout
    assert "# " in (tmp_path / "experiment.yml").read_text()  # commented
    assert cli("fill", "experiment.yml", cwd=tmp_path).returncode == 0
    ran = cli("run", "experiment.yml", "--function", "experiment.py:run", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'experiments.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, accuracy, seconds FROM example")).all()
    engine.dispose()
    assert len(rows) == 6 and {row.status for row in rows} == {"done"}
    assert all(0 <= row.accuracy <= 1 and row.seconds >= 0 for row in rows), rows


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "experiment.py").write_text("# mine\n")
    refused = cli("init", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "py-experimenter: error: experiment.py already exists; nothing was written "
        "(pass --force to overwrite, or name other files)"]
    assert (tmp_path / "experiment.py").read_text() == "# mine\n" and not (tmp_path / "experiment.yml").exists()
    assert cli("init", "--force", cwd=tmp_path).returncode == 0
    assert "def run(" in (tmp_path / "experiment.py").read_text()
    bad = cli("init", "--function-file", "fn.txt", cwd=tmp_path)
    assert bad.returncode == 2 and "must end in .py" in bad.stderr


@pytest.mark.parametrize("provider", ["mysql", "postgresql"])
def test_init_for_a_server_writes_files_that_connect(tmp_path: Path, provider: str) -> None:
    require_server(provider)
    made = cli("init", "exp.yml", f"--{provider}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    credentials = tmp_path / "credentials.yml"
    assert "password_env: PY_EXPERIMENTER_DB_PASSWORD" in credentials.read_text()
    url = sa.make_url(SERVER_URLS[provider])
    credentials.write_text(credentials.read_text().replace("user: experimenter", f"user: {url.username}"))
    env = {"PY_EXPERIMENTER_DB_PASSWORD": url.password or ""}
    table = f"init_{uuid.uuid4().hex[:8]}"
    where = ("exp.yml", "--credentials", "credentials.yml", "--database", url.database or "", "--table", table)
    try:
        filled = cli("fill", *where, cwd=tmp_path, env=env)
        assert filled.returncode == 0, filled.stderr
        ran = cli("run", *where, "--function", "experiment.py:run", cwd=tmp_path, env=env)
        assert ran.returncode == 0, ran.stderr
        status = cli("status", *where, cwd=tmp_path, env=env)
        assert "done                  6" in status.stdout, status.stdout
    finally:
        engine = sa.create_engine(SERVER_URLS[provider])
        with engine.begin() as conn:
            for name in (f"{table}__attempts", table):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()
