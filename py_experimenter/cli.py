"""The ``py-experimenter`` command: subcommands mapped one to one onto library calls.

Every option can also come from an environment variable ``PY_EXPERIMENTER_<OPTION>``
(e.g. ``PY_EXPERIMENTER_N_JOBS=4``), which is handy in Slurm batch scripts; except the
selections of ``reset`` and ``cancel`` (``--status``, ``--where``, ``--id``), which change rows
and are therefore taken from the command line only.

Exit codes: 0 success; 2 bad input or an unusable environment (missing / invalid file, bad
option value, unreachable database, table not created yet), reported as ONE line on stderr
(``--debug`` adds the traceback); 1 an internal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import sqlalchemy as sa
from tabulate import tabulate

from py_experimenter import __version__, cli_init, cli_launch
from py_experimenter.arguments import parse_count
from py_experimenter.config_execution import ISOLATIONS, override_execution
from py_experimenter.db.engine import describe
from py_experimenter.db.retry import first_line
from py_experimenter.deadline import DEADLINE_ENV, parse_deadline
from py_experimenter.emissions import has_codecarbon_section
from py_experimenter.exceptions import (
    ArgumentError,
    ConfigError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
    PyExperimenterError,
    TableError,
    WhereError,
)
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.function_loader import load_function
from py_experimenter.grid import grid_rows
from py_experimenter.status import ExperimentStatus

ENV_PREFIX = "PY_EXPERIMENTER_"
logger = logging.getLogger("py-experimenter")


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _count(args: argparse.Namespace, name: str, allow: tuple[int, ...] = (), meaning: str = "") -> int | None:
    """A count option (``--n-jobs``) from the command line or its environment variable, checked."""
    text = getattr(args, name)
    where = "--" + name.replace("_", "-")
    if text is None:
        text = _env(name)
        where = ENV_PREFIX + name.upper()
    if text is None:
        return None
    return parse_count(where, text, allow=allow, meaning=meaning)


def _experiment_id(text: str) -> int:
    """``--id`` values: positive integers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an experiment ID (a positive integer such as 7)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an experiment ID (IDs start at 1)")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, reporting a usage error as one line (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"py-experimenter: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="py-experimenter",
        description="Fill an experiment table from a YAML grid, run its experiments, watch progress.",
    )
    parser.add_argument("--version", action="version", version=f"py-experimenter {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (errors are one line otherwise)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?" if _env("config") else None, default=_env("config"),
                       help="experiment YAML file [PY_EXPERIMENTER_CONFIG]")
        p.add_argument("--credentials", default=_env("credentials"),
                       help="credential YAML file [PY_EXPERIMENTER_CREDENTIALS]")
        p.add_argument("--table", default=_env("table"), help="override the table name [PY_EXPERIMENTER_TABLE]")
        p.add_argument("--database", default=_env("database"),
                       help="override the database name [PY_EXPERIMENTER_DATABASE]")

    fill = sub.add_parser("fill", help="create the table and add one row per grid combination")
    common(fill)
    fill.add_argument("--dry-run", action="store_true", help="only count and show the rows; touch no database")

    run = sub.add_parser("run", help="claim and run experiments until none is left")
    common(run)
    run.add_argument("--function", default=_env("function"),
                     help="experiment function as MODULE:CALLABLE or path/to/file.py:CALLABLE; not needed "
                          "when Execution.adapter is docker or command [PY_EXPERIMENTER_FUNCTION]")
    run.add_argument("--n-jobs", metavar="N",
                     help="executor processes on this node (default: n_jobs of the file) [PY_EXPERIMENTER_N_JOBS]")
    run.add_argument("--max-experiments", metavar="N",
                     help="stop after this many experiments (default: all) [PY_EXPERIMENTER_MAX_EXPERIMENTS]")
    run.add_argument("--random-order", action="store_true", help="claim in random order")
    run.add_argument("--deadline", metavar="WHEN",
                     help="claim no experiment that cannot finish before WHEN: '+600', '90m', '2h', an ISO time or a "
                          "Unix time (default inside a Slurm job: the job's end) [PY_EXPERIMENTER_DEADLINE]")
    run.add_argument("--name", default=_env("name", "PyExperimenter"), help="stored in the name column")
    run.add_argument("--codecarbon", action=argparse.BooleanOptionalAction, default=None,
                     help="track each experiment's emissions with CodeCarbon in <table>_codecarbon (default: "
                          "when the experiment file has a CodeCarbon section and codecarbon is installed) "
                          "[PY_EXPERIMENTER_CODECARBON=true|false]")
    execution = run.add_argument_group(
        "execution settings", "override the experiment file's PY_EXPERIMENTER.Execution keys (same rules)")
    for option, metavar, what in _EXECUTION_OPTIONS:
        env = ENV_PREFIX + option.upper().replace("-", "_")
        execution.add_argument(f"--{option}", metavar=metavar, default=_env(option), help=f"{what} [{env}]")

    status = sub.add_parser("status", help="experiments per status")
    common(status)
    status.add_argument("--by", default=_env("by"), metavar="KEYFIELD", help="break the counts down by a keyfield")
    status.add_argument("--log-dir", default=_env("log_dir", "py_experimenter_logs"), metavar="DIR",
                        help="where launch records are (launch --log-dir), for the executors per host "
                             "[PY_EXPERIMENTER_LOG_DIR]")

    statuses = [s.value for s in ExperimentStatus]
    reset = sub.add_parser("reset", help="put experiments back to 'created' in place (IDs and history kept)")
    common(reset)
    reset.add_argument("--status", action="append", required=True, choices=statuses,
                       help="reset experiments in this status (repeatable; 'all' for every status)")
    reset.add_argument("--where", metavar="CONDITION", help=WHERE_HELP)

    cancel = sub.add_parser("cancel", help="stop running experiments, and mark not-started ones as error")
    common(cancel)
    cancel.add_argument("--id", dest="ids", action="append", type=_experiment_id, metavar="N",
                        help="the experiment with this ID (repeatable)")
    cancel.add_argument("--where", metavar="CONDITION", help=WHERE_HELP)

    migrate = sub.add_parser("migrate", help="bring an existing table (PyExperimenter 1.4.2's, or of an older "
                                             "config) to the configured schema in place, keeping every row")
    common(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="only list the changes; change nothing")
    cli_launch.add_parser(sub)
    cli_init.add_parser(sub)
    return parser


