"""The executor loop: claim → run the experiment function → record the outcome.

User exceptions become ``error`` rows with the full traceback and never stop the loop.
"""

from __future__ import annotations

import logging
import resource
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from py_experimenter.adapters.contract import AdapterUnavailableError, ExperimentAdapter
from py_experimenter.admin import ExperimentAdmin
from py_experimenter.config import ExecutionSpec
from py_experimenter.deadline import Deadline, resolve_deadline
from py_experimenter.emissions import EmissionsRecorder
from py_experimenter.exceptions import DatabaseUnavailableError, LeaseLostError
from py_experimenter.heartbeat import Heartbeat, Watch
from py_experimenter.isolation import run_in_child
from py_experimenter.queue import AttemptReport, Experiment, ExperimentQueue
from py_experimenter.recovery import LeaseRecovery
from py_experimenter.result_processor import ResultProcessor
from py_experimenter.shutdown import ExecutorInterrupted, ExperimentStopped, GracefulShutdown
from py_experimenter.status import ExperimentStatus

logger = logging.getLogger("py-experimenter")

ExperimentFunction = Callable[[dict[str, Any], ResultProcessor, dict[str, Any]], Any]

CANCELLED_BEFORE_START = "cancelled on request before it started (cancel_requested was set on the row)"

_FINAL = {
    None: ExperimentStatus.DONE,
    ExperimentStatus.DONE: ExperimentStatus.DONE,
    ExperimentStatus.ERROR: ExperimentStatus.ERROR,
    ExperimentStatus.PAUSED: ExperimentStatus.PAUSED,
}


def final_status(returned: Any) -> tuple[ExperimentStatus, str | None]:
    """Map the experiment function's return value onto the row's status (1.4.2 semantics)."""
    value = getattr(returned, "value", returned)  # also 1.4.2's own ExperimentStatus enum
    try:
        status = ExperimentStatus(value) if value is not None else None
    except ValueError:
        status = ExperimentStatus.ALL  # not a final status
    if status in _FINAL:
        return _FINAL[status], None
    return ExperimentStatus.ERROR, (
        f"the experiment function returned {returned!r}; return None or ExperimentStatus.DONE, "
        "ExperimentStatus.ERROR or ExperimentStatus.PAUSED"
    )


@dataclass(frozen=True)
class _Outcome:
    """How one attempt ended: the row's status, the attempt's outcome, error text, usage."""

    status: ExperimentStatus
    outcome: str
    error: str | None = None
    report: AttemptReport | None = None


