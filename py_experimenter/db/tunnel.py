"""SSH jump host: a local port forwarded through an SSH server to a database only it can reach.

PyExperimenter 1.4.2's credential section, with the same keys and defaults::

    CREDENTIALS:
      Connection:
        Ssh:
          address: login.cluster.org    # the SSH server: a host name, an IP or a Host of ~/.ssh/config
          port: 22                      # SSH port (default: from ~/.ssh/config, else 22)
          ssh_private_key_password: ... # passphrase of the key (1.4.2's docs call it passphrase)
          remote_address: 127.0.0.1     # the database as the SSH server sees it (default 127.0.0.1)
          remote_port: 3306             # (default: Standard.port, else the provider's port)
          local_address: 127.0.0.1      # local end of the tunnel
          local_port: 0                 # 0: any free port (1.4.2 used 3306)

plus ours: ``user``, ``private_key`` (a key file) and ``ssh_config_file`` (default
``~/.ssh/config``, whose ``HostName``, ``Port``, ``User``, ``IdentityFile`` and
``ProxyCommand`` apply to ``address``). 1.4.2's ``server`` names the database host as the SSH
server sees it when it is not a loopback address (as 1.4.2's docs describe it), and is
otherwise ignored: the driver always connects to the tunnel's local end.

One tunnel serves a whole node: executor processes forked by ``n_jobs`` connect to the
parent's forwarded port, and the parent's threads forward for them. ``sshtunnel`` (the
``ssh`` extra) is imported only when a tunnel is opened. Passphrases never appear in a
``repr``, a message or a log line.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from py_experimenter.exceptions import CredentialsError, DatabaseConnectionError

logger = logging.getLogger("py-experimenter.ssh")

SSH_SECTION = "CREDENTIALS.Connection.Ssh"
DEFAULT_SSH_CONFIG = os.path.join("~", ".ssh", "config")
#: Seconds between SSH keepalive packets, and between checks that the SSH connection is up.
KEEPALIVE_S = 15.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


@dataclass(frozen=True, repr=False)
class SshSettings:
    """``CREDENTIALS.Connection.Ssh``; ``passphrase`` is never shown."""

    address: str
    port: int | None = None
    user: str | None = None
    private_key: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    server: str | None = None
    remote_address: str | None = None
    remote_port: int | None = None
    local_address: str = "127.0.0.1"
    local_port: int = 0
    ssh_config_file: str | None = DEFAULT_SSH_CONFIG
    source: str | None = None

    def __repr__(self) -> str:
        passphrase = None if self.passphrase is None else "***"
        return (f"SshSettings(address={self.address!r}, port={self.port!r}, user={self.user!r}, "
                f"private_key={self.private_key!r}, passphrase={passphrase!r}, "
                f"remote={self.remote_host()!r}:{self.remote_port!r}, "
                f"local={self.local_address!r}:{self.local_port!r})")

    __str__ = __repr__

    def remote_host(self) -> str:
        """The database host as the SSH server sees it."""
        if self.remote_address:
            return self.remote_address
        if self.server and self.server not in _LOOPBACK:
            return self.server
        return "127.0.0.1"


class _RecordingLog(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """Passes sshtunnel's records on to our logger and keeps its last error (for messages)."""

    def __init__(self, target: logging.Logger):
        super().__init__(target, {})
        self.last_error: str | None = None

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.last_error = str(msg) % args if args else str(msg)
        # sshtunnel reports failures it then raises (or retries) as errors: debug here, the
        # caller gets one clear exception instead
        self.logger.debug(msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        # sshtunnel's progress notes (and "no ~/.ssh/config") are ours to summarize
        self.logger.debug(msg, *args, **kwargs)

    warning = info


class SshTunnel:
    """A forwarded local port to ``remote_port`` on the settings' remote host.

    :meth:`start` opens it and returns the local ``(host, port)``; :meth:`stop` closes it
    (only in the process that opened it: forked executors must not close their parent's
    SSH connection). A watcher thread re-opens a dropped SSH connection on the same port.
    """

    def __init__(self, settings: SshSettings, remote_port: int):
        self.settings = settings
        self.remote = (settings.remote_host(), settings.remote_port or remote_port)
        self._forwarder: Any = None
        self._local: tuple[str, int] | None = None
        self._pid = os.getpid()
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self.is_active else "closed"
        return f"SshTunnel({self.settings.address!r} -> {self.remote[0]}:{self.remote[1]}, {state})"

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The local end ``(host, port)`` once started."""
        return self._local

    @property
    def is_active(self) -> bool:
        """Whether the SSH connection is up (in the process that opened it)."""
        return self._forwarder is not None and bool(self._forwarder.is_active)

    def start(self) -> tuple[str, int]:
        """Open the SSH connection and the forwarded port; returns the local ``(host, port)``.

        :raises ConfigError: sshtunnel is not installed (names the ``ssh`` extra).
        :raises CredentialsError: a key cannot be read or decrypted, or the SSH server refused
            the login; the message names the key path in the credential file.
        :raises DatabaseConnectionError: the SSH server cannot be reached.
        """
        with self._lock:
            if self.is_active and self._local is not None:
                return self._local
            port = self._local[1] if self._local is not None else self.settings.local_port
            self._forwarder = self._open(port)
            self._local = (self.settings.local_address, int(self._forwarder.local_bind_port))
        if self._watcher is None:
            self._stopped.clear()
            self._watcher = threading.Thread(target=self._watch, name="py-experimenter-ssh", daemon=True)
            self._watcher.start()
            atexit.register(self.stop)
        logger.info("SSH tunnel %s:%d -> %s -> %s:%d open", *self._local, self.settings.address, *self.remote)
        return self._local

    def stop(self) -> None:
        """Close the forwarded port and the SSH connection (a no-op in forked children)."""
        if os.getpid() != self._pid:
            return
        self._stopped.set()
        with self._lock:
            forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            try:
                forwarder.stop(force=True)
            except Exception as err:  # closing is best effort; the process may be exiting
                logger.debug("closing the SSH tunnel: %s", err)
            logger.info("SSH tunnel to %s closed", self.settings.address)
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=KEEPALIVE_S)
        atexit.unregister(self.stop)

    def _watch(self) -> None:
        while not self._stopped.wait(KEEPALIVE_S):
            if os.getpid() != self._pid or self.is_active or self._forwarder is None:
                continue
            logger.warning("SSH connection to %s dropped; reconnecting", self.settings.address)
            try:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    old = self._forwarder
                    if old is not None:
                        old.stop(force=True)
                    assert self._local is not None
                    self._forwarder = self._open(self._local[1])
            except Exception as err:  # retried at the next check; connections fail meanwhile
                logger.warning("SSH reconnect to %s failed: %s", self.settings.address, err)

    # ------------------------------------------------------------------ opening

    def _open(self, local_port: int) -> Any:
        sshtunnel = _import_sshtunnel()
        settings = self.settings
        log = _RecordingLog(logger)
        pkey = load_private_key(settings)
        kwargs: dict[str, Any] = {
            "ssh_config_file": _expand(settings.ssh_config_file),
            "ssh_username": settings.user,
            "ssh_pkey": pkey,
            "remote_bind_address": self.remote,
            "local_bind_address": (settings.local_address, local_port),
            "logger": log,
            "set_keepalive": KEEPALIVE_S,
            "allow_agent": True,
        }
        if settings.port is not None:
            kwargs["ssh_port"] = settings.port
        where = f"SSH server {settings.address!r}"
        try:
            forwarder = sshtunnel.SSHTunnelForwarder(settings.address, **kwargs)
        except ValueError as err:
            if "No password or public key" in str(err):
                raise CredentialsError(
                    f"no SSH key to log in to {where} with: give one as {SSH_SECTION}.private_key, as "
                    "IdentityFile in your ssh config, as ~/.ssh/id_*, or load it into ssh-agent",
                    source=settings.source,
                ) from None
            raise CredentialsError(f"invalid SSH settings for {where}: {err}", source=settings.source,
                                   key_path=SSH_SECTION) from None
        try:
            forwarder.start()
        except Exception:
            reason = log.last_error or "the SSH session could not be established"
            _discard(forwarder)
            login = f"{forwarder.ssh_username}@{forwarder.ssh_host}:{forwarder.ssh_port}"
            if "Could not open connection to gateway" in reason:
                raise CredentialsError(
                    f"the SSH server {login} refused the login: check {SSH_SECTION}.user / private_key / "
                    "ssh_private_key_password, or the User / IdentityFile of your ssh config",
                    source=settings.source, key_path=SSH_SECTION,
                ) from None
            raise DatabaseConnectionError(
                f"cannot open an SSH tunnel through {login} to {self.remote[0]}:{self.remote[1]}: {reason}"
            ) from None
        return forwarder


def _discard(forwarder: Any) -> None:
    """Release what a forwarder that failed to start holds (its stop() would wait forever on
    forward servers that never started serving)."""
    for server in list(getattr(forwarder, "_server_list", [])):
        try:
            server.server_close()
        except OSError as err:
            logger.debug("closing a forward server: %s", err)
    transport = vars(forwarder).get("_transport")
    if transport is not None:
        transport.close()


def _import_sshtunnel() -> Any:
    try:
        import sshtunnel
    except ImportError:
        from py_experimenter.exceptions import ConfigError

        raise ConfigError(
            "use_ssh_tunnel needs the sshtunnel package; install it with: pip install 'py-experimenter[ssh]'"
        ) from None
    return sshtunnel


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else None


def _config_identity_files(settings: SshSettings) -> list[str]:
    """``IdentityFile`` entries of the ssh config for ``settings.address`` that exist."""
    config_path = _expand(settings.ssh_config_file)
    if not config_path or not os.path.isfile(config_path):
        return []
    import paramiko

    try:
        entry = paramiko.SSHConfig.from_path(config_path).lookup(settings.address)
    except Exception as err:  # a config paramiko cannot parse: sshtunnel reports it too
        logger.warning("cannot read the ssh config %s: %s", config_path, err)
        return []
    files = [os.path.expanduser(path) for path in entry.get("identityfile", [])]
    return [path for path in files if os.path.isfile(path)]


def load_private_key(settings: SshSettings) -> Any:
    """The private key to log in with (None: leave it to ssh-agent and ~/.ssh/id_*).

    ``private_key`` if given, else the first ``IdentityFile`` of the ssh config that loads.
    A wrong passphrase is reported here, clearly, instead of a later "login refused".

    :raises CredentialsError: the key file is missing, encrypted without a passphrase, or
        the passphrase does not decrypt it (the passphrase is never shown).
    """
    import paramiko

    explicit = settings.private_key is not None
    if explicit:
        assert settings.private_key is not None
        path = os.path.expanduser(settings.private_key)
        if not os.path.isfile(path):
            raise CredentialsError(f"private key file {path} not found", source=settings.source,
                                   key_path=f"{SSH_SECTION}.private_key")
        candidates = [path]
    else:
        candidates = _config_identity_files(settings)
    passphrase_key = f"{SSH_SECTION}.ssh_private_key_password"
    password = None if settings.passphrase is None else settings.passphrase.encode("utf-8")
    for path in candidates:
        try:
            try:
                return paramiko.PKey.from_path(path, password)
            except TypeError as err:  # cryptography: "Key is password-protected, but password was not provided"
                if password is None and "password" in str(err):
                    raise paramiko.PasswordRequiredException(path) from None
                raise
        except paramiko.PasswordRequiredException:
            if explicit:
                raise CredentialsError(
                    f"the private key {path} is encrypted: give its passphrase as {passphrase_key} "
                    "(or passphrase)", source=settings.source, key_path=passphrase_key,
                ) from None
            logger.debug("IdentityFile %s is encrypted and no passphrase is given; trying ssh-agent", path)
        except (paramiko.SSHException, ValueError, TypeError, OSError) as err:
            if settings.passphrase is not None:
                raise CredentialsError(
                    f"cannot decrypt the private key {path} with the given passphrase (is it wrong?); "
                    f"fix {passphrase_key} (or passphrase)", source=settings.source, key_path=passphrase_key,
                ) from None
            raise CredentialsError(f"cannot read the private key {path}: {type(err).__name__}",
                                   source=settings.source, key_path=f"{SSH_SECTION}.private_key") from None
    return None


def open_ssh_tunnel(url: Any, settings: SshSettings | None, source: str | None) -> tuple[Any, SshTunnel]:
    """Open a tunnel to ``url``'s database and return ``url`` pointed at its local end.

    The remote port is ``remote_port``, else the URL's port, else the provider's default.

    :raises CredentialsError: the credential file has no ``Connection.Ssh`` section.
    """
    if settings is None:
        where = f"the credential file {source}" if source else "no credential file"
        raise CredentialsError(
            f"use_ssh_tunnel is on, but {where} has no {SSH_SECTION} section; add one (address: your SSH "
            "server, see the docs) or turn the tunnel off (use_ssh_tunnel=False / Database.use_ssh: false)"
        )
    default_port = 5432 if url.get_backend_name().startswith("postgres") else 3306
    tunnel = SshTunnel(settings, url.port or default_port)
    host, port = tunnel.start()
    return url.set(host=host, port=port), tunnel
