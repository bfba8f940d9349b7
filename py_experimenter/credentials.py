"""Database credentials: the 1.4.2 credential file, environment variables, connection URLs.

The file format is PyExperimenter 1.4.2's::

    CREDENTIALS:
      Database:
        user: py_experimenter
        password: secret            # may be '' or absent; or, ours: password_env: PY_EXPERIMENTER_DB_PASSWORD
      Connection:
        Standard:
          server: 127.0.0.1
          port: 3306                # ours, optional
        Ssh:                        # optional: an SSH jump host (see py_experimenter.db.tunnel)
          address: login.cluster.org

plus ``Database.url`` (a full SQLAlchemy URL). A SQLite experiment needs no credential file:
one that exists is read only for a SQLite ``Database.url``, and a file that is broken or
meant for a server database is ignored (with a log line saying why). Two environment variables take part:
``PY_EXPERIMENTER_CREDENTIALS`` names the credential file when no path is given, and
``PY_EXPERIMENTER_DATABASE_URL`` overrides everything else. Passwords never appear in a
``repr``, a ``str`` or an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from py_experimenter.db.tunnel import DEFAULT_SSH_CONFIG, SshSettings
from py_experimenter.exceptions import ConfigError, CredentialsError

logger = logging.getLogger("py-experimenter")

CREDENTIALS_ENV = "PY_EXPERIMENTER_CREDENTIALS"
DATABASE_URL_ENV = "PY_EXPERIMENTER_DATABASE_URL"

# driver used when a URL or provider names only the database kind
_DEFAULT_DRIVERS = {
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "postgresql": "postgresql+psycopg",
}
_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
# URL backend names each provider accepts
_BACKENDS = {"sqlite": ("sqlite",), "mysql": ("mysql", "mariadb"), "postgresql": ("postgresql",)}

_VALID_KEYS: dict[str, tuple[str, ...]] = {
    "": ("CREDENTIALS",),
    "CREDENTIALS": ("Database", "Connection"),
    "CREDENTIALS.Database": ("user", "password", "password_env", "url"),
    "CREDENTIALS.Connection": ("Standard", "Ssh"),
    "CREDENTIALS.Connection.Standard": ("server", "port"),
    "CREDENTIALS.Connection.Ssh": (
        "address", "port", "server", "user", "private_key", "ssh_private_key_password", "passphrase",
        "remote_address", "remote_port", "local_address", "local_port", "ssh_config_file",
    ),
}


def mask_url(url: str | URL) -> str:
    """Return ``url`` as text with any password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # not parseable: hide whatever sits between "user:" and "@"
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a credential file holds. Every field is optional; ``password`` is never shown.

    ``password`` may be ``""`` (a server user without a password, as 1.4.2 accepted) or None
    (no password sent). ``ssh`` holds the ``Connection.Ssh`` section when there is one.
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    url: str | None = None
    source: str | None = None
    ssh: SshSettings | None = None

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        url = None if self.url is None else mask_url(self.url)
        ssh = "" if self.ssh is None else f", ssh={self.ssh!r}"
        return (
            f"Credentials(user={self.user!r}, password={password!r}, host={self.host!r}, "
            f"port={self.port!r}, url={url!r}, source={self.source!r}{ssh})"
        )

    __str__ = __repr__


def _fail(source: str, key_path: str, message: str) -> CredentialsError:
    return CredentialsError(message, source=source, key_path=key_path or None)


