"""Graceful shutdown of an executor on SIGTERM / SIGINT / SIGUSR2 (Ctrl-C, ``scancel``, Slurm's
pre-walltime signal, submitit's USR2).

The first signal stops claiming. A running experiment may finish within the grace period;
after it, or at once on a second signal, :class:`ExecutorInterrupted` is raised inside the
experiment function and the executor hands the experiment back (attempt ``interrupted``,
row ``created``). Signals less than a second apart count as one, so a signal delivered both
to a process group and forwarded by a parent does not skip the grace period.

The heartbeat thread uses the same machinery to stop an experiment running inline in the
main thread when it is cancelled or its lease is lost (:meth:`GracefulShutdown.stop_experiment`):
:class:`ExperimentStopped` is raised in the main thread at its next Python instruction.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

logger = logging.getLogger("py-experimenter")

#: SIGUSR2 is submitit's pre-timeout signal and a common ``#SBATCH --signal=B:USR2@120`` choice.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
#: With a deadline, the grace period ends this long before it (Slurm kills at the deadline).
DEADLINE_SAFETY_SECONDS = 5.0
SAME_SIGNAL_WINDOW = 1.0


class ExecutorInterrupted(BaseException):
    """Raised inside a running experiment to hand it back; a BaseException so that a user's
    ``except Exception`` does not swallow it."""


class ExperimentStopped(BaseException):
    """Raised inside a running experiment that was cancelled (``kind == "cancelled"``) or whose
    lease was lost (``kind == "lost"``); a BaseException so that ``except Exception`` does not
    swallow it."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


class GracefulShutdown:
    """Signal handling for one executor process (a no-op outside the main thread)."""

    def __init__(self, grace_seconds: float, deadline: float | None = None):
        self.grace_seconds = grace_seconds
        #: A Unix time (the job's end): the grace period never runs past it.
        self.deadline = deadline
        self.requested = False
        self._in_experiment = False
        self._first_signal_at: float | None = None
        self._previous: dict[int, Any] = {}
        self._stop: tuple[str, str] | None = None

    def __enter__(self) -> GracefulShutdown:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_grace_over)
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def experiment_started(self) -> None:
        self._in_experiment = True
        self._stop = None
        if self.requested:
            raise ExecutorInterrupted("shutdown requested before the experiment started")

    def experiment_ended(self) -> None:
        self._in_experiment = False
        if self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        name = signal.Signals(signum).name
        if self._first_signal_at is None:
            self._first_signal_at = now
            self.requested = True
            if not self._in_experiment:
                logger.warning("%s: no new experiments will be claimed; exiting", name)
                return
            grace = self._grace()
            if grace <= 0:
                raise ExecutorInterrupted(f"{name}: handing the experiment back")
            logger.warning("%s: no new experiments will be claimed; the running one has %g s to finish "
                           "(send the signal again to hand it back now)", name, grace)
            signal.setitimer(signal.ITIMER_REAL, grace)
        elif now - self._first_signal_at >= SAME_SIGNAL_WINDOW and self._in_experiment:
            raise ExecutorInterrupted(f"second {name}: handing the experiment back now")

    def _grace(self) -> float:
        """The grace period, cut short so that it ends before the deadline."""
        if self.deadline is None:
            return self.grace_seconds
        return max(0.0, min(self.grace_seconds, self.deadline - time.time() - DEADLINE_SAFETY_SECONDS))

    def stop_experiment(self, kind: str, reason: str) -> None:
        """From any thread: raise :class:`ExperimentStopped` in the running inline experiment."""
        if not self._previous or not self._in_experiment:
            return
        self._stop = (kind, reason)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)

    def _on_grace_over(self, _signum: int, _frame: FrameType | None) -> None:
        if self._stop is not None and self._in_experiment:
            kind, reason = self._stop
            self._stop = None
            raise ExperimentStopped(kind, reason)
        if self._in_experiment and self.requested:
            raise ExecutorInterrupted(f"grace period of {self.grace_seconds:g} s is over: handing the experiment back")
