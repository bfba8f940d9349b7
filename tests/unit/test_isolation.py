"""run_in_child: results, errors, timeout, memory limit, stop check, crashes, usage and cleanup (no database)."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from py_experimenter.isolation import ChildOutcome, run_in_child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and RLIMIT_AS: Linux only")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie left to an init that never reaps counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone_soon(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _read_pid(path: Path) -> int:
    return int(path.read_text())


def _write_pid(path: Path, pid: int | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(os.getpid() if pid is None else pid))
    tmp.replace(path)  # atomic: a reader never sees a half-written pid


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_returned_dict_round_trips():
    outcome = run_in_child(lambda: {"accuracy": 0.9, "items": [1, 2, 3]})
    assert outcome.kind == "returned"
    assert outcome.value == {"accuracy": 0.9, "items": [1, 2, 3]}
    assert outcome.error is None
    assert outcome.duration_seconds is not None and outcome.duration_seconds < 2
    assert outcome.cpu_seconds is not None and outcome.max_rss_mb is not None


def test_a_large_result_does_not_deadlock_on_the_pipe():
    outcome = run_in_child(lambda: b"\x07" * (5 * 2**20), timeout=20)
    assert outcome.kind == "returned"
    assert outcome.value == b"\x07" * (5 * 2**20)


def test_none_is_a_returned_value():
    outcome = run_in_child(lambda: None)
    assert isinstance(outcome, ChildOutcome)
    assert (outcome.kind, outcome.value, outcome.error, outcome.stop_kind) == ("returned", None, None, None)


def test_an_exception_is_raised_with_its_traceback():
    def target():
        raise ValueError("the learning rate is negative")

    outcome = run_in_child(target)
    assert outcome.kind == "raised"
    assert "Traceback" in outcome.error
    assert "ValueError: the learning rate is negative" in outcome.error
    assert "in target" in outcome.error


def test_an_unpicklable_result_is_raised():
    outcome = run_in_child(lambda: lambda: 1)
    assert outcome.kind == "raised"
    assert "cannot be sent back from the child process" in outcome.error


def test_sys_exit_is_raised_with_its_code():
    outcome = run_in_child(lambda: sys.exit(3))
    assert outcome.kind == "raised"
    assert outcome.error == "the experiment function called sys.exit(3)"


def test_os_exit_is_a_crash_naming_the_code():
    outcome = run_in_child(lambda: os._exit(4))
    assert outcome.kind == "crashed"
    assert "exited with code 4" in outcome.error


def test_a_segfault_is_a_crash_naming_the_signal():
    def target():
        faulthandler.disable()  # pytest enables it; its dump of the stack would only clutter the output
        os.kill(os.getpid(), signal.SIGSEGV)

    outcome = run_in_child(target)
    assert outcome.kind == "crashed"
    assert "SIGSEGV" in outcome.error


def test_a_sigkill_not_sent_by_the_parent_is_oom():
    outcome = run_in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert outcome.kind == "oom"
    assert "out-of-memory killer" in outcome.error


def test_timeout_kills_and_reaps_the_child(tmp_path):
    pid_file = tmp_path / "child.pid"

    def target():
        _write_pid(pid_file)
        time.sleep(30)

    started = time.monotonic()
    outcome = run_in_child(target, timeout=0.5)
    assert time.monotonic() - started < 2
    assert outcome.kind == "timeout"
    assert outcome.error == "the experiment exceeded its timeout of 0.5 s (Execution.timeout) and was killed"
    assert 0.5 <= outcome.duration_seconds < 2
    assert not _alive(_read_pid(pid_file))


def test_timeout_also_kills_grandchildren(tmp_path):
    pid_file = tmp_path / "grandchild.pid"

    def target():
        sleeper = subprocess.Popen(["sleep", "30"])
        _write_pid(pid_file, sleeper.pid)
        time.sleep(30)

    outcome = run_in_child(target, timeout=0.5)
    assert outcome.kind == "timeout"
    assert _gone_soon(_read_pid(pid_file))


def test_grandchildren_left_behind_by_a_returning_child_are_killed(tmp_path):
    def target():
        return subprocess.Popen(["sleep", "30"]).pid

    outcome = run_in_child(target, timeout=10)
    assert outcome.kind == "returned"
    assert _gone_soon(outcome.value)


def test_memory_limit_gives_oom():
    def target():
        return len(bytearray(2**30))

    outcome = run_in_child(target, memory_bytes=300 * 2**20, timeout=20)
    assert outcome.kind == "oom", outcome.error
    assert outcome.error.startswith("the experiment ran out of memory under its limit of 300 MiB (Execution.memory)")
    assert "MemoryError" in outcome.error


def test_should_stop_stops_the_child_quickly(tmp_path):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()

    def should_stop():
        return ("cancelled", "cancel requested") if time.monotonic() - started > 0.3 else None

    def target():
        _write_pid(pid_file)
        time.sleep(30)

    outcome = run_in_child(target, should_stop=should_stop, timeout=20)
    assert outcome.kind == "stopped"
    assert outcome.stop_kind == "cancelled"
    assert outcome.error == "cancel requested"
    assert time.monotonic() - started < 1.5
    assert not _alive(_read_pid(pid_file))


def test_an_exception_from_should_stop_propagates_after_the_child_is_reaped(tmp_path):
    pid_file = tmp_path / "child.pid"

    def should_stop():
        if pid_file.exists():
            raise KeyboardInterrupt
        return None

    def target():
        _write_pid(pid_file)
        time.sleep(30)

    fds = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        run_in_child(target, should_stop=should_stop, timeout=20)
    assert not _alive(_read_pid(pid_file))
    assert _open_fds() == fds


class _Alarm(BaseException):
    pass


def test_a_signal_handler_interrupting_the_wait_propagates_after_the_child_is_reaped(tmp_path):
    pid_file = tmp_path / "child.pid"

    def on_alarm(signum, frame):
        raise _Alarm

    def target():
        _write_pid(pid_file)
        time.sleep(30)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.4)
        with pytest.raises(_Alarm):
            run_in_child(target, timeout=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not _alive(_read_pid(pid_file))


def test_cpu_seconds_count_the_childs_work():
    def target():
        # Spin until the child itself has used 0.3 s of CPU (not 0.3 s of wall time: on a loaded
        # machine a wall-clock spin may get far less CPU than the bound below).
        give_up = time.monotonic() + 60
        while time.process_time() < 0.3 and time.monotonic() < give_up:
            pass
        return time.process_time()

    outcome = run_in_child(target)
    assert outcome.kind == "returned"
    assert outcome.value >= 0.3, "the child never got 0.3 s of CPU within 60 s"
    assert outcome.cpu_seconds > 0.25


def test_max_rss_counts_the_childs_memory():
    baseline = run_in_child(lambda: None)

    def target():
        block = b"x" * (100 * 2**20)  # written byte by byte, so every page is resident
        return len(block)

    outcome = run_in_child(target)
    assert outcome.kind == "returned"
    assert outcome.max_rss_mb > 50
    assert outcome.max_rss_mb - baseline.max_rss_mb > 50


def test_the_child_runs_in_its_own_process_group():
    outcome = run_in_child(lambda: (os.getpid(), os.getpgid(0)))
    child_pid, child_group = outcome.value
    assert child_group == child_pid != os.getpgid(0)


def test_no_file_descriptors_leak():
    fds = _open_fds()
    for target in (lambda: 1, lambda: 1 / 0, lambda: os._exit(2)):
        run_in_child(target)
    run_in_child(lambda: time.sleep(30), timeout=0.2)
    assert _open_fds() == fds


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"memory_bytes": -1}, {"poll_interval": 0}])
def test_non_positive_limits_are_rejected(bad):
    with pytest.raises(ValueError):
        run_in_child(lambda: None, **bad)


def test_without_pidfd_the_parent_polls(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    assert run_in_child(lambda: b"\x01" * 2**20).value == b"\x01" * 2**20
    assert run_in_child(lambda: os._exit(5)).kind == "crashed"
    assert run_in_child(lambda: time.sleep(30), timeout=0.2).kind == "timeout"
