"""Storing one attempt's CodeCarbon figures in ``<table>_codecarbon``, fenced.

The columns are PyExperimenter 1.4.2's; the values come from CodeCarbon's ``EmissionsData``
by field name (the same names in CodeCarbon 2.4 and 3.x; 3.x adds fields that 1.4.2 has no
column for, such as ``water_consumed``, which are left out). The row is written by one
``INSERT … SELECT … FROM <table> WHERE ID = :eid AND attempt = :att AND status = 'running'``:
an executor whose attempt was replaced (lease expired, reset, taken over) stores nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from py_experimenter.status import ExperimentStatus

if TYPE_CHECKING:
    from py_experimenter.db.database import Database
    from py_experimenter.queue import Experiment, ExperimentQueue

#: ``<table>_codecarbon`` column ← CodeCarbon ``EmissionsData`` field.
COLUMN_FIELDS: dict[str, str] = {
    "project_name": "project_name",
    "run_id": "run_id",
    "duration_seconds": "duration",
    "emissions_kg": "emissions",
    "emissions_rate_kg_sec": "emissions_rate",
    "cpu_power_watt": "cpu_power",
    "gpu_power_watt": "gpu_power",
    "ram_power_watt": "ram_power",
    "cpu_energy_kw": "cpu_energy",
    "gpu_energy_kw": "gpu_energy",
    "ram_energy_kw": "ram_energy",
    "energy_consumed_kw": "energy_consumed",
    "country_name": "country_name",
    "country_iso_code": "country_iso_code",
    "region": "region",
    "cloud_provider": "cloud_provider",
    "cloud_region": "cloud_region",
    "os": "os",
    "python_version": "python_version",
    "codecarbon_version": "codecarbon_version",
    "cpu_count": "cpu_count",
    "cpu_model": "cpu_model",
    "gpu_count": "gpu_count",
    "gpu_model": "gpu_model",
    "longitude": "longitude",
    "latitude": "latitude",
    "ram_total_size": "ram_total_size",
    "tracking_mode": "tracking_mode",
    "on_cloud": "on_cloud",
    "power_usage_efficiency": "pue",
}
#: Columns filled from the main row and the database, not from CodeCarbon.
_FROM_ROW = ("experiment_id", "attempt", "codecarbon_timestamp")


def emissions_fields(data: Any) -> dict[str, Any]:
    """CodeCarbon's ``EmissionsData`` (or a mapping of its fields) as a plain dict."""
    if isinstance(data, Mapping):
        return dict(data)
    values = getattr(data, "values", None)
    if isinstance(values, Mapping):
        return dict(values)
    return dict(vars(data))


def column_value(column: sa.Column, value: Any) -> Any:
    """``value`` as ``column`` can hold it, or None (empty, not a number, not finite)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    kind = column.type
    try:
        if isinstance(kind, sa.Boolean):
            return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "y", "yes")
        if isinstance(kind, (sa.Float, sa.Numeric)):
            number = float(value)
            return number if math.isfinite(number) else None
        if isinstance(kind, sa.Integer):
            return int(value)
        if isinstance(kind, sa.String):
            text = str(value)
            return text[: kind.length] if kind.length else text
    except (TypeError, ValueError, OverflowError):
        return None
    return value


def row_values(table: sa.Table, data: Any, *, offline: bool) -> dict[str, Any]:
    """Bound values for :meth:`EmissionsStore.insert`: every column but ID and the row's own."""
    fields = emissions_fields(data)
    values = {}
    for column in table.columns:
        if column.name == "ID" or column.name in _FROM_ROW:
            continue
        if column.name == "offline_mode":
            values[column.name] = offline
        else:
            values[column.name] = column_value(column, fields.get(COLUMN_FIELDS.get(column.name, column.name)))
    return values


class EmissionsStore:
    """The fenced insert into ``<table>_codecarbon``, built once per table."""

    def __init__(self) -> None:
        self._statements: dict[str, sa.Insert] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_statements": {}}

    def statement(self, db: Database) -> sa.Insert:
        """``INSERT INTO <table>_codecarbon (…) SELECT … FROM <table> WHERE <fence>``."""
        table, main = db.schema.codecarbon, db.schema.main
        stmt = self._statements.get(table.name)
        if stmt is None:
            names: list[str] = []
            selected: list[sa.ColumnElement[Any]] = []
            for column in table.columns:
                if column.name == "ID":
                    continue
                names.append(column.name)
                if column.name == "experiment_id":
                    selected.append(main.c.ID)
                elif column.name == "attempt":
                    selected.append(main.c.attempt)
                elif column.name == "codecarbon_timestamp":
                    selected.append(db.dialect.now())  # the database clock, like every timestamp
                else:
                    selected.append(sa.bindparam(column.name, type_=column.type))
            source = sa.select(*selected).where(
                main.c.ID == sa.bindparam("eid"), main.c.attempt == sa.bindparam("att"),
                main.c.status == ExperimentStatus.RUNNING.value,
            )
            stmt = sa.insert(table).from_select(names, source)
            self._statements[table.name] = stmt
        return stmt

    def insert(self, queue: ExperimentQueue, experiment: Experiment, data: Any, *, offline: bool) -> bool:
        """Store ``data`` for ``experiment``'s attempt; False when the attempt no longer runs.

        Uses the queue's persistent connection (no pool checkout and ping per experiment);
        deadlocks and outages are retried like the queue's own writes.
        """
        db = queue.db
        stmt = self.statement(db)
        params = {**row_values(db.schema.codecarbon, data, offline=offline),
                  "eid": experiment.id, "att": experiment.attempt}

        def once() -> bool:
            conn = queue.conn  # a fresh one after a disconnect invalidated the last
            with conn.begin():
                return conn.execute(stmt, params).rowcount == 1

        return db.run(once)
