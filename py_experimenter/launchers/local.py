"""Executors as detached processes on this machine (``py-experimenter launch CONFIG --on local``).

Each executor is ``python -m py_experimenter run CONFIG ...`` in its own session, with stdin
from /dev/null and its output in ``<run_dir>/local-<i>.log``; it keeps running after the
launching shell exits and ends when the table has nothing left for it. The record keeps each
pid with its start time, so ``--stop`` never signals a pid the system has reused since.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from py_experimenter.launchers import procs
from py_experimenter.launchers.command import ExecutorCommand
from py_experimenter.launchers.records import DEFAULT_LOG_DIR, new_launch

__all__ = ["add_arguments", "alive_by_target", "alive_record", "launch_from_args", "launch_local", "stop_record",
           "targets"]

#: Seconds ``stop_record`` waits after SIGTERM before SIGKILL, unless the record says otherwise
#: (more than the default grace period of 30 s, in which a running experiment may still finish).
DEFAULT_STOP_TIMEOUT = 60.0


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The local backend's options."""
    group.add_argument("--local-python", metavar="PATH",
                       help="the Python that runs the local executors (default: the one running this command)")


def start(command: ExecutorCommand, executors: int, run_dir: Path, out: TextIO,
          python: str | None = None) -> dict[str, Any]:
    """Start ``executors`` detached executors; returns the backend part of the record."""
    argv = command.argv(python)
    entries = [procs.spawn(argv, str(run_dir / f"local-{i}.log"), cwd=os.getcwd(), env=dict(command.env))
               for i in range(executors)]
    hostname = socket.gethostname()
    pids = ", ".join(str(entry["pid"]) for entry in entries)
    noun = "executor" if executors == 1 else "executors"
    print(f"{hostname}: started {executors} {noun} (pids {pids}); logs in {run_dir}", file=out)
    return {"hostname": hostname, "executors": entries, "argv": argv, "cwd": os.getcwd()}


def launch_from_args(command: ExecutorCommand, executors: int, args: argparse.Namespace, run_dir: Path,
                     out: TextIO) -> dict[str, Any]:
    """``launch --on local``: start the executors; returns the record's backend fields."""
    return start(command, executors, run_dir, out, python=getattr(args, "local_python", None))


def launch_local(config: str | os.PathLike[str], executors: int = 1, function: str | None = None,
                 credentials: str | os.PathLike[str] | None = None, *, table: str | None = None,
                 database: str | None = None, run_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 log_dir: str | os.PathLike[str] = DEFAULT_LOG_DIR, python: str | None = None,
                 out: TextIO | None = None) -> dict[str, Any]:
    """Start ``executors`` detached ``py-experimenter run`` processes on this machine and return
    the launch record (also written to ``<log_dir>/<table>/launch-local-<stamp>.json``, its
    path under ``"record_path"``). The table must exist (``fill`` it first).

    :param function: ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE`` (None for the docker /
        command adapters).
    :param run_args: further ``run`` options for every executor, e.g. ``["--max-experiments", "5"]``.
    :param env: environment variables the executors get on top of this process's.
    :param python: the interpreter of the executors (default: this one).

    Stop them with :func:`stop_record` (``launch CONFIG --on local --stop`` on the command line).
    """
    from py_experimenter.arguments import positive_int
    from py_experimenter.config import load_experiment_config

    positive_int("executors", executors)
    name = table or load_experiment_config(os.fspath(config), table_name=table, database_name=database).table.name
    command = ExecutorCommand.create(config, credentials, function, table=table, database=database,
                                     run_args=run_args, env=env)
    launch = new_launch(log_dir, name, "local")
    return launch.run(lambda run_dir: start(command, executors, run_dir, out or sys.stdout, python))


def _timeout(record: dict[str, Any]) -> float:
    value = record.get("stop_timeout")
    return DEFAULT_STOP_TIMEOUT if value is None else float(value)


def stop_record(record: dict[str, Any], out: TextIO) -> int:
    """Stop the executors ``record`` started that still run: SIGTERM to each process group, then
    SIGKILL after ``record["stop_timeout"]`` seconds (default 60). Returns how many were running."""
    entries = record.get("executors", [])
    stopped = procs.stop(entries, _timeout(record))
    ended = f" ({len(entries) - stopped} had ended already)" if stopped < len(entries) else ""
    print(f"{record.get('hostname', 'local')}: stopped {stopped} of {len(entries)} executors{ended}", file=out)
    return stopped


def alive_record(record: dict[str, Any]) -> int:
    """How many of the record's executors still run."""
    return procs.alive(record.get("executors", []))


def alive_by_target(record: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``{hostname: (started, still running)}``."""
    entries = record.get("executors", [])
    return {record.get("hostname", "local"): (len(entries), procs.alive(entries))}


def targets(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For ``status``: ``{hostname: {"started", "alive", "workers"}}``, where ``workers`` are the
    ``worker`` values (``hostname:pid``) the executors and their forked processes write on rows."""
    entries = record.get("executors", [])
    host = record.get("hostname", "local")
    return {host: {"started": len(entries), "alive": procs.alive(entries),
                   "workers": {f"{host}:{pid}" for pid in procs.members(entries)}}}
