"""Executors on SSH hosts (``py-experimenter launch CONFIG --on ssh --hosts a,b*2``).

Started with the system ``ssh`` client (``-o BatchMode=yes``), so ``~/.ssh/config``, agents and
jump hosts work as in a shell. Nothing stays alive on the launching side: each host's
executors are detached there (own session, logs on that host) and talk to the database.

Every step is one ``ssh HOST PYTHON -c SOURCE REQUEST`` that runs :mod:`.procs` remotely:

1. preflight on all hosts at once: ssh reachable, the remote Python imports py_experimenter
   (from the remote folder, as the executors will), the folder, experiment file and credential
   file exist there. Any problem: one line per host and nothing is started anywhere.
2. start the executors on every host; report ``host: started N executors (pids ...)``.
3. ``--stop`` / ``status``: the record's pids with their start times, so only what the launch
   started is signalled (process group: SIGTERM, then SIGKILL after ``--stop-timeout``).

The experiment and credential files are passed as this machine's absolute paths: the hosts
must see them at the same paths (a shared file system, the normal case on a lab cluster). A
SQLite database works only if every host shares its file; use MySQL / PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from py_experimenter.exceptions import LaunchError
from py_experimenter.launchers import procs
from py_experimenter.launchers.command import ExecutorCommand
from py_experimenter.launchers.records import DEFAULT_LOG_DIR, new_launch
from py_experimenter.launchers.ssh_hosts import Host, parse_hosts, read_hosts_file

__all__ = ["SshSettings", "add_arguments", "alive_by_target", "alive_record", "launch_from_args", "launch_ssh",
           "stop_record", "targets"]

#: Seconds ``stop_record`` waits after SIGTERM before SIGKILL unless the record says otherwise.
DEFAULT_STOP_TIMEOUT = 60.0
_SOURCE = Path(procs.__file__).read_text()
_T = TypeVar("_T")
_I = TypeVar("_I")


@dataclass(frozen=True)
class SshSettings:
    """How to reach the hosts and what to run there."""

    ssh_command: tuple[str, ...] = ("ssh",)
    ssh_options: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    python: str = "python3"
    remote_dir: str = field(default_factory=os.getcwd)
    remote_log_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, host: Host, remote_command: str) -> list[str]:
        """The local ``ssh`` command line running ``remote_command`` on ``host``."""
        return [*self.ssh_command, *self.ssh_options, "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}", *host.ssh_args(), remote_command]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The SSH backend's options."""
    group.add_argument("--hosts", metavar="HOST[,HOST...]",
                       help="[user@]host[:port] with optional *N (N executors there, else -n), comma-separated, "
                            "e.g. node1*4,alice@node2:2222")
    group.add_argument("--hosts-file", metavar="FILE", help="one '[user@]host[:port] [EXECUTORS]' per line")
    group.add_argument("--remote-python", metavar="PATH", default="python3",
                       help="the Python with py_experimenter on the hosts, e.g. /home/me/venv/bin/python or "
                            "'~/venv/bin/python' (~ is the remote home; default: python3)")
    group.add_argument("--remote-dir", metavar="DIR",
                       help="folder the executors start in on each host; ~ is the host's home "
                            "(default: the current folder)")
    group.add_argument("--remote-log-dir", metavar="DIR",
                       help="log folder on the hosts (default: py_experimenter_logs/<table> in --remote-dir)")
    group.add_argument("--remote-env", metavar="KEY=VALUE", action="append", default=[],
                       help="environment variable for the remote executors (repeatable)")
    group.add_argument("--ssh-option", metavar="OPTION", action="append", default=[],
                       help="argument passed to ssh, e.g. --ssh-option=-oProxyJump=gateway or "
                            "--ssh-option='-i /me/.ssh/lab' (repeatable; write = before a value that starts with -)")
    group.add_argument("--ssh-command", metavar="COMMAND", default="ssh", help="the ssh client (default: ssh)")
    group.add_argument("--ssh-timeout", metavar="SECONDS", type=float, default=10.0,
                       help="ssh's connect timeout per host (default: 10)")


def _env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise LaunchError(f"--remote-env {pair!r}: expected KEY=VALUE with a variable name as KEY, "
                              "e.g. OMP_NUM_THREADS=1")
        env[key] = value
    return env


def _options(options: Sequence[str]) -> tuple[str, ...]:
    return tuple(word for option in options for word in shlex.split(option))


def launch_from_args(command: ExecutorCommand, executors: int, args: argparse.Namespace, run_dir: Path,
                     out: TextIO) -> dict[str, Any]:
    """``launch --on ssh``: preflight every host, then start; returns the record's backend fields."""
    hosts = parse_hosts(args.hosts) if args.hosts else []
    if args.hosts_file:
        hosts += read_hosts_file(args.hosts_file)
    settings = SshSettings(ssh_command=tuple(shlex.split(args.ssh_command)) or ("ssh",),
                           ssh_options=_options(args.ssh_option), connect_timeout=args.ssh_timeout,
                           python=args.remote_python, remote_dir=args.remote_dir or os.getcwd(),
                           remote_log_dir=args.remote_log_dir, env=_env_pairs(args.remote_env))
    return start(command, hosts, executors, settings, run_dir, out)


