"""The ``py-experimenter`` command: subcommands mapped one to one onto library calls.

Every option can also come from an environment variable ``PY_EXPERIMENTER_<OPTION>``
(e.g. ``PY_EXPERIMENTER_N_JOBS=4``), which is handy in Slurm batch scripts; except the
selections of ``reset`` and ``cancel`` (``--status``, ``--where``, ``--id``), which change rows
and are therefore taken from the command line only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tabulate import tabulate

from py_experimenter import __version__
from py_experimenter.config_execution import ISOLATIONS, override_execution
from py_experimenter.db.retry import first_line
from py_experimenter.exceptions import ConfigError, PyExperimenterError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.grid import grid_rows
from py_experimenter.status import ExperimentStatus

ENV_PREFIX = "PY_EXPERIMENTER_"
logger = logging.getLogger("py-experimenter")


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _int_env(name: str, default: int | None) -> int | None:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {ENV_PREFIX}{name.upper()}={value!r} is not an integer") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="py-experimenter",
        description="Fill an experiment table from a YAML grid, run its experiments, watch progress.",
    )
    parser.add_argument("--version", action="version", version=f"py-experimenter {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
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
    run.add_argument("--n-jobs", type=int, default=_int_env("n_jobs", None),
                     help="executor processes on this node (default: n_jobs of the file) [PY_EXPERIMENTER_N_JOBS]")
    run.add_argument("--max-experiments", type=int, default=_int_env("max_experiments", -1),
                     help="stop after this many experiments (default: all) [PY_EXPERIMENTER_MAX_EXPERIMENTS]")
    run.add_argument("--random-order", action="store_true", help="claim in random order")
    run.add_argument("--name", default=_env("name", "PyExperimenter"), help="stored in the name column")
    execution = run.add_argument_group(
        "execution settings", "override the experiment file's PY_EXPERIMENTER.Execution keys (same rules)")
    for option, metavar, what in _EXECUTION_OPTIONS:
        env = ENV_PREFIX + option.upper().replace("-", "_")
        execution.add_argument(f"--{option}", metavar=metavar, default=_env(option), help=f"{what} [{env}]")

    status = sub.add_parser("status", help="experiments per status")
    common(status)
    status.add_argument("--by", default=_env("by"), metavar="KEYFIELD", help="break the counts down by a keyfield")

    statuses = [s.value for s in ExperimentStatus]
    reset = sub.add_parser("reset", help="put experiments back to 'created' in place (IDs and history kept)")
    common(reset)
    reset.add_argument("--status", action="append", required=True, choices=statuses,
                       help="reset experiments in this status (repeatable; 'all' for every status)")
    reset.add_argument("--where", metavar="CONDITION", help=WHERE_HELP)

    cancel = sub.add_parser("cancel", help="stop running experiments, and mark not-started ones as error")
    common(cancel)
    cancel.add_argument("--id", dest="ids", action="append", type=int, metavar="N",
                        help="the experiment with this ID (repeatable)")
    cancel.add_argument("--where", metavar="CONDITION", help=WHERE_HELP)

    migrate = sub.add_parser("migrate", help="bring an existing table (PyExperimenter 1.4.2's, or of an older "
                                             "config) to the configured schema in place, keeping every row")
    common(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="only list the changes; change nothing")
    return parser


WHERE_HELP = (
    "only experiments matching this SQL condition over the table's columns, e.g. \"dataset='iris' AND seed<5\" "
    "(inserted into the SQL as written: use it on your own database only)"
)
#: ``run`` options that override ``PY_EXPERIMENTER.Execution``: option, metavar, help.
_EXECUTION_OPTIONS = (
    ("lease-seconds", "SECONDS", "a running experiment is reclaimable this long after its last heartbeat"),
    ("heartbeat-seconds", "SECONDS", "how often a running experiment renews its lease (less than the lease)"),
    ("max-attempts", "N", "tries (lost / interrupted) before an experiment becomes error"),
    ("grace-seconds", "SECONDS", "after SIGTERM / SIGINT, how long the running experiment may still finish"),
    ("isolation", "{" + ",".join(ISOLATIONS) + "}", "run the experiment function in this process or a child"),
    ("timeout", "SECONDS", "time limit per experiment"),
    ("memory", "SIZE", "memory limit per experiment, e.g. 2g"),
    ("database-outage-seconds", "SECONDS", "how long to keep retrying while the database is unreachable"),
)


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``."""
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--function {spec!r}: expected MODULE:CALLABLE or path/to/file.py:CALLABLE")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"--function {spec!r}: file {path} does not exist")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    elif "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"--function {spec!r}: cannot import {module_name!r}: {err}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"--function {spec!r}: {module_name!r} has no callable {attribute!r}")
    return function


