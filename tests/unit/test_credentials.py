"""Credential files, environment variables and database URLs; passwords never leak."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from py_experimenter.credentials import (
    CREDENTIALS_ENV,
    DATABASE_URL_ENV,
    Credentials,
    database_url,
    load_credentials,
    mask_url,
    resolve_database_url,
)
from py_experimenter.exceptions import CredentialsError

SECRET = "s3cr#t:p@ss/w%rd"
EXAMPLES = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CREDENTIALS_ENV, DATABASE_URL_ENV, "PY_EXPERIMENTER_DB_PASSWORD", "MY_DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "credentials.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


FILE_142 = f"""
CREDENTIALS:
  Database:
    user: alice
    password: "{SECRET}"
  Connection:
    Standard:
      server: db.example.org
"""


def test_reads_the_1_4_2_format(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_142)
    creds = load_credentials(path)
    assert (creds.user, creds.password, creds.host, creds.port, creds.url) == (
        "alice", SECRET, "db.example.org", None, None,
    )  # fmt: skip
    assert creds.source == str(path)


def test_password_is_never_in_repr_or_str(tmp_path: Path) -> None:
    creds = load_credentials(write(tmp_path, FILE_142))
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert "alice" in text and "***" in text


def test_url_password_is_masked_in_repr() -> None:
    creds = Credentials(url=f"mysql+pymysql://bob:{SECRET.replace('@', '%40')}@h/db")
    assert "bob:***@h" in repr(creds)
    assert "s3cr" not in repr(creds)


def test_mask_url_also_masks_unparseable_urls() -> None:
    assert mask_url("not a url://bob:hunter2@host") == "not a url://bob:***@host"
    assert "hunter2" not in mask_url("mysql://bob:hunter2@host/db")


def test_password_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DB_PASSWORD", SECRET)
    path = write(
        tmp_path,
        """
        CREDENTIALS:
          Database: {user: alice, password_env: MY_DB_PASSWORD}
          Connection: {Standard: {server: 127.0.0.1, port: 3307}}
        """,
    )
    creds = load_credentials(path)
    assert (creds.password, creds.port) == (SECRET, 3307)
    assert SECRET not in repr(creds)


def test_unset_password_env_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "CREDENTIALS:\n  Database: {user: alice, password_env: MY_DB_PASSWORD}\n")
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    message = str(info.value)
    assert "MY_DB_PASSWORD is not set" in message
    assert str(path) in message and "CREDENTIALS.Database.password_env" in message


def test_shipped_example_uses_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PY_EXPERIMENTER_DB_PASSWORD", SECRET)
    creds = load_credentials(EXAMPLES / "example_credentials.yml")
    assert (creds.user, creds.password, creds.host, creds.port) == (
        "py_experimenter",
        SECRET,
        "127.0.0.1",
        3306,
    )
    url = database_url("mysql", "py_experimenter", creds)
    assert url.render_as_string(hide_password=True) == (
        "mysql+pymysql://py_experimenter:***@127.0.0.1:3306/py_experimenter?charset=utf8mb4"
    )


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            f"CREDENTIALS:\n  Database: {{user: a, pasword: '{SECRET}'}}\n",
            ["CREDENTIALS.Database.pasword", "unknown key", "user, password, password_env, url"],
        ),
        (
            "CREDENTIALS:\n  Conection: {}\n",
            ["CREDENTIALS.Conection", "valid keys here: Database, Connection"],
        ),
        ("CREDENTIALS:\n  Connection: {Standard: {host: h}}\n", ["Standard.host", "server, port"]),
        ("Database: {user: a}\n", ["missing required key 'CREDENTIALS'"]),
        (
            f"CREDENTIALS:\n  Database: {{password: '{SECRET}', password_env: X}}\n",
            ["either 'password' or 'password_env'"],
        ),
        ("CREDENTIALS:\n  Database: {user: a, password: 12345}\n", ["Database.password", "quote it", "int"]),
        ("CREDENTIALS:\n  Database: [a, b]\n", ["CREDENTIALS.Database", "expected a mapping"]),
        ("CREDENTIALS:\n  Connection: {Standard: {server: h, port: 99999}}\n", ["port", "1 and 65535"]),
        (
            f"CREDENTIALS:\n  Database: {{url: 'no url at all {SECRET}'}}\n",
            ["CREDENTIALS.Database.url", "not a valid SQLAlchemy URL"],
        ),
        (
            f"CREDENTIALS:\n  Database:\n    user: a\n    password: {SECRET}: x\n",
            ["YAML syntax error at line 4"],
        ),
    ],
)
def test_malformed_credential_files(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert "s3cr" not in message


def test_ssh_section_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        CREDENTIALS:
          Database: {user: a, password: b}
          Connection:
            Standard: {server: localhost}
            Ssh: {server: gateway, address: gw.example.org, port: 22}
        """,
    )
    with pytest.warns(UserWarning, match="SSH tunnels are not supported"):
        creds = load_credentials(path)
    assert creds.host == "localhost"