class Executor:
    """Runs claimed experiments one at a time in this process.

    Each experiment runs either ``function`` (inline or in a child process, after
    ``execution.isolation``) or, with ``adapter``, a container or command. ``execution`` gives
    lease, heartbeat, recovery, grace period and limits; ``heartbeats=False`` turns heartbeats
    (and with them lease extension) off, for benchmarks.
    """

    def __init__(
        self,
        queue: ExperimentQueue,
        function: ExperimentFunction | None,
        custom: Mapping[str, Any],
        *,
        execution: ExecutionSpec | None = None,
        adapter: ExperimentAdapter | None = None,
        emissions: EmissionsRecorder | None = None,
        random_order: bool = False,
        heartbeats: bool = True,
    ):
        if (function is None) == (adapter is None):
            raise ValueError("give the executor either an experiment function or an adapter")
        self.queue = queue
        self.function = function
        self.adapter = adapter
        if adapter is not None:  # its containers and folders are scoped to this table
            adapter.bind(queue.db)
        self.custom = custom
        self.execution = execution = execution or ExecutionSpec()
        self.emissions = emissions
        self.random_order = random_order
        self.heartbeat_seconds = execution.heartbeat_seconds
        self.heartbeat = (Heartbeat(queue.db, lease_seconds=queue.lease_seconds, interval=execution.heartbeat_seconds)
                          if heartbeats else None)
        self.recovery = LeaseRecovery(queue.db, max_attempts=execution.max_attempts)
        self._last_recovery = float("-inf")
        self.shutdown: GracefulShutdown | None = None
        at = resolve_deadline()
        #: The end of this executor's Slurm job or ``--deadline``: no claim that cannot finish before it.
        self.deadline = None if at is None else Deadline(at, margin=execution.grace_seconds,
                                                         expected=execution.expected_seconds)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.heartbeat is not None:  # a thread does not travel to another process
            state["heartbeat"] = Heartbeat(self.queue.db, lease_seconds=self.queue.lease_seconds,
                                           interval=self.heartbeat_seconds)
        return state

    def run(self, max_experiments: int = -1, budget: Any = None) -> int:
        """Claim and run experiments until none is left or ``max_experiments`` were claimed
        (-1: no limit); returns how many ended here (handed back or lost ones do not count).

        ``budget`` is an optional shared ``multiprocessing.Value`` counting down the
        experiments all executor processes together may still start.
        """
        claimed = done = 0
        try:
            self._remove_orphans()
            deadline_at = self.deadline.at if self.deadline else None
            with GracefulShutdown(self.execution.grace_seconds, deadline_at) as self.shutdown:
                while max_experiments < 0 or claimed < max_experiments:
                    if self.shutdown.requested or self._past_deadline() \
                            or (budget is not None and not _take(budget)):
                        break
                    experiment = self._next_experiment()
                    if experiment is None:
                        break
                    claimed += 1
                    if self.run_experiment(experiment) is not None:
                        done += 1
        finally:
            self.shutdown = None
            if self.heartbeat is not None:
                self.heartbeat.close()
            if self.emissions is not None:
                self.emissions.close()
            self.queue.close()
        return done

    def _past_deadline(self) -> bool:
        """True when the next experiment could not finish before the deadline (logged once)."""
        if self.deadline is None:
            return False
        reason = self.deadline.refusal(self.queue.db.schema.attempts, self.queue.db.begin)
        if reason:
            logger.warning("not claiming another experiment: %s; leaving the rest to other executors", reason)
        return reason is not None

    def _next_experiment(self) -> Experiment | None:
        """Claim the next experiment, taking back expired leases on the way.

        When nothing is claimable but some running row has stopped heartbeating, wait for
        its lease to expire and take it over instead of leaving it behind.
        """
        interval = self.heartbeat_seconds
        while True:
            if time.monotonic() - self._last_recovery >= interval:
                self._last_recovery = time.monotonic()
                if self.recovery.recover():
                    self._remove_orphans()
            experiment = self.queue.claim(random_order=self.random_order)
            if experiment is not None or self._stopping():
                return experiment
            if self.recovery.recover():
                self._remove_orphans()
                continue
            wait = self.recovery.seconds_until_stale_lease_expires(stale_after=2 * interval)
            if wait is None:
                self._log_running_elsewhere()
                return None
            logger.info("waiting %.1f s for the lease of a silent executor to expire", wait)
            time.sleep(min(wait + 0.05, interval))
            if self._stopping():
                return None

    def _remove_orphans(self) -> None:
        """Containers of attempts taken back from killed executors are removed by their peers."""
        if self.adapter is None:
            return

        def is_live(experiment_id: int, attempt: int) -> bool:
            current = self.queue.current_attempt(experiment_id)
            return current is not None and current.attempt == attempt

        self.adapter.remove_orphans(is_live)

    def _log_running_elsewhere(self) -> None:
        running = ExperimentAdmin(self.queue.db).status_counts().get(ExperimentStatus.RUNNING.value, 0)
        if running:
            logger.info(
                "nothing left to claim; %d experiments are running in other executors, which still heartbeat. "
                "If one of them died, its row can be claimed again %g s after its last heartbeat "
                "(Execution.lease_seconds): run again then", running, self.queue.lease_seconds)

    def _stopping(self) -> bool:
        return self.shutdown is not None and self.shutdown.requested

    def run_experiment(self, experiment: Experiment) -> ExperimentStatus | None:
        """Run one claimed experiment and record its outcome; None if it was not ours to finish."""
        if experiment.cancel_requested:
            return self._record(experiment, _Outcome(ExperimentStatus.ERROR, "cancelled", CANCELLED_BEFORE_START))
        if self.emissions:
            self.emissions.start()
        inline = self.adapter is None and self.execution.isolation == "inline"
        on_stop = self.shutdown.stop_experiment if inline and self.shutdown else None
        watch = self.heartbeat.watch(experiment, on_stop=on_stop) if self.heartbeat else None
        usage = _UsageMeter() if inline else None
        try:
            if self.shutdown:
                self.shutdown.experiment_started()
            try:
                if self.adapter is not None:
                    result = self._call_adapter(self.adapter, experiment, watch)
                elif inline:
                    result = self._call_inline(experiment)
                else:
                    result = self._call_isolated(experiment, watch)
            finally:
                if self.shutdown:
                    self.shutdown.experiment_ended()
        except ExperimentStopped as stopped:
            result = _Outcome(ExperimentStatus.ERROR, stopped.kind, str(stopped))
        except ExecutorInterrupted as interrupted:
            self._hand_back(experiment, str(interrupted))
            return None
        except LeaseLostError as lost:
            logger.warning("abandoning experiment %s: %s", experiment.id, lost)
            return None
        except AdapterUnavailableError as gone:  # the engine, not the experiment, failed: stop here
            self._hand_back(experiment, str(gone))
            raise
        finally:
            if self.heartbeat:
                self.heartbeat.unwatch()
            if self.emissions:
                self.emissions.stop(self.queue, experiment)
        if result.outcome == "lost":
            logger.warning("abandoning experiment %s: %s", experiment.id, result.error)
            return None
        if not inline and self._stopping() and result.outcome in ("error", "oom"):
            # scancel / Slurm's time limit signal every process of the job: a child or container
            # that died of that signal failed because of the shutdown, not by itself.
            self._hand_back(experiment, f"shutdown requested while it ran (it ended as {result.outcome})")
            return None
        return self._record(experiment, result, usage)

    def _record(self, experiment: Experiment, result: _Outcome, usage: _UsageMeter | None = None
                ) -> ExperimentStatus | None:
        if result.error and result.outcome != "done":
            logger.error("experiment %s ended as %s:\n%s", experiment.id, result.outcome, result.error)
        try:
            self.queue.finish(experiment, result.status, outcome=result.outcome, error=result.error,
                              report=result.report or (usage.read() if usage else None))
        except LeaseLostError as lost:
            logger.warning("result of experiment %s discarded: %s", experiment.id, lost)
            return None
        return result.status

    def _call_adapter(self, adapter: ExperimentAdapter, experiment: Experiment, watch: Watch | None) -> _Outcome:
        """Run the experiment's container or command; the adapter reads its results back."""
        ran = adapter.run(experiment, ResultProcessor(self.queue, experiment), self.custom,
                          watch.stop_reason if watch else None)
        if ran.kind == "done":
            return _Outcome(ExperimentStatus.DONE, "done", None, ran.report)
        outcome = (ran.stop_kind or "cancelled") if ran.kind == "stopped" else ran.kind
        return _Outcome(ExperimentStatus.ERROR, outcome, ran.error, ran.report)

    def _call_inline(self, experiment: Experiment) -> _Outcome:
        assert self.function is not None
        processor = ResultProcessor(self.queue, experiment)
        try:
            returned = self.function(dict(experiment.keyfields), processor, dict(self.custom))
        except (LeaseLostError, DatabaseUnavailableError):
            raise
        except Exception:
            return _Outcome(ExperimentStatus.ERROR, "error", traceback.format_exc())
        status, error = final_status(returned)
        return _Outcome(status, status.value, error)

    def _call_isolated(self, experiment: Experiment, watch: Watch | None) -> _Outcome:
        """Run the function in a child process under the timeout and memory limit."""

        function = self.function
        assert function is not None

        def target() -> Any:
            try:
                return function(dict(experiment.keyfields), ResultProcessor(self.queue, experiment),
                                     dict(self.custom))
            finally:  # the child's own connections, closed politely before os._exit
                self.queue.close()
                self.queue.db.dispose()

        child = run_in_child(target, timeout=self.execution.timeout, memory_bytes=self.execution.memory_bytes,
                             should_stop=watch.stop_reason if watch else None)
        usage = AttemptReport(child.cpu_seconds, child.max_rss_mb, child.duration_seconds)
        if child.kind == "returned":
            status, error = final_status(child.value)
            return _Outcome(status, status.value, error, usage)
        outcome = {"raised": "error", "crashed": "error", "stopped": child.stop_kind or "cancelled"}.get(
            child.kind, child.kind)
        return _Outcome(ExperimentStatus.ERROR, outcome, child.error, usage)

    def _hand_back(self, experiment: Experiment, reason: str) -> None:
        logger.warning("experiment %s handed back: %s", experiment.id, reason)
        if not self.recovery.hand_back(experiment, reason=reason):
            logger.warning("experiment %s was no longer ours when handing it back", experiment.id)


class _UsageMeter:
    """CPU seconds and wall clock of this process from now on; its peak RSS so far."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._cpu = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))

    def read(self) -> AttemptReport:
        now = resource.getrusage(resource.RUSAGE_SELF)
        return AttemptReport(cpu_seconds=_cpu_seconds(now) - self._cpu, max_rss_mb=now.ru_maxrss / 1024,
                             duration_seconds=time.monotonic() - self._started)


def _cpu_seconds(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _take(budget: Any) -> bool:
    with budget.get_lock():
        if budget.value <= 0:
            return False
        budget.value -= 1
        return True
