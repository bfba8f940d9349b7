"""The command adapter: each experiment runs as one subprocess, e.g. ``apptainer exec image.sif run {params}``.

It follows the contract in :mod:`py_experimenter.adapters.contract`. The command (``Execution.command``, a list
of templates) starts in the executor's working directory (so ``[python, run.py, ...]`` finds ``run.py`` where
you launched it), with this process's environment plus
``Execution.env`` and the ``PY_EXPERIMENTER_*`` variables; its stdout and stderr go to ``output.log`` in that
folder. It runs in a new session (its own process group): a Ctrl-C in the terminal does not reach it, and a
timeout or stop kills the whole group with ``SIGKILL``. Descendants that start a session of their own escape
that. The command is always reaped (:func:`os.wait4`, which also yields its CPU seconds and peak RSS,
counting its reaped descendants) and its group killed, whatever happens, before :meth:`CommandAdapter.run`
returns or raises. If the executor itself dies, the kernel sends the command ``SIGKILL`` (Linux).

Limits: ``Execution.memory`` becomes ``RLIMIT_AS``, an *address-space* limit (as ``isolation: process``
does): an allocation beyond it fails inside the program (Python raises :class:`MemoryError`), and programs
that reserve much virtual memory up front (JVMs, CUDA) need a generous limit. ``Execution.gpus`` sets
``CUDA_VISIBLE_DEVICES=0,…,gpus-1`` unless the environment already has it (Slurm sets it for its GPU jobs:
kept). ``Execution.cpus`` is not enforced for commands (a warning says so).

What counts as ``oom``: the command was killed by a ``SIGKILL`` the executor did not send (on Linux
almost always the kernel's out-of-memory killer), or exited with code 137 (a wrapper passing that kill on),
or exited non-zero and the last lines of its output report running out of memory (``MemoryError``,
``std::bad_alloc``, ``Cannot allocate memory``, ``out of memory``) — the way a program hitting the address
space limit usually ends. That last rule reads the output, so it is a heuristic: a program that prints
such a line before failing for another reason is counted as ``oom`` too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from py_experimenter.adapters.contract import (
    AdapterOutcome,
    AttemptFiles,
    ExperimentAdapter,
    StopCheck,
    says_out_of_memory,
    tail,
)
from py_experimenter.exceptions import ConfigError
from py_experimenter.queue import AttemptReport, Experiment
from py_experimenter.result_processor import ResultProcessor

__all__ = ["CommandAdapter"]

logger = logging.getLogger("py-experimenter")

POLL_SECONDS = 0.1
_TAIL_BYTES = 1 << 16
_PR_SET_PDEATHSIG = 1


class CommandAdapter(ExperimentAdapter):
    """Runs each experiment as a subprocess (``adapter: command``)."""

    def check(self) -> None:
        """Validate the command and env templates and the datasets folder."""
        if not self.execution.command:
            raise ConfigError("adapter 'command' needs a command, e.g. command: [python, /path/run.py, '{params}']",
                              source=self.config.source, key_path="PY_EXPERIMENTER.Execution.command")
        self.check_templates()
        self.check_folders()
        if self.execution.cpus is not None:
            logger.warning("Execution.cpus (%g) is not enforced by the command adapter; limit the CPUs with "
                           "your batch system (e.g. Slurm's --cpus-per-task) or use the docker adapter",
                           self.execution.cpus)

    def run(
        self,
        experiment: Experiment,
        processor: ResultProcessor,
        custom: Mapping[str, Any],
        should_stop: StopCheck | None,
    ) -> AdapterOutcome:
        """Run the command for one attempt and read its results back (see the module docstring)."""
        datasets = self.execution.datasets
        data_dir = None if datasets is None else os.path.abspath(datasets)
        limits = self.limits_json(memory=self.execution.memory_bytes, timeout=self.execution.timeout,
                                  gpus=self.execution.gpus)
        with self.attempt_folder(experiment) as folder:
            try:
                files = self.prepare(experiment, custom, folder, results_dir=str(folder), data_dir=data_dir)
            except ConfigError as exc:
                return AdapterOutcome("error", str(exc), report=AttemptReport(limits=limits))
            started = time.monotonic()
            try:
                process = self._start(files)
            except (OSError, subprocess.SubprocessError) as exc:
                program = (files.command or ["?"])[0]
                reason = getattr(exc, "strerror", None) or str(exc)
                return AdapterOutcome("error", (
                    f"cannot start the command {program!r}: {reason} (Execution.command); check that it is "
                    "installed and on PATH, or give its full path"
                ), report=AttemptReport(duration_seconds=time.monotonic() - started, limits=limits))
            status, usage, killed = _wait(process, self.execution.timeout, self.timeout_message, should_stop)
            report = AttemptReport(
                cpu_seconds=None if usage is None else usage.ru_utime + usage.ru_stime,
                max_rss_mb=None if usage is None else usage.ru_maxrss / 1024,
                duration_seconds=time.monotonic() - started, limits=limits,
            )
            if killed is not None:
                return AdapterOutcome(killed[0], killed[1], stop_kind=killed[2], report=report)
            kind, error = self._classify(status, _output_tail(folder / "output.log"))
            problem = self.read_back(folder, processor)
        if problem is not None:
            if kind == "done":
                kind, error = "error", problem
            else:
                error = f"{error}\n(also: {problem})"
        return AdapterOutcome(kind, error, report=report)

    def _start(self, files: AttemptFiles) -> subprocess.Popen[bytes]:
        env = {**os.environ, **files.env}
        if self.execution.gpus > 0 and "CUDA_VISIBLE_DEVICES" not in env:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(self.execution.gpus))
        assert files.command is not None  # check() makes sure
        with open(files.folder / "output.log", "wb") as output:
            return subprocess.Popen(
                files.command, env=env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_child_setup(self.execution.memory_bytes),  # only setrlimit and prctl
            )

    def _classify(self, status: int | None, output: str) -> tuple[str, str | None]:
        """(kind, error) of a command that ended by itself, from its wait status and its output's tail."""
        shown = f"; the last lines of its output (output.log):\n{output}" if output else "; it printed nothing"
        memory = self.execution.memory_bytes
        limit = "" if memory is None else f" (address-space limit {memory / 2**20:g} MiB, Execution.memory)"
        if status is None:
            return "error", "the command's exit status was collected elsewhere (a SIGCHLD handler?)"
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if number == signal.SIGKILL:
                return "oom", ("the command was killed by SIGKILL, which the executor did not send: most likely "
                               f"by the kernel's out-of-memory killer{limit}{shown}")
            return "error", f"the command died from signal {_signal_name(number)}{shown}"
        code = os.WEXITSTATUS(status)
        if code == 0:
            return "done", None
        if code == 128 + signal.SIGKILL:
            return "oom", f"the command exited with code 137 (killed by SIGKILL, most likely for memory){limit}{shown}"
        if says_out_of_memory(output):
            return "oom", f"the command ran out of memory{limit} and exited with code {code}{shown}"
        return "error", f"the command exited with code {code}{shown}"


