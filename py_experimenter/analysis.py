"""Read-only access to an experiment's tables as pandas DataFrames (ordered by ``ID``)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.exceptions import ConfigError


def read_table(db: Database, table: sa.Table) -> pd.DataFrame:
    """Every row of ``table`` (one of ``db.schema``'s), ordered by ``ID``."""
    with db.connect() as conn:
        return pd.read_sql_query(sa.select(table).order_by(table.c.ID), conn)


def read_logtable(db: Database, logtable_name: str) -> pd.DataFrame:
    """A logtable by its name in the experiment file (not the ``<table>__`` prefixed one)."""
    if logtable_name not in db.schema.logtables:
        raise ConfigError(f"{logtable_name!r} is not a logtable; the logtables are {list(db.schema.logtables)}")
    return read_table(db, db.schema.logtables[logtable_name])


def read_codecarbon(db: Database) -> pd.DataFrame:
    """The emissions table; with CodeCarbon off it is read when an earlier run made it, else an
    empty DataFrame with its columns is returned."""
    table = db.schema.codecarbon
    if not db.schema.with_codecarbon:
        with db.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                return pd.DataFrame(columns=[c.name for c in table.columns])
    return read_table(db, table)
