"""The ``PyExperimenter`` facade: PyExperimenter 1.4.2's constructor and methods, wired onto
the queue, executor and analysis modules."""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from py_experimenter.admin import ExperimentAdmin
from py_experimenter.analysis import read_codecarbon, read_logtable, read_table
from py_experimenter.arguments import check_execute_arguments, check_optional_str
from py_experimenter.config import ExperimentConfig, load_experiment_config
from py_experimenter.config_execution import override_execution
from py_experimenter.credentials import CREDENTIALS_ENV, database_url, resolve_credentials
from py_experimenter.db.database import Database
from py_experimenter.db.engine import is_memory_database
from py_experimenter.db.migration import MigrationReport, migrate
from py_experimenter.db.schema import build_schema
from py_experimenter.db.tunnel import SshTunnel, open_ssh_tunnel
from py_experimenter.emissions import EmissionsRecorder, codecarbon_available, has_codecarbon_section
from py_experimenter.exceptions import ConfigError, DatabaseConnectionError, ExperimentNotRunnableError
from py_experimenter.executor import Executor, ExperimentFunction
from py_experimenter.fill import fill_rows
from py_experimenter.grid import combine, grid_rows
from py_experimenter.hydra_cwd import resolve_against_original_cwd, resolve_sqlite_url
from py_experimenter.processes import run_processes
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor
from py_experimenter.single_run import add_and_run, run_one, status_of
from py_experimenter.status import ExperimentStatus

if TYPE_CHECKING:
    from py_experimenter.adapters.contract import ExperimentAdapter

__all__ = ["ExperimentStatus", "PyExperimenter", "ResultProcessor"]

DEFAULT_EXPERIMENT_FILE = os.path.join("config", "experiment_configuration.yml")
DEFAULT_CREDENTIAL_FILE = os.path.join("config", "database_credentials.yml")


