"""Experiment configuration: frozen dataclasses and the YAML loader.

The file format is PyExperimenter 1.4.2's (``PY_EXPERIMENTER`` root, ``Database``,
``Custom`` / ``CUSTOM``, ``CodeCarbon`` / ``CODECARBON``) plus our optional ``Execution``
section. Every error names the file, the key path and the valid keys or the rule.

Module layout: :mod:`.config_checker` (YAML reading, the generic checks) is used by this module
and by :mod:`.config_execution` (the ``Execution`` section, :class:`ExecutionSpec`);
:mod:`.config_names` checks names against the provider, :mod:`.config_interpolation` resolves
``${...}``. Every public name stays importable from here.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from py_experimenter.config_checker import Checker, read_yaml, type_word
from py_experimenter.config_execution import ExecutionSpec, parse_execution
from py_experimenter.config_interpolation import resolve_interpolations
from py_experimenter.config_names import check_names
from py_experimenter.config_values import MAX_RANGE_VALUES, parse_values
from py_experimenter.exceptions import ConfigError, InvalidIdentifierError
from py_experimenter.identifiers import max_table_name_length
from py_experimenter.sqltypes import parse_sql_type

IDENTIFIER_RULE = "^[A-Za-z_][A-Za-z0-9_]{0,63}$"
IDENTIFIER_PATTERN = re.compile(IDENTIFIER_RULE)
#: The characters of the rule; a name that has them but is too long gets a message about its
#: length against the provider's limit (:mod:`py_experimenter.config_names`).
_IDENTIFIER_CHARACTERS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Provider = Literal["sqlite", "mysql", "postgresql"]
PROVIDERS: tuple[str, ...] = ("sqlite", "mysql", "postgresql")

#: Columns of the main table that the library owns; no keyfield or resultfield may use them.
# fmt: off
RESERVED_COLUMNS: tuple[str, ...] = (
    "ID", "creation_date", "status", "start_date", "name", "machine", "end_date", "error", "attempt",
    "worker", "host", "job_id", "lease_until", "heartbeat_at", "priority", "keyhash", "cancel_requested",
)
# fmt: on
#: Columns every logtable has besides the user's.
RESERVED_LOGTABLE_COLUMNS: tuple[str, ...] = ("ID", "experiment_id", "timestamp", "attempt")
#: Logtable names taken by our own tables (``<table>__attempts``).
RESERVED_LOGTABLE_NAMES: tuple[str, ...] = ("attempts",)
MAX_IDENTIFIER_LENGTH = 64
#: Longest table name on SQLite and MySQL (``<table>_codecarbon`` must stay within 64); on
#: PostgreSQL one less (63 bytes). Every derived name is checked per provider by
#: :func:`py_experimenter.config_names.check_names`.
MAX_TABLE_NAME_LENGTH = max_table_name_length("mysql")
DEFAULT_KEYFIELD_TYPE = "VARCHAR(255)"


@dataclass(frozen=True)
class FieldSpec:
    """A column given by the user: its name and SQL type as written (``VARCHAR(255)``)."""

    name: str
    sql_type: str


@dataclass(frozen=True)
class KeyfieldSpec:
    """A keyfield column; ``values`` is None when the config gives no values."""

    name: str
    sql_type: str
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class LogtableSpec:
    """A logtable: stored as ``<table>__<name>`` with the user's columns."""

    name: str
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class TableSpec:
    """The main experiment table."""

    name: str
    keyfields: tuple[KeyfieldSpec, ...]
    resultfields: tuple[FieldSpec, ...] = ()
    result_timestamps: bool = False
    logtables: tuple[LogtableSpec, ...] = ()
    #: The backend whose identifier limits the derived index / constraint names follow.
    provider: Provider = "sqlite"

    @property
    def keyfield_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keyfields)

    @property
    def resultfield_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resultfields)


