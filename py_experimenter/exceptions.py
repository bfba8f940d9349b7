"""Exceptions raised by py_experimenter.

Everything derives from :class:`PyExperimenterError`, so ``except PyExperimenterError``
catches every problem the library reports on purpose.
"""

from __future__ import annotations


class PyExperimenterError(Exception):
    """Base class of every error raised on purpose by py_experimenter."""


class ConfigError(PyExperimenterError, ValueError):
    """An experiment or credential file is malformed.

    The message names the file, the key path (``PY_EXPERIMENTER.Database.table.name``) and
    the valid keys or the rule that was broken.
    """

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None):
        self.source = source
        self.key_path = key_path
        prefix = ""
        if source:
            prefix += f"{source}: "
        if key_path:
            prefix += f"{key_path}: "
        super().__init__(prefix + message)


class InvalidIdentifierError(ConfigError):
    """A table, column or logtable name breaks the identifier rule."""


class CredentialsError(ConfigError):
    """The credential file is missing, malformed, or names an unset environment variable."""


class WhereError(ConfigError):
    """A ``where`` condition (``--where``) is not one allowed boolean expression over the
    table's columns; nothing was changed. ``detail`` says what is wrong and what is accepted."""

    def __init__(self, detail: str, *, where: object = None, option: str = "where"):
        self.detail = detail
        self.where = where
        shown = "" if where is None else f" {where!r}"
        super().__init__(f"invalid {option} condition{shown}: {detail}")

    def for_option(self, option: str) -> WhereError:
        """The same error, naming the argument as the caller knows it (``--where``)."""
        return WhereError(self.detail, where=self.where, option=option)


class ArgumentError(ConfigError):
    """An argument of a call or of the command line has the wrong type or value (the message
    names the parameter, the rule and an example)."""


class FunctionLoadError(ConfigError):
    """``--function MODULE:CALLABLE`` cannot be loaded (missing file or module, syntax error,
    missing attribute, not callable)."""


class LaunchError(ConfigError):
    """Executors could not be started (Slurm, an SSH host, a missing extra); nothing was submitted
    or started. One line naming the backend, host or job and the fix (``py-experimenter launch``
    exits 2)."""


class MissingExtraError(ConfigError, ImportError):
    """An optional package is not installed; the message names the extra to install."""


class DatabaseError(PyExperimenterError):
    """A problem with the database or a table in it."""


class DatabaseConnectionError(DatabaseError):
    """The database cannot be reached (the message never contains a password)."""


class DatabaseUnavailableError(DatabaseConnectionError):
    """The database stayed unreachable longer than ``Execution.database_outage_seconds``."""


class TableError(DatabaseError):
    """The table is missing, or exists with columns that differ from the configuration."""


class MigrationError(TableError):
    """``migrate`` cannot bring an existing table to the configured schema in place.

    The message lists every difference (keyfield added / removed / renamed / retyped, a
    column dropped from the configuration, duplicate experiments with their IDs); nothing
    was changed.
    """


class InvalidResultFieldError(DatabaseError, KeyError):
    """``process_results`` got a field that is not a resultfield of the table."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidLogFieldError(DatabaseError, KeyError):
    """``process_logs`` got a logtable or column that the configuration does not define."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LeaseLostError(PyExperimenterError):
    """A fenced write matched no row: this executor no longer owns the experiment.

    Raised inside the experiment function when it writes results or logs after its attempt
    was taken over (lease expired, reset, or cancelled). The executor stops that experiment.
    """


class ExperimentNotRunnableError(PyExperimenterError):
    """An experiment asked for by keyfields or ID is not in a state that allows running it."""


class FillError(PyExperimenterError, ValueError):
    """Rows given to a fill method do not match the table's keyfields."""


class InvalidValueError(PyExperimenterError, ValueError):
    """A value that its column cannot hold (or a value of the wrong shape, such as a list
    where a dict of values is expected); nothing of the call was written.

    The message names where (row index and keyfields, or the call), the field, the column
    type, the value (shortened) and the rule; the parts are also attributes.
    """

    def __init__(self, message: str, *, where: str = "", field: str | None = None,
                 column_type: str | None = None, value: str | None = None, rule: str = ""):
        super().__init__(message)
        self.where = where
        self.field = field
        self.column_type = column_type
        self.value = value
        self.rule = rule


class NoExperimentsLeftException(PyExperimenterError):
    """Kept for PyExperimenter 1.4.2 imports; ``execute`` simply returns when the table is drained."""


# Names of PyExperimenter 1.4.2, so that existing ``except`` clauses keep working.
InvalidConfigError = ConfigError
InvalidValuesInConfiguration = ConfigError
MissingLogTableError = ConfigError
InvalidColumnError = ConfigError
InvalidLogtableError = ConfigError
NoConfigFileError = ConfigError
SshTunnelError = ConfigError
DatabaseCreationError = DatabaseConnectionError
DatabaseQueryError = DatabaseError
CreatingTableError = TableError
TableHasWrongStructureError = TableError
ParameterCombinationError = FillError
EmptyFillDatabaseCallError = FillError
NoPausedExperimentsException = ExperimentNotRunnableError
