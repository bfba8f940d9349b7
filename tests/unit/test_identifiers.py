"""Derived names: each backend's limits, names stable for existing tables, config-time errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from py_experimenter.config import MAX_TABLE_NAME_LENGTH, load_experiment_config
from py_experimenter.db.schema import build_schema
from py_experimenter.exceptions import InvalidIdentifierError
from py_experimenter.identifiers import (
    CONSTRAINT_NAME_LIMITS,
    derive_names,
    fit_name,
    identifier_limit,
    identifier_size,
    max_table_name_length,
)

PROVIDERS = ("sqlite", "mysql", "postgresql")
DIALECTS = {"sqlite": sqlite.dialect(), "mysql": mysql.pymysql.dialect(), "postgresql": postgresql.psycopg.dialect()}
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,70}", fullmatch=True)


def write(tmp_path: Path, provider: str, *, table: str = "exp", keyfield: str = "seed", resultfield: str = "f1",
          logtable: str = "log", logcolumn: str = "loss", timestamps: bool = True) -> Path:
    path = tmp_path / "exp.yml"
    path.write_text(
        "PY_EXPERIMENTER:\n  Database:\n"
        f"    provider: {provider}\n    database: db\n"
        f"    logtables: {{{logtable}: {{{logcolumn}: DOUBLE}}}}\n"
        f"    table:\n      name: {table}\n      result_timestamps: {str(timestamps).lower()}\n"
        f"      keyfields: {{{keyfield}: {{type: INT, values: [1]}}}}\n"
        f"      resultfields: {{{resultfield}: INT}}\n"
    )
    return path


def test_documented_maximum_is_the_mysql_and_sqlite_one() -> None:
    assert MAX_TABLE_NAME_LENGTH == 53 == max_table_name_length("mysql") == max_table_name_length("sqlite")
    assert max_table_name_length("postgresql") == 52


@given(table=NAME, logtables=st.lists(NAME, max_size=3, unique_by=str.lower))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_derived_index_and_constraint_names_fit_and_keep_todays_names(provider, table, logtables) -> None:
    names = derive_names(table, logtables, provider)
    limit = CONSTRAINT_NAME_LIMITS[provider]
    for _, name in names.all_names():
        assert limit is None or identifier_size(name) <= limit
    if provider == "sqlite":  # no limit: always the plain names main created
        assert names.keyhash_unique == f"uq_{table}_keyhash"
        assert names.experiment_indexes[f"{table}_codecarbon"] == f"ix_{table}_codecarbon_experiment_id"
    elif len(table) <= max_table_name_length(provider):  # every table the config accepts
        # main created these as f"..."[:64]; they always fit, so they are the same names
        for ours, old in [(names.keyhash_unique, f"uq_{table}_keyhash"), (names.claim_index, f"ix_{table}_claim"),
                          (names.lease_index, f"ix_{table}_lease"), (names.attempt_unique, f"uq_{table}_attempt")]:
            assert ours == old == old[:64]


def _old_convention_index_name(child: str, provider: str) -> str:
    """The name SQLAlchemy gave main's ``index=True`` columns (before names were explicit)."""
    table = sa.Table(child, sa.MetaData(), sa.Column("experiment_id", sa.Integer, index=True))
    (index,) = table.indexes
    sql = str(CreateIndex(index).compile(dialect=DIALECTS[provider]))
    return sql.split("INDEX ", 1)[1].split(" ON ", 1)[0].strip('`"')


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("lengths", [(10, 5), (36, 5), (45, 5), (52, 9), (53, 8), (20, 40)])
def test_experiment_id_index_names_equal_what_sqlalchemy_generated_before(provider, lengths) -> None:
    table, log = "t" * lengths[0], "l" * lengths[1]
    names = derive_names(table, [log], provider)
    for child, name in names.experiment_indexes.items():
        assert name == _old_convention_index_name(child, provider), child


def test_fit_name_shortens_stably_and_distinctly() -> None:
    long_a, long_b = "ix_" + "a" * 70 + "_x", "ix_" + "a" * 70 + "_y"
    assert fit_name(long_a, 63) == fit_name(long_a, 63)
    assert fit_name(long_a, 63) != fit_name(long_b, 63)
    assert len(fit_name(long_a, 63)) <= 63 and fit_name(long_a, 63).startswith("ix_aaa")
    assert fit_name("short", 63) == "short" and fit_name(long_a, None) == long_a


