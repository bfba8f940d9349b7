"""K executors as one Slurm job array, submitted through submitit (``py-experimenter launch --on slurm``).

The user chooses K, independent of the number of experiments (so ``MaxArraySize`` never bites):
each array task runs one executor, which drains the table until it is empty or its walltime
is near. The executor runs *in* the task's Python process (submitit's job entry point calls
:func:`run_executor`), not as a child of it (a ``submitit.helpers.CommandFunction``): submitit's
own handler of its pre-timeout signal (SIGUSR2) requeues the job, or, when it judges the job
timed out and not checkpointable, raises, and ``CommandFunction`` then kills its child (seen on
Slurm 22.05 with submitit 1.5.4): the running experiment would die instead of being handed back.
In-process, the executor's handlers replace submitit's while it runs (SIGUSR2 / SIGTERM hand the
running experiment back as ``interrupted``, see :mod:`py_experimenter.shutdown`), and
:func:`run_executor` replaces them before and after it (a signal then only stops the executor
from claiming). Inside the job the executor sees
``SLURM_ARRAY_JOB_ID`` / ``SLURM_ARRAY_TASK_ID`` (the attempts record ``<array>_<task>``) and
reads the job's end time (walltime awareness, :mod:`py_experimenter.deadline`).

Launching does not block: it prints the job id, how to watch and how to cancel.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from py_experimenter.exceptions import LaunchError
from py_experimenter.launchers.command import ExecutorCommand, require_extra
from py_experimenter.launchers.records import DEFAULT_LOG_DIR, new_launch
from py_experimenter.launchers.slurm_checks import (
    check_slurm,
    first_line,
    parse_mem,
    parse_sbatch_option,
    parse_time_limit,
    slurm_states,
)

__all__ = ["SlurmOptions", "add_arguments", "alive_by_target", "alive_record", "launch_from_args", "launch_slurm",
           "run_executor", "slurm_options", "stop_record", "submit"]

#: The time limit per executor when neither the user nor the partition sets one (minutes).
DEFAULT_TIME_MINUTES = 60
#: Seconds before the time limit at which Slurm sends SIGUSR2 (submitit's ``signal_delay_s``).
DEFAULT_SIGNAL_SECONDS = 90
#: Seconds ``stop_record`` waits for signalled executors to leave before it cancels the rest.
DEFAULT_STOP_SECONDS = 60.0
#: Task states in which an executor has yet to start or still runs.
ALIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"})


def run_executor(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """One array task's executor: ``py-experimenter run ...`` (``argv`` without ``python -m
    py_experimenter``) in this process; returns its exit code.

    Until the executor installs its own signal handlers (and after it removed them) SIGUSR2 /
    SIGTERM set the executor's deadline to now, so it claims nothing and leaves, instead of
    submitit's requeue.
    """
    os.environ.update(env)

    def stop_claiming(signum: int, _frame: FrameType | None) -> None:
        os.environ["PY_EXPERIMENTER_DEADLINE"] = repr(time.time())
        print(f"py-experimenter: {signal.Signals(signum).name} outside an experiment: no experiment will be "
              "claimed", file=sys.stderr, flush=True)

    for signum in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(signum, stop_claiming)
    from py_experimenter.cli import main

    return main(list(argv))


@dataclass(frozen=True)
class SlurmOptions:
    """What every array task asks Slurm for (validated by :func:`slurm_options`)."""

    partition: str | None = None
    time_minutes: int | None = None
    cpus: int = 1
    mem: str | None = None
    gpus: int | str | None = None
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    sbatch: dict[str, str | bool] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    signal_seconds: int = DEFAULT_SIGNAL_SECONDS
    job_name: str | None = None


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LaunchError(f"{name}={value!r}: expected a whole number of at least 1")
    return value


def slurm_options(*, partition: str | None = None, time_limit: int | float | str | None = None,
                  cpus_per_executor: int = 1, mem: int | float | str | None = None, gpus: int | str | None = None,
                  array_parallelism: int | None = None, account: str | None = None, qos: str | None = None,
                  sbatch: Mapping[str, Any] | Sequence[str] | None = None, setup: Sequence[str] | None = None,
                  signal_seconds: int = DEFAULT_SIGNAL_SECONDS, job_name: str | None = None) -> SlurmOptions:
    """Checked :class:`SlurmOptions`; :class:`LaunchError` for a bad time limit, memory size or count.

    ``sbatch`` is a mapping of extra sbatch options (``{"constraint": "a100"}``; True for a flag)
    or a list of ``KEY=VALUE`` texts; ``gpus`` a count or ``TYPE:COUNT``.
    """
    extra: dict[str, str | bool] = {}
    if isinstance(sbatch, Mapping):
        for key, value in sbatch.items():
            name, _ = parse_sbatch_option(str(key))
            extra[name] = value if value is True else str(value)
    elif sbatch:
        extra.update(parse_sbatch_option(text) for text in sbatch)
    if gpus is not None and not isinstance(gpus, int):
        text = str(gpus).strip()
        if text.isdigit():
            gpus = int(text)
        elif not text or text.count(":") != 1 or not text.split(":")[1].isdigit():
            raise LaunchError(f"gpus={gpus!r}: expected a number of GPUs per executor (1) or TYPE:COUNT (a100:1)")
    if isinstance(gpus, int):
        gpus = None if gpus == 0 else _positive("gpus", gpus)
    if not isinstance(signal_seconds, int) or isinstance(signal_seconds, bool) or signal_seconds < 0:
        raise LaunchError(f"signal_seconds={signal_seconds!r}: expected whole seconds (0 or more)")
    return SlurmOptions(
        partition=partition, time_minutes=None if time_limit is None else parse_time_limit(time_limit),
        cpus=_positive("cpus_per_executor", cpus_per_executor), mem=None if mem is None else parse_mem(mem),
        gpus=gpus, array_parallelism=None if array_parallelism is None else _positive("array_parallelism",
                                                                                     array_parallelism),
        account=account, qos=qos, sbatch=extra, setup=tuple(setup or ()), signal_seconds=signal_seconds,
        job_name=job_name,
    )


def _parameters(options: SlurmOptions, time_minutes: int, executors: int, job_name: str) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for ``options``."""
    extra: dict[str, Any] = dict(options.sbatch)
    if options.mem is not None:
        extra.setdefault("mem", options.mem)  # Slurm's own form; submitit's mem_gb would round it
    parameters: dict[str, Any] = {
        "name": job_name, "timeout_min": time_minutes, "cpus_per_task": options.cpus, "tasks_per_node": 1,
        "nodes": 1, "slurm_signal_delay_s": options.signal_seconds,
        "slurm_array_parallelism": options.array_parallelism or executors,
        "slurm_additional_parameters": extra, "slurm_setup": list(options.setup),
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if isinstance(options.gpus, int):
        parameters["gpus_per_node"] = options.gpus
    elif options.gpus:
        parameters["slurm_gres"] = f"gpu:{options.gpus}"
    if options.account:
        parameters["slurm_account"] = options.account
    if options.qos:
        parameters["slurm_qos"] = options.qos
    return parameters


def _table_name(command: ExecutorCommand) -> str:
    from py_experimenter.config import load_experiment_config

    return load_experiment_config(command.config, table_name=command.table, database_name=command.database).table.name


def submit(command: ExecutorCommand, executors: int, options: SlurmOptions, run_dir: Path,
           out: TextIO | None = None, python: str | None = None, watch_hint: bool = True) -> dict[str, Any]:
    """Submit ``executors`` executors running ``command`` as one job array; print the job id, how
    to watch and how to cancel to ``out``; return the record's backend fields (job ids, tasks,
    submitit's folder with the task logs).

    Everything is checked first (submitit installed, Slurm reachable, the partition known, the
    experiment file readable): a :class:`LaunchError` means nothing was submitted.
    """
    out = out if out is not None else sys.stdout
    executors = _positive("executors", executors)
    require_extra("submitit", "slurm", "launching on Slurm")
    partition = check_slurm(options.partition)
    table = _table_name(command)
    time_minutes = partition.time_limit(options.time_minutes, DEFAULT_TIME_MINUTES)
    import submitit

    folder = (Path(run_dir) / "submitit").absolute()
    folder.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=shlex.quote(python),
                                     slurm_max_num_timeout=0)
    executor.update_parameters(**_parameters(options, time_minutes, executors, options.job_name or f"pyexp-{table}"))
    argv = command.argv(python)[3:]  # without "python -m py_experimenter": run in the task's process
    submitted_at = time.time()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal; it is in the error
            jobs = executor.map_array(run_executor, [argv] * executors, [dict(command.env)] * executors)
    except Exception as err:  # submitit wraps sbatch's refusal in FailedJobError / FailedSubmissionError
        raise LaunchError(f"sbatch refused the job array: {_slurm_message(err)}") from None
    tasks = [job.job_id for job in jobs]
    array = tasks[0].split("_")[0]
    record = {
        "job_ids": [array], "tasks": tasks, "array_size": executors, "table": table,
        "partition": options.partition or partition.name, "time_minutes": time_minutes, "cpus": options.cpus,
        "folder": str(folder), "submitted_at": submitted_at, "argv": command.argv(python),
    }
    _report(record, command, out, watch_hint)
    return record


