"""Every name the library derives from the user's names, and each backend's identifier limits.

From the table name ``T`` come the companion tables ``T__attempts``, ``T_codecarbon`` and
``T__<logtable>``, the ``<resultfield>_timestamp`` columns, and the index / constraint names
(``uq_T_keyhash``, ``ix_T_claim``, ``ix_T_lease``, ``uq_T_attempt``, one index on
``experiment_id`` per child table, one foreign key per child table).

Limits: MySQL / MariaDB allow 64 characters for tables, columns, indexes and constraints;
PostgreSQL 63 bytes (it silently cuts longer names); SQLite has none, but tables and columns
follow the portable rule of 64 so that a file written for SQLite also works on MySQL.

Table and column names are never shortened: one that does not fit is a configuration error
(:mod:`py_experimenter.config_names`). Index and constraint names are internal: they keep their
plain form whenever it fits the backend (so tables created by earlier versions still match) and
are otherwise shortened to a stable ``<prefix>_<4 hex digits>`` form, the same shortening
SQLAlchemy applied to convention names before the names were given explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Longest table or column name per provider, in bytes of UTF-8 (our names are ASCII).
IDENTIFIER_LIMITS: Mapping[str, int] = {"sqlite": 64, "mysql": 64, "postgresql": 63}
#: Longest index / constraint name per provider; None: no limit (SQLite).
CONSTRAINT_NAME_LIMITS: Mapping[str, int | None] = {"sqlite": None, "mysql": 64, "postgresql": 63}
#: How each provider's limit is described in error messages.
LIMIT_WORDS: Mapping[str, str] = {
    "sqlite": "64 characters (the portable limit with provider sqlite: MySQL allows no more)",
    "mysql": "64 characters (the limit of provider mysql: MySQL / MariaDB)",
    "postgresql": "63 bytes (the limit of provider postgresql; PostgreSQL would silently cut the name)",
}

ATTEMPTS_SUFFIX = "attempts"
CODECARBON_SUFFIX = "codecarbon"
TIMESTAMP_SUFFIX = "_timestamp"
#: The longest suffix a table name gets (``<table>_codecarbon``).
LONGEST_TABLE_SUFFIX = "_" + CODECARBON_SUFFIX


def identifier_size(name: str) -> int:
    """The length that counts against the limits: bytes of UTF-8 (PostgreSQL counts bytes)."""
    return len(name.encode("utf-8"))


def identifier_limit(provider: str) -> int:
    """Longest table / column name for ``provider`` (``sqlite``, ``mysql``, ``postgresql``)."""
    return IDENTIFIER_LIMITS[provider]


def max_table_name_length(provider: str) -> int:
    """Longest table name for ``provider``: ``<table>_codecarbon`` must still fit."""
    return identifier_limit(provider) - len(LONGEST_TABLE_SUFFIX)


def attempts_table(table: str) -> str:
    """The attempt history table of ``table``."""
    return f"{table}__{ATTEMPTS_SUFFIX}"


def codecarbon_table(table: str) -> str:
    """The CodeCarbon emissions table of ``table``."""
    return f"{table}_{CODECARBON_SUFFIX}"


def logtable_table(table: str, logtable: str) -> str:
    """The table that stores logtable ``logtable`` of ``table``."""
    return f"{table}__{logtable}"


def timestamp_column(resultfield: str) -> str:
    """Name of the column that records when ``resultfield`` was last written."""
    return f"{resultfield}{TIMESTAMP_SUFFIX}"


def fit_name(name: str, limit: int | None) -> str:
    """``name`` itself when it fits ``limit``; else its first ``limit - 8`` characters, ``_``
    and the last 4 hex digits of the MD5 of the whole name (stable, and what SQLAlchemy produced for
    the convention-named indexes of earlier versions).
    """
    if limit is None or identifier_size(name) <= limit:
        return name
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()[-4:]
    return f"{name[: limit - 8]}_{digest}"


def foreign_key_name(child_table: str, provider: str) -> str | None:
    """Name of the ``experiment_id`` foreign key of ``child_table``, or None: the server names it.

    MySQL / MariaDB: ``<child>_ibfk_1``, the name the server generates, when it fits, else
    shortened by :func:`fit_name` (the server refuses a generated name over 64 characters, and
    needs foreign key names unique per database). PostgreSQL picks a fitting, unique name of its
    own (``<child>_experiment_id_fkey``, cut and numbered as needed) and SQLite needs none: None.
    """
    if provider == "mysql":
        return fit_name(f"{child_table}_ibfk_1", CONSTRAINT_NAME_LIMITS[provider])
    return None


@dataclass(frozen=True)
class DerivedNames:
    """Index and constraint names of one experiment's tables on one backend."""

    keyhash_unique: str
    claim_index: str
    lease_index: str
    attempt_unique: str
    #: child table name → name of its index on ``experiment_id`` (attempts: none, the unique
    #: constraint on ``(experiment_id, attempt)`` serves)
    experiment_indexes: Mapping[str, str]
    #: child table name → name of its foreign key to the main table (None: unnamed)
    foreign_keys: Mapping[str, str | None]

    def all_names(self) -> list[tuple[str, str]]:
        """``(what, name)`` for every named index and constraint, for uniqueness checks."""
        names = [
            ("unique constraint on keyhash", self.keyhash_unique),
            ("claim index", self.claim_index),
            ("lease index", self.lease_index),
            ("unique constraint on (experiment_id, attempt)", self.attempt_unique),
        ]
        names += [(f"index on {child}.experiment_id", n) for child, n in self.experiment_indexes.items()]
        names += [(f"foreign key of {child}", n) for child, n in self.foreign_keys.items() if n is not None]
        return names


def derive_names(table: str, logtables: Iterable[str], provider: str) -> DerivedNames:
    """The index and constraint names for ``table`` with ``logtables`` on ``provider``."""
    limit = CONSTRAINT_NAME_LIMITS[provider]
    children = [attempts_table(table), *(logtable_table(table, log) for log in logtables), codecarbon_table(table)]
    return DerivedNames(
        keyhash_unique=fit_name(f"uq_{table}_keyhash", limit),
        claim_index=fit_name(f"ix_{table}_claim", limit),
        lease_index=fit_name(f"ix_{table}_lease", limit),
        attempt_unique=fit_name(f"uq_{table}_attempt", limit),
        experiment_indexes={
            child: fit_name(f"ix_{child}_experiment_id", limit) for child in children[1:]
        },
        foreign_keys={child: foreign_key_name(child, provider) for child in children},
    )
