"""``py-experimenter launch``: start K executors where the compute is, or stop what a launch started.

One module per backend under :mod:`py_experimenter.launchers` (``local``, ``ssh``, ``slurm``),
imported only when used; each adds its own options to the parser. Everything is checked before
anything starts: the experiment file, the ``run`` options after ``--`` (so a typo fails once,
not K times), the experiment function (local), the table (it must exist, or ``--fill``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from py_experimenter.exceptions import ArgumentError, ConfigError, LaunchError, TableError
from py_experimenter.launchers.records import DEFAULT_LOG_DIR, launch_records, new_launch, save_record

#: The backends and their modules (imported lazily: slurm's needs submitit only when used).
BACKENDS = {
    "local": "py_experimenter.launchers.local",
    "ssh": "py_experimenter.launchers.ssh",
    "slurm": "py_experimenter.launchers.slurm",
}
#: Options ``launch`` passes to every executor itself; not accepted after ``--``.
_OWN_OPTIONS = {"credentials": "--credentials", "function": "--function", "table": "--table",
                "database": "--database"}

DESCRIPTION = """\
Start K executors (py-experimenter run CONFIG ...) on this machine, on SSH hosts or as one Slurm
job array, and return at once: the table is the queue, so each executor claims experiments until
none is left (or its walltime is near) and nothing has to stay alive here. Every launch writes a
record and logs under --log-dir/<table>/; --stop stops what the launches of that table started.

The table must exist: run `py-experimenter fill CONFIG` first, or pass --fill. Options after `--`
go to every executor's `run` (see py-experimenter run --help: e.g. -- --n-jobs 2 --max-experiments
10 --grace-seconds 60) and are checked before anything starts. SSH hosts and Slurm jobs get this
machine's absolute paths of CONFIG, --credentials and a file.py --function: the usual shared file
system makes them valid there (launch checks each SSH host). Use MySQL / PostgreSQL for executors
on several machines (SQLite only with a shared file)."""

EPILOG = """\
examples:
  local: 4 detached executors on this machine, logs in py_experimenter_logs/<table>/
    py-experimenter fill exp.yml
    py-experimenter launch exp.yml --on local -n 4 --function experiment.py:run
    py-experimenter launch exp.yml --on local -n 4 --function mymod:run --wait -- --max-experiments 50
    py-experimenter launch exp.yml --on local --stop

  ssh: 2 executors on node1, 4 on node2, a virtualenv's Python, the system ssh client (~/.ssh/config,
  agents and ProxyJump apply); logs stay on the hosts
    py-experimenter launch exp.yml --on ssh --hosts node1,alice@node2:2222*4 -n 2 \\
        --credentials db.yml --function mymod:run --remote-python '~/venv/bin/python' \\
        --remote-dir /shared/project --remote-env OMP_NUM_THREADS=1 --ssh-option=-oProxyJump=gateway
    py-experimenter status exp.yml --credentials db.yml       (running experiments and executors per host)
    py-experimenter launch exp.yml --on ssh --stop            (SIGTERM, then SIGKILL after --stop-timeout)

  slurm: 8 executors as one job array through submitit (pip install 'py-experimenter[slurm]')
    py-experimenter launch exp.yml --on slurm -n 8 --partition cpu --time 2:00:00 --cpus 4 --mem 8G \\
        --credentials db.yml --function mymod:run
    py-experimenter launch exp.yml --on slurm -n 8 --wait     (a progress bar until the table is drained)
    py-experimenter launch exp.yml --on slurm --stop          (scancel)