def _slurm_message(err: BaseException) -> str:
    """Slurm's own error lines from submitit's exception text (``sbatch: error: ...``), as one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    if errors:
        return "; ".join(errors)
    return first_line(str(err)) if lines else type(err).__name__


def _report(record: dict[str, Any], command: ExecutorCommand, out: TextIO, watch: bool) -> None:
    array, folder = record["job_ids"][0], record["folder"]
    single = "_" not in record["tasks"][0]
    kind = "job" if single else "job array"
    logs = f"{folder}/{array}_0_log.err" if single else f"{folder}/{array}_<task>_0_log.err"
    print(f"slurm: submitted {kind} {array}: {record['array_size']} executors on partition {record['partition']} "
          f"({record['time_minutes']} min, {record['cpus']} CPU each) for table {record['table']!r}", file=out)
    print(f"  logs:   {logs}", file=out)
    if watch:
        print(f"  watch:  py-experimenter status {shlex.quote(command.config)}"
              + (f" --credentials {shlex.quote(command.credentials)}" if command.credentials else ""), file=out)
    print(f"  slurm:  squeue -j {array} (its tasks), scancel {array} (cancel: running experiments are handed back)",
          file=out, flush=True)


def launch_slurm(config: str | os.PathLike[str], executors: int = 1, function: str | None = None,
                 credentials: str | os.PathLike[str] | None = None, table: str | None = None,
                 database: str | None = None, *, partition: str | None = None,
                 time_limit: int | float | str | None = None, cpus_per_executor: int = 1,
                 mem: int | float | str | None = None, gpus: int | str | None = None,
                 array_parallelism: int | None = None, account: str | None = None, qos: str | None = None,
                 sbatch: Mapping[str, Any] | Sequence[str] | None = None, setup: Sequence[str] | None = None,
                 run_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 log_dir: str | os.PathLike[str] = DEFAULT_LOG_DIR, python: str | None = None,
                 signal_seconds: int = DEFAULT_SIGNAL_SECONDS, job_name: str | None = None,
                 out: TextIO | None = None) -> dict[str, Any]:
    """Submit ``executors`` executors of ``config``'s table as one Slurm job array and return at once.

    :param function: the experiment function, ``MODULE:CALLABLE`` or ``path/file.py:CALLABLE``.
    :param time_limit: per executor: minutes, ``"90m"``, ``"2h"``, ``"HH:MM:SS"`` (default: the
        partition's default time, else 60 minutes).
    :param mem: per executor, ``"4G"``; ``gpus``: a count or ``"a100:1"``.
    :param array_parallelism: at most this many executors at once (default: all).
    :param sbatch: further sbatch options, ``{"constraint": "a100"}``; ``setup``: shell lines run
        before the executor (``module load ...``, ``source venv/bin/activate``).
    :param run_args: further ``py-experimenter run`` options, e.g. ``["--expected-seconds", "600"]``.
    :param signal_seconds: Slurm sends SIGUSR2 this long before the time limit; the executor
        then hands its running experiment back within its grace period.
    :returns: the launch record (``job_ids``, ``tasks``, ``folder`` with submitit's logs), also
        written to ``<log_dir>/<table>/launch-slurm-<stamp>.json`` (its path under ``"record_path"``)
        so that ``launch CONFIG --on slurm --stop`` finds it; pass it to :func:`stop_record` /
        :func:`alive_record`.
    :raises LaunchError: nothing was submitted (Slurm unreachable, unknown partition, bad value).
    """
    command = ExecutorCommand.create(config, credentials, function, table=table, database=database,
                                     run_args=run_args, env=env)
    options = slurm_options(partition=partition, time_limit=time_limit, cpus_per_executor=cpus_per_executor,
                            mem=mem, gpus=gpus, array_parallelism=array_parallelism, account=account, qos=qos,
                            sbatch=sbatch, setup=setup, signal_seconds=signal_seconds, job_name=job_name)
    launch = new_launch(log_dir, _table_name(command), "slurm")
    return launch.run(lambda run_dir: submit(command, executors, options, run_dir, out, python))


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The ``launch --on slurm`` options."""
    group.add_argument("--partition", help="Slurm partition (default: the cluster's default partition)")
    group.add_argument("--time", dest="slurm_time", metavar="LIMIT",
                       help="time limit per executor: minutes, 90m, 2h, HH:MM:SS (default: the partition's, "
                            f"else {DEFAULT_TIME_MINUTES} min)")
    group.add_argument("--cpus", dest="slurm_cpus", type=int, default=1, metavar="N",
                       help="CPUs per executor (default 1)")
    group.add_argument("--mem", dest="slurm_mem", metavar="SIZE", help="memory per executor, e.g. 4G")
    group.add_argument("--gpus", dest="slurm_gpus", metavar="N|TYPE:N", help="GPUs per executor")
    group.add_argument("--array-parallelism", type=int, metavar="N",
                       help="at most N executors of the array at once (default: all)")
    group.add_argument("--account", help="Slurm account to charge")
    group.add_argument("--qos", help="Slurm quality of service")
    group.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                       help="a further sbatch option, e.g. --sbatch constraint=a100 (repeatable)")
    group.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before the executor, e.g. 'module load python' (repeatable)")
    group.add_argument("--slurm-python", metavar="PATH",
                       help="the Python that runs the executors in the jobs (default: the one running this "
                            "command; it must see the same py_experimenter)")
    group.add_argument("--signal-seconds", type=int, default=DEFAULT_SIGNAL_SECONDS, metavar="S",
                       help="Slurm sends SIGUSR2 S seconds before the time limit: the running experiment may "
                            "finish within the run's --grace-seconds, else it is handed back for another job "
                            f"(default {DEFAULT_SIGNAL_SECONDS}; keep it above the grace period)")


def launch_from_args(command: ExecutorCommand, executors: int, args: argparse.Namespace, run_dir: Path,
                     out: TextIO) -> dict[str, Any]:
    """``launch --on slurm``: :func:`submit` with the options of :func:`add_arguments`."""
    options = slurm_options(
        partition=getattr(args, "partition", None), time_limit=getattr(args, "slurm_time", None),
        cpus_per_executor=getattr(args, "slurm_cpus", 1), mem=getattr(args, "slurm_mem", None),
        gpus=getattr(args, "slurm_gpus", None), array_parallelism=getattr(args, "array_parallelism", None),
        account=getattr(args, "account", None), qos=getattr(args, "qos", None),
        sbatch=getattr(args, "sbatch", None) or [], setup=getattr(args, "setup", None) or [],
        signal_seconds=getattr(args, "signal_seconds", DEFAULT_SIGNAL_SECONDS),
    )
    return submit(command, executors, options, run_dir, out, python=getattr(args, "slurm_python", None),
                  watch_hint=False)  # launch prints its own hints


def alive_record(record: dict[str, Any]) -> int:
    """How many executors of the launch still wait to start or run (0 once Slurm forgot them)."""
    return sum(1 for state in slurm_states(list(record.get("job_ids", []))) if state in ALIVE_STATES)


def alive_by_target(record: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    """``{"slurm job ID": (executors submitted, still waiting or running)}`` for ``status``."""
    array = ",".join(record.get("job_ids", [])) or "?"
    try:
        alive: int | None = alive_record(record)
    except LaunchError:  # squeue failing: status shows "?"
        alive = None
    return {f"slurm job {array}": (int(record.get("array_size", len(record.get("tasks", [])))), alive)}


def _scancel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scancel", *args], capture_output=True, text=True, timeout=30, check=False)


def stop_record(record: dict[str, Any], out: TextIO) -> int:
    """Stop the launch's executors; returns how many were still waiting or running.

    Tasks that have not started are cancelled. Running ones get SIGTERM twice (a second apart),
    so each executor hands its running experiment back at once (attempt ``interrupted``, row
    ``created``) and exits; a plain ``scancel`` would SIGKILL them after Slurm's ``KillWait``,
    possibly inside the grace period, and leave the row ``running`` until its lease expires.
    Whatever still runs after ``record["stop_timeout"]`` seconds (default 60) is cancelled.
    """
    job_ids = list(record.get("job_ids", []))
    alive = alive_record(record)
    if not job_ids or alive == 0:
        print(f"slurm: nothing to stop: job {', '.join(job_ids) or '?'} already ended", file=out)
        return 0
    _scancel("--state=PENDING", *job_ids)
    for _ in range(2):  # best effort: tasks that just ended make scancel complain
        _scancel("--signal=TERM", *job_ids)
        time.sleep(1.2)  # more than shutdown.SAME_SIGNAL_WINDOW: the second one hands back now
    deadline = time.monotonic() + float(record.get("stop_timeout") or DEFAULT_STOP_SECONDS)
    while alive_record(record) and time.monotonic() < deadline:
        time.sleep(0.5)
    done = _scancel(*job_ids)
    if done.returncode != 0:
        raise LaunchError(f"scancel {' '.join(job_ids)} failed: {first_line(done.stderr or done.stdout)}")
    print(f"slurm: stopped job {', '.join(job_ids)} ({alive} executors were waiting or running; running "
          "experiments were handed back)", file=out)
    return alive