def _experimenter(args: argparse.Namespace) -> PyExperimenter:
    return PyExperimenter(
        args.config, args.credentials, table_name=args.table, database_name=args.database,
        use_codecarbon=False, name=getattr(args, "name", "PyExperimenter"),
    )


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
    function = load_function(args.function) if args.function else None
    experimenter = _experimenter(args)
    if function is None and experimenter.config.execution.adapter == "function":
        raise ConfigError("no experiment function: pass --function MODULE:CALLABLE (or set PY_EXPERIMENTER_FUNCTION), "
                          "or set Execution.adapter to docker or command in the experiment file")
    keys = [option.replace("-", "_") for option, _, _ in _EXECUTION_OPTIONS]
    overrides = {key: getattr(args, key) for key in keys}
    execution = override_execution(experimenter.config.execution, "command line", **overrides)
    # The experimenter reads its config whenever it builds a queue or an executor (nothing is cached).
    experimenter.config = dataclasses.replace(experimenter.config, execution=execution)
    ran = experimenter.execute(function, random_order=args.random_order, n_jobs=args.n_jobs,
                               max_experiments=args.max_experiments)
    print(f"ran {ran} experiments")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    experimenter = _experimenter(args)
    statuses = [s.value for s in ExperimentStatus if s is not ExperimentStatus.ALL]
    if args.by:
        keyfields = experimenter.config.table.keyfield_names
        if args.by not in keyfields:
            raise ConfigError(f"--by {args.by!r} is not a keyfield; the keyfields are {list(keyfields)}")
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
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    experimenter = _experimenter(args)
    with _where_errors(args.where):
        reset = experimenter.reset_experiments(*args.status, where=args.where)
    print(f"reset {reset} experiments to 'created' in {experimenter.config.table.name!r}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    if args.ids is None and args.where is None:
        raise ConfigError("name the experiments to cancel: --id N (repeatable) or --where CONDITION")
    experimenter = _experimenter(args)
    with _where_errors(args.where):
        counts = experimenter.cancel_experiments(args.ids, where=args.where)
    print(f"cancel requested for {counts['requested']} running experiments; "
          f"cancelled {counts['cancelled']} experiments that had not started")
    return 0


@contextlib.contextmanager
def _where_errors(where: str | None) -> Iterator[None]:
    """Report a ``--where`` the database rejects as one line (nothing was changed)."""
    if where is not None and not where.strip():
        raise ConfigError("--where is empty; give a SQL condition, e.g. --where \"dataset='iris'\"")
    try:
        yield
    except ConfigError as err:
        cause = err.__cause__
        if not isinstance(cause, sa.exc.DBAPIError):
            raise
        raise ConfigError(f"invalid --where condition: {first_line(cause.orig)}") from None


def cmd_migrate(args: argparse.Namespace) -> int:
    report = _experimenter(args).migrate_table(dry_run=args.dry_run)
    print(report)
    return 0


COMMANDS = {"fill": cmd_fill, "run": cmd_run, "status": cmd_status, "reset": cmd_reset, "cancel": cmd_cancel,
            "migrate": cmd_migrate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``py-experimenter``; returns the exit code (2 for bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"py-experimenter: error: {err}", file=sys.stderr)
        return 2
    except PyExperimenterError as err:
        print(f"py-experimenter: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