@pytest.mark.parametrize("provider", PROVIDERS)
def test_schema_uses_the_derived_names(tmp_path, provider) -> None:
    table = "t" * max_table_name_length(provider)
    log = "l" * (identifier_limit(provider) - len(table) - 2)
    config = load_experiment_config(write(tmp_path, provider, table=table, logtable=log))
    schema = build_schema(config.table)
    names = derive_names(table, [log], provider)
    assert {i.name for i in schema.main.indexes} == {names.claim_index, names.lease_index}
    for child in (schema.logtables[log], schema.codecarbon, schema.attempts):
        for constraint in child.foreign_key_constraints:
            assert constraint.name == names.foreign_keys[child.name]
            if provider == "mysql":
                assert constraint.name is not None and len(constraint.name) <= 64
    # compiling the DDL with the backend's dialect never needs SQLAlchemy to cut or refuse a name
    for table_ in schema.all_tables:
        for index in table_.indexes:
            str(CreateIndex(index).compile(dialect=DIALECTS[provider]))
        str(sa.schema.CreateTable(table_).compile(dialect=DIALECTS[provider]))


@pytest.mark.parametrize(
    ("provider", "field", "length", "fragments"),
    [
        ("postgresql", "table", 53, ["table.name", "_codecarbon' (64 characters)", "63 bytes", "at most 52"]),
        ("mysql", "table", 54, ["table.name", "_codecarbon' (65 characters)", "64 characters", "at most 53"]),
        ("sqlite", "table", 54, ["table.name", "_codecarbon' (65 characters)", "portable", "at most 53"]),
        ("postgresql", "keyfield", 64, ["table.keyfields.kkk", "64 characters long", "63 bytes", "at most 63"]),
        ("postgresql", "resultfield", 54, ["resultfields.rrr", "_timestamp'", "64 characters long", "at most 53"]),
        ("mysql", "resultfield", 55, ["resultfields.rrr", "_timestamp'", "65 characters long", "at most 54"]),
        ("postgresql", "logcolumn", 64, ["logtables.log.ccc", "64 characters long", "63 bytes"]),
        ("mysql", "logcolumn", 65, ["logtables.log.ccc", "65 characters long", "64 characters"]),
        ("mysql", "keyfield", 65, ["table.keyfields.kkk", "65 characters long", "at most 64"]),
    ],
)
def test_one_character_over_the_limit_is_refused_with_path_name_length_limit_and_fix(
    tmp_path, provider, field, length, fragments
) -> None:
    letter = {"table": "t", "keyfield": "k", "resultfield": "r", "logcolumn": "c"}[field]
    with pytest.raises(InvalidIdentifierError) as info:
        load_experiment_config(write(tmp_path, provider, **{field: letter * length}))
    message = str(info.value)
    assert str(tmp_path / "exp.yml") in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # one character less is accepted
    load_experiment_config(write(tmp_path, provider, **{field: letter * (length - 1)}))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_logtable_stored_name_over_the_limit(tmp_path, provider) -> None:
    table = "t" * 40
    room = identifier_limit(provider) - 42
    load_experiment_config(write(tmp_path, provider, table=table, logtable="l" * room))
    with pytest.raises(InvalidIdentifierError) as info:
        load_experiment_config(write(tmp_path, provider, table=table, logtable="l" * (room + 1)))
    message = str(info.value)
    for fragment in (f"PY_EXPERIMENTER.Database.logtables.{'l' * (room + 1)}", f"'{table}__{'l' * (room + 1)}'",
                     f"{identifier_limit(provider) + 1} characters long", f"at most {room} characters"):
        assert fragment in message, (fragment, message)


def test_table_name_argument_gets_the_same_check(tmp_path) -> None:
    path = write(tmp_path, "postgresql")
    assert load_experiment_config(path, table_name="t" * 52).table.name == "t" * 52
    with pytest.raises(InvalidIdentifierError, match=r"table.name \(table_name argument\).*at most 52"):
        load_experiment_config(path, table_name="t" * 53)


def test_names_count_bytes_and_non_ascii_names_are_refused(tmp_path) -> None:
    assert identifier_size("é") == 2 and identifier_size("e") == 1
    with pytest.raises(InvalidIdentifierError, match=r"names must match"):
        load_experiment_config(write(tmp_path, "postgresql", keyfield="sé" + "e" * 30))


def test_colliding_shortened_names_are_refused(tmp_path) -> None:
    """On PostgreSQL all indexes of a schema share one namespace: two logtables whose shortened
    index names coincide would fail at CREATE INDEX; the config says so first."""
    table = "t" * 52
    seen: dict[str, str] = {}
    for log in (f"l{i}" for i in itertools.count()):
        name = derive_names(table, [log], "postgresql").experiment_indexes[f"{table}__{log}"]
        if name in seen:
            first = seen[name]
            break
        seen[name] = log
    path = tmp_path / "exp.yml"
    path.write_text(
        "PY_EXPERIMENTER:\n  Database:\n    provider: postgresql\n    database: db\n"
        f"    logtables: {{{first}: {{x: INT}}, {log}: {{x: INT}}}}\n"
        f"    table: {{name: {table}, keyfields: {{seed: {{type: INT}}}}}}\n"
    )
    with pytest.raises(InvalidIdentifierError, match=rf"would both be named '{name}'.*rename a logtable"):
        load_experiment_config(path)
    # SQLite never shortens: no collision there
    path.write_text(path.read_text().replace("postgresql", "sqlite"))
    load_experiment_config(path)
