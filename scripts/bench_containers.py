"""Container experiments per second: ``PyExperimenter.execute`` (docker adapter) vs a bare docker SDK loop.

Prints figures; asserts nothing. In one run, for each number of jobs, ``--repeat`` rounds alternate the
order of the sides (bare, ours, poll; then poll, ours, bare; ...):

* **bare**: a loop with the docker SDK that, per experiment, creates a results folder, writes
  ``params.json``, creates and starts the probe image in mode ``ok`` with the settings the adapter
  uses (the params JSON as the one argument, the folder at ``/results`` rw, ``network_mode`` none,
  ``mem_limit`` = ``memswap_limit``, the same ``PY_EXPERIMENTER_*`` environment, labels and name),
  ``wait()``s, reads ``results.json`` and ``logs.jsonl`` (``json.loads`` only) and removes the
  container; with J jobs, J forked processes share the N experiments;
* **ours**: a fresh table of N rows (keyfields mode=['ok'], seed=range(N); resultfields echo, argv;
  logtable events(step INT); ``Execution: {adapter: docker, image: probe, memory: ...}``), filled
  outside the timing, then ``PyExperimenter.execute(n_jobs=J)`` timed;
* **poll**: bare, but instead of ``wait()`` it polls ``reload()`` every 0.1 s as the adapter does, so
  ours vs poll is the executor's own cost (database, folders, bookkeeping) with the same engine calls.

Target (issue): ours at most 20 % slower than bare. ``--profile`` (by default only when the target is
missed) runs one more instrumented run of each side with one job: the time spent in each phase (claim,
folder and params, create, start, the wait loop, remove, read-back with its DB writes, finish), the Docker
API calls per experiment, and how long after the container's ``FinishedAt`` each side noticed the exit.
What-ifs (no library change): ``--pin-api-version`` (no ``GET /version`` per Docker client) and
``--poll-seconds`` (the adapter's wait loop interval); ``--sides ours,poll`` skips the slow bare side.

    .venv/bin/python scripts/bench_containers.py [--experiments 40] [--jobs 1,2] [--backend sqlite]

or ``scripts/bench containers ...``. Needs a Docker API (``scripts/podman``; ``DOCKER_HOST`` defaults to
podman's socket when it exists) and the image ``py-experimenter/probe:latest``. ``--backend mysql`` /
``postgresql`` use the test servers (``PY_EXPERIMENTER_TEST_MYSQL_URL`` / ``..._POSTGRES_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import functools
import io
import json
import multiprocessing
import os
import pstats
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from bench import URLS  # scripts/ is on sys.path when a script here runs

from py_experimenter.adapters.docker import LABELS
from py_experimenter.experimenter import PyExperimenter

BACKENDS = ("sqlite", "mysql", "postgresql")
PROBE_IMAGE = "py-experimenter/probe:latest"
PODMAN_SOCKET = "/run/podman/podman.sock"
TARGET = 0.20
FORK = multiprocessing.get_context("fork")
SIDES = ("bare", "ours", "poll")
POLL_SECONDS = 0.1  # the adapter's wait loop interval (py_experimenter.adapters.docker.POLL_SECONDS)
ENDED = frozenset({"exited", "dead", "stopped"})


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    image: str
    memory: str | None
    memory_bytes: int | None
    network: str = "none"
    poll_seconds: float = POLL_SECONDS


@dataclass
class Run:
    """One timed run of one side."""

    side: str
    jobs: int
    experiments: int
    seconds: float
    per_container: list[float]  # bare: create..remove per container; ours: the attempts' duration_seconds
    client_cpu: float  # CPU seconds of this process and its (joined) children
    engine_cpu: float | None  # CPU seconds of the podman API service (and its reaped children)
    startup: float | None = None  # from the start of the run to the start (ours: claim) of its first experiment
    tail: float | None = None  # from the end (ours: finish) of its last experiment to the end of the run

    @property
    def rate(self) -> float:
        return self.experiments / self.seconds


@dataclass
class Profile:
    """Per-phase times, Docker API calls and exit-notice lags of one instrumented run."""

    experiments: int = 0
    seconds: float = 0.0
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    calls: Counter[str] = field(default_factory=Counter)
    call_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lags: list[float] = field(default_factory=list)
    counting: bool = True
    cprofile: str = ""

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase].append(seconds)

    def total(self, phase: str) -> float:
        return sum(self.phases.get(phase, ()))


# -- engine helpers ----------------------------------------------------------------------------


def docker_module() -> Any:
    import docker

    return docker


def engine_pids() -> list[int]:
    """PIDs of the podman API service (``podman system service``), when visible from here."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"podman") and b"system" in argv and b"service" in argv:
            pids.append(int(entry.name))
    return pids


