"""What differs between the tables in the database and the tables the configuration builds.

:func:`compare_tables` reads the database (columns with their reflected types, indexes, and
for tables that predate our bookkeeping, the rows' keyfields) and returns a
:class:`TableComparison`: every difference, each either *safe* (``py-experimenter migrate``
can add it in place: a bookkeeping column, a new resultfield or logtable, an index) or
*unsafe* (a keyfield added, removed, renamed or retyped, a column dropped from the
configuration, a resultfield retyped, duplicate experiments). Nothing here writes.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from py_experimenter.db.schema import Schema, result_columns
from py_experimenter.grid import RowCanonicalizer
from py_experimenter.sqltypes import parse_sql_type
from py_experimenter.status import ExperimentStatus

#: Our columns on the main table (PyExperimenter 1.4.2 has none of them).
BOOKKEEPING = ("attempt", "worker", "job_id", "lease_until", "heartbeat_at", "priority",
               "cancel_requested", "keyhash")
#: PyExperimenter 1.4.2's own columns of the main table besides ID, keyfields and resultfields.
METADATA = ("creation_date", "status", "start_date", "name", "machine", "end_date", "error")
RUNNING = ExperimentStatus.RUNNING.value
#: The :attr:`Difference.what` of a table that does not exist yet.
CREATE_TABLE = "create the table"
#: How many rows of a duplicate group, and how many groups, a message lists.
_SHOW = 10


@dataclass(frozen=True)
class Difference:
    """One way in which a table differs from the configuration."""

    table: str
    what: str
    safe: bool
    #: For an index to add: its name in the configured schema.
    index: str | None = None
    #: For a column to change to its configured type (a widening that keeps every value).
    retype: str | None = None
    #: Opening the table works without this change (a side table ``create_all`` creates, a
    #: non-unique index): not a reason to refuse, e.g. while another process on MySQL is
    #: still creating the indexes of a new table one statement at a time.
    optional: bool = False

    def __str__(self) -> str:
        return f"{self.table}: {self.what}"


@dataclass
class ExistingColumn:
    """A column as the database has it: name, reflected type, and its type family."""

    name: str
    type: sa.types.TypeEngine
    family: str
    shown: str


@dataclass
class TableComparison:
    """The result of :func:`compare_tables`: differences plus what migrating needs to know."""

    main_exists: bool
    differences: list[Difference] = field(default_factory=list)
    #: Existing columns per table name (lower-case name → column); absent tables are missing.
    existing: dict[str, dict[str, ExistingColumn]] = field(default_factory=dict)
    #: ID → keyhash for main-table rows without a keyhash (only when those were read).
    keyhashes: dict[int, str] = field(default_factory=dict)
    #: ``running`` rows without a lease (left by PyExperimenter 1.4.2 or a killed process).
    running_without_lease: int = 0

    @property
    def unsafe(self) -> list[Difference]:
        return [d for d in self.differences if not d.safe]

    @property
    def up_to_date(self) -> bool:
        return not self.differences

    def has_table(self, table: sa.Table) -> bool:
        return table.name in self.existing

    def missing_columns(self, table: sa.Table) -> list[sa.Column]:
        """Columns of ``table`` (configured order) that the existing table lacks."""
        have = self.existing.get(table.name, {})
        return [c for c in table.columns if c.name.lower() not in have]

    def describe(self) -> str:
        """One line per difference, unsafe ones first."""
        ordered = sorted(self.differences, key=lambda d: d.safe)
        return "\n".join(f"  - {'' if d.safe else '[unsafe] '}{d}" for d in ordered)

    def refusal(self, table: str) -> str:
        """The message for a table whose differences cannot be migrated safely."""
        return (
            f"table {table!r} already exists with different columns than the configuration, in ways "
            f"that cannot be migrated in place (nothing was changed):\n{self.describe()}\n"
            "fix: put the table's keyfields / columns (and their types) back into the configuration, "
            "use another table name, or delete_table() to drop the table with its results"
        )

    def needs_migration(self, table: str) -> str:
        """The message for a table that ``migrate`` can bring up to date."""
        return (
            f"table {table!r} was created by PyExperimenter 1.4.2 or an older configuration and must be "
            f"migrated first:\n{self.describe()}\n"
            "run `py-experimenter migrate CONFIG` (add --dry-run to only see the changes) or "
            "PyExperimenter(...).migrate_table(); every ID, status, result and log row is kept"
        )


def type_family(type_: sa.types.TypeEngine) -> str:
    """The kind of values a column holds: ``integer`` (booleans too: MySQL stores them as
    TINYINT), ``real``, ``string``, ``datetime``, ``date``, ``time``, ``binary``, ``json``,
    or ``unknown`` (never reported as a change)."""
    checks: tuple[tuple[type, str], ...] = (
        (sa.Boolean, "integer"), (sa.Integer, "integer"), (sa.Numeric, "real"), (sa.Float, "real"),
        (sa.DateTime, "datetime"), (sa.Date, "date"), (sa.Time, "time"), (sa.JSON, "json"),
        (sa.String, "string"), (sa.LargeBinary, "binary"),
    )
    for kind, family in checks:
        if isinstance(type_, kind):
            return family
    return "unknown"


def _shown(type_: sa.types.TypeEngine, dialect: sa.engine.Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:  # a reflected type some dialect cannot render: its class name will do
        return type(type_).__name__


def _existing_columns(conn: Connection, inspector: Any, name: str) -> dict[str, ExistingColumn]:
    declared: dict[str, str] = {}
    if conn.dialect.name == "sqlite":
        # SQLite keeps the declared type text (1.4.2 wrote the config's, e.g. 'str'); read
        # it the way our config does rather than through SQLite's type affinity.
        quoted = conn.dialect.identifier_preparer.quote(name)
        declared = {row[1].lower(): row[2] for row in conn.exec_driver_sql(f"PRAGMA table_info({quoted})")}
    columns = {}
    for col in inspector.get_columns(name):
        type_ = col["type"]
        text = declared.get(col["name"].lower())
        if text:
            with contextlib.suppress(ValueError):  # not a config type: keep the reflected one
                type_ = parse_sql_type(text)
        shown = text or _shown(col["type"], conn.dialect)
        columns[col["name"].lower()] = ExistingColumn(col["name"], type_, type_family(type_), shown)
    return columns


def _index_columns(inspector: Any, name: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """Column lists of (all indexes, unique indexes / constraints), lower case."""
    every: set[tuple[str, ...]] = set()
    unique: set[tuple[str, ...]] = set()
    for index in inspector.get_indexes(name):
        cols = tuple(str(c).lower() for c in index["column_names"] if c is not None)
        every.add(cols)
        if index.get("unique"):
            unique.add(cols)
    for constraint in inspector.get_unique_constraints(name):
        cols = tuple(c.lower() for c in constraint["column_names"])
        every.add(cols)
        unique.add(cols)
    pk = inspector.get_pk_constraint(name).get("constrained_columns") or []
    every.add(tuple(c.lower() for c in pk))
    return every, unique


def compared_tables(schema: Schema, inspector: Any, *, migrating: bool) -> list[sa.Table]:
    """The tables to compare: those in use; when migrating also ``<table>_codecarbon`` if it
    exists (its missing columns are added even while CodeCarbon is off)."""
    tables = list(schema.all_tables)
    if migrating and schema.codecarbon not in tables and inspector.has_table(schema.codecarbon.name):
        tables.append(schema.codecarbon)
    return tables


def compare_tables(conn: Connection, schema: Schema, *, read_rows: bool = True) -> TableComparison:
    """Compare the tables of ``schema`` with the database.

    :param read_rows: migrating: also read the rows that need a keyhash (to find 1.4.2's
        duplicate experiments), count ``running`` rows without a lease, and compare an
        existing codecarbon table even while CodeCarbon is off. Without it only the structure
        of the tables in use is compared (cheap: what opening a table does).
    """
    inspector = sa.inspect(conn)
    main = schema.main
    result = TableComparison(main_exists=inspector.has_table(main.name))
    tables = compared_tables(schema, inspector, migrating=read_rows)
    for table in tables:
        if inspector.has_table(table.name):
            result.existing[table.name] = _existing_columns(conn, inspector, table.name)
    if not result.main_exists:
        return result
    _compare_main(result, schema, conn.dialect.name)
    for log in schema.spec.logtables:
        _compare_child(result, schema.logtables[log.name], {f.name.lower(): f.sql_type for f in log.fields})
    logtables = {t.name for t in schema.logtables.values()}
    for table in tables:  # the attempts table, and codecarbon's
        if table is not schema.main and table.name not in logtables:
            _compare_child(result, table, None)
    for table in tables:
        if result.has_table(table):
            _compare_indexes(result, table, inspector)
    if read_rows:
        _read_rows(result, conn, schema)
    return result


def _compare_main(result: TableComparison, schema: Schema, backend: str) -> None:
    main, spec = schema.main, schema.spec
    have = result.existing[main.name]
    add = result.differences.append
    keyfields = {k.name.lower(): k.sql_type for k in spec.keyfields}
    configured_types = {**keyfields, **{r.name.lower(): r.sql_type for r in spec.resultfields}}
    results = {c.lower() for c in result_columns(spec)}
    for column in main.columns:
        name = column.name.lower()
        if name in have:
            continue
        if name in keyfields:
            add(Difference(main.name, f"keyfield {column.name!r} is in the configuration but not in the table "
                                      "(a keyfield added or renamed)", False))
        elif name in results:
            add(Difference(main.name, f"add resultfield column {column.name!r}", True))
        elif name in BOOKKEEPING:
            add(Difference(main.name, f"add bookkeeping column {column.name!r}", True))
        else:
            add(Difference(main.name, f"column {column.name!r} is missing", False))
    expected = {c.name.lower() for c in main.columns}
    for name, existing in have.items():
        if name not in expected:
            add(Difference(main.name, f"column {existing.name!r} ({existing.shown}) is in the table but not in the "
                                      "configuration (a keyfield or resultfield removed or renamed)", False))
    for name, sql_type in configured_types.items():
        if name in have:
            kind = "keyfield" if name in keyfields else "resultfield"
            _compare_type(result, main.name, kind, have[name], sql_type)
            if kind == "resultfield" and backend in ("mysql", "mariadb"):
                _widen_rounding_decimal(result, main.name, have[name], sql_type)


def _compare_type(result: TableComparison, table: str, kind: str, existing: ExistingColumn, sql_type: str) -> None:
    wanted = type_family(parse_sql_type(sql_type))
    if "unknown" in (wanted, existing.family) or wanted == existing.family:
        return
    if wanted == "json" and isinstance(existing.type, mysql.LONGTEXT):
        return  # MariaDB's JSON is an alias of LONGTEXT (with a json_valid check): reflected as such
    result.differences.append(Difference(
        table, f"{kind} {existing.name!r}: type changed from {existing.shown} ({existing.family}) in the table "
               f"to {sql_type} ({wanted}) in the configuration", False))


def _widen_rounding_decimal(result: TableComparison, table: str, existing: ExistingColumn, sql_type: str) -> None:
    """1.4.2 passed a bare ``DECIMAL`` to MySQL, which makes it DECIMAL(10,0) and rounds every
    value to an integer; we configure a double for it: widen the column (keeps every value)."""
    configured = parse_sql_type(sql_type)
    found = existing.type
    if (isinstance(configured, sa.Float) and isinstance(found, sa.Numeric) and not isinstance(found, sa.Float)
            and not found.scale):
        result.differences.append(Difference(
            table, f"resultfield {existing.name!r}: change {existing.shown} (rounds every value to an integer) "
                   f"to the configured {sql_type} (a double; existing values are kept)", True, retype=existing.name))


def _compare_child(result: TableComparison, table: sa.Table, types: dict[str, str] | None) -> None:
    """A logtable (``types``: its configured column types) must match; the attempts and
    codecarbon tables (``types`` None) only need our columns, extra ones are left alone."""
    if not result.has_table(table):
        result.differences.append(Difference(table.name, CREATE_TABLE, True, optional=True))
        return
    have = result.existing[table.name]
    for column in result.missing_columns(table):
        safe = column.name != "ID"
        result.differences.append(Difference(table.name, f"add column {column.name!r}", safe))
    if types is None:
        return
    expected = {c.name.lower(): c for c in table.columns}
    for name, existing in have.items():
        if name not in expected:
            result.differences.append(Difference(
                table.name, f"column {existing.name!r} ({existing.shown}) is in the logtable but not in the "
                            "configuration (removed or renamed)", False))
        elif name in types:
            _compare_type(result, table.name, "log column", existing, types[name])


def _compare_indexes(result: TableComparison, table: sa.Table, inspector: Any) -> None:
    every, unique = _index_columns(inspector, table.name)
    for index in table.indexes:
        cols = tuple(c.name.lower() for c in index.columns)
        if cols not in (unique if index.unique else every):
            shown = [c.name for c in index.columns]
            result.differences.append(
                Difference(table.name, f"add index {index.name} {shown}", True, str(index.name),
                           optional=not index.unique))
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            cols = tuple(c.name.lower() for c in constraint.columns)
            if cols not in unique:
                shown = [c.name for c in constraint.columns]
                result.differences.append(Difference(
                    table.name, f"add unique index {constraint.name} {shown}", True, str(constraint.name)))


def _read_rows(result: TableComparison, conn: Connection, schema: Schema) -> None:
    main, spec = schema.main, schema.spec
    have = result.existing[main.name]
    if any(not d.safe for d in result.differences if d.table == main.name):
        return  # the keyfields themselves differ: hashing the rows would mean nothing
    table = sa.table(main.name, *(sa.column(have[c.lower()].name) for c in ("ID", *spec.keyfield_names, "status")))
    if "lease_until" in have:
        running = sa.select(sa.func.count()).select_from(table).where(
            table.c.status == RUNNING, sa.column(have["lease_until"].name).is_(None))
    else:
        running = sa.select(sa.func.count()).select_from(table).where(table.c.status == RUNNING)
    result.running_without_lease = int(conn.scalar(running) or 0)
    if result.running_without_lease:
        result.differences.append(Difference(
            main.name, f"{result.running_without_lease} running rows have no lease: give them an expired one, "
                       "so that executors take them back as lost", True))
    query = sa.select(*(table.c[have[c.lower()].name] for c in ("ID", *spec.keyfield_names)))
    if "keyhash" in have:
        query = query.where(sa.column(have["keyhash"].name).is_(None))
    # The canonicalization fill uses (grid.keyhash does the same per row), built once.
    canonicalizer = RowCanonicalizer(spec.keyfields, conn.dialect.name if conn.dialect.name != "mariadb" else "mysql")
    groups: dict[str, list[int]] = defaultdict(list)
    values: dict[str, dict[str, Any]] = {}
    problems = []
    for row in conn.execute(query):
        keyfields = dict(zip(spec.keyfield_names, row[1:], strict=True))
        try:
            keyhash = canonicalizer.keyhash(canonicalizer.normalize(keyfields))
        except ValueError as err:  # FillError / InvalidValueError: a value its column cannot hold
            problems.append(f"row ID {row[0]}: {err}")
            continue
        result.keyhashes[int(row[0])] = keyhash
        groups[keyhash].append(int(row[0]))
        values.setdefault(keyhash, keyfields)
    for problem in problems[:_SHOW]:
        result.differences.append(Difference(main.name, problem + " (fix or delete that row)", False))
    duplicates = [(ids, values[key]) for key, ids in groups.items() if len(ids) > 1]
    for ids, keyfields in duplicates[:_SHOW]:
        extra = ", ".join(str(i) for i in ids[1:])
        result.differences.append(Difference(
            main.name, f"rows with IDs {ids} are the same experiment {keyfields}: the UNIQUE keyhash index allows "
                       f"one row per keyfield combination; keep one (e.g. DELETE FROM {main.name} WHERE ID IN "
                       f"({extra})) and migrate again", False))
    if len(duplicates) > _SHOW:
        result.differences.append(Difference(
            main.name, f"... and {len(duplicates) - _SHOW} more groups of duplicate experiments", False))
    if result.keyhashes and not duplicates and not problems:
        result.differences.append(Difference(main.name, f"compute the keyhash of {len(result.keyhashes)} rows", True))