@dataclass(frozen=True)
class DatabaseSpec:
    """``PY_EXPERIMENTER.Database``."""

    provider: Provider
    database: str
    table: TableSpec
    #: ``use_ssh`` (1.4.2's code) / ``use_ssh_tunnel`` (1.4.2's docs): connect through the
    #: credential file's ``Connection.Ssh`` jump host.
    use_ssh: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment file, validated."""

    source: str
    n_jobs: int
    database: DatabaseSpec
    custom: Mapping[str, Any] = field(default_factory=dict)
    codecarbon: Mapping[str, Any] = field(default_factory=dict)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)

    @property
    def table(self) -> TableSpec:
        return self.database.table


_EXPERIMENTER_KEYS = ("n_jobs", "Database", "Custom", "CUSTOM", "CodeCarbon", "CODECARBON", "Execution")
_DATABASE_KEYS = ("provider", "database", "table", "logtables", "use_ssh", "use_ssh_tunnel")
_TABLE_KEYS = ("name", "keyfields", "resultfields", "result_timestamps")
_HINTS = {"logtables": "logtables belongs under PY_EXPERIMENTER.Database, next to 'table'; "}

__all__ = [
    "DEFAULT_KEYFIELD_TYPE", "IDENTIFIER_PATTERN", "IDENTIFIER_RULE", "MAX_IDENTIFIER_LENGTH", "MAX_RANGE_VALUES",
    "MAX_TABLE_NAME_LENGTH", "PROVIDERS", "RESERVED_COLUMNS", "RESERVED_LOGTABLE_COLUMNS", "RESERVED_LOGTABLE_NAMES",
    "DatabaseSpec", "ExecutionSpec", "ExperimentConfig", "FieldSpec", "KeyfieldSpec", "LogtableSpec", "Provider",
    "TableSpec", "load_experiment_config", "parse_experiment_config",
]


def load_experiment_config(
    path: str | os.PathLike[str], *, table_name: str | None = None, database_name: str | None = None
) -> ExperimentConfig:
    """Read and validate an experiment file.

    :param path: the YAML file (PyExperimenter 1.4.2 format plus ``Execution``).
    :param table_name: overrides ``PY_EXPERIMENTER.Database.table.name``.
    :param database_name: overrides ``PY_EXPERIMENTER.Database.database``.
    :raises ConfigError: the file is missing, is not valid YAML, or breaks a rule; the message
        names the file, the key path, what is wrong and how to fix it.
    """
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(
            f"the experiment file must be given as a path (str or os.PathLike), got a {type(path).__name__} "
            f"({path!r:.80}); a dict or a Hydra DictConfig goes to parse_experiment_config"
        )
    source = os.fspath(path)
    data = read_yaml(source, what="experiment file")
    return parse_experiment_config(data, source, table_name=table_name, database_name=database_name)


def parse_experiment_config(
    data: Any,
    source: str = "<experiment configuration>",
    *,
    table_name: str | None = None,
    database_name: str | None = None,
) -> ExperimentConfig:
    """Validate already-parsed ``data`` as :func:`load_experiment_config` does.

    ``data`` holds plain Python objects as ``yaml.safe_load`` returns them, or is an OmegaConf
    ``DictConfig`` (a Hydra config whose root has the ``PY_EXPERIMENTER`` key). ``${...}``
    interpolations are resolved first (:mod:`py_experimenter.config_interpolation`);
    ``source`` names the data in error messages.
    """
    data = resolve_interpolations(data, source)
    check = Checker(source)
    if data is None:
        check.fail("", "the experiment file is empty; it needs a PY_EXPERIMENTER section with a Database")
    root = check.mapping(data, "", "a mapping with the key PY_EXPERIMENTER at the top of the file")
    if "PY_EXPERIMENTER" not in root:
        found = ", ".join(map(str, root)) or "nothing"
        check.fail(
            "PY_EXPERIMENTER",
            f"missing the root key PY_EXPERIMENTER (found: {found}); indent the "
            "sections (Database, Custom, ...) under a top-level PY_EXPERIMENTER:",
        )
    check.keys(root, "", ("PY_EXPERIMENTER",))
    path = "PY_EXPERIMENTER"
    section = check.mapping(root["PY_EXPERIMENTER"], path)
    check.keys(section, path, _EXPERIMENTER_KEYS, required=("Database",))
    n_jobs = section.get("n_jobs")
    return ExperimentConfig(
        source=source,
        n_jobs=1 if n_jobs is None else check.integer(n_jobs, f"{path}.n_jobs", minimum=1),
        database=_database(check, section["Database"], f"{path}.Database", table_name, database_name),
        custom=_plain_section(check, section, path, "Custom", "CUSTOM"),
        codecarbon=_plain_section(check, section, path, "CodeCarbon", "CODECARBON"),
        execution=parse_execution(check, section.get("Execution"), f"{path}.Execution"),
    )


def _plain_section(check: Checker, section: Mapping[str, Any], path: str, *spellings: str) -> dict[str, Any]:
    given = [s for s in spellings if s in section]
    if len(given) > 1:
        check.fail(f"{path}.{given[1]}", f"give either {' or '.join(given)}, not both")
    if not given:
        return {}
    return copy.deepcopy(check.mapping(section[given[0]], f"{path}.{given[0]}"))


def _database(
    check: Checker, raw: Any, path: str, table_name: str | None, database_name: str | None
) -> DatabaseSpec:
    db = check.mapping(raw, path)
    required = ("provider", "table") if database_name is not None else ("provider", "database", "table")
    check.keys(db, path, _DATABASE_KEYS, required=required)
    ssh_keys = [key for key in ("use_ssh", "use_ssh_tunnel") if key in db]
    use_ssh = any([check.boolean(db[key], f"{path}.{key}") for key in ssh_keys])
    if len(ssh_keys) == 2 and db["use_ssh"] != db["use_ssh_tunnel"]:
        check.fail(f"{path}.use_ssh_tunnel", "use_ssh and use_ssh_tunnel (the same key, as 1.4.2's code and docs "
                   "spell it) disagree; keep one of them")
    provider = check.choice(db["provider"], f"{path}.provider", PROVIDERS, aliases={"postgres": "postgresql"})
    if database_name is not None:
        database = check.string(database_name, f"{path}.database (database_name argument)")
    else:
        database = check.string(db["database"], f"{path}.database")
    table = _table(check, db["table"], f"{path}.table", table_name)
    logtables = _logtables(check, db.get("logtables"), f"{path}.logtables")
    table = TableSpec(
        table.name, table.keyfields, table.resultfields, table.result_timestamps, logtables, provider  # type: ignore[arg-type]
    )
    name_path = f"{path}.table.name" + (" (table_name argument)" if table_name is not None else "")
    check_names(check, table, provider, f"{path}.table", name_path)
    return DatabaseSpec(provider=provider, database=database, table=table, use_ssh=use_ssh)  # type: ignore[arg-type]


def _table(check: Checker, raw: Any, path: str, table_name: str | None) -> TableSpec:
    table = check.mapping(raw, path)
    required = ("keyfields",) if table_name is not None else ("name", "keyfields")
    check.keys(table, path, _TABLE_KEYS, required=required, hints=_HINTS)
    name_path = f"{path}.name" + (" (table_name argument)" if table_name is not None else "")
    name = _identifier(check, table["name"] if table_name is None else table_name, name_path, "table name")
    keyfields = _keyfields(check, table["keyfields"], f"{path}.keyfields")
    resultfields = _columns(
        check, table.get("resultfields"), f"{path}.resultfields", "resultfield", RESERVED_COLUMNS
    )
    timestamps = check.boolean(table.get("result_timestamps", False), f"{path}.result_timestamps")

    seen: dict[str, str] = {}
    columns = [(k.name, f"{path}.keyfields.{k.name}") for k in keyfields]
    columns += [(r.name, f"{path}.resultfields.{r.name}") for r in resultfields]
    for column, where in columns:
        if column.lower() in seen:
            check.fail(
                where,
                f"column {column!r} is defined twice (also at {seen[column.lower()]}; "
                "names are compared case-insensitively); rename one",
            )
        seen[column.lower()] = where
    if timestamps:
        for field_ in resultfields:
            generated = f"{field_.name}_timestamp"
            if generated.lower() in seen:
                check.fail(
                    seen[generated.lower()],
                    f"column {generated!r} collides with the column that "
                    f"result_timestamps creates for resultfield {field_.name!r}; rename it",
                )
    return TableSpec(name, keyfields, resultfields, timestamps)


def _identifier(check: Checker, name: Any, path: str, what: str, reserved: Iterable[str] = ()) -> str:
    """A table, column or logtable name: the identifier rule's characters, not reserved.

    Lengths (of the name and of the names derived from it, ``<table>__<logtable>``, ...) are
    checked against the provider's limit afterwards by
    :func:`~py_experimenter.config_names.check_names`.
    """
    if not isinstance(name, str) or not _IDENTIFIER_CHARACTERS.fullmatch(name):
        shown = (
            repr(name) if isinstance(name, str) else f"{name!r} (YAML read it as {type_word(name)}; quote it)"
        )
        check.fail(
            path,
            f"invalid {what} {shown}: names must match {IDENTIFIER_RULE} (a letter or "
            "underscore, then at most 63 letters, digits or underscores)",
            InvalidIdentifierError,
        )
    reserved = tuple(reserved)
    if name.lower() in {r.lower() for r in reserved}:
        check.fail(
            path,
            f"{what} {name!r} is a reserved name; rename it. Reserved (case-insensitive): "
            f"{', '.join(reserved)}",
            InvalidIdentifierError,
        )
    return name


def _sql_type(check: Checker, value: Any, path: str) -> str:
    """A column type that :func:`parse_sql_type` accepts, returned as written."""
    if not isinstance(value, str):
        check.fail(path, f"expected a column type such as VARCHAR(255) or INT, got {type_word(value)}")
    try:
        parse_sql_type(value)
    except ValueError as exc:
        check.fail(path, str(exc))
    return value


def _keyfields(check: Checker, raw: Any, path: str) -> tuple[KeyfieldSpec, ...]:
    expected = "a mapping of keyfield name → {type, values}"
    keyfields = check.mapping(raw, path, expected)
    if not keyfields:
        check.fail(
            path, "no keyfields; the table needs at least one, e.g. seed: {type: INT, values: [1, 2, 3]}"
        )
    result = []
    for name, spec in keyfields.items():
        where = f"{path}.{name}"
        _identifier(check, name, where, "keyfield name", RESERVED_COLUMNS)
        body = check.mapping(spec, where, "a mapping with 'type' and optionally 'values'")
        check.keys(body, where, ("type", "values"))
        sql_type = body.get("type")
        sql_type = _sql_type(check, DEFAULT_KEYFIELD_TYPE if sql_type is None else sql_type, f"{where}.type")
        values = parse_values(check, body["values"], f"{where}.values") if "values" in body else None
        result.append(KeyfieldSpec(name, sql_type, values))
    return tuple(result)


def _columns(
    check: Checker, raw: Any, path: str, what: str, reserved: tuple[str, ...]
) -> tuple[FieldSpec, ...]:
    columns = check.mapping(raw, path, f"a mapping of {what} name → column type")
    return tuple(
        FieldSpec(
            _identifier(check, name, f"{path}.{name}", f"{what} name", reserved),
            _sql_type(check, sql_type, f"{path}.{name}"),
        )
        for name, sql_type in columns.items()
    )


def _logtables(check: Checker, raw: Any, path: str) -> tuple[LogtableSpec, ...]:
    logtables = check.mapping(raw, path, "a mapping of logtable name → {column: type}")
    result: list[LogtableSpec] = []
    for name, body in logtables.items():
        where = f"{path}.{name}"
        _identifier(check, name, where, "logtable name", RESERVED_LOGTABLE_NAMES)
        if any(log.name.lower() == name.lower() for log in result):
            check.fail(where, f"logtable {name!r} is defined twice (names are compared case-insensitively)")
        fields = _columns(check, body, where, "logtable column", RESERVED_LOGTABLE_COLUMNS)
        if not fields:
            check.fail(where, "a logtable needs at least one column, e.g. loss: DOUBLE")
        lowered = [f.name.lower() for f in fields]
        for f in fields:
            if lowered.count(f.name.lower()) > 1:
                check.fail(f"{where}.{f.name}", f"column {f.name!r} is defined twice (case-insensitively)")
        result.append(LogtableSpec(name, fields))
    return tuple(result)
