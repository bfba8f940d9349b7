"""parse_sql_type: 1.4.2-style type strings onto portable SQLAlchemy types."""

from __future__ import annotations

import pytest
from sqlalchemy import types as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from py_experimenter.sqltypes import SUPPORTED_TYPES, parse_sql_type, sql_type_parts

DIALECTS = {"sqlite": sqlite.dialect(), "mysql": mysql.dialect(), "postgresql": postgresql.dialect()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("INT", sa.Integer),
        ("integer", sa.Integer),
        ("MEDIUMINT", sa.Integer),
        ("INT(11)", sa.Integer),
        ("int unsigned", sa.Integer),
        ("INT(10) UNSIGNED", sa.Integer),
        ("BIGINT", sa.BigInteger),
        ("SMALLINT", sa.SmallInteger),
        ("TINYINT", sa.SmallInteger),
        ("TINYINT(4)", sa.SmallInteger),
        ("TINYINT(1)", sa.Boolean),
        ("BOOL", sa.Boolean),
        ("boolean", sa.Boolean),
        ("FLOAT", sa.Float),
        ("REAL", sa.Float),
        ("DOUBLE", sa.Double),
        ("double   precision", sa.Double),
        ("DECIMAL", sa.Double),
        ("numeric", sa.Double),
        ("VARCHAR(255)", sa.String),
        ("varchar ( 20 )", sa.String),
        ("CHAR(3)", sa.CHAR),
        ("TEXT", sa.Text),
        ("TINYTEXT", sa.Text),
        ("MEDIUMTEXT", sa.Text),
        ("LONGTEXT", sa.Text),
        ("DATETIME", sa.DateTime),
        ("TIMESTAMP", sa.DateTime),
        ("DATE", sa.Date),
        ("TIME", sa.Time),
        ("JSON", sa.JSON),
        ("BLOB", sa.LargeBinary),
        ("LONGBLOB", sa.LargeBinary),
        ("str", sa.String),
        ("int", sa.Integer),
        ("float", sa.Double),
        ("bool", sa.Boolean),
        ("  INT  ", sa.Integer),
    ],
)
def test_maps_onto_portable_types(text: str, expected: type) -> None:
    parsed = parse_sql_type(text)
    assert type(parsed) is expected


def test_bare_decimal_is_a_double_not_an_integer_decimal() -> None:
    # 1.4.2 on MySQL stored 0.93 in a bare DECIMAL as 1 (DECIMAL(10,0))
    parsed = parse_sql_type("DECIMAL")
    assert isinstance(parsed, sa.Double)
    assert parsed.compile(dialect=DIALECTS["mysql"]) == "DOUBLE"


def test_decimal_with_precision_returns_floats() -> None:
    parsed = parse_sql_type("DECIMAL(10, 4)")
    assert isinstance(parsed, sa.Numeric)
    assert (parsed.precision, parsed.scale, parsed.asdecimal) == (10, 4, False)
    numeric = parse_sql_type("NUMERIC(5)")
    assert isinstance(numeric, sa.Numeric) and numeric.scale == 0


@pytest.mark.parametrize(("text", "length"), [("VARCHAR(50)", 50), ("CHAR(3)", 3), ("str", 255), ("CHAR", 1)])
def test_lengths_are_kept(text: str, length: int) -> None:
    parsed = parse_sql_type(text)
    assert isinstance(parsed, sa.String) and parsed.length == length


@pytest.mark.parametrize(("text", "mysql_type"), [("LONGTEXT", "LONGTEXT"), ("MEDIUMTEXT", "MEDIUMTEXT")])
def test_big_text_types_stay_big_on_mysql_and_are_text_elsewhere(text: str, mysql_type: str) -> None:
    parsed = parse_sql_type(text)
    assert parsed.compile(dialect=DIALECTS["mysql"]) == mysql_type
    assert parsed.compile(dialect=DIALECTS["postgresql"]) == "TEXT"
    assert parsed.compile(dialect=DIALECTS["sqlite"]) == "TEXT"


@pytest.mark.parametrize("name", SUPPORTED_TYPES)
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_supported_type_compiles_on_every_backend(name: str, dialect: str) -> None:
    text = f"{name}(20)" if name in ("VARCHAR",) else name
    assert parse_sql_type(text).compile(dialect=DIALECTS[dialect])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("VARCHR(255)", "supported types: INT"),
        ("STRING", "LONGTEXT"),
        ("", "unknown column type"),
        ("VARCHAR", "exactly 1 argument"),
        ("VARCHAR(0)", "at least 1"),
        ("INT(1, 2)", "at most 1 argument"),
        ("DECIMAL(3,5)", "scale <= precision"),
        ("TEXT UNSIGNED", "numeric types only"),
        ("DATETIME(6)", "no arguments"),
        ("VARCHAR(255); DROP TABLE x", "unknown column type"),
    ],
)
def test_bad_types_raise_value_error_with_help(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_sql_type(text)
    assert fragment in str(info.value)


def test_unknown_type_lists_every_supported_name() -> None:
    with pytest.raises(ValueError) as info:
        parse_sql_type("MONEY")
    for name in SUPPORTED_TYPES:
        assert name in str(info.value)


def test_non_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_sql_type(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "parts"), [
    ("varchar( 20 )", ("VARCHAR", (20,))), ("INT(11) unsigned", ("INT", (11,))),
    ("DECIMAL(10, 4)", ("DECIMAL", (10, 4))),
    ("double  precision", ("DOUBLE PRECISION", ())), ("str", ("VARCHAR", (255,))), ("STR", ("VARCHAR", (255,))),
    ("float", ("DOUBLE", ())), ("int", ("INT", ())), ("bool", ("BOOL", ())), ("TINYINT(1)", ("TINYINT", (1,))),
])
def test_sql_type_parts(text, parts):
    assert sql_type_parts(text) == parts


def test_sql_type_parts_refuses_what_parse_refuses():
    with pytest.raises(ValueError, match="unknown column type"):
        sql_type_parts("VARCHAR2(5)")