def engine_cpu(pids: list[int]) -> float | None:
    """utime + stime + cutime + cstime of the engine processes, in seconds (None if not visible)."""
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += sum(int(v) for v in fields[11:15])
    return total / ticks


def client_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parse_engine_time(text: Any) -> float | None:
    """An engine timestamp (``2026-11-21T19:11:14.75851391Z``, nanoseconds) as a POSIX time."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", str(text or ""))
    if not match:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    base = dt.datetime.fromisoformat(match[1] + zone).timestamp()
    return base + (float("0." + match[2]) if match[2] else 0.0)


def describe_engine(client: Any) -> str:
    try:
        version = client.version()
        info = client.info()
    except Exception as exc:  # only for the footer
        return f"engine: {exc}"
    name = "podman" if any("podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or ()) \
        else "docker"
    runtime = info.get("DefaultRuntime") or "?"
    cgroups = f"{info.get('CgroupDriver') or '?'} v{info.get('CgroupVersion') or '?'}"
    return f"{name} {version.get('Version')} via its Docker API (API {version.get('ApiVersion')}), {runtime}, {cgroups}"


# -- bare: the docker SDK loop -------------------------------------------------------------------


def bare_one(client: Any, settings: Settings, table: str, top: Path, index: int, poll: bool = False,
             profile: Profile | None = None) -> tuple[float, float, float]:
    """One experiment the way the adapter runs it, without the executor: (start, end) as POSIX times and
    the create..remove seconds.

    ``poll``: instead of ``wait()``, reload every ``poll_seconds`` until the container has ended (the adapter's way).
    """
    clock = time.perf_counter
    t0, began = clock(), time.time()
    experiment_id = index + 1
    folder = top / table / str(experiment_id) / "attempt-1"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    params = {"experiment_id": experiment_id, "attempt": 1, "table": table,
              "keyfields": {"mode": "ok", "seed": index}, "custom": {}, "results_dir": "/results", "data_dir": None}
    text = json.dumps(params)
    (folder / "params.json").write_text(text, encoding="utf-8")
    env = {"PY_EXPERIMENTER_PARAMS": text, "PY_EXPERIMENTER_RESULTS_DIR": "/results",
           "PY_EXPERIMENTER_EXPERIMENT_ID": str(experiment_id), "PY_EXPERIMENTER_ATTEMPT": "1"}
    args: dict[str, Any] = {
        "image": settings.image, "command": [text], "environment": env,
        "volumes": {str(folder): {"bind": "/results", "mode": "rw"}}, "network_mode": settings.network,
        "labels": dict(zip(LABELS, (table, str(experiment_id), "1"), strict=True)),
        "name": f"py-experimenter-{table}-{experiment_id}-1-{uuid.uuid4().hex[:8]}",
    }
    if settings.memory_bytes is not None:
        args.update(mem_limit=settings.memory_bytes, memswap_limit=settings.memory_bytes)
    t1 = clock()
    container = client.containers.create(**args)
    t2 = clock()
    t3 = t4 = t2
    try:
        container.start()
        t3 = clock()
        if poll:
            while True:
                container.reload()
                state = container.attrs.get("State") or {}
                if str(state.get("Status", "")).lower() in ENDED:
                    break
                time.sleep(settings.poll_seconds)
            status = {"StatusCode": state.get("ExitCode")}
        else:
            status = container.wait()
        t4 = clock()
        if profile is not None:  # when did it really end? (not counted as a call of the loop)
            noticed = time.time()
            if not poll:
                profile.counting = False
                container.reload()
                profile.counting = True
            finished = parse_engine_time((container.attrs.get("State") or {}).get("FinishedAt"))
            if finished is not None:
                profile.lags.append(noticed - finished)
    finally:
        container.remove(force=True, v=True)
    t5 = clock()
    if status.get("StatusCode") != 0:
        raise RuntimeError(f"bare: container of experiment {experiment_id} exited with {status}")
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    lines = (folder / "logs.jsonl").read_text(encoding="utf-8").splitlines()
    logs = [json.loads(line) for line in lines if line.strip()]
    t6 = clock()
    if "echo" not in results or len(logs) != 2:
        raise RuntimeError(f"bare: experiment {experiment_id} wrote {results!r} and {len(logs)} log lines")
    if profile is not None:
        for phase, seconds in (("folder + params.json", t1 - t0), ("create (+ inspect)", t2 - t1),
                               ("start", t3 - t2), ("poll loop (reload + sleep)" if poll else "wait", t4 - t3),
                               ("remove", t5 - t4),
                               ("read results + logs", t6 - t5), ("experiment total", t6 - t0)):
            profile.add(phase, seconds)
    return began, time.time(), t5 - t1


def bare_loop(settings: Settings, table: str, top: Path, experiments: int, next_index: Any, poll: bool = False,
              profile: Profile | None = None) -> list[tuple[float, float, float]]:
    start = time.perf_counter()
    client = docker_module().from_env()
    if profile is not None:
        profile.add("docker.from_env (once)", time.perf_counter() - start)
    times = []
    try:
        while True:
            with next_index.get_lock():
                index = next_index.value
                if index >= experiments:
                    break
                next_index.value += 1
            times.append(bare_one(client, settings, table, top, index, poll, profile))
    finally:
        client.close()
    return times


def _bare_child(settings: Settings, table: str, top: Path, experiments: int, next_index: Any, poll: bool,
                out: Any) -> None:
    try:
        out.put(("ok", bare_loop(settings, table, top, experiments, next_index, poll)))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def run_bare(settings: Settings, workdir: Path, experiments: int, jobs: int, pids: list[int], poll: bool = False,
             profile: Profile | None = None) -> Run:
    table = f"bench_bare_{uuid.uuid4().hex[:10]}"
    top = workdir / table
    next_index = FORK.Value("l", 0)
    cpu, engine = client_cpu(), engine_cpu(pids)
    start, began = time.perf_counter(), time.time()
    if jobs == 1:
        times = bare_loop(settings, table, top, experiments, next_index, poll, profile)
    else:
        out = FORK.Queue()
        processes = [FORK.Process(target=_bare_child, args=(settings, table, top, experiments, next_index, poll, out))
                     for _ in range(jobs)]
        for process in processes:
            process.start()
        times, problems = [], []
        for _ in processes:
            kind, value = out.get(timeout=900)
            if kind == "ok":
                times += value
            else:
                problems.append(value)
        for process in processes:
            process.join()
        if problems:
            raise RuntimeError(f"bare: {problems}")
    seconds, ended = time.perf_counter() - start, time.time()
    engine_after = engine_cpu(pids)
    if len(times) != experiments:
        raise RuntimeError(f"bare: ran {len(times)} of {experiments} experiments")
    shutil.rmtree(top, ignore_errors=True)
    return Run("poll" if poll else "bare", jobs, experiments, seconds, [t[2] for t in times], client_cpu() - cpu,
               None if engine is None or engine_after is None else engine_after - engine,
               min(t[0] for t in times) - began, ended - max(t[1] for t in times))


# -- ours: PyExperimenter.execute ------------------------------------------------------------------


def new_table(workdir: Path, backend: str, experiments: int, settings: Settings) -> PyExperimenter:
    name = f"bench_box_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{workdir / name}.db" if backend == "sqlite" else URLS[backend]
    credentials = workdir / f"{name}.credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": url}}}))
    execution: dict[str, Any] = {"adapter": "docker", "image": settings.image, "network": settings.network,
                                 "results_dir": str(workdir / f"{name}.results")}
    if settings.memory is not None:
        execution["memory"] = settings.memory
    database = {
        "provider": backend, "database": "py_experimenter_test",
        "table": {"name": name,
                  "keyfields": {"mode": {"type": "VARCHAR(20)", "values": ["ok"]},
                                "seed": {"type": "INT", "values": list(range(experiments))}},
                  "resultfields": {"echo": "TEXT", "argv": "TEXT"}, "result_timestamps": False},
        "logtables": {"events": {"step": "INT"}},
    }
    config = workdir / f"{name}.yml"
    config.write_text(yaml.safe_dump({"PY_EXPERIMENTER": {"n_jobs": 1, "Database": database,
                                                          "Execution": execution}}, sort_keys=False))
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    experimenter.create_table()
    return experimenter


def drop_table(experimenter: PyExperimenter) -> None:
    try:
        experimenter.delete_table()
    finally:
        experimenter.db.dispose()
        if experimenter.db.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{experimenter.db.url.database}{suffix}").unlink(missing_ok=True)
        results = experimenter.config.execution.results_dir
        if results:
            shutil.rmtree(results, ignore_errors=True)


def run_ours(settings: Settings, workdir: Path, backend: str, experiments: int, jobs: int, pids: list[int],
             wrap: Callable[[Callable[[], int]], int] | None = None) -> Run:
    experimenter = new_table(workdir, backend, experiments, settings)
    try:
        experimenter.fill_table_from_config()
        experimenter.db.dispose()
        cpu, engine = client_cpu(), engine_cpu(pids)
        start, began = time.perf_counter(), time.time()
        execute = functools.partial(experimenter.execute, n_jobs=jobs)
        ran = wrap(execute) if wrap is not None else execute()
        seconds, ended = time.perf_counter() - start, time.time()
        engine_after = engine_cpu(pids)
        cpu = client_cpu() - cpu
        rows = experimenter.get_table()
        events = experimenter.get_logtable("events")
        attempts = experimenter.get_attempts_table()
        if ran != experiments or set(rows["status"]) != {"done"} or rows["echo"].isna().any() \
                or len(events) != 2 * experiments:
            raise RuntimeError(f"ours: ran {ran} of {experiments}; statuses {dict(rows['status'].value_counts())}, "
                               f"{len(events)} event rows; errors: {list(rows['error'].dropna())[:3]}")
        durations = [float(v) for v in attempts["duration_seconds"].dropna()]
        first, last = utc_seconds(attempts["started_at"].min()), utc_seconds(attempts["ended_at"].max())
    finally:
        drop_table(experimenter)
    return Run("ours", jobs, experiments, seconds, durations, cpu,
               None if engine is None or engine_after is None else engine_after - engine,
               None if first is None else first - began, None if last is None else ended - last)


def utc_seconds(value: Any) -> float | None:
    """A naive UTC timestamp from the attempts table as a POSIX time."""
    if value is None or value != value:  # None or NaT
        return None
    moment = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


# -- profiling -------------------------------------------------------------------------------------


def api_call(request: Any) -> str:
    """``GET /containers/{id}/json`` style name of a Docker API request."""
    path = re.sub(r"^/v\d+(\.\d+)*", "", urlsplit(request.url).path)
    path = re.sub(r"^/containers/(?!create$|json$)[^/]+", "/containers/{id}", path)
    path = re.sub(r"^/images/(?!json$|create$)(.+?)/json$", "/images/{name}/json", path)
    return f"{request.method} {path}"


@contextlib.contextmanager
def instrumented(profile: Profile, timed: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Count Docker API requests, and time ``owner.attr`` for each (owner, attr, phase) in ``timed``."""
    import requests

    originals: list[tuple[Any, str, Any]] = []

    def timing(original: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                profile.add(phase, time.perf_counter() - start)
        return wrapper

    send = requests.Session.send

    @functools.wraps(send)
    def counting_send(session: Any, request: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return send(session, request, **kwargs)
        finally:
            if profile.counting:
                name = api_call(request)
                profile.calls[name] += 1
                profile.call_seconds[name] += time.perf_counter() - start

    originals.append((requests.Session, "send", send))
    requests.Session.send = counting_send
    for owner, attr, phase in timed:
        original = owner.__dict__[attr]
        originals.append((owner, attr, original))
        setattr(owner, attr, timing(original, phase))
    try:
        yield
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


def profile_bare(settings: Settings, workdir: Path, experiments: int, poll: bool) -> Profile:
    profile = Profile(experiments=experiments)
    with instrumented(profile, []):
        run = run_bare(settings, workdir, experiments, 1, [], poll, profile)
    profile.seconds = run.seconds
    return profile


def profile_ours(settings: Settings, workdir: Path, backend: str, experiments: int, use_cprofile: bool) -> Profile:
    """One instrumented ``execute(n_jobs=1)`` (in this process, so patched classes apply)."""
    from docker.models.containers import Container, ContainerCollection

    from py_experimenter.adapters.contract import ExperimentAdapter
    from py_experimenter.adapters.docker import DockerAdapter
    from py_experimenter.executor import Executor
    from py_experimenter.queue import ExperimentQueue

    profile = Profile(experiments=experiments)
    timed = [
        (Executor, "run", "executor loop total"),
        (Executor, "run_experiment", "run_experiment total"),
        (ExperimentQueue, "claim", "claim (DB)"),
        (ExperimentQueue, "finish", "finish (DB)"),
        (DockerAdapter, "run", "adapter.run total"),
        (ExperimentAdapter, "prepare", "params.json + templates"),
        (ContainerCollection, "create", "create (+ inspect)"),
        (Container, "start", "start"),
        (DockerAdapter, "_classify", "classify"),
        (Container, "remove", "remove"),
        (ExperimentAdapter, "read_back", "read-back + DB writes"),
        (DockerAdapter, "check", "adapter.check (once)"),
    ]
    wait = DockerAdapter.__dict__["_wait"]

    @functools.wraps(wait)
    def timed_wait(adapter: Any, container: Any, should_stop: Any) -> Any:
        start = time.perf_counter()
        state, killed = wait(adapter, container, should_stop)
        noticed, end = time.time(), time.perf_counter()
        profile.add("wait loop (reload + sleep)", end - start)
        finished = parse_engine_time(state.get("FinishedAt"))
        if finished is not None:
            profile.lags.append(noticed - finished)
        return state, killed

    def wrap(execute: Callable[[], int]) -> int:
        if not use_cprofile:
            return execute()
        profiler = cProfile.Profile()
        try:
            return profiler.runcall(execute)
        finally:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
            profile.cprofile = text.getvalue()

    DockerAdapter._wait = timed_wait  # type: ignore[method-assign]
    try:
        with instrumented(profile, timed):
            run = run_ours(settings, workdir, backend, experiments, 1, [], wrap)
    finally:
        DockerAdapter._wait = wait  # type: ignore[method-assign]
    profile.seconds = run.seconds
    return profile


# -- the run -----------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, settings: Settings, workdir: Path, pids: list[int],
            runs: list[Run], profiles: dict[str, Profile]) -> None:
    warm = bare_loop(settings, "bench_warmup", workdir / "warmup", 2, FORK.Value("l", 0))
    log(f"warm-up: 2 bare containers, {statistics.median(t[2] for t in warm):.2f} s each")
    for jobs in args.jobs:
        for repeat in range(args.repeat):
            for side in args.sides if repeat % 2 == 0 else tuple(reversed(args.sides)):
                if side in ("bare", "poll"):
                    run = run_bare(settings, workdir, args.experiments, jobs, pids, poll=side == "poll")
                else:
                    run = run_ours(settings, workdir, args.backend, args.experiments, jobs, pids)
                runs.append(run)
                log(f"{side} x{jobs} #{repeat + 1}: {run.seconds:.1f} s, {run.rate:.2f}/s")
    missed = any((overhead(runs, jobs) or 0.0) > TARGET for jobs in args.jobs)
    if args.profile == "always" or (args.profile == "auto" and missed):
        n = args.profile_experiments or args.experiments
        for side in args.sides:
            if side == "ours":
                profiles[side] = profile_ours(settings, workdir, args.backend, n, args.cprofile)
            else:
                profiles[side] = profile_bare(settings, workdir, n, poll=side == "poll")
            log(f"profile {side} x1: {profiles[side].seconds:.1f} s")


def median_rate(runs: list[Run], side: str, jobs: int) -> float | None:
    rates = [r.rate for r in runs if r.side == side and r.jobs == jobs]
    return statistics.median(rates) if rates else None


def overhead(runs: list[Run], jobs: int, against: str = "bare") -> float | None:
    """(baseline/s - ours/s) / baseline/s from the medians; negative: ours is faster."""
    base, ours = median_rate(runs, against, jobs), median_rate(runs, "ours", jobs)
    return None if base is None or ours is None else (base - ours) / base


def show(value: float | None, form: str, width: int) -> str:
    return f"{'-' if value is None else format(value, form):>{width}}"


def report(args: argparse.Namespace, settings: Settings, runs: list[Run], profiles: dict[str, Profile]) -> None:
    out = [f"Container experiments per second ({args.experiments} experiments per run, image {settings.image}, "
           f"memory {settings.memory or 'unlimited'}, network {settings.network}, backend {args.backend}; "
           f"median of {args.repeat} alternating runs per side)",
           f"   bare: SDK loop with wait(); poll: the same loop polling reload() every {settings.poll_seconds:g} s "
           "like the adapter; ours: execute()",
           f"   {'jobs':>4}{'bare/s':>9}{'ours/s':>9}{'overhead':>10}{'poll/s':>9}{'vs poll':>9}"
           f"{'bare ms/ctr':>13}{'poll ms/ctr':>13}{'ours ms/att':>13}"]
    complete = [j for j in args.jobs if "ours" in {r.side for r in runs if r.jobs == j}]
    for jobs in complete:
        rate = {side: median_rate(runs, side, jobs) for side in SIDES}
        per: dict[str, float | None] = {}
        for side in SIDES:
            times = [t * 1e3 for r in runs if r.jobs == jobs and r.side == side for t in r.per_container]
            per[side] = statistics.median(times) if times else None
        out.append(f"   {jobs:>4}{show(rate['bare'], '.2f', 9)}{show(rate['ours'], '.2f', 9)}"
                   f"{show(overhead(runs, jobs), '.1%', 10)}{show(rate['poll'], '.2f', 9)}"
                   f"{show(overhead(runs, jobs, 'poll'), '.1%', 9)}{show(per['bare'], '.0f', 13)}"
                   f"{show(per['poll'], '.0f', 13)}{show(per['ours'], '.0f', 13)}")
    out.append("   overhead = (bare/s - ours/s) / bare/s (vs poll: the same against poll/s); ms/ctr: median "
               "create..remove of one container, the engine's own cost; ours ms/att: median attempt duration "
               "(create..end of the wait loop)")
    if complete:
        out += ["   fixed cost per run, ms (median over runs): start of the run -> first experiment starts (ours: "
                "claimed); last experiment ends (ours: finished) -> end of the run",
                f"   {'jobs':>4} {'side':<6}{'startup':>9}{'tail':>7}"]
    for jobs in complete:
        for side in SIDES:
            mine = [r for r in runs if r.jobs == jobs and r.side == side]
            startup = [r.startup for r in mine if r.startup is not None]
            tail = [r.tail for r in mine if r.tail is not None]
            if startup and tail:
                out.append(f"   {jobs:>4} {side:<6}{statistics.median(startup) * 1e3:>9.0f}"
                           f"{statistics.median(tail) * 1e3:>7.0f}")
    for jobs in complete:
        each = "; ".join(f"{side} " + " ".join(f"{r.rate:.2f}" for r in runs if r.jobs == jobs and r.side == side)
                         for side in args.sides)
        out.append(f"   runs/s, {jobs} job{'s' if jobs > 1 else ''}, in order of side: {each}")
    if runs:
        out += ["   CPU per experiment (ms)", f"   {'jobs':>4} {'side':<6}{'client':>8}{'podman service':>16}"]
    for jobs in args.jobs:
        for side in SIDES:
            mine = [r for r in runs if r.jobs == jobs and r.side == side]
            if not mine:
                continue
            count = sum(r.experiments for r in mine)
            engines = [r.engine_cpu for r in mine]
            engine = "n/a" if None in engines else f"{sum(e or 0.0 for e in engines) / count * 1e3:.0f}"
            out.append(f"   {jobs:>4} {side:<6}{sum(r.client_cpu for r in mine) / count * 1e3:>8.0f}{engine:>16}")
    for jobs in complete:
        ratio, against_poll = overhead(runs, jobs), overhead(runs, jobs, "poll")
        if ratio is not None:
            out.append(f"   target: {jobs} job{'s' if jobs > 1 else ''}, overhead vs bare <= {TARGET:.0%}: "
                       f"{ratio:.1%} {'(met)' if ratio <= TARGET else '(MISSED)'}"
                       + ("" if against_poll is None else f"; vs poll {against_poll:.1%}"))
    if profiles:
        out += ["", *report_profiles(profiles)]
    print("\n".join(out), flush=True)


def report_profiles(profiles: dict[str, Profile]) -> list[str]:
    out = []
    for side in ("bare", "poll"):
        profile = profiles.get(side)
        if profile is None:
            continue
        n = profile.experiments
        out += [f"Profile, {side}, 1 job ({n} experiments, {n / profile.seconds:.2f}/s): ms per experiment",
                f"   {'phase':<48}{'mean':>8}{'median':>8}"]
        for phase, times in profile.phases.items():
            if phase.endswith("(once)"):
                out.append(f"   {phase:<48}{sum(times) / n * 1e3:>8.1f}")
            else:
                out.append(f"   {phase:<48}{statistics.mean(times) * 1e3:>8.1f}{statistics.median(times) * 1e3:>8.1f}")
        out.append(f"   {'whole loop':<48}{profile.seconds / n * 1e3:>8.1f}")
        out.append("")
    ours = profiles.get("ours")
    if ours is not None:
        n = ours.experiments
        out += [f"Profile, ours, 1 job ({n} experiments, {n / ours.seconds:.2f}/s): ms per experiment "
                "(mean = total / experiments)", f"   {'phase':<48}{'mean':>8}{'median':>8}"]
        inner = ("params.json + templates", "create (+ inspect)", "start", "wait loop (reload + sleep)",
                 "classify", "remove", "read-back + DB writes")
        for phase in ("claim (DB)", *inner, "finish (DB)"):
            times = ours.phases.get(phase) or [0.0]
            out.append(f"   {phase:<48}{sum(times) / n * 1e3:>8.1f}{statistics.median(times) * 1e3:>8.1f}")
        derived = {
            "adapter: folder, chmod, name, report": ours.total("adapter.run total") - sum(map(ours.total, inner)),
            "executor: heartbeat watch, processor": ours.total("run_experiment total")
            - ours.total("adapter.run total") - ours.total("finish (DB)"),
            "loop: recovery scans, shutdown setup": ours.total("executor loop total")
            - ours.total("run_experiment total") - ours.total("claim (DB)"),
            "adapter.check (once): from_env, ping, image": ours.total("adapter.check (once)"),
            "execute(): tables, logging": ours.seconds - ours.total("executor loop total")
            - ours.total("adapter.check (once)"),
        }
        out += [f"   {phase:<48}{seconds / n * 1e3:>8.1f}" for phase, seconds in derived.items()]
        out.append(f"   {'whole execute() call':<48}{ours.seconds / n * 1e3:>8.1f}")
        for side in ("bare", "poll"):
            if side in profiles:
                other = profiles[side]
                gap = ours.seconds / n - other.seconds / other.experiments
                out.append(f"   ours - {side} per experiment: {gap * 1e3:+.1f} ms")
        out.append("")
    for side, profile in profiles.items():
        if profile.lags:
            out.append(f"   {side}: container FinishedAt -> exit noticed: median "
                       f"{statistics.median(profile.lags) * 1e3:.0f} ms, max {max(profile.lags) * 1e3:.0f} ms")
    for side, profile in profiles.items():
        out += ["", f"Docker API calls per experiment, {side}: calls, mean ms per call"]
        for name, count in profile.calls.most_common():
            out.append(f"   {name:<44}{count / profile.experiments:>7.2f}"
                       f"{profile.call_seconds[name] / count * 1e3:>9.1f}")
        out.append(f"   {'all':<44}{sum(profile.calls.values()) / profile.experiments:>7.2f}")
    if ours is not None and ours.cprofile:
        out += ["", "cProfile of the ours run (top 15 by tottime):", ours.cprofile.rstrip()]
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_containers.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=40, help="experiments (containers) per run (default 40)")
    parser.add_argument("--jobs", default="1,2", help="comma-separated executor / bare process counts (default 1,2)")
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS, help="database of ours (default sqlite)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per side and jobs, alternating the order; the median counts (default 3)")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated subset of {','.join(SIDES)} with ours (default: all three)")
    parser.add_argument("--memory", default="512m", help="Execution.memory = mem_limit = memswap_limit for both "
                        "sides (default 512m; 'none' for no limit)")
    parser.add_argument("--image", default=PROBE_IMAGE, help=f"the probe image (default {PROBE_IMAGE})")
    parser.add_argument("--profile", default="auto", choices=("auto", "always", "never"),
                        help="instrumented 1-job runs of both sides: when the target is missed (auto, default), "
                             "always or never")
    parser.add_argument("--profile-experiments", type=int, help="experiments of the profiled runs (default: as runs)")
    parser.add_argument("--pin-api-version", action="store_true",
                        help="what-if: make every docker.from_env() in this run (both sides) use the API version "
                             "found at the start instead of asking the engine (GET /version) again")
    parser.add_argument("--poll-seconds", type=float,
                        help=f"what-if: the interval of the adapter's wait loop and of poll (default "
                             f"{POLL_SECONDS:g}, py_experimenter.adapters.docker.POLL_SECONDS)")
    parser.add_argument("--cprofile", action="store_true", help="also cProfile the profiled ours run (top 15)")
    args = parser.parse_args(argv)
    try:
        args.jobs = [int(j) for j in args.jobs.split(",") if j]
    except ValueError:
        parser.error(f"--jobs: expected comma-separated integers, got {args.jobs!r}")
    args.sides = [s for s in args.sides.split(",") if s]
    if "ours" not in args.sides or not set(args.sides) <= set(SIDES) or len(set(args.sides)) != len(args.sides):
        parser.error(f"--sides: a comma-separated subset of {','.join(SIDES)} that includes ours")
    if not args.jobs or min(args.jobs) < 1 or args.experiments < 1 or args.repeat < 1:
        parser.error("--jobs, --experiments and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.pop("PY_EXPERIMENTER_DATABASE_URL", None)  # it would override our bench URLs
    if "DOCKER_HOST" not in os.environ and os.path.exists(PODMAN_SOCKET) and not os.path.exists("/var/run/docker.sock"):
        os.environ["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    from py_experimenter.config_execution import parse_memory

    memory = None if args.memory.lower() in ("none", "") else args.memory
    settings = Settings(args.image, memory, None if memory is None else parse_memory(memory),
                        poll_seconds=args.poll_seconds or POLL_SECONDS)
    client = docker_module().from_env()
    try:
        client.ping()
        client.images.get(settings.image)
    except Exception as exc:
        print(f"bench_containers: no usable engine or image ({exc}); run scripts/podman "
              f"(DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')})", file=sys.stderr)
        return 1
    engine = describe_engine(client)
    if args.pin_api_version:  # what-if: every docker.from_env() here (SDK loops and adapter) skips GET /version
        docker = docker_module()
        docker.from_env = functools.partial(docker.from_env, version=client.api.api_version)
        engine += f"; API version pinned to {client.api.api_version} (--pin-api-version)"
    if args.poll_seconds is not None:  # what-if: the adapter's wait loop interval (a module constant)
        import py_experimenter.adapters.docker as adapter_module

        adapter_module.POLL_SECONDS = args.poll_seconds
        engine += f"; wait loop interval {args.poll_seconds:g} s (--poll-seconds)"
    client.close()
    pids = engine_pids()
    workdir = Path(tempfile.mkdtemp(prefix="py_experimenter_bench_containers_"))
    runs: list[Run] = []
    profiles: dict[str, Profile] = {}
    started, load_before = time.perf_counter(), os.getloadavg()
    try:
        run_all(args, settings, workdir, pids, runs, profiles)
    except KeyboardInterrupt:
        print("interrupted; partial figures:", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print()
        report(args, settings, runs, profiles)
        load_after = os.getloadavg()
        print(f"\n(total {time.perf_counter() - started:.0f} s; {engine}; {os.cpu_count()} CPUs; load average "
              f"{' '.join(f'{v:.2f}' for v in load_before)} at start, {' '.join(f'{v:.2f}' for v in load_after)} "
              "at end: other work on the machine skews the figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
