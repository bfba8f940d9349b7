"""Executor processes on this node: ``n_jobs`` forked executors sharing one experiment budget.

The parent forwards SIGTERM / SIGINT to its children, which shut down gracefully, and reports
children that exited abnormally.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from py_experimenter.adapters.contract import AdapterUnavailableError
from py_experimenter.exceptions import DatabaseUnavailableError, PyExperimenterError
from py_experimenter.executor import Executor
from py_experimenter.shutdown import SIGNALS

logger = logging.getLogger("py-experimenter")


def run_processes(executor: Executor, n_jobs: int, max_experiments: int = -1) -> int:
    """Run ``n_jobs`` executor processes on this node; returns how many experiments ran."""
    if n_jobs <= 1:
        return executor.run(max_experiments)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    budget = ctx.Value("l", max_experiments) if max_experiments >= 0 else None
    counter = ctx.Value("l", 0)
    executor.queue.close()
    executor.queue.db.dispose()
    processes = [
        ctx.Process(target=_child, args=(executor, budget, counter), name=f"py-experimenter-{i}")
        for i in range(n_jobs)
    ]
    for process in processes:
        process.start()
    with _forwarding_signals(processes):
        for process in processes:
            process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise PyExperimenterError(
            f"executor processes {failed} exited abnormally; see the log above. Experiments they "
            "had claimed stay 'running' until their lease expires"
        )
    return int(counter.value)


@contextlib.contextmanager
def _forwarding_signals(processes: list[Any]) -> Iterator[None]:
    """Pass SIGTERM / SIGINT on to the executor processes (they shut down gracefully)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        for process in processes:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _child(executor: Executor, budget: Any, counter: Any) -> None:
    try:
        ran = executor.run(-1, budget)
    except (DatabaseUnavailableError, AdapterUnavailableError) as err:
        logger.error("%s", err)
        sys.exit(3)
    with counter.get_lock():
        counter.value += ran
