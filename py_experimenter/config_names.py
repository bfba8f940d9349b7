"""Config-time checks of every table, column, index and constraint name against the provider.

:func:`check_names` runs once the table section is parsed: each name the library will create
(the user's and the derived ones, see :mod:`py_experimenter.identifiers`) must fit the
configured provider's limit, so that a long name fails here, with its key path and the fix,
rather than at ``CREATE TABLE`` with a driver error, or silently cut by PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from py_experimenter.exceptions import InvalidIdentifierError
from py_experimenter.identifiers import (
    LIMIT_WORDS,
    attempts_table,
    codecarbon_table,
    derive_names,
    identifier_limit,
    identifier_size,
    logtable_table,
    max_table_name_length,
    timestamp_column,
)

if TYPE_CHECKING:
    from py_experimenter.config import TableSpec
    from py_experimenter.config_checker import Checker


def _limit_text(provider: str) -> str:
    return LIMIT_WORDS[provider]


def check_names(check: Checker, table: TableSpec, provider: str, path: str, name_path: str) -> None:
    """Raise :class:`InvalidIdentifierError` for the first name that does not fit ``provider``.

    :param table: the parsed table, logtables included.
    :param path: the key path of the table section (``PY_EXPERIMENTER.Database.table``).
    :param name_path: where the table name came from (the key, or the ``table_name`` argument).
    """
    limit = identifier_limit(provider)
    name = table.name
    longest = max_table_name_length(provider)
    for derived, role in (
        (name, "the table itself"),
        (codecarbon_table(name), "its CodeCarbon table"),
        (attempts_table(name), "its attempt history table"),
    ):
        size = identifier_size(derived)
        if size > limit and derived == name:
            check.fail(
                name_path,
                f"table name {name!r} is {size} characters long, over {_limit_text(provider)}; use a "
                f"table name of at most {longest} characters (so that <table>_codecarbon fits too)",
                InvalidIdentifierError,
            )
        if size > limit:
            check.fail(
                name_path,
                f"table name {name!r} is {identifier_size(name)} characters long: {role} would be "
                f"{derived!r} ({size} characters), over {_limit_text(provider)}; use a table name of at "
                f"most {longest} characters (so that <table>_codecarbon and <table>__attempts fit)",
                InvalidIdentifierError,
            )
    database_path = path.rsplit(".", 1)[0]
    for log in table.logtables:
        stored = logtable_table(name, log.name)
        if identifier_size(stored) > limit:
            room = limit - identifier_size(name) - 2
            check.fail(
                f"{database_path}.logtables.{log.name}",
                f"the logtable is stored as {stored!r}, {identifier_size(stored)} characters long, longer "
                f"than {_limit_text(provider)}; shorten the logtable name (to at most {room} characters "
                "with this table name) or the table name",
                InvalidIdentifierError,
            )
    columns = [(k.name, f"{path}.keyfields.{k.name}", "keyfield") for k in table.keyfields]
    columns += [(r.name, f"{path}.resultfields.{r.name}", "resultfield") for r in table.resultfields]
    for log in table.logtables:
        where = f"{database_path}.logtables.{log.name}"
        columns += [(f.name, f"{where}.{f.name}", "logtable column") for f in log.fields]
    for column, where, what in columns:
        if identifier_size(column) > limit:
            check.fail(
                where,
                f"{what} name {column!r} is {identifier_size(column)} characters long, over "
                f"{_limit_text(provider)}; shorten it to at most {limit} characters",
                InvalidIdentifierError,
            )
    if table.result_timestamps:
        room = limit - len(timestamp_column(""))
        for field in table.resultfields:
            generated = timestamp_column(field.name)
            if identifier_size(generated) > limit:
                check.fail(
                    f"{path}.resultfields.{field.name}",
                    f"with result_timestamps the column {generated!r} is created, "
                    f"{identifier_size(generated)} characters long, longer than {_limit_text(provider)}; "
                    f"shorten the resultfield name to at most {room} characters",
                    InvalidIdentifierError,
                )
    _check_unique(check, table, provider, name_path)


def _check_unique(check: Checker, table: TableSpec, provider: str, name_path: str) -> None:
    """Shortened index / constraint names must not collide (PostgreSQL and SQLite share one
    namespace for all indexes of a schema, MySQL one for all foreign keys of a database)."""
    names = derive_names(table.name, (log.name for log in table.logtables), provider)
    seen: dict[str, str] = {}
    for what, derived in names.all_names():
        key = derived.lower()
        if key in seen:
            check.fail(
                name_path,
                f"the {what} and the {seen[key]} would both be named {derived!r} on {provider}; "
                "rename a logtable or the table",
                InvalidIdentifierError,
            )
        seen[key] = what