def test_string_port_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "CREDENTIALS:\n  Connection: {Standard: {server: h, port: '5433'}}\n")
    assert load_credentials(path).port == 5433


def test_missing_file_is_fine_unless_required(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yml"
    assert load_credentials(missing) == Credentials(source=str(missing))
    with pytest.raises(CredentialsError) as info:
        load_credentials(missing, required=True)
    assert str(missing) in str(info.value) and CREDENTIALS_ENV in str(info.value)


def test_no_path_uses_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_credentials(None) == Credentials()
    with pytest.raises(CredentialsError, match=CREDENTIALS_ENV):
        load_credentials(None, required=True)
    path = write(tmp_path, FILE_142)
    monkeypatch.setenv(CREDENTIALS_ENV, str(path))
    assert load_credentials().user == "alice"


@pytest.mark.parametrize(
    ("database", "expected"),
    [("py_experimenter", "py_experimenter.db"), ("results.db", "results.db"), (":memory:", ":memory:")],
)
def test_sqlite_url(database: str, expected: str) -> None:
    url = database_url("sqlite", database, Credentials())
    assert (url.drivername, url.database) == ("sqlite", expected)


def test_mysql_url_defaults_and_escaping() -> None:
    url = database_url("mysql", "exp", Credentials(user="alice", password=SECRET))
    assert (url.drivername, url.host, url.port, url.database) == ("mysql+pymysql", "localhost", 3306, "exp")
    assert url.query == {"charset": "utf8mb4"}
    assert make_url(url.render_as_string(hide_password=False)).password == SECRET  # escaped, round-trips
    assert SECRET not in repr(url) and SECRET not in str(url)


@pytest.mark.parametrize("provider", ["postgresql", "postgres"])
def test_postgresql_url(provider: str) -> None:
    url = database_url(provider, "exp", Credentials(user="alice", host="pg", port=6543))
    assert (url.drivername, url.host, url.port, url.username, url.password) == (
        "postgresql+psycopg", "pg", 6543, "alice", None,
    )  # fmt: skip
    assert database_url("postgresql", "exp", Credentials(user="a")).port == 5432


@pytest.mark.parametrize("provider", ["mysql", "postgresql"])
def test_server_databases_need_a_user(provider: str) -> None:
    with pytest.raises(CredentialsError, match="needs a database user") as info:
        database_url(provider, "exp", Credentials(password=SECRET))
    assert DATABASE_URL_ENV in str(info.value) and SECRET not in str(info.value)


def test_credentials_url_is_used_and_completed() -> None:
    url = database_url("mysql", "exp", Credentials(url="mysql://bob:pw@db:3307"))
    assert url.drivername == "mysql+pymysql"  # our driver when none is named
    assert (url.host, url.port, url.database, url.query["charset"]) == ("db", 3307, "exp", "utf8mb4")
    url = database_url("mysql", "exp", Credentials(url="mariadb+mariadbconnector://bob@db/other"))
    assert (url.drivername, url.database) == ("mariadb+mariadbconnector", "other")
    url = database_url("postgresql", "exp", Credentials(url="postgres://bob@db/x"))
    assert url.drivername == "postgresql+psycopg"


def test_env_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql+psycopg://env@envhost/envdb")
    url = database_url("postgresql", "exp", Credentials(user="file", url="postgresql://creds@credhost/db"))
    assert (url.username, url.host, url.database) == ("env", "envhost", "envdb")


def test_url_kind_must_match_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials(
        url=f"postgresql://bob:{SECRET.replace('@', '%40').replace('/', '%2F')}@h/db", source="c.yml"
    )
    with pytest.raises(CredentialsError) as info:
        database_url("mysql", "exp", creds)
    message = str(info.value)
    assert "provider 'mysql'" in message and "'postgresql' URL" in message and "c.yml" in message
    assert "s3cr" not in message
    monkeypatch.setenv(DATABASE_URL_ENV, "sqlite:///x.db")
    with pytest.raises(
        CredentialsError, match=rf"provider 'postgresql' but \${DATABASE_URL_ENV} is a 'sqlite'"
    ):
        database_url("postgresql", "exp", Credentials())


def test_invalid_env_url_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, f"nonsense {SECRET}")
    with pytest.raises(CredentialsError, match="not a valid SQLAlchemy URL") as info:
        database_url("sqlite", "exp", Credentials())
    assert "s3cr" not in str(info.value)


def test_resolve_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "absent.yml"
    assert resolve_database_url("sqlite", "exp", missing).database == "exp.db"
    with pytest.raises(CredentialsError, match="not found"):
        resolve_database_url("mysql", "exp", missing)
    monkeypatch.setenv(DATABASE_URL_ENV, "mysql+pymysql://u@h/db")
    assert resolve_database_url("mysql", "exp", missing).host == "h"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.delenv(DATABASE_URL_ENV)
        assert resolve_database_url("mysql", "exp", write(tmp_path, FILE_142)).host == "db.example.org"