WHERE_HELP = (
    "only experiments matching this condition over the table's columns, e.g. \"dataset='iris' AND seed<5\" "
    "(one boolean expression: comparisons, IN, BETWEEN, LIKE, IS NULL, AND / OR / NOT; no subqueries)"
)
#: ``run`` options that override ``PY_EXPERIMENTER.Execution``: option, metavar, help.
_EXECUTION_OPTIONS = (
    ("lease-seconds", "SECONDS", "a running experiment is reclaimable this long after its last heartbeat"),
    ("heartbeat-seconds", "SECONDS", "how often a running experiment renews its lease (less than the lease)"),
    ("max-attempts", "N", "tries (lost / interrupted) before an experiment becomes error"),
    ("grace-seconds", "SECONDS", "after SIGTERM / SIGINT, how long the running experiment may still finish"),
    ("expected-seconds", "SECONDS", "how long one experiment usually takes; with a deadline, no experiment is "
                                    "claimed that cannot finish before it (default: from finished attempts)"),
    ("isolation", "{" + ",".join(ISOLATIONS) + "}", "run the experiment function in this process or a child"),
    ("timeout", "SECONDS", "time limit per experiment"),
    ("memory", "SIZE", "memory limit per experiment, e.g. 2g"),
    ("database-outage-seconds", "SECONDS", "how long to keep retrying while the database is unreachable"),
)


def _experimenter(args: argparse.Namespace) -> PyExperimenter:
    experimenter = _make_experimenter(args)
    _DATABASE.append(describe(experimenter.db.url))
    return experimenter


def _make_experimenter(args: argparse.Namespace) -> PyExperimenter:
    return PyExperimenter(
        args.config, args.credentials, table_name=args.table, database_name=args.database,
        use_codecarbon=_use_codecarbon(args), name=getattr(args, "name", "PyExperimenter"),
    )


def _use_codecarbon(args: argparse.Namespace) -> bool:
    """--codecarbon / --no-codecarbon, else PY_EXPERIMENTER_CODECARBON, else: the file has a CodeCarbon section."""
    choice = getattr(args, "codecarbon", None)
    if choice is not None:
        return bool(choice)
    text = _env("codecarbon")
    if text is not None and text.strip():
        value = text.strip().lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"PY_EXPERIMENTER_CODECARBON={text!r}: expected true or false")
        return value in ("true", "1", "yes")
    return has_codecarbon_section(args.config)