def start(command: ExecutorCommand, hosts: Sequence[Host], executors: int, settings: SshSettings, run_dir: Path,
          out: TextIO) -> dict[str, Any]:
    """Preflight all ``hosts`` in parallel, then start the executors on each."""
    if not hosts:
        raise LaunchError("--on ssh needs hosts: --hosts node1,node2*4 or --hosts-file FILE")
    labels = [host.label for host in hosts]
    if len(set(labels)) != len(labels):
        raise LaunchError(f"--hosts: {sorted({x for x in labels if labels.count(x) > 1})} given twice; "
                          "write host*N for N executors on one host")
    table = Path(run_dir).parent.name
    log_dir = settings.remote_log_dir or os.path.join(DEFAULT_LOG_DIR, table)
    base = {"dir": settings.remote_dir, "log_dir": log_dir,
            "files": {"experiment file": command.config, "credential file": command.credentials}}
    found = _each(hosts, lambda host: _remote(host, settings, {"op": "preflight", **base}))
    problems = [f"host {host.label}: {answer['problem']}"
                for host, answer in zip(hosts, found, strict=True) if "problem" in answer]
    if problems:
        raise LaunchError("; ".join(problems) + " (nothing was started)")
    env = {**command.env, **settings.env}
    argv = command.argv(settings.python)

    def start_on(host: Host) -> dict[str, Any]:
        prefix = os.path.join(log_dir, run_dir.name, re.sub(r"[^A-Za-z0-9_.-]", "_", host.label))
        count = host.executors or executors
        return _remote(host, settings, {"op": "start", **base, "argv": argv, "count": count, "log_prefix": prefix,
                                        "env": env, "this_python": True}, timeout=60 + 5 * count)

    started = _each(hosts, start_on)
    records, failed = [], []
    for host, answer in zip(hosts, started, strict=True):
        if "problem" in answer:
            failed.append(host.label)
            print(f"{host.label}: NOT started: {answer['problem']}", file=out)
            continue
        entries = answer["entries"]
        pids = ", ".join(str(entry["pid"]) for entry in entries)
        logs = os.path.dirname(entries[0]["log"]) if entries else log_dir
        noun = "executor" if len(entries) == 1 else "executors"
        print(f"{host.label}: started {len(entries)} {noun} (pids {pids}); logs there in {logs}", file=out)
        records.append({"label": host.label, "host": host.host, "user": host.user, "port": host.port,
                        "hostname": answer.get("hostname"), "python": answer.get("python"), "dir": answer.get("dir"),
                        "executors": entries})
    if not records:
        raise LaunchError("no host started: " + ", ".join(failed))
    return {"hosts": records, "failed_hosts": failed, "argv": argv,
            "ssh": {"command": list(settings.ssh_command), "options": list(settings.ssh_options),
                    "connect_timeout": settings.connect_timeout}}


def launch_ssh(config: str | os.PathLike[str], hosts: str | Sequence[str | Host], executors: int = 1,
               function: str | None = None, credentials: str | os.PathLike[str] | None = None, *,
               table: str | None = None, database: str | None = None, run_args: Sequence[str] = (),
               env: Mapping[str, str] | None = None, remote_python: str = "python3", remote_dir: str | None = None,
               remote_log_dir: str | None = None, ssh_options: Sequence[str] = (), ssh_command: str = "ssh",
               log_dir: str | os.PathLike[str] = DEFAULT_LOG_DIR, out: TextIO | None = None) -> dict[str, Any]:
    """Start executors on SSH hosts and return the launch record (also written to
    ``<log_dir>/<table>/launch-ssh-<stamp>.json``, its path under ``"record_path"``).

    :param hosts: ``"node1*2,alice@node2:2222"`` or a list of such strings / :class:`Host`.
    :param executors: executors per host that names no count of its own.
    :param env: environment variables of the remote executors.
    :param remote_python: the hosts' Python with py_experimenter installed.
    :param remote_dir: where the executors start on the hosts (default: the current folder).
    :param ssh_options: extra ssh arguments, e.g. ``["-i", "~/.ssh/lab", "-oProxyJump=gw"]``.

    Raises :class:`LaunchError` (nothing started anywhere) when a host fails its preflight.
    """
    from py_experimenter.arguments import positive_int
    from py_experimenter.config import load_experiment_config

    positive_int("executors", executors)
    if isinstance(hosts, str):
        targets = parse_hosts(hosts, "hosts")
    else:
        targets = [h if isinstance(h, Host) else parse_hosts(h, "hosts")[0] for h in hosts]
    name = table or load_experiment_config(os.fspath(config), table_name=table, database_name=database).table.name
    command = ExecutorCommand.create(config, credentials, function, table=table, database=database,
                                     run_args=run_args)
    settings = SshSettings(ssh_command=tuple(shlex.split(ssh_command)), ssh_options=tuple(ssh_options),
                           python=remote_python, remote_dir=remote_dir or os.getcwd(),
                           remote_log_dir=remote_log_dir, env=dict(env or {}))
    launch = new_launch(log_dir, name, "ssh")
    return launch.run(lambda run_dir: start(command, targets, executors, settings, run_dir, out or sys.stdout))