def _child_setup(memory_bytes: int | None) -> Callable[[], None]:
    """What the child does between fork and exec: the address-space limit and dying with its parent."""
    libc: Any = None
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - resolved now, not in the child

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return setup


def _wait(
    process: subprocess.Popen[bytes],
    timeout: float | None,
    timeout_message: Callable[[], str],
    should_stop: StopCheck | None,
) -> tuple[int | None, Any, tuple[str, str, str | None] | None]:
    """Wait for the command, killing it on timeout or stop: (wait status, rusage, (kind, error, stop kind))."""
    pid = process.pid
    pidfd = _open_pidfd(pid)
    killed: tuple[str, str, str | None] | None = None
    reaping = False
    start = time.monotonic()
    try:
        deadline = None if timeout is None else start + timeout
        next_stop_check = start
        while not _has_exited(pid):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                killed = ("timeout", timeout_message(), None)
                break
            if should_stop is not None and now >= next_stop_check:
                next_stop_check = now + POLL_SECONDS
                request = should_stop()
                if request is not None:
                    killed = ("stopped", request[1], request[0])
                    break
            wait = max(0.0, POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - now))
            if pidfd is not None:
                select.select([pidfd], [], [], wait)
            else:
                time.sleep(min(wait, 0.02))
        # Exited (a zombie: its pid and group stay reserved) or to be killed: end the group either way.
        _kill_group(pid)
        reaping = True
        status, usage, interruption = _reap(process)
    except BaseException:
        if not reaping:
            _kill_group(pid)
            _reap(process)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if interruption is not None:
        raise interruption
    return status, usage, killed


def _has_exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)


def _reap(process: subprocess.Popen[bytes]) -> tuple[int | None, Any, BaseException | None]:
    """Reap the (exited or killed) child, waiting on through interruptions: (status, rusage, interruption)."""
    interruption: BaseException | None = None
    while True:
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except ChildProcessError:
            process.returncode = -1  # reaped elsewhere; keeps Popen from waiting for it again
            return None, None, interruption
        except BaseException as exc:
            interruption = exc
            continue
        process.returncode = os.waitstatus_to_exitcode(status)
        return status, usage, interruption


def _output_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    return tail(data.decode("utf-8", errors="replace"))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"number {number}"
