"""Section 4 of scripts/bench: the failure path (``--sections failure``; not in the default run).

a. Heartbeat cost: one executor runs one long experiment with a short ``heartbeat_seconds``;
   every beat (one fenced UPDATE + one SELECT in one transaction) is counted and timed, and the
   load at the defaults (one beat per 30 s per executor) is derived from it.
b. Reclaim delay: an executor is ``kill -9``-ed at a random phase of its heartbeat cycle while
   it runs the one lost row of a table; a second executor takes the row back once the lease
   expired. Two rescuers, each on its own table: a busy peer (it has other experiments to run
   and scans for expired leases every ``heartbeat_seconds`` between claims) and an idle one (no
   other work: it waits for the lease of a silent executor). All scenarios of all backends run
   at once, each in its own process, since they mostly wait. Defaults: lease 120 s, heartbeat
   30 s; ``--quick``: lease 6 s, heartbeat 1.5 s.
c. No-op throughput with heartbeats on (``PyExperimenter.execute``) and off (``Executor(...,
   heartbeats=False)`` run by ``run_processes``), 1 and 4 executor processes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import multiprocessing
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from py_experimenter.config import ExecutionSpec
from py_experimenter.db.database import Database
from py_experimenter.db.schema import DateTime
from py_experimenter.executor import Executor, ExperimentFunction
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.heartbeat import Heartbeat, Watch
from py_experimenter.processes import run_processes
from py_experimenter.queue import ExperimentQueue, WorkerIdentity

FORK = multiprocessing.get_context("fork")
DEFAULTS = ExecutionSpec()
PROBE_INTERVAL = 0.5  # heartbeat_seconds while counting beats
THROUGHPUT_JOBS = (1, 4)
RESCUERS = ("busy", "idle")
FLEET = 1000  # executors in the derived load figure


class TablesLike(Protocol):
    """What this section needs of ``bench.Tables``."""

    def new(self, backend: str, keyfields: dict[str, Any]) -> PyExperimenter: ...

    def drop(self, experimenter: PyExperimenter) -> None: ...


@dataclass(frozen=True)
class Settings:
    quick: bool
    lease: float  # lease_seconds of the reclaim runs
    heartbeat: float  # heartbeat_seconds of the reclaim runs
    probe_seconds: float  # length of the experiment whose beats are counted
    filler_seconds: float  # length of the busy rescuer's other experiments
    rows: int  # rows per throughput run
    repeat: int


def settings(quick: bool, rows: int, repeat: int) -> Settings:
    if quick:
        return Settings(True, 6.0, 1.5, 4.0, 0.25, rows, repeat)
    return Settings(False, DEFAULTS.lease_seconds, DEFAULTS.heartbeat_seconds, 20.0, 1.0, rows, repeat)


@dataclass(frozen=True)
class BeatCost:
    beats: int
    seconds: float  # how long the experiment ran
    rate: float  # beats (= writes) per second, from the first to the last beat
    median: float  # seconds per beat transaction, measured in the executor
    p95: float


@dataclass(frozen=True)
class Reclaim:
    beat_age: float  # seconds since the victim's last beat at the kill (DB clock)
    lease_left: float  # lease_until - now at the kill (DB clock)
    wall: float  # kill -> the rescuer's experiment function starts (wall clock)
    db: float  # kill -> started_at of attempt 2 (DB clock)
    after_expiry: float  # started_at of attempt 2 - lease_until (DB clock)
    note: str = ""


@dataclass
class FailureResults:
    settings: Settings | None = None
    beats: dict[str, BeatCost] = field(default_factory=dict)
    reclaim: dict[tuple[str, str], Reclaim | str] = field(default_factory=dict)
    throughput: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    load: tuple[float, float] = (math.nan, math.nan)  # 1-min load average at the start / end


def rows_keyfield(rows: int) -> dict[str, Any]:
    return {"i": {"type": "INT", "values": {"start": 0, "stop": rows}}}


def filled_table(tables: TablesLike, backend: str, rows: int) -> PyExperimenter:
    experimenter = tables.new(backend, rows_keyfield(rows))
    experimenter.fill_table_from_config()
    experimenter.db.dispose()  # the executors (forked or not) open their own connections
    return experimenter


def executor_for(experimenter: PyExperimenter, function: ExperimentFunction, spec: ExecutionSpec, name: str,
                 heartbeats: bool = True) -> Executor:
    """An executor like ``PyExperimenter._executor`` builds, with the given execution settings."""
    queue = ExperimentQueue(experimenter.db, WorkerIdentity(name=name), lease_seconds=spec.lease_seconds)
    return Executor(queue, function, experimenter.config.custom, execution=spec, heartbeats=heartbeats)


def as_datetime(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


# -- a. heartbeat cost ------------------------------------------------------------------------


class TimedHeartbeat(Heartbeat):
    """A heartbeat that times each successful beat transaction."""

    def __init__(self, db: Database, *, lease_seconds: float, interval: float):
        super().__init__(db, lease_seconds=lease_seconds, interval=interval)
        self.starts: list[float] = []
        self.durations: list[float] = []

    def _beat(self, watch: Watch, beat: sa.Update, flag: sa.Select[Any]) -> threading.Event | None:
        start = time.perf_counter()
        event = super()._beat(watch, beat, flag)
        self.durations.append(time.perf_counter() - start)
        self.starts.append(start)
        return event


@dataclass(frozen=True)
class Sleep:
    seconds: float

    def __call__(self, keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
        time.sleep(self.seconds)


def heartbeat_cost(tables: TablesLike, backend: str, s: Settings) -> BeatCost:
    """Count and time the beats of one executor running one experiment of ``probe_seconds``."""
    experimenter = filled_table(tables, backend, 1)
    spec = dataclasses.replace(experimenter.config.execution, lease_seconds=20 * PROBE_INTERVAL,
                               heartbeat_seconds=PROBE_INTERVAL)
    executor = executor_for(experimenter, Sleep(s.probe_seconds), spec, "bench-heartbeat")
    heartbeat = TimedHeartbeat(experimenter.db, lease_seconds=spec.lease_seconds, interval=PROBE_INTERVAL)
    executor.heartbeat = heartbeat
    if executor.run() != 1:
        raise RuntimeError(f"{backend}: the heartbeat probe did not run its experiment")
    tables.drop(experimenter)
    times, starts = sorted(heartbeat.durations), heartbeat.starts
    if len(times) < 2:
        raise RuntimeError(f"{backend}: fewer than 2 heartbeats in {s.probe_seconds} s")
    return BeatCost(len(times), s.probe_seconds, (len(starts) - 1) / (starts[-1] - starts[0]),
                    statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)])


# -- b. reclaim delay -------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """The experiment function of the reclaim runs: row i=0 is the one that gets lost, the
    others are the busy rescuer's other work."""

    started: Any  # event: row 0 started in this process
    at: Any  # shared double: time.time() when it did
    hold: bool  # the victim: keep running row 0 until killed
    filler_seconds: float = 0.0

    def __call__(self, keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
        if keyfields["i"] != 0:
            if not self.started.is_set():
                time.sleep(self.filler_seconds)
            return
        self.at.value = time.time()
        self.started.set()
        if self.hold:
            time.sleep(10**6)


def new_probe(hold: bool, filler_seconds: float = 0.0) -> Probe:
    return Probe(FORK.Event(), FORK.Value("d", 0.0), hold, filler_seconds)


def start_executor(experimenter: PyExperimenter, probe: Probe, spec: ExecutionSpec, name: str,
                   max_experiments: int = -1) -> Any:
    executor = executor_for(experimenter, probe, spec, name)
    process = FORK.Process(target=executor.run, args=(max_experiments,), name=f"bench-{name}", daemon=True)
    process.start()
    return process


def lease_state(db: Database) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(lease_until, heartbeat_at, now) of the running row, all on the database clock."""
    main = db.schema.main
    query = sa.select(main.c.lease_until, main.c.heartbeat_at, sa.type_coerce(db.dialect.now(), DateTime)).where(
        main.c.status == "running")
    with db.begin() as conn:
        row = conn.execute(query).one()
    return as_datetime(row[0]), as_datetime(row[1]), as_datetime(row[2])


def second_attempt_start(db: Database) -> dt.datetime:
    attempts = db.schema.attempts
    with db.begin() as conn:
        return as_datetime(conn.execute(sa.select(attempts.c.started_at).where(attempts.c.attempt == 2)).scalar_one())


def kill_victim(experimenter: PyExperimenter, spec: ExecutionSpec) -> tuple[float, dt.datetime, dt.datetime,
                                                                             dt.datetime]:
    """Start the victim, kill -9 it at a random phase of its first heartbeat cycle; returns the
    kill's wall-clock time, the kill on the DB clock, and the row's lease_until and heartbeat_at."""
    probe = new_probe(hold=True)
    victim = start_executor(experimenter, probe, spec, "victim", max_experiments=1)
    if not probe.started.wait(60):
        victim.kill()
        raise RuntimeError("the victim did not start its experiment within 60 s")
    time.sleep(random.uniform(0, spec.heartbeat_seconds))
    killed = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    before_query = time.time()
    lease_until, heartbeat_at, now = lease_state(experimenter.db)
    return killed, now - dt.timedelta(seconds=before_query - killed), lease_until, heartbeat_at


def idle_rescue(experimenter: PyExperimenter, spec: ExecutionSpec, probe: Probe, stale_at: float) -> tuple[Any, str]:
    """An idle executor started at the kill; if it leaves without waiting (the lease still
    looks alive), a second one started once the row counts as silent (2 heartbeats)."""
    started = time.time()
    first = start_executor(experimenter, probe, spec, "idle-rescuer")
    first.join(max(0.0, stale_at - time.time()))
    if first.is_alive() or probe.started.is_set():
        return first, "started at the kill; it waited for the lease"
    note = (f"one started at the kill left after {time.time() - started:.1f} s without running it (the last "
            f"beat was < 2 x heartbeat_seconds old); a second one started {stale_at - started:.1f} s after the kill")
    time.sleep(max(0.0, stale_at - time.time()))
    return start_executor(experimenter, probe, spec, "idle-rescuer-2"), note


def measure_reclaim(experimenter: PyExperimenter, spec: ExecutionSpec, rescuer: str, filler_seconds: float) -> Reclaim:
    """Kill the executor of row 0 and time until another executor runs it again."""
    killed, killed_db, lease_until, heartbeat_at = kill_victim(experimenter, spec)
    probe = new_probe(hold=False, filler_seconds=filler_seconds)
    if rescuer == "busy":
        process, note = start_executor(experimenter, probe, spec, "busy-rescuer"), "started at the kill"
    else:
        silent_for = (killed_db - heartbeat_at).total_seconds()
        stale_at = killed + 2 * spec.heartbeat_seconds - silent_for + 0.2
        process, note = idle_rescue(experimenter, spec, probe, stale_at)
    if not probe.started.wait(spec.lease_seconds + 3 * spec.heartbeat_seconds + 30):
        process.kill()
        raise RuntimeError(f"no {rescuer} rescuer took the row back")
    process.join(60)
    if process.is_alive():
        process.kill()
    restarted = second_attempt_start(experimenter.db)
    return Reclaim(beat_age=(killed_db - heartbeat_at).total_seconds(),
                   lease_left=(lease_until - killed_db).total_seconds(), wall=probe.at.value - killed,
                   db=(restarted - killed_db).total_seconds(),
                   after_expiry=(restarted - lease_until).total_seconds(), note=note)


def _reclaim_child(experimenter: PyExperimenter, spec: ExecutionSpec, rescuer: str, filler_seconds: float,
                   conn: Any) -> None:
    random.seed()  # forked children would otherwise share the parent's random phase
    try:
        conn.send(measure_reclaim(experimenter, spec, rescuer, filler_seconds))
    except Exception as err:
        conn.send(f"failed: {type(err).__name__}: {err}")


def reclaim_all(tables: TablesLike, backends: list[str], s: Settings) -> dict[tuple[str, str], Reclaim | str]:
    """Every (backend, rescuer) scenario at once, each in its own process on its own table."""
    filler_rows = math.ceil((s.lease + 3 * s.heartbeat) / s.filler_seconds) + 10
    runs = []
    for backend in backends:
        for rescuer in RESCUERS:
            experimenter = filled_table(tables, backend, 1 + filler_rows if rescuer == "busy" else 1)
            spec = dataclasses.replace(experimenter.config.execution, lease_seconds=s.lease,
                                       heartbeat_seconds=s.heartbeat)
            receive, send = FORK.Pipe(duplex=False)
            process = FORK.Process(target=_reclaim_child, args=(experimenter, spec, rescuer, s.filler_seconds, send))
            process.start()
            runs.append(((backend, rescuer), experimenter, process, receive))
    results: dict[tuple[str, str], Reclaim | str] = {}
    for key, experimenter, process, receive in runs:
        results[key] = receive.recv() if receive.poll(s.lease * 2 + s.heartbeat * 6 + 120) else "no result (timeout)"
        process.join(10)
        if process.is_alive():
            process.kill()
        tables.drop(experimenter)
    return results


# -- c. throughput with heartbeats on / off -----------------------------------------------------


def noop(keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
    return None


def run_without_heartbeats(experimenter: PyExperimenter, jobs: int) -> int:
    """Like ``execute(noop, n_jobs=jobs)``, but the executor has no heartbeat thread."""
    execution = experimenter.config.execution
    queue = ExperimentQueue(experimenter.db, WorkerIdentity(name=experimenter.name),
                            lease_seconds=execution.lease_seconds)
    executor = Executor(queue, noop, experimenter.config.custom, execution=execution, heartbeats=False)
    return run_processes(executor, jobs)


def rate(tables: TablesLike, backend: str, rows: int, heartbeats: bool, jobs: int) -> float:
    """No-op experiments per second on a fresh table of ``rows`` rows."""
    experimenter = filled_table(tables, backend, rows)
    start = time.perf_counter()
    ran = experimenter.execute(noop, n_jobs=jobs) if heartbeats else run_without_heartbeats(experimenter, jobs)
    elapsed = time.perf_counter() - start
    tables.drop(experimenter)
    if ran != rows:  # e.g. the server was restarted meanwhile: a claim's connection was lost
        print(f"  !! {backend}: ran {ran} of {rows} experiments; this run's figure is not comparable",
              file=sys.stderr, flush=True)
    return ran / elapsed


def heartbeat_throughput(tables: TablesLike, backend: str, jobs: int, s: Settings) -> tuple[float, float]:
    """(heartbeats on, off) experiments per second, best of ``repeat`` (at least 2), in
    alternating order."""
    best = {True: 0.0, False: 0.0}
    for i in range(max(2, s.repeat)):
        for heartbeats in (True, False) if i % 2 == 0 else (False, True):
            best[heartbeats] = max(best[heartbeats], rate(tables, backend, s.rows, heartbeats, jobs))
    return best[True], best[False]


# -- the run and the report ---------------------------------------------------------------------


def run_failure(tables: TablesLike, backends: list[str], s: Settings, results: FailureResults,
                log: Callable[[str], None]) -> None:
    results.settings, results.load = s, (os.getloadavg()[0], math.nan)
    for backend in backends:
        results.beats[backend] = heartbeat_cost(tables, backend, s)
        log(f"heartbeat cost {backend}: {results.beats[backend].beats} beats")
    start = time.perf_counter()
    results.reclaim = reclaim_all(tables, backends, s)
    log(f"reclaim ({len(backends)} backends x {len(RESCUERS)} rescuers at once): "
        f"{time.perf_counter() - start:.0f} s")
    for backend in backends:
        for jobs in THROUGHPUT_JOBS:
            results.throughput[backend, jobs] = heartbeat_throughput(tables, backend, jobs, s)
            on, off = results.throughput[backend, jobs]
            log(f"heartbeats on/off {backend} x{jobs}: {on:.0f} / {off:.0f} per s")
    results.load = (results.load[0], os.getloadavg()[0])


def report_beats(results: FailureResults) -> list[str]:
    s = results.settings
    assert s is not None
    per_executor = 1 / DEFAULTS.heartbeat_seconds
    out = [f"4a. Heartbeat cost: one executor, one experiment sleeping {s.probe_seconds:g} s, "
           f"heartbeat_seconds={PROBE_INTERVAL:g} (each beat: fenced UPDATE + SELECT, one transaction)",
           f"   {'backend':<11}{f'beats in {s.probe_seconds:g} s':>15}{'writes/s':>10}{'expected':>10}"
           f"{'median ms':>11}{'p95 ms':>8}"
           f"{f'{FLEET:,} executors at defaults':>30}"]
    for backend, cost in results.beats.items():
        fleet_ms = FLEET * per_executor * cost.median * 1e3
        out.append(f"   {backend:<11}{cost.beats:>15}{cost.rate:>10.2f}{1 / PROBE_INTERVAL:>10.2f}"
                   f"{cost.median * 1e3:>11.2f}{cost.p95 * 1e3:>8.2f}"
                   f"{f'{FLEET * per_executor:.1f} beats/s = {fleet_ms:.0f} ms/s':>30}")
    out.append(f"   at the defaults one executor writes 1/{DEFAULTS.heartbeat_seconds:g} = {per_executor:.3f} times/s "
               "while an experiment runs; writes/s from the spacing of the first and last beat; ms are round trips "
           "timed in the executor (an upper bound on DB time)")
    return out


def reclaim_bounds(s: Settings, rescuer: str) -> tuple[float, float]:
    """Analytical range of kill -> re-claim: the lease runs lease_seconds from the last beat,
    which was 0 to heartbeat_seconds before the kill; a busy peer scans once per heartbeat
    (plus one of its experiments) after that; an idle one sleeps at most 0.05 s past expiry."""
    extra = s.heartbeat + s.filler_seconds if rescuer == "busy" else 0.05
    return s.lease - s.heartbeat, s.lease + extra


def report_reclaim(results: FailureResults) -> list[str]:
    s = results.settings
    assert s is not None
    mode = ("--quick: lease 6 s / heartbeat 1.5 s, not the defaults" if s.quick
            else "the defaults: lease 120 s / heartbeat 30 s")
    out = [f"4b. Reclaim delay after kill -9 ({mode}); busy rescuer: other experiments of "
           f"{s.filler_seconds:g} s; all scenarios at once",
           f"   {'backend':<11}{'rescuer':<8}{'beat age':>9}{'lease left':>11}{'kill->run':>10}{'kill->DB':>9}"
           f"{'after expiry':>13}{'bound s':>14}  check"]
    notes = []
    for (backend, rescuer), r in results.reclaim.items():
        if isinstance(r, str):
            out.append(f"   {backend:<11}{rescuer:<8}{r}")
            continue
        low, high = reclaim_bounds(s, rescuer)
        ok = low - 0.5 <= r.wall <= high + 0.5 and abs(r.wall - r.db) < 0.5
        out.append(f"   {backend:<11}{rescuer:<8}{r.beat_age:>9.2f}{r.lease_left:>11.2f}{r.wall:>10.2f}{r.db:>9.2f}"
                   f"{r.after_expiry:>13.2f}{f'{low:g}..{high:g}':>14}  {'ok' if ok else 'OUTSIDE'}")
        notes.append(f"   {backend} {rescuer}: {r.note}")
    out += ["   (seconds; beat age / lease left at the kill and after expiry on the DB clock; kill->run wall clock "
            "until the rescuer's function starts; bound: lease - heartbeat .. lease "
            "(+ heartbeat + one experiment for a busy peer))", *notes]
    return out


def report_failure(results: FailureResults) -> list[str]:
    if results.settings is None:
        return []
    out = [*report_beats(results), "", *report_reclaim(results), ""]
    out += [f"4c. No-op experiments per second, heartbeats on vs off ({results.settings.rows:,} rows per run)",
            f"   {'backend':<11}{'jobs':>5}{'on/s':>9}{'off/s':>9}{'on/off':>9}"]
    for (backend, jobs), (on, off) in results.throughput.items():
        out.append(f"   {backend:<11}{jobs:>5}{on:>9.0f}{off:>9.0f}{on / off:>8.0%}")
    start, end = results.load
    ending = "(the section did not finish)" if math.isnan(end) else f"{end:.1f} at its end"
    out.append(f"   1-min load average {start:.1f} at the start of section 4, {ending}")
    return out
