"""Bring an existing table (PyExperimenter 1.4.2's, or one of an older configuration) to the
configured schema in place: ``py-experimenter migrate`` / ``PyExperimenter.migrate_table()``.

Only additions are made, and only when every difference is safe (see
:mod:`py_experimenter.db.inspection`); otherwise :class:`MigrationError` lists every
difference and nothing is changed. Every ID, status, result and log row is kept.

What 1.4.2's rows get: ``attempt`` 1 for rows that ever started (0 for ``created``), their
``keyhash`` from the canonical keyfield values (duplicate experiments are refused, with their
IDs), one attempts-table row per started row (outcome ``done`` / ``error`` / ``paused``, open
for ``running``), and ``running`` rows an expired lease (database clock), so that the next
executor takes them back as ``lost`` through the normal recovery path. Existing log rows get
their experiment's attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from py_experimenter.db.inspection import TableComparison, compare_tables, compared_tables
from py_experimenter.db.retry import first_line
from py_experimenter.exceptions import MigrationError
from py_experimenter.status import ExperimentStatus

if TYPE_CHECKING:
    from py_experimenter.db.database import Database

logger = logging.getLogger("py-experimenter")

CREATED = ExperimentStatus.CREATED.value
RUNNING = ExperimentStatus.RUNNING.value
#: Statuses whose rows ran at least once: they get attempt 1 and an attempts-table row.
STARTED = (RUNNING, ExperimentStatus.DONE.value, ExperimentStatus.ERROR.value, ExperimentStatus.PAUSED.value)


@dataclass
class MigrationReport:
    """What :func:`migrate` changed (or, for a dry run, would change)."""

    table: str
    dry_run: bool
    changes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.changes:
            return f"table {self.table!r} is up to date: nothing to migrate"
        verb = "would change (dry run, nothing written)" if self.dry_run else "migrated"
        return f"table {self.table!r} {verb}:\n" + "\n".join(f"  - {c}" for c in self.changes)


def migrate(db: Database, *, dry_run: bool = False) -> MigrationReport:
    """Migrate ``db``'s tables in place; see the module docstring.

    :raises MigrationError: a difference is unsafe (all of them are listed; nothing changed),
        or the server refused a change (its reason, first line).
    """
    report = MigrationReport(db.schema.main.name, dry_run)
    with db.connect() as conn:
        with conn.begin():
            comparison = compare_tables(conn, db.schema)
        if not comparison.main_exists:
            report.changes.append("the table does not exist: it will be created as configured")
            if not dry_run:
                db.create_tables()
            return report
        if comparison.unsafe:
            raise MigrationError(comparison.refusal(report.table))
        report.changes = [str(d) for d in comparison.differences]
        if dry_run or comparison.up_to_date:
            return report
        try:
            with conn.begin():
                _Migrator(db, conn, comparison).run()
        except sa.exc.DBAPIError as err:
            partial = " (MySQL commits each ALTER TABLE: run migrate again after fixing it)" \
                if db.backend == "mysql" else " (rolled back: nothing was changed)"
            raise MigrationError(f"migrating table {report.table!r} failed: {first_line(err.orig)}{partial}") from None
        with conn.begin():
            left = compare_tables(conn, db.schema)
        if not left.up_to_date:
            raise MigrationError(f"table {report.table!r} still differs after migrating:\n{left.describe()}")
    logger.info("migrated table %r: %d changes", report.table, len(report.changes))
    return report


class _Migrator:
    """Applies a safe :class:`TableComparison` on one connection, in one transaction
    (PostgreSQL and SQLite roll everything back on failure; MySQL commits each DDL)."""

    def __init__(self, db: Database, conn: Connection, comparison: TableComparison):
        self.db, self.conn, self.comparison = db, conn, comparison
        self.schema = db.schema
        # A private copy: indexes built below must not be added to the shared metadata.
        self.copy = sa.MetaData()
        self.tables = compared_tables(self.schema, sa.inspect(conn), migrating=True)
        for table in self.tables:
            table.to_metadata(self.copy)
        self.quote = conn.dialect.identifier_preparer.quote

    def run(self) -> None:
        main = self.schema.main
        had_attempt = "attempt" in self.comparison.existing[main.name]
        self._add_columns(main)
        self._retype_columns()
        self._fill_main(had_attempt)
        for table in self.tables[1:]:
            if self.comparison.has_table(table):
                added = self._add_columns(table)
                if table.name in {t.name for t in self.schema.logtables.values()} and "attempt" in added:
                    self._fill_log_attempts(table)
            else:
                self.copy.tables[table.name].create(self.conn)
                if table is self.schema.attempts and not had_attempt:
                    self._fill_attempts()
        self._add_indexes()

    def _add_columns(self, table: sa.Table) -> list[str]:
        added = []
        for column in self.comparison.missing_columns(table):
            # keyhash is filled below; other columns without a server default stay nullable
            # (existing rows have no value for them).
            nullable = column.nullable or column.server_default is None
            default = column.server_default
            spec = sa.Column(column.name, column.type, nullable=nullable, server_default=sa.DefaultClause(default.arg)
                             if isinstance(default, sa.DefaultClause) else None)
            sa.Table(table.name, sa.MetaData(), spec)
            ddl = sa.schema.CreateColumn(spec).compile(dialect=self.conn.dialect)
            self.conn.exec_driver_sql(f"ALTER TABLE {self.quote(table.name)} ADD COLUMN {ddl}")
            added.append(column.name)
        return added

    def _retype_columns(self) -> None:
        main = self.schema.main
        for difference in self.comparison.differences:
            if difference.retype is not None:  # MySQL only (see inspection._widen_rounding_decimal)
                type_ = main.c[difference.retype].type.compile(dialect=self.conn.dialect)
                self.conn.exec_driver_sql(
                    f"ALTER TABLE {self.quote(main.name)} MODIFY {self.quote(difference.retype)} {type_} NULL")

    def _fill_main(self, had_attempt: bool) -> None:
        main, d = self.schema.main, self.db.dialect
        if not had_attempt:
            self.conn.execute(sa.update(main).where(main.c.status != CREATED).values(attempt=1))
        if self.comparison.running_without_lease:
            past = {"past": d.seconds_param(-1.0)}
            self.conn.execute(
                sa.update(main).where(main.c.status == RUNNING, main.c.lease_until.is_(None))
                .values(lease_until=d.now_plus("past"), heartbeat_at=d.now_plus("past")), past)
        if self.comparison.keyhashes:
            self.conn.execute(
                sa.update(main).where(main.c.ID == sa.bindparam("row_id")).values(keyhash=sa.bindparam("hash")),
                [{"row_id": i, "hash": h} for i, h in self.comparison.keyhashes.items()])
        if "keyhash" in {c.name for c in self.comparison.missing_columns(main)}:
            keyhash = self.quote("keyhash")
            if self.db.backend == "postgresql":
                self.conn.exec_driver_sql(f"ALTER TABLE {self.quote(main.name)} ALTER COLUMN {keyhash} SET NOT NULL")
            elif self.db.backend == "mysql":
                type_ = main.c.keyhash.type.compile(dialect=self.conn.dialect)
                self.conn.exec_driver_sql(f"ALTER TABLE {self.quote(main.name)} MODIFY {keyhash} {type_} NOT NULL")
            # SQLite cannot add NOT NULL to an existing column; every insert sets keyhash anyway.

    def _fill_attempts(self) -> None:
        main, attempts = self.schema.main, self.schema.attempts
        outcome = sa.case((main.c.status == RUNNING, sa.null()), else_=main.c.status)
        ended = sa.case((main.c.status == RUNNING, sa.null()), else_=main.c.end_date)
        rows = sa.select(main.c.ID, sa.literal(1), main.c.machine, main.c.start_date, ended, outcome,
                         main.c.error).where(main.c.status.in_(STARTED))
        columns = ["experiment_id", "attempt", "machine", "started_at", "ended_at", "outcome", "error"]
        self.conn.execute(sa.insert(attempts).from_select(columns, rows))

    def _fill_log_attempts(self, log: sa.Table) -> None:
        main = self.schema.main
        attempt = sa.select(main.c.attempt).where(main.c.ID == log.c.experiment_id).scalar_subquery()
        self.conn.execute(sa.update(log).where(log.c.attempt.is_(None)).values(attempt=attempt))

    def _add_indexes(self) -> None:
        for difference in self.comparison.differences:
            name = difference.index
            if name is None:
                continue
            table = self.copy.tables[difference.table]
            index = next((i for i in table.indexes if i.name == name), None)
            if index is None:  # a unique constraint: created as a unique index of the same name
                constraint = next(c for c in table.constraints
                                  if isinstance(c, sa.UniqueConstraint) and c.name == name)
                index = sa.Index(name, *constraint.columns, unique=True)
            index.create(self.conn)