def _each(items: Sequence[_I], call: Callable[[_I], _T]) -> list[_T]:
    """``call`` on every host at once (threads: each waits on its own ssh process)."""
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(items)))) as pool:
        return list(pool.map(call, items))


def _remote(host: Host, settings: SshSettings, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one :mod:`.procs` request on ``host``; the answer, or ``{"problem": ...}``."""
    remote_command = _python_word(settings.python) + " " + shlex.join(["-c", _SOURCE, json.dumps(request)])
    limit = timeout if timeout is not None else settings.connect_timeout + 60
    try:
        done = subprocess.run(settings.argv(host, remote_command), capture_output=True, text=True, timeout=limit,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LaunchError(f"the ssh client {settings.ssh_command[0]!r} is not on PATH; install OpenSSH's client "
                          "or pass --ssh-command") from None
    except subprocess.TimeoutExpired:
        return {"problem": f"no answer within {limit:.0f} s"}
    stderr = [line.strip() for line in done.stderr.splitlines()
              if line.strip() and not line.startswith("Warning: Permanently added")]
    if done.returncode == 255:
        return {"problem": stderr[-1] if stderr else "ssh failed (exit 255)"}
    if done.returncode == 127:
        shell = stderr[-1] if stderr else "exit 127"
        return {"problem": f"the remote Python {settings.python!r} was not found ({shell}); "
                           "pass --remote-python with its path"}
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if done.returncode != 0 or not isinstance(answer, dict):
        detail = stderr[-1] if stderr else (lines[-1] if lines else f"exit {done.returncode}")
        return {"problem": f"{settings.python} failed there ({detail})"}
    return answer


def _python_word(python: str) -> str:
    """The remote Python for the remote shell, quoted; a leading ``~/`` is the remote home."""
    if python.startswith("~/"):
        return '"$HOME"/' + shlex.quote(python[2:])
    return shlex.quote(python)


def _settings(record: dict[str, Any]) -> SshSettings:
    ssh = record.get("ssh", {})
    return SshSettings(ssh_command=tuple(ssh.get("command", ["ssh"])), ssh_options=tuple(ssh.get("options", [])),
                       connect_timeout=float(ssh.get("connect_timeout", 10.0)))


def _host(entry: dict[str, Any]) -> Host:
    return Host(entry["host"], entry.get("user"), entry.get("port"))


def _on_hosts(record: dict[str, Any], request: dict[str, Any], timeout: float | None = None
              ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``request`` (with each host's entries) on every host of the record, with its Python."""
    hosts = record.get("hosts", [])
    base = _settings(record)

    def ask(entry: dict[str, Any]) -> dict[str, Any]:
        settings = SshSettings(base.ssh_command, base.ssh_options, base.connect_timeout,
                               entry.get("python") or "python3")
        return _remote(_host(entry), settings, {**request, "entries": entry["executors"]}, timeout)

    return list(zip(hosts, _each(hosts, ask), strict=True))


def stop_record(record: dict[str, Any], out: TextIO) -> int:
    """Stop what ``record`` started on each host (SIGTERM to each executor's process group, then
    SIGKILL after ``record["stop_timeout"]`` seconds, default 60). Returns how many were running;
    raises :class:`LaunchError` after trying every host if one could not be reached."""
    value = record.get("stop_timeout")
    timeout = DEFAULT_STOP_TIMEOUT if value is None else float(value)
    stopped, unreachable = 0, []
    for entry, answer in _on_hosts(record, {"op": "stop", "timeout": timeout}, timeout=timeout + 60):
        if "problem" in answer:
            unreachable.append(f"{entry['label']}: {answer['problem']}")
            print(f"{entry['label']}: could not stop its executors: {answer['problem']}", file=out)
            continue
        stopped += int(answer["stopped"])
        print(f"{entry['label']}: stopped {answer['stopped']} of {len(entry['executors'])} executors", file=out)
    if unreachable:
        raise LaunchError("could not stop the executors on " + "; ".join(unreachable) + " (run --stop again)")
    return stopped


def targets(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For ``status``, per host: ``{"started", "alive", "workers"}`` (``alive`` and ``workers``
    None when the host did not answer); ``workers`` are the ``hostname:pid`` values the executors
    and their forked processes write on the rows they run."""
    found = {}
    for entry, answer in _on_hosts(record, {"op": "alive"}):
        ok = "problem" not in answer
        found[entry["label"]] = {
            "started": len(entry["executors"]), "alive": int(answer["alive"]) if ok else None,
            "workers": {f"{entry.get('hostname')}:{pid}" for pid in answer.get("members", [])} if ok else None}
    return found


def alive_by_target(record: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    """``{host: (started, still running or None when the host did not answer)}``."""
    return {label: (target["started"], target["alive"]) for label, target in targets(record).items()}


def alive_record(record: dict[str, Any]) -> int:
    """How many of the record's executors still run (a host that does not answer counts as all running)."""
    return sum(started if alive is None else alive for started, alive in alive_by_target(record).values())