def _section(data: Any, source: str, key_path: str) -> dict[str, Any]:
    """Check that ``data`` is a mapping with only valid keys (named in ``_VALID_KEYS``)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _fail(source, key_path, f"expected a mapping (key: value lines), got {type(data).__name__}")
    valid = _VALID_KEYS[key_path]
    for key in data:
        if key not in valid:
            where = f"{key_path}.{key}" if key_path else str(key)
            raise _fail(source, where, f"unknown key {str(key)!r}; valid keys here: {', '.join(valid)}")
    return dict(data)


def _text(value: Any, source: str, key_path: str) -> str | None:
    # never echo the value: it may be a password
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        kind = "an empty string" if value == "" else type(value).__name__
        raise _fail(source, key_path, f"expected a non-empty string, got {kind}; quote it in YAML ('...')")
    return value


def _password(value: Any, source: str, key_path: str) -> str | None:
    """A password or passphrase: any string, ``''`` included (never echoed)."""
    if value is None or isinstance(value, str):
        return value
    raise _fail(source, key_path, f"expected a string, got {type(value).__name__}; quote it in YAML ('...')")


def _port(value: Any, source: str, key_path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _fail(source, key_path, "expected a port number between 1 and 65535")
    return value


def parse_credentials(data: Any, source: str) -> Credentials:
    """Validate the parsed YAML of a credential file and return its :class:`Credentials`."""
    if data is None or (isinstance(data, Mapping) and "CREDENTIALS" not in data):
        raise _fail(
            source, "CREDENTIALS", "missing required key 'CREDENTIALS' (the root of a credential file)"
        )
    root = _section(data, source, "")
    creds = _section(root["CREDENTIALS"], source, "CREDENTIALS")
    db = _section(creds.get("Database"), source, "CREDENTIALS.Database")
    conn = _section(creds.get("Connection"), source, "CREDENTIALS.Connection")
    standard = _section(conn.get("Standard"), source, "CREDENTIALS.Connection.Standard")
    ssh = _ssh(conn["Ssh"], source) if conn.get("Ssh") is not None else None

    password = _password(db.get("password"), source, "CREDENTIALS.Database.password")
    password_env = _text(db.get("password_env"), source, "CREDENTIALS.Database.password_env")
    if password is not None and password_env is not None:
        raise _fail(source, "CREDENTIALS.Database", "give either 'password' or 'password_env', not both")
    if password_env is not None:
        password = os.environ.get(password_env)
        if password is None:
            raise _fail(
                source,
                "CREDENTIALS.Database.password_env",
                f"environment variable {password_env} is not set; export it before starting "
                "(it holds the database password)",
            )
    url = _text(db.get("url"), source, "CREDENTIALS.Database.url")
    if url is not None:
        try:
            make_url(url)
        except (ArgumentError, ValueError):
            raise _fail(
                source,
                "CREDENTIALS.Database.url",
                "not a valid SQLAlchemy URL; expected dialect+driver://user:password@host:port/database",
            ) from None
    return Credentials(
        user=_text(db.get("user"), source, "CREDENTIALS.Database.user"),
        password=password,
        host=_text(standard.get("server"), source, "CREDENTIALS.Connection.Standard.server"),
        port=_port(standard.get("port"), source, "CREDENTIALS.Connection.Standard.port"),
        url=url,
        source=source,
        ssh=ssh,
    )


def _ssh(raw: Any, source: str) -> SshSettings:
    """``CREDENTIALS.Connection.Ssh`` with 1.4.2's keys (and its docs' ``passphrase``)."""
    path = "CREDENTIALS.Connection.Ssh"
    section = _section(raw, source, path)
    if section.get("address") is None:
        raise _fail(source, f"{path}.address", "missing required key 'address': the SSH server "
                    "(a host name, an IP address, or a Host of your ssh config)")
    if "ssh_private_key_password" in section and "passphrase" in section:
        raise _fail(source, path, "give either 'ssh_private_key_password' or 'passphrase' (the same), not both")
    passphrase_key = "passphrase" if "passphrase" in section else "ssh_private_key_password"
    address = _text(section["address"], source, f"{path}.address")
    assert address is not None
    local_port = _port(section.get("local_port"), source, f"{path}.local_port")
    config_file = section.get("ssh_config_file", DEFAULT_SSH_CONFIG)
    return SshSettings(
        address=address,
        port=_port(section.get("port"), source, f"{path}.port"),
        user=_text(section.get("user"), source, f"{path}.user"),
        private_key=_text(section.get("private_key"), source, f"{path}.private_key"),
        passphrase=_password(section.get(passphrase_key), source, f"{path}.{passphrase_key}"),
        server=_text(section.get("server"), source, f"{path}.server"),
        remote_address=_text(section.get("remote_address"), source, f"{path}.remote_address"),
        remote_port=_port(section.get("remote_port"), source, f"{path}.remote_port"),
        local_address=_text(section.get("local_address"), source, f"{path}.local_address") or "127.0.0.1",
        local_port=local_port or 0,
        ssh_config_file=_text(config_file, source, f"{path}.ssh_config_file") if config_file else None,
        source=source,
    )


def load_credentials(path: str | os.PathLike[str] | None = None, required: bool = False) -> Credentials:
    """Read a credential file.

    :param path: the file; when None, the file named by ``PY_EXPERIMENTER_CREDENTIALS``.
    :param required: whether a missing file is an error. SQLite needs no credentials, so by
        default a missing (or unnamed) file gives empty :class:`Credentials`.
    :raises CredentialsError: the file is required but missing, is malformed, or names an
        unset password environment variable.
    """
    if path is None:
        path = os.environ.get(CREDENTIALS_ENV) or None
    if path is None:
        if required:
            raise CredentialsError(
                f"no credential file given: pass its path, set {CREDENTIALS_ENV}, "
                f"or set {DATABASE_URL_ENV} to a full database URL"
            )
        return Credentials()
    if not isinstance(path, str | os.PathLike):
        raise CredentialsError(f"the credential file must be given as a path (str or os.PathLike), "
                               f"got a {type(path).__name__}")
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if required:
            raise CredentialsError(
                f"credential file not found (also settable through {CREDENTIALS_ENV})", source=source
            ) from None
        return Credentials(source=source)
    except OSError as exc:
        raise CredentialsError(f"cannot read credential file: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise CredentialsError("the credential file is not UTF-8 text", source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # the YAML error's snippet could show a password: report position and problem only
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise CredentialsError(f"YAML syntax error{where}: {problem}", source=source) from None
    return parse_credentials(data, source)


def _normalize_driver(url: URL) -> URL:
    """Give a URL that names only the database kind our default driver."""
    if url.drivername == "postgres":  # Heroku-style URLs
        url = url.set(drivername="postgresql")
    if url.drivername in _DEFAULT_DRIVERS:
        url = url.set(drivername=_DEFAULT_DRIVERS[url.drivername])
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def _given_url(text: str, origin: str, provider: str, database: str, source: str | None) -> URL:
    try:
        url = _normalize_driver(make_url(text))
    except (ArgumentError, ValueError):
        raise CredentialsError(
            f"{origin} is not a valid SQLAlchemy URL; expected dialect+driver://user:password@host:port/database",
            source=source,
        ) from None
    backend = url.get_backend_name()
    if backend not in _BACKENDS[provider]:
        raise CredentialsError(
            f"the experiment file says provider {provider!r} but {origin} is a {backend!r} URL "
            f"({mask_url(url)}); make them agree",
            source=source,
        )
    if not url.database:
        url = url.set(database=_sqlite_file(database) if provider == "sqlite" else database)
    return url


def _sqlite_file(database: str) -> str:
    return database if database == ":memory:" or database.endswith(".db") else f"{database}.db"


def database_url(provider: str, database: str, credentials: Credentials) -> URL:
    """Return the SQLAlchemy URL to connect to.

    In order of precedence: ``PY_EXPERIMENTER_DATABASE_URL``, ``credentials.url``, or a URL
    built from the provider, the database name and the credentials. A given URL that names no
    database gets ``database``; one that names only the kind (``mysql://``, ``postgresql://``)
    gets our driver (PyMySQL, psycopg 3). Built URLs:

    - sqlite: ``sqlite:///<database>.db`` relative to the working directory, as in 1.4.2
      (``database`` is used as is when it ends in ``.db`` or is ``:memory:``);
    - mysql: ``mysql+pymysql://user:password@host:3306/database?charset=utf8mb4``;
    - postgresql: ``postgresql+psycopg://user:password@host:5432/database``.

    Print the result with ``url.render_as_string(hide_password=True)`` (or :func:`mask_url`).

    :raises CredentialsError: no user for mysql/postgresql, or a URL whose kind does not match
        ``provider``.
    """
    provider = "postgresql" if provider == "postgres" else provider
    if provider not in _BACKENDS:
        raise ConfigError(f"unknown provider {provider!r}; valid providers: {', '.join(_BACKENDS)}")
    env_url = os.environ.get(DATABASE_URL_ENV)
    if env_url:
        return _given_url(env_url, f"${DATABASE_URL_ENV}", provider, database, None)
    if credentials.url:
        return _given_url(credentials.url, "CREDENTIALS.Database.url", provider, database, credentials.source)
    if provider == "sqlite":
        return URL.create("sqlite", database=_sqlite_file(database))
    if not credentials.user:
        where = (
            f"the credential file {credentials.source} names none or does not exist"
            if credentials.source
            else "no credential file was given"
        )
        raise CredentialsError(
            f"provider {provider!r} needs a database user ({where}): set CREDENTIALS.Database.user "
            f"in a credential file (path argument or {CREDENTIALS_ENV}) or set {DATABASE_URL_ENV}"
        )
    return URL.create(
        _DEFAULT_DRIVERS[provider],
        username=credentials.user,
        password=credentials.password,
        host=credentials.host or "localhost",
        port=credentials.port or _DEFAULT_PORTS[provider],
        database=database,
        query={"charset": "utf8mb4"} if provider == "mysql" else {},
    )


def resolve_database_url(provider: str, database: str, credential_path: str | os.PathLike[str] | None) -> URL:
    """Load the credentials that ``provider`` needs and return :func:`database_url`.

    The credential file is required for mysql/postgresql unless ``PY_EXPERIMENTER_DATABASE_URL``
    is set. SQLite needs none (as in 1.4.2): see :func:`sqlite_credentials`.
    """
    return database_url(provider, database, resolve_credentials(provider, credential_path))


def resolve_credentials(provider: str, credential_path: str | os.PathLike[str] | None) -> Credentials:
    """The credentials an experiment on ``provider`` uses (see :func:`resolve_database_url`)."""
    if provider == "sqlite":
        return sqlite_credentials(credential_path)
    needed = not os.environ.get(DATABASE_URL_ENV)
    return load_credentials(credential_path, required=needed)


def sqlite_credentials(credential_path: str | os.PathLike[str] | None) -> Credentials:
    """What a SQLite experiment takes from a credential file: only a SQLite ``Database.url``.

    A missing, unreadable or malformed file, or one for a server database (an empty
    password, an SSH section, a MySQL URL), never stops a SQLite experiment: it is ignored,
    and a log line says why when the file exists.
    """
    if os.environ.get(DATABASE_URL_ENV):
        return Credentials()
    try:
        credentials = load_credentials(credential_path)
    except CredentialsError as err:
        logger.info("credential file ignored for the SQLite experiment: %s", err)
        return Credentials()
    url = credentials.url
    if url is not None and not url.lower().startswith("sqlite"):
        logger.info("credential file %s ignored for the SQLite experiment: its Database.url is not a "
                    "SQLite URL (%s)", credentials.source, mask_url(url))
        return Credentials(source=credentials.source)
    return Credentials(url=url, source=credentials.source)
