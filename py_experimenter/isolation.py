"""Run one experiment function in a forked child process, with a timeout, a memory limit and a stop check.

Why ``os.fork`` (and not :mod:`multiprocessing`): the child inherits the parent's fully set-up interpreter (imported
modules, closures, objects that cannot be pickled), so the experiment function needs no pickling, and the parent reaps
the child itself with :func:`os.wait4`, which yields the child's resource usage (CPU seconds, peak RSS). The child runs
in its own process group, so a Ctrl-C in the terminal does not hit it directly and the parent can kill it *together
with every process it started* (``os.killpg``). The parent always reaps the child, whatever happens, and at the end
kills what is left of the child's process group; descendants that moved to another session or process group
(``start_new_session=True``, ``setsid``) escape that.

Why ``RLIMIT_AS``: the memory limit is applied with ``resource.setrlimit(RLIMIT_AS, ...)`` in the child, as pynisher
does. It limits the *address space* (virtual memory) of the child, not its resident memory: an allocation beyond it
fails with :class:`MemoryError`. The forked child starts with the parent's address space, and some libraries reserve
large virtual regions (thread stacks, allocator arenas), so the limit must leave room for those. Processes the child
starts inherit the limit, each on its own.

What "oom" means: the experiment ran out of memory, either because a :class:`MemoryError` reached the top of the
experiment function (typically the address-space limit above) or because the child was killed by a ``SIGKILL`` that
the parent did not send, which on Linux is almost always the kernel's out-of-memory killer (a cgroup or machine limit).

``max_rss_mb`` counts the pages the child shares with the parent right after the fork, so it includes the parent's own
anonymous memory at that moment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import resource
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["ChildOutcome", "run_in_child"]

_READ_CHUNK = 1 << 20
_PR_SET_PDEATHSIG = 1
_TIMEOUT_END = "(Execution.timeout) and was killed"
_UNSENDABLE = "the experiment function returned an object that cannot be sent back from the child process"
# Sent when even reporting a MemoryError runs out of memory (built now, while memory is plentiful).
_OOM_FALLBACK = pickle.dumps(("raised", "MemoryError (while reporting the error)", True))


@dataclass(frozen=True)
class ChildOutcome:
    """How a call of :func:`run_in_child` ended.

    ``kind`` is one of ``"returned"``, ``"raised"``, ``"timeout"``, ``"oom"``, ``"stopped"`` or ``"crashed"``.
    ``value`` is the function's return value when ``kind == "returned"``. ``error`` is the traceback text
    (``"raised"``) or a one-sentence reason (the other kinds but ``"returned"``). ``stop_kind`` is the kind returned
    by ``should_stop`` when ``kind == "stopped"``. ``cpu_seconds`` (user + system) and ``max_rss_mb`` come from the
    child's rusage and include its reaped descendants; ``duration_seconds`` is the wall clock from fork to reap.
    """

    kind: str
    value: Any = None
    error: str | None = None
    stop_kind: str | None = None
    cpu_seconds: float | None = None
    max_rss_mb: float | None = None
    duration_seconds: float | None = None


def run_in_child(
    target: Callable[[], Any],
    *,
    timeout: float | None = None,
    memory_bytes: int | None = None,
    should_stop: Callable[[], tuple[str, str] | None] | None = None,
    poll_interval: float = 0.05,
) -> ChildOutcome:
    """Call ``target()`` in a forked child process and report how it ended.

    :param target: the function to run; its return value must be picklable to come back.
    :param timeout: wall-clock seconds after which the child (and its process group) is killed.
    :param memory_bytes: address-space limit (``RLIMIT_AS``) of the child, in bytes.
    :param should_stop: called in the parent about every ``poll_interval`` seconds; returning ``(kind, reason)``
        kills the child and yields ``kind == "stopped"``.
    :param poll_interval: seconds between checks of the timeout and ``should_stop``.
    :raises ValueError: for a non-positive ``timeout``, ``memory_bytes`` or ``poll_interval``.

    Any exception raised in the parent while waiting (by ``should_stop`` or by a signal handler) propagates, after
    the child's process group has been killed and the child reaped.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive or None, not {timeout!r}")
    if memory_bytes is not None and memory_bytes <= 0:
        raise ValueError(f"memory_bytes must be positive or None, not {memory_bytes!r}")
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
    _flush_std_streams()
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    try:
        pid = os.fork()
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child; its coverage is not collected
        _child_main(target, read_fd, write_fd, memory_bytes)
    os.close(write_fd)
    with contextlib.suppress(OSError):  # also done by the child; whichever runs first wins the race
        os.setpgid(pid, pid)
    pidfd = _open_pidfd(pid)
    chunks: list[bytes] = []
    killed: tuple[str, str, str | None] | None = None  # (kind, error, stop_kind) when the parent kills
    reaping = False
    try:
        os.set_blocking(read_fd, False)
        eof = False
        deadline = None if timeout is None else start + timeout
        next_stop_check = start + poll_interval
        while not _has_exited(pid):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                killed = ("timeout", f"the experiment exceeded its timeout of {timeout:g} s {_TIMEOUT_END}", None)
                break
            if should_stop is not None and now >= next_stop_check:
                next_stop_check = now + poll_interval
                request = should_stop()
                if request is not None:
                    killed = ("stopped", request[1], request[0])
                    break
            wait = poll_interval if deadline is None else min(poll_interval, deadline - now)
            watched = ([] if eof else [read_fd]) + ([] if pidfd is None else [pidfd])
            readable, _, _ = select.select(watched, [], [], max(wait, 0.0))
            if read_fd in readable:
                eof = _read_available(read_fd, chunks)
        # Exited (a zombie, so its pid and process group stay reserved) or to be killed: kill the
        # group either way, which also ends descendants the child left behind.
        if killed is None:
            _read_available(read_fd, chunks)  # all the child wrote is in the pipe by now
        _kill_group(pid)
        reaping = True  # from here on, _reap itself keeps waiting through interruptions
        status, usage, interruption = _reap(pid)
    except BaseException:
        if not reaping:
            _kill_group(pid)
            _reap(pid)
        raise
    finally:
        os.close(read_fd)
        if pidfd is not None:
            os.close(pidfd)
    duration = time.monotonic() - start
    if interruption is not None:
        raise interruption
    outcome = _classify(b"".join(chunks), status, killed, memory_bytes)
    cpu = None if usage is None else usage.ru_utime + usage.ru_stime
    rss = None if usage is None else usage.ru_maxrss / 1024  # KiB on Linux
    return dataclasses.replace(outcome, cpu_seconds=cpu, max_rss_mb=rss, duration_seconds=duration)


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this child when its parent dies (kill -9 of the executor), on Linux."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the lease still fences the orphan's writes
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(target: Callable[[], Any], read_fd: int, write_fd: int, memory_bytes: int | None) -> NoReturn:
    """The child's whole life: set up, run ``target``, send the result, ``os._exit``. Never returns."""
    parent = os.getppid()
    code = 1
    try:
        os.close(read_fd)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        _die_with_parent(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            if memory_bytes is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
            value = target()
            try:
                payload = pickle.dumps(("returned", value), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                reason = f"{_UNSENDABLE}: {type(value).__name__} ({type(exc).__name__}: {exc})"
                payload = pickle.dumps(("raised", reason, isinstance(exc, MemoryError)))
        except SystemExit as exc:
            call = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
            payload = pickle.dumps(("raised", f"the experiment function called {call}", False))
        except BaseException as exc:
            payload = pickle.dumps(("raised", traceback.format_exc(), isinstance(exc, MemoryError)))
        _write_all(write_fd, payload)
        code = 0
    except MemoryError:
        with contextlib.suppress(BaseException):
            _write_all(write_fd, _OOM_FALLBACK)
            code = 0
    except BaseException:
        pass
    finally:
        _flush_std_streams()
        os._exit(code)


def _classify(
    data: bytes, status: int | None, killed: tuple[str, str, str | None] | None, memory_bytes: int | None
) -> ChildOutcome:
    """The outcome (without usage figures) from the child's message, its wait status and the parent's kill."""
    if killed is not None:
        return ChildOutcome(kind=killed[0], error=killed[1], stop_kind=killed[2])
    exited_cleanly = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    try:
        message: Any = pickle.loads(data) if data else None
    except Exception as exc:  # a clean exit means the message is complete: the value itself does not load
        if exited_cleanly:
            return ChildOutcome(kind="raised", error=f"{_UNSENDABLE}: {type(exc).__name__}: {exc}")
        message = None  # cut short by the child's death: judged by the wait status below
    if isinstance(message, tuple) and len(message) == 2 and message[0] == "returned":
        return ChildOutcome(kind="returned", value=message[1])
    if isinstance(message, tuple) and len(message) == 3 and message[0] == "raised":
        if not message[2]:
            return ChildOutcome(kind="raised", error=str(message[1]))
        last = (str(message[1]).strip().splitlines() or ["MemoryError"])[-1]
        limit = "" if memory_bytes is None else f" under its limit of {memory_bytes / 2**20:g} MiB (Execution.memory)"
        return ChildOutcome(kind="oom", error=f"the experiment ran out of memory{limit}: {last}")
    kind, child = "crashed", "the experiment's child process"
    if status is None:
        reason = f"{child} ended without reporting a result and its exit status was collected elsewhere"
    elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        kind = "oom"
        reason = f"{child} was killed by SIGKILL without reporting a result, most likely by the kernel's "
        reason += "out-of-memory killer"
    elif os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = next((known.name for known in signal.Signals if known == number), f"number {number}")
        reason = f"{child} died from signal {name}"
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        reason = f"{child} exited with code {code} without reporting a result"
    return ChildOutcome(kind=kind, error=reason)


def _has_exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it (it stays a zombie and keeps its pid)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere (e.g. by a SIGCHLD handler calling waitpid(-1))
        return True


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child ends (Linux 5.3+), else None (then we poll)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd_open (Python, platform) or not allowed (old kernel, seccomp)
        return None


def _read_available(fd: int, chunks: list[bytes]) -> bool:
    """Append what can be read from the non-blocking ``fd`` without waiting; True at end of file."""
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        chunks.append(chunk)


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group and the child itself (a no-op for what is already gone)."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)


def _reap(pid: int) -> tuple[int | None, Any, BaseException | None]:
    """Wait for the (killed or exited) child: (wait status, rusage, an exception that interrupted the wait).

    An exception raised by a signal handler during the wait does not leave a zombie behind: it is
    kept, the wait goes on (the child is already dying), and the caller decides whether to raise it.
    """
    interruption: BaseException | None = None
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            return status, usage, interruption
        except ChildProcessError:
            return None, None, interruption
        except BaseException as exc:
            interruption = exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
