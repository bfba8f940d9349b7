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


def test_ssh_section_of_1_4_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        CREDENTIALS:
          Database: {{user: a, password: b}}
          Connection:
            Standard: {{server: localhost}}
            Ssh:
              server: 127.0.0.1
              address: gw.example.org
              port: 2022
              ssh_private_key_password: "{SECRET}"
              remote_address: db.internal
              remote_port: 3307
              local_address: 127.0.0.1
              local_port: 13306
        """,
    )
    creds = load_credentials(path)
    ssh = creds.ssh
    assert ssh is not None and creds.host == "localhost"
    assert (ssh.address, ssh.port, ssh.passphrase, ssh.remote_host(), ssh.remote_port, ssh.local_address,
            ssh.local_port) == ("gw.example.org", 2022, SECRET, "db.internal", 3307, "127.0.0.1", 13306)
    assert ssh.ssh_config_file == "~/.ssh/config" and ssh.source == str(path)
    for text in (repr(creds), str(creds), repr(ssh)):
        assert "s3cr" not in text and "gw.example.org" in text


def test_ssh_defaults_and_the_docs_spelling(tmp_path: Path) -> None:
    # 1.4.2's docs: passphrase, and server = the database as the SSH server sees it
    path = write(tmp_path, f"""
        CREDENTIALS:
          Connection:
            Ssh: {{address: login-node, server: db.cluster, passphrase: "{SECRET}"}}
        """)
    ssh = load_credentials(path).ssh
    assert ssh is not None
    assert (ssh.port, ssh.passphrase, ssh.remote_host(), ssh.remote_port, ssh.local_port) == (
        None, SECRET, "db.cluster", None, 0)
    # 1.4.2's code: server is where the client connects (the tunnel's end): not the remote host
    ssh = load_credentials(write(tmp_path, "CREDENTIALS:\n  Connection: {Ssh: {address: h, server: localhost}}\n")).ssh
    assert ssh is not None and ssh.remote_host() == "127.0.0.1"


@pytest.mark.parametrize(
    ("ssh", "fragments"),
    [
        ("{port: 22}", ["CREDENTIALS.Connection.Ssh.address", "missing required key 'address'"]),
        ("{address: h, prot: 22}", ["CREDENTIALS.Connection.Ssh.prot", "unknown key", "address, port, server"]),
        ("{address: h, port: 70000}", ["CREDENTIALS.Connection.Ssh.port", "1 and 65535"]),
        (f"{{address: h, passphrase: a, ssh_private_key_password: '{SECRET}'}}", ["not both"]),
        ("{address: h, passphrase: 1234}", ["Ssh.passphrase", "expected a string", "int"]),
        ("[h]", ["CREDENTIALS.Connection.Ssh", "expected a mapping"]),
    ],
)
def test_malformed_ssh_sections(tmp_path: Path, ssh: str, fragments: list[str]) -> None:
    path = write(tmp_path, f"CREDENTIALS:\n  Connection:\n    Ssh: {ssh}\n")
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert "s3cr" not in message


@pytest.mark.parametrize("password", ["''", '""', "null", None])
def test_empty_or_missing_password_is_accepted(tmp_path: Path, password: str | None) -> None:
    line = "" if password is None else f"\n    password: {password}"
    path = write(tmp_path, f"CREDENTIALS:\n  Database:\n    user: root{line}\n"
                           "  Connection: {Standard: {server: 127.0.0.1}}\n")
    creds = load_credentials(path)
    expected = "" if password in ("''", '""') else None
    assert creds.password == expected
    url = database_url("mysql", "exp", creds)
    assert (url.username, url.password, url.host) == ("root", expected, "127.0.0.1")
    assert make_url(url.render_as_string(hide_password=False)).username == "root"


@pytest.mark.parametrize(
    "text",
    [
        "CREDENTIALS:\n  Database: {user: root, password: ''}\n",  # 1.4.2 MySQL file, empty password
        "CREDENTIALS:\n  Database: {user: root, password: 12345}\n",  # invalid for a server
        "CREDENTIALS:\n  Database: [broken\n",  # not YAML
        "NOT_CREDENTIALS: 1\n",
        "CREDENTIALS:\n  Connection: {Ssh: {port: 22}}\n",
        "CREDENTIALS:\n  Database: {url: 'mysql+pymysql://u:pw@h/db'}\n",  # a server URL
    ],
)
def test_sqlite_never_fails_on_the_credential_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    url = resolve_database_url("sqlite", "exp", path)
    assert (url.drivername, url.database) == ("sqlite", "exp.db")


def test_sqlite_still_takes_a_sqlite_url_from_the_credential_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    path = write(tmp_path, f"CREDENTIALS:\n  Database: {{url: 'sqlite:///{target}'}}\n")
    assert resolve_database_url("sqlite", "exp", path).database == str(target)
    assert resolve_database_url("sqlite", "exp", tmp_path / "absent.yml").database == "exp.db"


def test_server_databases_still_check_the_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"Database\.password"):
        resolve_database_url("mysql", "exp", write(tmp_path, "CREDENTIALS:\n  Database: {user: a, password: 1}\n"))


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
