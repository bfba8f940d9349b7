"""Table definitions built from the user's configuration (SQLAlchemy Core, no ORM).

Main table columns keep PyExperimenter 1.4.2's order (``ID``, keyfields, ``creation_date``,
``status``, ``start_date``, ``name``, ``machine``, resultfields, ``end_date``, ``error``), then
our own bookkeeping columns. ``<table>__<logtable>`` and ``<table>__attempts`` hang off it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from py_experimenter.config import FieldSpec, LogtableSpec, TableSpec
from py_experimenter.identifiers import (
    ATTEMPTS_SUFFIX,
    CODECARBON_SUFFIX,
    DerivedNames,
    attempts_table,
    codecarbon_table,
    derive_names,
    logtable_table,
    timestamp_column,
)
from py_experimenter.sqltypes import parse_sql_type

__all__ = ["ATTEMPTS_SUFFIX", "CODECARBON_SUFFIX", "Schema", "build_schema", "result_columns", "timestamp_column"]

KEYHASH_LENGTH = 32

#: A DATETIME with microseconds on MySQL (plain DATETIME would drop them).
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

#: PyExperimenter 1.4.2's ``<table>_codecarbon`` columns, in its order (after ``ID``, ``experiment_id``).
CODECARBON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("codecarbon_timestamp", "DATETIME"),
    ("project_name", "VARCHAR(255)"),
    ("run_id", "VARCHAR(255)"),
    ("duration_seconds", "DOUBLE"),
    ("emissions_kg", "DOUBLE"),
    ("emissions_rate_kg_sec", "DOUBLE"),
    ("cpu_power_watt", "DOUBLE"),
    ("gpu_power_watt", "DOUBLE"),
    ("ram_power_watt", "DOUBLE"),
    ("cpu_energy_kw", "DOUBLE"),
    ("gpu_energy_kw", "DOUBLE"),
    ("ram_energy_kw", "DOUBLE"),
    ("energy_consumed_kw", "DOUBLE"),
    ("country_name", "VARCHAR(255)"),
    ("country_iso_code", "VARCHAR(255)"),
    ("region", "VARCHAR(255)"),
    ("cloud_provider", "VARCHAR(255)"),
    ("cloud_region", "VARCHAR(255)"),
    ("os", "VARCHAR(255)"),
    ("python_version", "VARCHAR(255)"),
    ("codecarbon_version", "VARCHAR(255)"),
    ("cpu_count", "DOUBLE"),
    ("cpu_model", "VARCHAR(255)"),
    ("gpu_count", "DOUBLE"),
    ("gpu_model", "VARCHAR(255)"),
    ("longitude", "VARCHAR(255)"),
    ("latitude", "VARCHAR(255)"),
    ("ram_total_size", "DOUBLE"),
    ("tracking_mode", "VARCHAR(255)"),
    ("on_cloud", "VARCHAR(255)"),
    ("power_usage_efficiency", "DOUBLE"),
    ("offline_mode", "BOOL"),
)


def _experiment_fk(spec: TableSpec, names: DerivedNames, child: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"{spec.name}.ID", ondelete="CASCADE", name=names.foreign_keys[child])


def _experiment_index(names: DerivedNames, child: str) -> sa.Index:
    return sa.Index(names.experiment_indexes[child], "experiment_id")


def _user_column(spec: FieldSpec) -> sa.Column:
    return sa.Column(spec.name, parse_sql_type(spec.sql_type), nullable=True)


@dataclass(frozen=True)
class Schema:
    """All tables of one experiment: main, logtables, attempts and codecarbon."""

    spec: TableSpec
    metadata: sa.MetaData
    main: sa.Table
    attempts: sa.Table
    logtables: dict[str, sa.Table]
    codecarbon: sa.Table
    #: Whether ``codecarbon`` is one of the tables (CodeCarbon on and installed). Off, it is
    #: neither created nor checked; ``metadata`` still holds it, so that dropping the table
    #: also drops a ``<table>_codecarbon`` left by an earlier run with CodeCarbon on.
    with_codecarbon: bool = True

    @property
    def all_tables(self) -> list[sa.Table]:
        """Every table in use, parents first (the order to create; reverse it to drop)."""
        tables = [self.main, self.attempts, *self.logtables.values()]
        return [*tables, self.codecarbon] if self.with_codecarbon else tables


def result_columns(spec: TableSpec) -> list[str]:
    """The resultfield columns, with their ``<field>_timestamp`` columns when enabled."""
    names = list(spec.resultfield_names)
    if spec.result_timestamps:
        names += [timestamp_column(name) for name in spec.resultfield_names]
    return names


def build_schema(spec: TableSpec, provider: str | None = None, *, with_codecarbon: bool = True) -> Schema:
    """Build the SQLAlchemy tables for ``spec`` (nothing touches the database).

    ``with_codecarbon=False``: ``<table>_codecarbon`` is not among :attr:`Schema.all_tables`.

    Index and constraint names follow ``provider``'s identifier limits (default: the provider
    the spec was configured for), see :mod:`py_experimenter.identifiers`.
    """
    metadata = sa.MetaData()
    names = derive_names(spec.name, (log.name for log in spec.logtables), provider or spec.provider)
    main = _main_table(spec, metadata, names)
    attempts_name = attempts_table(spec.name)
    attempts = sa.Table(
        attempts_name,
        metadata,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, _experiment_fk(spec, names, attempts_name), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("machine", sa.String(255)),
        sa.Column("job_id", sa.String(64)),
        sa.Column("started_at", DateTime),
        sa.Column("ended_at", DateTime),
        sa.Column("outcome", sa.String(32)),
        sa.Column("error", LongText),
        sa.Column("cpu_seconds", sa.Double),
        sa.Column("max_rss_mb", sa.Double),
        sa.Column("duration_seconds", sa.Double),
        sa.Column("image", sa.String(255)),
        sa.Column("limits", sa.Text),
        sa.UniqueConstraint("experiment_id", "attempt", name=names.attempt_unique),
    )
    logtables = {log.name: _logtable(spec, log, metadata, names) for log in spec.logtables}
    codecarbon_name = codecarbon_table(spec.name)
    codecarbon = sa.Table(
        codecarbon_name,
        metadata,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, _experiment_fk(spec, names, codecarbon_name), nullable=False),
        *(_user_column(FieldSpec(name, sql_type)) for name, sql_type in CODECARBON_COLUMNS),
        sa.Column("attempt", sa.Integer),  # the attempt measured (1.4.2 has no such column)
        _experiment_index(names, codecarbon_name),
    )
    return Schema(spec, metadata, main, attempts, logtables, codecarbon, with_codecarbon=with_codecarbon)


def _logtable(spec: TableSpec, log: LogtableSpec, metadata: sa.MetaData, names: DerivedNames) -> sa.Table:
    child = logtable_table(spec.name, log.name)
    return sa.Table(
        child,
        metadata,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, _experiment_fk(spec, names, child), nullable=False),
        sa.Column("timestamp", DateTime),
        *(_user_column(f) for f in log.fields),
        sa.Column("attempt", sa.Integer),
        _experiment_index(names, child),
    )


def _main_table(spec: TableSpec, metadata: sa.MetaData, names: DerivedNames) -> sa.Table:
    resultfield_columns: list[sa.Column] = []
    for field in spec.resultfields:
        resultfield_columns.append(_user_column(field))
        if spec.result_timestamps:
            resultfield_columns.append(sa.Column(timestamp_column(field.name), DateTime))
    name = spec.name
    return sa.Table(
        name,
        metadata,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
        *(_user_column(FieldSpec(k.name, k.sql_type)) for k in spec.keyfields),
        sa.Column("creation_date", DateTime),
        sa.Column("status", sa.String(255), nullable=False),
        sa.Column("start_date", DateTime),
        sa.Column("name", LongText),
        sa.Column("machine", sa.String(255)),
        *resultfield_columns,
        sa.Column("end_date", DateTime),
        sa.Column("error", LongText),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(255)),
        sa.Column("job_id", sa.String(64)),
        sa.Column("lease_until", DateTime),
        sa.Column("heartbeat_at", DateTime),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("keyhash", sa.CHAR(KEYHASH_LENGTH), nullable=False),
        sa.UniqueConstraint("keyhash", name=names.keyhash_unique),
        # The claim is a short range scan on this index: ORDER BY priority, ID matches it exactly.
        sa.Index(names.claim_index, "status", "priority", "ID"),
        # Finding expired leases: status='running' AND lease_until < now.
        sa.Index(names.lease_index, "status", "lease_until"),
    )
