"""Filling the experiment table: batched, idempotent, and safe when several processes fill at once.

Each row carries the hash of its keyfield values under a UNIQUE index; inserts skip rows
whose hash exists, so a repeated or concurrent fill never creates a duplicate experiment.

Every row is checked before the first insert (the checked rows are kept in memory as
tuples): a fill with one bad row raises and leaves the table unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.db.engine import DriverStatement
from py_experimenter.db.retry import retry_transient
from py_experimenter.db.schema import DateTime
from py_experimenter.exceptions import FillError
from py_experimenter.grid import RowCanonicalizer
from py_experimenter.status import ExperimentStatus
from py_experimenter.values import DRIVER_REFUSALS, refused_by_driver, shorten

BATCH_SIZE = 5000
CREATED = ExperimentStatus.CREATED.value


def fill_rows(db: Database, rows: Iterable[Mapping[str, Any]], *, batch_size: int = BATCH_SIZE) -> int:
    """Insert experiments for ``rows`` (keyfield → value) that are not in the table yet.

    Returns how many rows were added (under a concurrent fill, rows the other process
    added at the same moment may be counted by both).
    """
    main = db.schema.main
    canonicalizer = RowCanonicalizer(db.schema.spec.keyfields, db.backend)
    checked = _checked_rows(canonicalizer, rows)
    # Plain bound parameters only: PyMySQL then sends a batch as one multi-row INSERT.
    columns = [*canonicalizer.names, "keyhash", "status", "creation_date"]
    insert = DriverStatement(db.dialect.insert_skipping_duplicates(main), executemany_keys=columns)
    existing_in = sa.select(main.c.keyhash).where(main.c.keyhash.in_(sa.bindparam("hashes", expanding=True)))
    added = 0
    with db.connect() as conn:
        with conn.begin():
            table_has_rows = conn.execute(sa.select(main.c.ID).limit(1)).first() is not None
            now = conn.scalar(sa.select(sa.type_coerce(db.dialect.now(), DateTime)))  # the database clock, read once
        for start, chunk in _batches(checked, batch_size):
            batch = [dict(zip(columns, (*values, CREATED, now), strict=True)) for values in chunk]
            tries = 0

            def insert_batch(batch: list[dict[str, Any]] = batch) -> int:
                nonlocal tries
                tries += 1
                with conn.begin():
                    # Skip rows already there: always when the table had rows, and after a
                    # deadlock with a concurrent filler of the same grid.
                    if table_has_rows or tries > 1:
                        present = set(conn.scalars(existing_in, {"hashes": [r["keyhash"] for r in batch]}))
                        batch = [r for r in batch if r["keyhash"] not in present]
                    if batch:
                        insert.executemany(conn, batch)
                    return len(batch)

            try:
                added += retry_transient(insert_batch)
            except DRIVER_REFUSALS as err:  # a safety net: the checks above should refuse first
                raise refused_by_driver(f"fill (the batch from checked row {start})", err,
                                        f"{added} rows of earlier batches were added, none of this one") from None
    return added


def _checked_rows(canonicalizer: RowCanonicalizer, rows: Any) -> list[tuple[Any, ...]]:
    """Every row checked and hashed (keyfield values in keyfield order, then the keyhash)."""
    if isinstance(rows, (Mapping, str | bytes)) or not isinstance(rows, Iterable):
        hint = "; wrap a single row in a list: [row]" if isinstance(rows, Mapping) else ""
        raise FillError(
            f"rows must be a list (or other iterable) of dicts of keyfield values, got a "
            f"{type(rows).__name__} ({shorten(rows)}){hint}"
        )
    names = canonicalizer.names
    return [tuple(row[name] for name in (*names, "keyhash")) for row in canonicalizer.prepare(rows)]


def _batches(rows: list[tuple[Any, ...]], size: int) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    for start in range(0, len(rows), size):
        yield start, rows[start:start + size]
