"""Connections as 1.4.2 users have them: empty passwords, SQLite without credentials, SQLite
``:memory:``, and the driver timeouts that turn a silent server into a disconnect."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from py_experimenter.config import load_experiment_config
from py_experimenter.db.engine import create_engine
from py_experimenter.db.retry import is_disconnect, is_timeout
from py_experimenter.db.timeouts import READ_TIMEOUT_ENV, read_timeout
from py_experimenter.exceptions import ConfigError
from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, experiment_yaml, require_server

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def run(keyfields: dict[str, Any], result_processor: Any, _custom: dict[str, Any]) -> None:
    time.sleep(0.3)  # long enough for heartbeats to run next to the experiment
    result_processor.process_logs({"trace": {"note": f"seed {keyfields['seed']}"}})
    result_processor.process_results({"value": keyfields["seed"] * 10})


def write_config(path: Path, provider: str, database: str, table: str, **database_keys: Any) -> Path:
    data = experiment_yaml(provider, table, {"seed": {"type": "INT", "values": [1, 2, 3]}}, {"value": "INT"},
                           {"trace": {"note": "VARCHAR(40)"}},
                           Execution={"heartbeat_seconds": 0.1, "lease_seconds": 30})
    data["PY_EXPERIMENTER"]["Database"].update(database=database, **database_keys)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check_ran(experimenter: PyExperimenter) -> None:
    assert experimenter.fill_table_from_config() == 3
    assert experimenter.execute(run) == 3
    table = experimenter.get_table()
    assert list(table["status"]) == ["done"] * 3
    assert sorted(table["value"]) == [10, 20, 30]
    assert sorted(experimenter.get_logtable("trace")["note"]) == ["seed 1", "seed 2", "seed 3"]


# ---------------------------------------------------------------- empty passwords (MariaDB)


def _mariadb_root(sql: str) -> None:
    done = subprocess.run(["mariadb", "-uroot", "-e", sql], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def passwordless_user() -> Iterator[str]:
    """A real MariaDB user with an empty password, allowed on py_experimenter_test."""
    require_server("mysql")
    if shutil.which("mariadb") is None:
        message = "the mariadb client is not installed; cannot create a user without password"
        if CI:
            pytest.fail(message)
        pytest.skip("!!! SKIPPED: " + message)
    name = f"pe_nopw_{uuid.uuid4().hex[:10]}"
    database = make_url(SERVER_URLS["mysql"]).database
    _mariadb_root(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY ''; "
                  f"GRANT ALL ON `{database}`.* TO '{name}'@'127.0.0.1';")
    try:
        yield name
    finally:
        _mariadb_root(f"DROP USER IF EXISTS '{name}'@'127.0.0.1';")


@pytest.mark.parametrize("password_line", ["password: ''", 'password: ""', "password: null", ""])
def test_mariadb_user_without_password_runs_experiments(tmp_path: Path, passwordless_user: str,
                                                        password_line: str) -> None:
    database = make_url(SERVER_URLS["mysql"]).database
    credentials = tmp_path / "credentials.yml"  # PyExperimenter 1.4.2's format
    credentials.write_text(
        "CREDENTIALS:\n"
        "  Database:\n"
        f"    user: {passwordless_user}\n"
        f"    {password_line}\n"
        "  Connection:\n"
        "    Standard:\n"
        "      server: 127.0.0.1\n"
    )
    config = write_config(tmp_path / "exp.yml", "mysql", str(database), f"nopw_{uuid.uuid4().hex[:10]}")
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    assert experimenter.db.url.username == passwordless_user
    try:
        check_ran(experimenter)
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


# ---------------------------------------------------------------- SQLite never needs credentials


@pytest.mark.parametrize(
    "credential_text",
    [
        None,  # no file at all
        "CREDENTIALS:\n  Database: {user: root, password: ''}\n  Connection: {Standard: {server: localhost}}\n",
        "CREDENTIALS:\n  Database: {user: root\n",  # broken YAML
        "CREDENTIALS:\n  Connection:\n    Ssh: {server: db}\n",  # an SSH section without address
        "CREDENTIALS:\n  Database: {url: 'postgresql://u:hunter2@h/db'}\n",  # a server URL
    ],
    ids=["missing", "empty-password", "broken-yaml", "bad-ssh", "server-url"],
)
def test_sqlite_runs_whatever_the_credential_file_says(tmp_path: Path, credential_text: str | None,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    credentials = tmp_path / "database_credentials.yml"
    if credential_text is not None:
        credentials.write_text(credential_text)
    config = write_config(tmp_path / "exp.yml", "sqlite", str(tmp_path / "results"), "plain", use_ssh=True)
    with caplog.at_level("INFO", logger="py-experimenter"):
        experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    assert experimenter.db.url.database == str(tmp_path / "results.db")
    check_ran(experimenter)
    assert (tmp_path / "results.db").exists()
    assert "hunter2" not in caplog.text
    if credential_text is not None and "postgresql://" in credential_text:
        assert "ignored for the SQLite experiment" in caplog.text


# ---------------------------------------------------------------- SQLite :memory:


def test_sqlite_memory_database_in_one_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exp.yml", "sqlite", ":memory:", "in_memory")
    experimenter = PyExperimenter(str(config), str(tmp_path / "absent.yml"), use_codecarbon=False)
    check_ran(experimenter)  # heartbeats (every 0.1 s) share the one connection with the executor
    attempts = experimenter.get_attempts_table()
    assert list(attempts["outcome"]) == ["done"] * 3
    assert experimenter.reset_experiments("done") == 3
    assert experimenter.execute(run, max_experiments=1) == 1
    assert sorted(experimenter.get_table()["status"]) == ["created", "created", "done"]
    assert not list(tmp_path.glob("*.db")), "an in-memory database must not create files"


def test_sqlite_memory_database_refuses_several_processes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exp.yml", "sqlite", ":memory:", "in_memory")
    experimenter = PyExperimenter(str(config), None, use_codecarbon=False)
    experimenter.fill_table_from_config()
    with pytest.raises(ConfigError) as info:
        experimenter.execute(run, n_jobs=2)
    message = str(info.value)
    assert "n_jobs=2" in message and ":memory:" in message and "n_jobs=1" in message
    assert set(experimenter.get_table()["status"]) == {"created"}  # nothing was claimed


# ---------------------------------------------------------------- use_ssh / use_ssh_tunnel keys


@pytest.mark.parametrize(("lines", "expected"), [
    ({}, False), ({"use_ssh": True}, True), ({"use_ssh_tunnel": True}, True),
    ({"use_ssh_tunnel": False}, False), ({"use_ssh": True, "use_ssh_tunnel": True}, True),
])
def test_both_spellings_of_use_ssh(tmp_path: Path, lines: dict[str, bool], expected: bool) -> None:
    config = write_config(tmp_path / "exp.yml", "mysql", "db", "t", **lines)
    assert load_experiment_config(config).database.use_ssh is expected


def test_disagreeing_use_ssh_keys_are_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exp.yml", "mysql", "db", "t", use_ssh=True, use_ssh_tunnel=False)
    with pytest.raises(ConfigError, match=r"Database\.use_ssh_tunnel: use_ssh and use_ssh_tunnel .* disagree"):
        load_experiment_config(config)


def test_use_ssh_tunnel_without_an_ssh_section(tmp_path: Path) -> None:
    require_server("mysql")
    credentials = tmp_path / "credentials.yml"
    credentials.write_text("CREDENTIALS:\n  Database: {user: u, password: 'hunter2'}\n")
    config = write_config(tmp_path / "exp.yml", "mysql", "db", "t")
    with pytest.raises(ConfigError) as info:
        PyExperimenter(str(config), str(credentials), use_ssh_tunnel=True, use_codecarbon=False)
    message = str(info.value)
    assert "CREDENTIALS.Connection.Ssh" in message and str(credentials) in message and "use_ssh_tunnel" in message
    assert "hunter2" not in message


def test_use_ssh_tunnel_false_overrides_the_experiment_file(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    require_server("mysql")
    server = make_url(SERVER_URLS["mysql"])
    credentials = tmp_path / "credentials.yml"  # no Ssh section: the tunnel must not be tried
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": server.render_as_string(False)}}}))
    config = write_config(tmp_path / "exp.yml", "mysql", str(server.database), f"direct_{uuid.uuid4().hex[:8]}",
                          use_ssh=True)
    experimenter = PyExperimenter(str(config), str(credentials), use_ssh_tunnel=False, use_codecarbon=False)
    try:
        assert (experimenter.db.url.host, experimenter.db.url.port) == (server.host, server.port)
        assert experimenter.fill_table_from_config() == 3
        with caplog.at_level("WARNING", logger="py-experimenter"):
            experimenter.close_ssh_tunnel()  # as 1.4.2: a warning, nothing else
            experimenter.close_ssh()
        assert caplog.text.count("No ssh tunnel to close") == 2
        assert len(experimenter.get_table()) == 3
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


# ---------------------------------------------------------------- read timeouts


SLEEP_SQL = {"mysql": "SELECT SLEEP(4)", "postgresql": "SELECT pg_sleep(4)"}


@pytest.mark.parametrize("provider", ["mysql", "postgresql"])
def test_a_statement_without_answer_fails_as_a_timeout_disconnect(provider: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    require_server(provider)
    monkeypatch.setenv(READ_TIMEOUT_ENV, "1")
    engine = create_engine(make_url(SERVER_URLS[provider]))
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT 1")) == 1
            started = time.monotonic()
            with pytest.raises(sa.exc.DBAPIError) as info:
                conn.execute(sa.text(SLEEP_SQL[provider]))
            waited = time.monotonic() - started
        assert 0.9 <= waited < 3.5, waited
        assert is_disconnect(info.value) and is_timeout(info.value), info.value
        with engine.connect() as conn:  # the pool replaced the dead connection
            assert conn.scalar(sa.text("SELECT 2")) == 2
    finally:
        engine.dispose()


def test_the_default_read_timeout_lets_long_fills_pass(backend: Any, make_experimenter: Any) -> None:
    assert read_timeout() >= 60  # above InnoDB's lock wait (50 s) and any claim / finish
    experimenter = make_experimenter({"seed": {"type": "INT"}, "dataset": {"type": "VARCHAR(60)"}})
    rows = [{"seed": seed, "dataset": f"dataset-{seed:05d}-" + "x" * 30} for seed in range(5000)]
    assert experimenter.fill_table_with_rows(rows) == 5000
    assert len(experimenter.get_table()) == 5000


def test_bad_timeout_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(READ_TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=rf"{READ_TIMEOUT_ENV}='soon': expected a number of seconds"):
        create_engine(make_url(SERVER_URLS["mysql"]))