def cmd_fill(args: argparse.Namespace) -> int:
    if args.dry_run:
        from py_experimenter.config import load_experiment_config

        config = load_experiment_config(args.config, table_name=args.table, database_name=args.database)
        rows = list(grid_rows(config.table.keyfields))
        print(f"{len(rows)} experiments in the grid of {config.table.name!r} (dry run: nothing written)")
        print(tabulate(rows[:10], headers="keys", tablefmt="simple"))
        if len(rows) > 10:
            print(f"... and {len(rows) - 10} more")
        return 0
    experimenter = _experimenter(args)
    added = experimenter.fill_table_from_config()
    total = sum(experimenter._admin().status_counts().values())
    print(f"added {added} experiments to {experimenter.config.table.name!r} ({total} in the table)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    n_jobs = _count(args, "n_jobs")
    max_experiments = _count(args, "max_experiments", allow=(-1,), meaning="; -1 runs all")
    function = load_function(args.function) if args.function else None
    if args.deadline:  # checked now; the executors (also forked ones) read it from the environment
        os.environ[DEADLINE_ENV] = repr(parse_deadline(args.deadline))
    experimenter = _experimenter(args)
    if function is None and experimenter.config.execution.adapter == "function":
        raise ConfigError("no experiment function: pass --function MODULE:CALLABLE (or set PY_EXPERIMENTER_FUNCTION), "
                          "or set Execution.adapter to docker or command in the experiment file")
    keys = [option.replace("-", "_") for option, _, _ in _EXECUTION_OPTIONS]
    overrides = {key: getattr(args, key) for key in keys}
    execution = override_execution(experimenter.config.execution, "command line", **overrides)
    # The experimenter reads its config whenever it builds a queue or an executor (nothing is cached).
    experimenter.config = dataclasses.replace(experimenter.config, execution=execution)
    ran = experimenter.execute(function, random_order=args.random_order, n_jobs=n_jobs,
                               max_experiments=-1 if max_experiments is None else max_experiments)
    print(f"ran {ran} experiments")
    return 0


def _existing(args: argparse.Namespace) -> PyExperimenter:
    """The experimenter of a table that must exist already (status, reset, cancel never create it)."""
    experimenter = _experimenter(args)
    if not experimenter._admin().table_exists():
        raise TableError(f"table {experimenter.config.table.name!r} does not exist yet in "
                         f"{describe(experimenter.db.url)}; run py-experimenter fill {args.config}")
    return experimenter


def cmd_status(args: argparse.Namespace) -> int:
    experimenter = _existing(args)
    statuses = [s.value for s in ExperimentStatus if s is not ExperimentStatus.ALL]
    if args.by:
        keyfields = experimenter.config.table.keyfield_names
        if args.by not in keyfields:
            raise ArgumentError(f"--by {args.by!r} is not a keyfield; the keyfields are {list(keyfields)}")
        table = experimenter.get_table()
        counts = table.groupby([args.by, "status"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=[s for s in statuses if s in counts.columns])
        counts["total"] = counts.sum(axis=1)
        print(tabulate(counts, headers=[args.by, *counts.columns], tablefmt="simple"))
        return 0
    found = experimenter._admin().status_counts()
    rows = [(status, found.get(status, 0)) for status in statuses]
    rows += [(status, n) for status, n in found.items() if status not in statuses]
    rows.append(("total", sum(found.values())))
    print(f"table {experimenter.config.table.name!r}")
    print(tabulate(rows, headers=["status", "experiments"], tablefmt="simple"))
    from py_experimenter.status_report import print_report

    print_report(experimenter, args.log_dir, sys.stdout)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    experimenter = _existing(args)
    try:
        reset = experimenter.reset_experiments(*args.status, where=args.where)
    except WhereError as err:
        raise err.for_option("--where") from None
    print(f"reset {reset} experiments to 'created' in {experimenter.config.table.name!r}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    if args.ids is None and args.where is None:
        raise ArgumentError("name the experiments to cancel: --id N (repeatable) or --where CONDITION")
    experimenter = _existing(args)
    try:
        counts = experimenter.cancel_experiments(args.ids, where=args.where)
    except WhereError as err:
        raise err.for_option("--where") from None
    print(f"cancel requested for {counts['requested']} running experiments; "
          f"cancelled {counts['cancelled']} experiments that had not started")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    report = _experimenter(args).migrate_table(dry_run=args.dry_run)
    print(report)
    return 0


COMMANDS = {"fill": cmd_fill, "run": cmd_run, "status": cmd_status, "reset": cmd_reset, "cancel": cmd_cancel,
            "migrate": cmd_migrate, "launch": cli_launch.cmd_launch,
            "init": cli_init.cmd_init}


#: Errors that mean bad input or an unusable environment: exit 2, one line.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatabaseConnectionError, TableError)
#: Driver errors that reach the command line although the library should have wrapped them:
#: a refused / failed connection, a file that is not a SQLite database (exit 2, one line).
#: Their subclasses (ProgrammingError, IntegrityError, ...) mean a bug: exit 1 with a traceback.
_DRIVER_USER_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DatabaseError)


#: The database of the command being run (password hidden), for driver errors' messages.
_DATABASE: list[str] = []


def _one_line(err: BaseException) -> str:
    """An error as one line: its text's lines joined (drivers and YAML add detail lines)."""
    if isinstance(err, sa.exc.DBAPIError):
        where = f" on {_DATABASE[-1]}" if _DATABASE else ""
        reason = first_line(err.orig)
        if "file is not a database" in reason:
            reason += " (that file is not a SQLite database: check the database name or the credential file's url)"
        return f"database error{where}: {reason}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " | ".join(lines) or type(err).__name__


def _fail(err: BaseException, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"py-experimenter: error: {_one_line(err)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``py-experimenter``; returns the exit code.

    0: done. 2: bad input (a file, option or argument) or an unusable environment (the
    database unreachable, the table not created yet): one line on stderr, the traceback
    only with ``--debug``. 1: the database stayed away longer than
    ``database_outage_seconds`` (one line too), or an internal error.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except DatabaseUnavailableError as err:  # waited database_outage_seconds: a failed run, not bad input
        return _fail(err, 1, args.debug)
    except USER_ERRORS as err:
        return _fail(err, 2, args.debug)
    except PyExperimenterError as err:
        return _fail(err, 1, args.debug)
    except sa.exc.DBAPIError as err:
        if type(err) in _DRIVER_USER_ERRORS:
            return _fail(err, 2, args.debug)
        raise
    except KeyboardInterrupt:
        print("py-experimenter: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
