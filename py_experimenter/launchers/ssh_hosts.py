"""SSH host lists: ``--hosts a,b*2,user@c:2222`` and hosts files.

A host is ``[user@]host[:port]`` (an IPv6 address in brackets: ``[::1]:2222``), optionally
followed by ``*N`` (on the command line) or by a count after whitespace (in a file): that many
executors there, else the launch's ``-n``. A host without user or port leaves them to ssh (and
so to ``~/.ssh/config``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from py_experimenter.exceptions import LaunchError

__all__ = ["Host", "parse_host", "parse_hosts", "read_hosts_file"]

_HOST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?"
                   r"(?:\[(?P<ipv6>[0-9A-Fa-f:.%]+)\]|(?P<name>[^:\s\[\]@]+))(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Host:
    """One SSH target and how many executors it gets (None: the launch's ``-n``)."""

    host: str
    user: str | None = None
    port: int | None = None
    executors: int | None = None

    @property
    def destination(self) -> str:
        """What ssh connects to: ``user@host`` or ``host``."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        """The host as reports name it: ``user@host:port`` as given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text

    def ssh_args(self) -> list[str]:
        """ssh's arguments for this host (port, destination)."""
        return (["-p", str(self.port)] if self.port else []) + [self.destination]


def parse_host(text: str, where: str = "--hosts") -> Host:
    """``[user@]host[:port][*N]`` as a :class:`Host`."""
    spec = text.strip()
    count: int | None = None
    if "*" in spec:
        spec, _, number = spec.rpartition("*")
        count = _count(number, text, where)
    found = _HOST.match(spec.strip())
    if not found:
        raise LaunchError(f"{where}: {text!r} is not a host; write [user@]host[:port][*EXECUTORS], "
                          "e.g. alice@node1:2222*4")
    port = int(found["port"]) if found["port"] else None
    if port is not None and not 0 < port < 65536:
        raise LaunchError(f"{where}: {text!r}: port {port} is not between 1 and 65535")
    return Host(found["ipv6"] or found["name"], found["user"], port, count)


def _count(number: str, text: str, where: str) -> int:
    try:
        value = int(number.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise LaunchError(f"{where}: {text!r}: the executor count after the host must be a positive integer, "
                          "e.g. node1*4")
    return value


def parse_hosts(text: str, where: str = "--hosts") -> list[Host]:
    """A comma-separated host list."""
    return [parse_host(part, where) for part in text.split(",") if part.strip()]


def read_hosts_file(path: str | os.PathLike[str]) -> list[Host]:
    """A hosts file: one ``[user@]host[:port] [EXECUTORS]`` per line; ``#`` starts a comment."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise LaunchError(f"--hosts-file {os.fspath(path)}: cannot read it ({err.strerror})") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"--hosts-file {os.fspath(path)}, line {number}"
        if len(words) > 2:
            raise LaunchError(f"{where}: {line.strip()!r}: expected '[user@]host[:port] [EXECUTORS]'")
        host = parse_host(words[0], where)
        if len(words) == 2:
            host = Host(host.host, host.user, host.port, _count(words[1], line.strip(), where))
        hosts.append(host)
    return hosts