class PyExperimenter:
    """Fill an experiment table from a YAML grid and execute its experiments, from any number
    of processes and machines at once.

    :param experiment_configuration_file_path: the experiment YAML file.
    :param database_credential_file_path: the credential YAML file (MySQL / PostgreSQL); the
        environment variable ``PY_EXPERIMENTER_CREDENTIALS`` may name it instead.
    :param use_ssh_tunnel: connect through the SSH jump host of the credential file's
        ``CREDENTIALS.Connection.Ssh`` section: True / False, or None to follow the experiment
        file's ``Database.use_ssh`` (or ``use_ssh_tunnel``; default false). Ignored for SQLite.
        Close the tunnel with :meth:`close_ssh_tunnel` (it also closes when the process exits).
    :param table_name: overrides the table name of the experiment file.
    :param database_name: overrides the database name of the experiment file.
    :param use_codecarbon: track emissions with CodeCarbon when it is installed (a missing
        package warns only when the experiment file has a ``CodeCarbon`` section).
    :param name: stored in each row's ``name`` column.
    :param logger_name: the logger used (no handlers are added: configure logging yourself).
    :param log_level: that logger's level.
    :param log_file: accepted for 1.4.2 compatibility; configure a ``logging.FileHandler`` instead.
    """

    def __init__(
        self,
        experiment_configuration_file_path: str | os.PathLike[str] = DEFAULT_EXPERIMENT_FILE,
        database_credential_file_path: str | os.PathLike[str] | None = DEFAULT_CREDENTIAL_FILE,
        use_ssh_tunnel: bool | None = None,
        table_name: str | None = None,
        database_name: str | None = None,
        use_codecarbon: bool = True,
        name: str = "PyExperimenter",
        logger_name: str = "py-experimenter",
        log_level: int | str = logging.INFO,
        log_file: str | None = None,
    ):
        self.logger = logging.getLogger(logger_name)
        self.logger.setLevel(log_level)
        # Inside a Hydra job that changed directory, relative paths mean the user's folder.
        experiment_configuration_file_path = resolve_against_original_cwd(experiment_configuration_file_path)
        if database_credential_file_path is not None:
            database_credential_file_path = resolve_against_original_cwd(database_credential_file_path)
        self.config: ExperimentConfig = load_experiment_config(
            experiment_configuration_file_path, table_name=table_name, database_name=database_name
        )
        self.name = name
        self.use_codecarbon = use_codecarbon and codecarbon_available(
            warn=has_codecarbon_section(experiment_configuration_file_path))
        #: One recorder for every executor of this experimenter (its tracker is per process).
        self._emissions = EmissionsRecorder(self.config.codecarbon) if self.use_codecarbon else None
        database = self.config.database
        credential_path = database_credential_file_path
        if (credential_path == DEFAULT_CREDENTIAL_FILE and not os.path.exists(credential_path)
                and os.environ.get(CREDENTIALS_ENV)):
            credential_path = None  # the file named by PY_EXPERIMENTER_CREDENTIALS
        credentials = resolve_credentials(database.provider, credential_path)
        url = resolve_sqlite_url(database_url(database.provider, database.database, credentials))
        use_ssh = database.use_ssh if use_ssh_tunnel is None else bool(use_ssh_tunnel)
        self._ssh_tunnel: SshTunnel | None = None
        if use_ssh and database.provider != "sqlite":
            url, self._ssh_tunnel = open_ssh_tunnel(url, credentials.ssh, credentials.source)
        self.db = Database(url, build_schema(database.table, with_codecarbon=self.use_codecarbon))
        self._tables_ready = False

    def __repr__(self) -> str:
        return f"PyExperimenter(table={self.config.table.name!r}, db={self.db!r})"

    # -- tables ------------------------------------------------------------------------

    def create_table(self, create_database: bool = False) -> None:
        """Create the table (and its logtables) if missing; an existing one must match the config."""
        if create_database:
            self.db.ensure_database()
        self.db.create_tables()
        self._tables_ready = True

    def migrate_table(self, dry_run: bool = False) -> MigrationReport:
        """Bring an existing table (PyExperimenter 1.4.2's, or one of an older configuration)
        to the configured schema in place, and return what changed (``print`` it).

        Adds our bookkeeping columns (with values for existing rows), new resultfields and
        logtables, the attempts table and the indexes; keeps every ID, status, result and log
        row. ``dry_run`` only reports. See docs/migrating.md.

        :raises MigrationError: a difference cannot be migrated safely (a keyfield added,
            removed, renamed or retyped, a column dropped from the configuration, duplicate
            experiments); every one is listed and nothing is changed.
        """
        report = migrate(self.db, dry_run=dry_run)
        self._tables_ready = False
        return report

    def _ensure_tables(self) -> None:
        if not self._tables_ready:
            self.create_table()

    def delete_table(self) -> None:
        """Drop the table with its logtables, attempt history, codecarbon table and the
        ``<table>__hydra`` table of Hydra sweeps."""
        from py_experimenter.hydra_sweep import drop_hydra_table

        drop_hydra_table(self.db)
        self.db.drop_tables()
        self._tables_ready = False

    # -- filling -----------------------------------------------------------------------

    def fill_table_from_config(self) -> int:
        """Add one row per combination of the configured keyfield values (existing ones are kept)."""
        return self.fill_table_with_rows(grid_rows(self.config.table.keyfields))

    def fill_table_from_combination(
        self,
        fixed_parameter_combinations: Sequence[Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Sequence[Any]] | None = None,
    ) -> int:
        """Add rows: every fixed combination × the cartesian product of ``parameters``."""
        rows = combine(self.config.table.keyfield_names, parameters, fixed_parameter_combinations)
        return self.fill_table_with_rows(rows)

    def fill_table_with_rows(self, rows: Any) -> int:
        """Add the given rows (dicts of keyfield values); rows already in the table are skipped.

        Every row is checked before the first is written: a row that is not a dict of exactly
        the keyfields raises :class:`FillError`, a value its column cannot hold raises
        :class:`InvalidValueError` (naming the row, field, type and rule), and the table is
        left unchanged. Returns how many rows were added.
        """
        self._ensure_tables()
        added = fill_rows(self.db, rows)
        self.logger.info("added %d experiments to %s", added, self.config.table.name)
        return added

    # -- execution ---------------------------------------------------------------------

    def _queue(self) -> ExperimentQueue:
        execution = self.config.execution
        self.db.outage_seconds = execution.database_outage_seconds
        return ExperimentQueue(self.db, WorkerIdentity(name=self.name), lease_seconds=execution.lease_seconds)

    def _admin(self) -> ExperimentAdmin:
        return ExperimentAdmin(self.db)

    def _executor(self, function: ExperimentFunction | None, random_order: bool = False,
                  adapter: ExperimentAdapter | None = None) -> Executor:
        return Executor(self._queue(), function, self.config.custom, execution=self.config.execution,
                        adapter=adapter, emissions=self._emissions, random_order=random_order)

    def _adapter(self, adapter: str | ExperimentAdapter | None) -> ExperimentAdapter:
        """The container / command adapter to run, checked before any row is claimed."""
        from py_experimenter.adapters import ExperimentAdapter, adapter_for

        if not isinstance(adapter, ExperimentAdapter):
            name = adapter or self.config.execution.adapter
            if name == "function":
                raise ConfigError(
                    "no experiment function given: pass execute(experiment_function), or set "
                    "Execution.adapter to docker or command (with image / command) to run containers or commands"
                )
            execution = override_execution(self.config.execution, "execute(adapter=...)", adapter=name)
            adapter = adapter_for(dataclasses.replace(self.config, execution=execution))
        adapter.check()
        return adapter

    def execute(
        self,
        experiment_function: ExperimentFunction | None = None,
        random_order: bool = False,
        n_jobs: int | None = None,
        max_experiments: int = -1,
        adapter: str | ExperimentAdapter | None = None,
    ) -> int:
        """Claim and run open experiments until none is left, or ``max_experiments`` ran.

        Each experiment runs ``experiment_function``; without one, the container or command
        that ``Execution.adapter`` (or ``adapter``: ``"docker"``, ``"command"`` or an adapter
        object) describes. ``n_jobs`` executor processes run at once (default: ``n_jobs`` of
        the experiment file). ``max_experiments`` counts across all of them; fewer remaining
        is not an error. Returns how many experiments this call ran.

        :raises ArgumentError: an argument of the wrong type or value (``n_jobs`` and
            ``max_experiments`` positive integers, ``-1`` for all; the function callable).
        :raises ConfigError: no function and no usable adapter, or the adapter's engine /
            image / command is not usable (checked before any experiment is claimed).
        """
        random_order = check_execute_arguments(experiment_function, random_order, n_jobs, max_experiments)
        runner = None if experiment_function is not None and adapter is None else self._adapter(adapter)
        execution = self.config.execution
        if runner is None and execution.isolation == "inline" and (execution.timeout or execution.memory):
            raise ConfigError(
                "Execution.timeout and Execution.memory limit an experiment function only with isolation: process "
                "(a function running inline cannot be stopped or limited safely); add isolation: process"
            )
        self.db.outage_seconds = self.config.execution.database_outage_seconds
        self._check_sqlite_folder()
        self.db.run(self._ensure_tables)  # an executor started during a database restart waits for it
        jobs = self.config.n_jobs if n_jobs is None else n_jobs
        if jobs > 1 and is_memory_database(self.db.url):
            raise ConfigError(
                f"n_jobs={jobs} cannot run on the in-memory SQLite database (database: ':memory:'): it lives "
                "inside this process and executor processes cannot share it; use n_jobs=1, or a database "
                "file (database: experiments) for several processes"
            )
        executor = self._executor(experiment_function if runner is None else None, random_order, runner)
        ran = run_processes(executor, jobs, max_experiments)
        self.logger.info("executed %d experiments", ran)
        return ran

    def add_experiment_and_execute(
        self, keyfield_values: Mapping[str, Any], experiment_function: ExperimentFunction
    ) -> None:
        """Add one experiment (if new) and run it now in this process: PyExperimenter 1.4.2's
        pattern for Hydra / submitit sweeps, one job per experiment.

        An experiment that is no longer ``created`` (``done``, ``error``, ``running``,
        ``paused``) is skipped with a warning naming its status, so a sweep run again resumes.
        A keyfield value outside the experiment file's ``values`` is added with a warning.
        """
        self._ensure_tables()
        add_and_run(self.db, self._executor, keyfield_values, experiment_function, self.logger,
                    self.config.execution.grace_seconds)

    def _check_sqlite_folder(self) -> None:
        """A SQLite file whose folder does not exist never becomes reachable: say so at once
        instead of riding it out as an outage for database_outage_seconds."""
        url = self.db.url
        if self.db.backend != "sqlite" or is_memory_database(url) or not url.database \
                or url.database.startswith("file:"):
            return
        folder = os.path.dirname(os.path.abspath(url.database))
        if not os.path.isdir(folder):
            raise DatabaseConnectionError(
                f"cannot connect to {url.render_as_string(hide_password=True)}: the folder {folder} does not exist; "
                "create it or fix PY_EXPERIMENTER.Database.database"
            )

    def unpause_experiment(self, experiment_id: int, experiment_function: ExperimentFunction) -> None:
        """Run a ``paused`` experiment again with ``experiment_function``."""
        if isinstance(experiment_id, bool) or not isinstance(experiment_id, numbers.Integral) \
                or not 1 <= int(experiment_id) < 2**31:  # an INT column; numpy IDs (get_table()) too
            raise ConfigError(f"experiment_id={experiment_id!r}: expected an experiment ID (a positive integer)")
        experiment_id = int(experiment_id)
        self._ensure_tables()
        run_one(self.db, self._executor(experiment_function), experiment_id, ExperimentStatus.PAUSED,
                self.config.execution.grace_seconds)

    def attach(self, experiment_function: Callable[[ResultProcessor], Any], experiment_id: int) -> Any:
        """Call ``experiment_function(result_processor)`` for an experiment that is running now.

        Its writes are fenced to the running attempt, like the experiment's own.
        """
        queue = self._queue()
        experiment = queue.current_attempt(experiment_id)
        if experiment is None:
            raise ExperimentNotRunnableError(
                f"experiment {experiment_id} is not running ({self._status_of(experiment_id)!r}); "
                "attach only works while it runs"
            )
        try:
            return experiment_function(ResultProcessor(queue, experiment))
        finally:
            queue.close()

    def _status_of(self, experiment_id: int) -> str | None:
        return status_of(self.db, experiment_id)

    # -- maintenance and analysis ------------------------------------------------------

    def reset_experiments(self, *states: str | ExperimentStatus, where: str | None = None) -> int:
        """Put experiments in ``states`` (or ``"all"``) back to ``created``, in place.

        IDs and logtable rows stay; every earlier try remains in ``<table>__attempts``.
        Returns how many experiments were reset.

        :param where: optional condition over the table's columns, ANDed with the states
            (e.g. ``"dataset = 'iris'"``); checked and rebuilt, see :mod:`py_experimenter.where`.
        :raises ConfigError: an unknown state.
        :raises WhereError: ``where`` is not one allowed condition over the table's columns.
        """
        check_optional_str("where", where, "\"dataset = 'iris'\"")
        if not states:
            self.logger.warning("reset_experiments() called without states; nothing was reset")
            return 0
        statuses = []
        for state in states:
            value = getattr(state, "value", state)
            try:
                statuses.append(ExperimentStatus(value))
            except ValueError:
                valid = [s.value for s in ExperimentStatus]
                raise ConfigError(f"unknown status {state!r}; valid statuses are {valid}") from None
        self._ensure_tables()
        return self._admin().reset(statuses, where=where)

    def get_table(self) -> pd.DataFrame:
        """The experiment table as a DataFrame."""
        self._ensure_tables()
        return read_table(self.db, self.db.schema.main)

    def get_logtable(self, logtable_name: str) -> pd.DataFrame:
        """A logtable (by its name in the experiment file) as a DataFrame."""
        self._ensure_tables()
        return read_logtable(self.db, logtable_name)

    def get_attempts_table(self) -> pd.DataFrame:
        """Every try of every experiment (worker, host, job, start, end, outcome, error)."""
        self._ensure_tables()
        return read_table(self.db, self.db.schema.attempts)

    def get_codecarbon_table(self) -> pd.DataFrame:
        """The CodeCarbon emissions table as a DataFrame: one row per measured attempt
        (``experiment_id``, ``attempt``, PyExperimenter 1.4.2's columns); empty, with its
        columns, when CodeCarbon is off and no earlier run made it."""
        self._ensure_tables()
        return read_codecarbon(self.db)

    def close_ssh_tunnel(self) -> None:
        """Close this experimenter's SSH tunnel (and its pooled connections through it).

        Without a tunnel, a warning says so (as in 1.4.2). Use the experimenter no further
        for database work afterwards.
        """
        if self._ssh_tunnel is None:
            self.logger.warning("No ssh tunnel to close")
            return
        self.db.dispose()
        self._ssh_tunnel.stop()

    def close_ssh(self) -> None:
        """PyExperimenter 1.4.2's name of :meth:`close_ssh_tunnel`."""
        self.close_ssh_tunnel()

    def cancel_experiments(
        self, experiment_ids: Iterable[int] | int | None = None, where: str | None = None
    ) -> dict[str, int]:
        """Cancel experiments by ID and/or SQL condition; returns ``{"requested": n, "cancelled": m}``.

        Running experiments are asked to stop (their executor ends the try as ``cancelled``
        at its next heartbeat; ``requested`` counts them). Experiments not started yet
        (``created`` / ``paused``) become ``error`` at once, with the reason in ``error``
        (``cancelled`` counts them). Finished experiments are left alone.

        :param experiment_ids: one ID or several; ANDed with ``where`` when both are given.
        :param where: condition over the table's columns (e.g. ``"dataset = 'iris'"``);
            checked and rebuilt, see :mod:`py_experimenter.where`.
        :raises ConfigError: neither given, or an ID is not an integer.
        :raises WhereError: ``where`` is not one allowed condition over the table's columns.
        """
        check_optional_str("where", where, "\"dataset = 'iris'\"")
        ids = [experiment_ids] if isinstance(experiment_ids, int) else experiment_ids
        self._ensure_tables()
        return self._admin().request_cancel(ids, where=where)
