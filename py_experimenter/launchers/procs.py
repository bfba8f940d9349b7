"""Detached executor processes: start, count and stop them, never touching a reused pid.

Standard library only and no imports from this package: the SSH launcher sends this very file
to the remote Python (``python -c SOURCE REQUEST``), so local and remote hosts share one
implementation (:func:`main` answers one JSON request with one JSON line).

Each executor is started in its own session (``start_new_session``: no controlling terminal, so
it survives the launching shell or SSH connection) and is the leader of its process group. An
entry records its ``pid`` and the kernel's start time of that pid; a pid whose start time differs
is somebody else's process and is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["alive", "main", "members", "spawn", "start_time", "stop"]


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` as the kernel tells it; None when no such live process
    (a zombie counts as gone). Linux: ``/proc/PID/stat`` field 22; elsewhere ``ps -o lstart=``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS, BSD)
        return _ps_start_time(pid)
    if not fields or fields[0] in ("Z", "X"):  # fields[0] is field 3, the state
        return None
    return fields[19]  # field 22: start time in clock ticks after boot


def _ps_start_time(pid: int) -> str | None:
    try:
        found = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = found.stdout.strip()
    if found.returncode != 0 or not text or text.startswith("Z"):
        return None
    return text.partition(" ")[2].strip()


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child that exited (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _live_processes() -> Iterator[tuple[int, int]]:
    """(pid, process group) of every live (not zombie) process, from /proc."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] not in ("Z", "X"):
            yield int(name), int(fields[2])


def _group_exists(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group ``pgid``."""
    if os.path.isdir("/proc/self"):
        return any(group == pgid for _, group in _live_processes())
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ours(entry: dict[str, Any]) -> bool:
    """Whether the executor of ``entry`` (or a process of its group) still runs.

    The leader alive with the recorded start time: ours. The leader gone but its group still
    there (e.g. forked ``--n-jobs`` children): ours too, as the kernel never hands out a pid
    that is still some group's id. The pid alive with another start time: somebody else's.
    """
    pid = int(entry["pid"])
    _reap(pid)
    now = start_time(pid)
    if now is not None:
        return now == str(entry["start"])
    return _group_exists(pid)


def spawn(argv: list[str], log: str, cwd: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``argv`` detached (own session, stdin from /dev/null, stdout and stderr to ``log``);
    returns its entry ``{"pid", "start", "log"}``."""
    environment = dict(os.environ)
    environment.update(env or {})
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    started = start_time(process.pid)
    return {"pid": process.pid, "start": started if started is not None else "", "log": os.path.abspath(log)}


def alive(entries: list[dict[str, Any]]) -> int:
    """How many of ``entries`` still run."""
    return sum(1 for entry in entries if _ours(entry))


def members(entries: list[dict[str, Any]]) -> list[int]:
    """The live pids in the process groups of the ``entries`` still running: the executors and
    the processes they forked (``--n-jobs``), whose pids the table's ``worker`` column names.
    Without /proc: the executors' own pids only."""
    groups = {int(entry["pid"]) for entry in entries if _ours(entry)}
    if not os.path.isdir("/proc/self"):
        return sorted(groups)
    return sorted(pid for pid, group in _live_processes() if group in groups)


def stop(entries: list[dict[str, Any]], timeout: float = 60.0) -> int:
    """SIGTERM each running entry's process group (executors stop claiming and hand their
    experiment back after its grace period), wait up to ``timeout`` seconds, then SIGKILL what is
    left. Returns how many entries were running."""
    running = [entry for entry in entries if _ours(entry)]
    for entry in running:
        _signal_group(entry, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, timeout)
    while time.monotonic() < deadline and any(_ours(entry) for entry in running):
        time.sleep(0.1)
    for entry in running:
        if _ours(entry):
            _signal_group(entry, signal.SIGKILL)
    killed_by = time.monotonic() + 5
    while time.monotonic() < killed_by and any(_ours(entry) for entry in running):
        time.sleep(0.05)
    return len(running)


def _signal_group(entry: dict[str, Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(entry["pid"]), signum)


def _preflight(request: dict[str, Any], check_import: bool = True) -> dict[str, Any]:
    """Checks on a host before anything starts there; ``problem`` says what is wrong.
    ``check_import=False`` (``start``, after a preflight passed) skips the slow import check."""
    answer: dict[str, Any] = {"hostname": socket.gethostname(), "python": sys.executable}
    directory = os.path.expanduser(request.get("dir") or "")  # ~ is this host's home
    if directory:
        try:
            os.chdir(directory)
        except OSError as err:
            answer["problem"] = f"the remote folder {directory} is not usable ({err.strerror}); pass --remote-dir"
            return answer
    answer["dir"] = os.getcwd()
    if check_import:
        sys.path.insert(0, answer["dir"])  # as for the executors' ``python -m``
        try:
            import py_experimenter
        except Exception as err:  # not installed, or broken (a dependency missing)
            answer["problem"] = (f"py_experimenter is not installed for {sys.executable} ({type(err).__name__}: "
                                 f"{err}); pip install py-experimenter there or pass --remote-python")
            return answer
        answer["version"] = getattr(py_experimenter, "__version__", "?")
    for what, path in request.get("files", {}).items():
        if path and not os.path.isfile(path):
            answer["problem"] = (f"the {what} {path} does not exist there (launch passes this machine's absolute "
                                 "paths: use a shared file system, or the same paths on every host)")
            return answer
    try:
        os.makedirs(os.path.expanduser(request.get("log_dir") or "."), exist_ok=True)
    except OSError as err:
        answer["problem"] = (f"cannot create the log folder {request.get('log_dir')} ({err.strerror}); "
                             "pass --remote-log-dir")
    return answer


def main(argv: list[str]) -> int:
    """Answer one JSON request (``argv[0]``) with one JSON line on stdout.

    ``{"op": "preflight" | "start" | "alive" | "stop", ...}``: ``start`` also takes ``argv``,
    ``count``, ``log_prefix``, ``env`` and ``this_python`` (run ``argv`` with this interpreter);
    ``alive`` and ``stop`` take ``entries`` (and ``timeout``).
    """
    request = json.loads(argv[0])
    op = request["op"]
    answer: dict[str, Any]
    if op in ("preflight", "start"):
        answer = _preflight(request, check_import=op == "preflight")
        if op == "start" and "problem" not in answer:
            argv = list(request["argv"])
            if request.get("this_python"):  # the interpreter running this, as the preflight found it
                argv[0] = sys.executable
            prefix = os.path.expanduser(request["log_prefix"])
            answer["entries"] = [spawn(argv, f"{prefix}-{i}.log", env=request.get("env"))
                                 for i in range(int(request["count"]))]
    elif op == "alive":
        answer = {"alive": alive(request["entries"]), "members": members(request["entries"])}
    elif op == "stop":
        answer = {"stopped": stop(request["entries"], float(request.get("timeout", 60.0)))}
    else:
        answer = {"problem": f"unknown request {op!r}"}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