exit codes: 0 started (with --wait: drained); 2 nothing was started (bad option, file, host, Slurm),
one line on stderr; 1 some target did not start, or with --wait the executors ended while
experiments were left."""

USAGE = "py-experimenter launch CONFIG --on {local,ssh,slurm} [options] [-- RUN_OPTIONS ...]"
_RUN_PARSER: list[argparse.ArgumentParser] = []
_AFTER = "launch: the run options after --:"


def _launch_parser_class(base: type[argparse.ArgumentParser]) -> type[argparse.ArgumentParser]:
    """``base`` taking everything after the first ``--`` as ``run_args`` (argparse would match
    those to no positional once CONFIG was consumed)."""

    class LaunchParser(base):  # type: ignore[valid-type,misc]
        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            words = list(sys.argv[1:] if args is None else args)
            if "--" not in words:
                return super().parse_known_args(words, namespace)
            cut = words.index("--")
            parsed, extra = super().parse_known_args(words[:cut], namespace)
            parsed.run_args = words[cut + 1:]
            return parsed, extra

    return LaunchParser


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``launch`` to the CLI's subparsers (``sub``); every importable backend adds its group."""
    from py_experimenter import cli

    _RUN_PARSER[:] = [sub.choices["run"]] if "run" in sub.choices else []
    parser_class = sub._parser_class  # argparse has no per-subcommand parser class: swap it for this one
    sub._parser_class = _launch_parser_class(parser_class)
    try:
        parser = sub.add_parser("launch", help="start executors here, on SSH hosts or as a Slurm job array; --stop",
                                description=DESCRIPTION, epilog=EPILOG, usage=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    finally:
        sub._parser_class = parser_class
    parser.add_argument("config", nargs="?" if cli._env("config") else None, default=cli._env("config"),
                        help="experiment YAML file [PY_EXPERIMENTER_CONFIG]")
    parser.set_defaults(run_args=[])
    parser.add_argument("--on", dest="backend", metavar="{" + ",".join(BACKENDS) + "}",
                        help="where the executors run (required, except with --stop: then all backends)")
    parser.add_argument("-n", "--executors", metavar="K", default=None,
                        help="executors to start (ssh: per host without its own *N); default 1")
    parser.add_argument("--function", default=cli._env("function"),
                        help="experiment function, MODULE:CALLABLE or path/to/file.py:CALLABLE; not needed for "
                             "the docker / command adapters [PY_EXPERIMENTER_FUNCTION]")
    parser.add_argument("--credentials", default=cli._env("credentials"),
                        help="credential YAML file [PY_EXPERIMENTER_CREDENTIALS]")
    parser.add_argument("--table", default=cli._env("table"), help="override the table name [PY_EXPERIMENTER_TABLE]")
    parser.add_argument("--database", default=cli._env("database"),
                        help="override the database name [PY_EXPERIMENTER_DATABASE]")
    parser.add_argument("--log-dir", default=cli._env("log_dir", DEFAULT_LOG_DIR), metavar="DIR",
                        help=f"launch records and logs go to DIR/<table>/ (default: ./{DEFAULT_LOG_DIR}) "
                             "[PY_EXPERIMENTER_LOG_DIR]")
    parser.add_argument("--fill", action="store_true",
                        help="fill the table from the experiment file first (adds only missing experiments)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the table's progress (a bar with counts and ETA) until it is drained or the "
                             "executors ended")
    parser.add_argument("--stop", action="store_true",
                        help="stop what earlier launches of this table started (the records in --log-dir): "
                             "SIGTERM, so running experiments are handed back, then SIGKILL after --stop-timeout")
    parser.add_argument("--stop-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="with --stop: seconds between SIGTERM and SIGKILL (default 60; keep it above the "
                             "executors' grace period, 30 s unless --grace-seconds)")
    for name, module_name in BACKENDS.items():
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a backend being written or broken must not break the CLI
            continue
        module.add_arguments(parser.add_argument_group(f"{name} options (--on {name})"))
    return parser


def _backend(name: str | None) -> tuple[str, ModuleType]:
    if name is None:
        raise ArgumentError("launch: name where to start the executors: --on " + "|".join(BACKENDS))
    if name not in BACKENDS:
        raise ArgumentError(f"launch --on {name!r}: unknown backend; choose one of {', '.join(BACKENDS)}")
    try:
        return name, importlib.import_module(BACKENDS[name])
    except ImportError as err:
        raise LaunchError(f"launch --on {name}: the backend cannot be loaded ({err})") from None


def check_run_args(config: str, run_args: list[str]) -> None:
    """Parse and check the options after ``--`` as ``run`` would (one error before any start)."""
    if not run_args or not _RUN_PARSER:
        return
    from py_experimenter.arguments import parse_count
    from py_experimenter.cli import _EXECUTION_OPTIONS
    from py_experimenter.config import load_experiment_config
    from py_experimenter.config_execution import override_execution
    from py_experimenter.deadline import parse_deadline

    parser = _RUN_PARSER[0]

    def fail(message: str) -> Any:
        raise ArgumentError(f"{_AFTER} {message} (see py-experimenter run --help)")

    parser.error = fail  # type: ignore[method-assign]  # one exception instead of argparse's exit
    try:
        base = parser.parse_args([config])
        given = parser.parse_args([config, *run_args])
    finally:
        del parser.error
    for dest, option in _OWN_OPTIONS.items():
        if getattr(given, dest) != getattr(base, dest):
            fail(f"{option} belongs to launch itself: write it before --")
    for name, allow, meaning in (("n_jobs", (), ""), ("max_experiments", (-1,), "; -1 runs all")):
        if getattr(given, name) is not None:
            parse_count(f"{_AFTER} --" + name.replace("_", "-"), getattr(given, name), allow=allow, meaning=meaning)
    if given.deadline:
        parse_deadline(given.deadline, name=f"{_AFTER} --deadline")
    spec = load_experiment_config(config).execution
    keys = [option.replace("-", "_") for option, _, _ in _EXECUTION_OPTIONS]
    override_execution(spec, _AFTER.rstrip(":"), **{key: getattr(given, key) for key in keys})


def _executors(args: argparse.Namespace) -> int:
    if args.executors is None:
        return 1
    from py_experimenter.arguments import parse_count

    return parse_count("--executors", args.executors)


def _prepare_table(args: argparse.Namespace, backend: str) -> Any:
    """The experimenter of the launch's table: it must exist (or ``--fill``); says what waits."""
    from py_experimenter.cli import _experimenter
    from py_experimenter.db.engine import describe
    from py_experimenter.function_loader import load_function

    args.codecarbon = False  # launching reads and fills; the executors decide about CodeCarbon
    experimenter = _experimenter(args)
    if experimenter.config.execution.adapter == "function" and not args.function:
        raise ConfigError("no experiment function: pass --function MODULE:CALLABLE (or set PY_EXPERIMENTER_FUNCTION), "
                          "or set Execution.adapter to docker or command in the experiment file")
    if args.function and backend == "local":
        load_function(args.function)  # the executors start here, in this folder: a typo fails once
    admin = experimenter._admin()
    name = experimenter.config.table.name
    if args.fill:
        added = experimenter.fill_table_from_config()
        print(f"added {added} experiments to {name!r}")
    elif not admin.table_exists():
        raise TableError(f"table {name!r} does not exist yet in {describe(experimenter.db.url)}; "
                         f"run py-experimenter fill {args.config} first (or pass --fill to launch)")
    counts = admin.status_counts()
    waiting = counts.get("created", 0)
    print(f"table {name!r}: {waiting} experiments waiting, {counts.get('running', 0)} running, "
          f"{sum(counts.values())} in all")
    if waiting == 0:
        print("note: no experiment is 'created'; the executors will find nothing to claim and exit")
    if backend == "ssh" and experimenter.db.url.get_backend_name() == "sqlite":
        print("note: a SQLite database works on SSH hosts only if they all share its file; "
              "prefer MySQL / PostgreSQL for several machines")
    return experimenter


def cmd_launch(args: argparse.Namespace) -> int:
    """``py-experimenter launch``: start executors, or ``--stop`` them."""
    if args.stop:
        return _stop(args)
    backend, module = _backend(args.backend)
    executors = _executors(args)
    from py_experimenter.config import load_experiment_config

    load_experiment_config(args.config, table_name=args.table, database_name=args.database)
    check_run_args(args.config, list(args.run_args))
    experimenter = _prepare_table(args, backend)
    from py_experimenter.launchers.command import ExecutorCommand

    command = ExecutorCommand.create(args.config, args.credentials, args.function, table=args.table,
                                     database=args.database, run_args=args.run_args)
    launch = new_launch(args.log_dir, experimenter.config.table.name, backend)
    record = launch.run(lambda run_dir: module.launch_from_args(command, executors, args, run_dir, sys.stdout))
    _hints(args, backend, launch.record_path)
    code = 1 if record.get("failed_hosts") else 0
    if args.wait:
        code = max(code, _wait(experimenter, module, record))
    return code


def _target(args: argparse.Namespace) -> str:
    words = [args.config]
    for option in ("credentials", "table", "database"):
        if getattr(args, option):
            words += [f"--{option}", getattr(args, option)]
    if args.log_dir != DEFAULT_LOG_DIR:
        words += ["--log-dir", args.log_dir]
    return " ".join(words)


def _hints(args: argparse.Namespace, backend: str, record_path: Path) -> None:
    target = _target(args)
    print(f"record: {record_path}")
    print(f"watch:  py-experimenter status {target}")
    print(f"stop:   py-experimenter launch {target} --on {backend} --stop")


def _wait(experimenter: Any, module: ModuleType, record: dict[str, Any]) -> int:
    from py_experimenter.launchers.progress import Progress, follow

    counts = follow(experimenter, alive=lambda: module.alive_record(record), out=sys.stdout)
    return 1 if Progress(counts).pending else 0


def _stop(args: argparse.Namespace) -> int:
    """``launch --stop``: stop every launch of the table recorded in ``--log-dir`` (of one backend with ``--on``)."""
    from py_experimenter.config import load_experiment_config

    if args.backend is not None:
        _backend(args.backend)
    table = args.table or load_experiment_config(args.config, database_name=args.database).table.name
    records = list(launch_records(args.log_dir, table, args.backend))
    which = f" --on {args.backend}" if args.backend else ""
    if not records:
        print(f"no launch{which} of table {table!r} to stop (no records in {Path(args.log_dir).absolute() / table})")
        return 0
    stopped, problems = 0, []
    for path, record in records:
        _, module = _backend(record["backend"])
        record["stop_timeout"] = args.stop_timeout
        try:
            stopped += module.stop_record(record, sys.stdout)
        except LaunchError as err:
            problems.append(str(err))
            continue
        record["stopped_at"] = time.time()
        save_record(path, record)
    launches = "1 launch" if len(records) == 1 else f"{len(records)} launches"
    print(f"stopped {stopped} executors of {launches} of {table!r}")
    if problems:
        raise LaunchError("; ".join(problems))
    return 0

