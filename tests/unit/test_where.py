"""``where`` conditions without a database: what is accepted, how it is rebuilt, what is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from py_experimenter.exceptions import ConfigError, WhereError
from py_experimenter.where import parse_where

METADATA = sa.MetaData()
TABLE = sa.Table(
    "runs", METADATA,
    sa.Column("ID", sa.Integer, primary_key=True), sa.Column("dataset", sa.String(20)),
    sa.Column("seed", sa.Integer), sa.Column("kernel", sa.String(20)), sa.Column("error", sa.Text),
    sa.Column("status", sa.String(20)), sa.Column("creation_date", sa.DateTime),
)
DIALECTS = {"sqlite": sqlite.dialect(), "mysql": mysql.dialect(), "postgresql": postgresql.dialect()}
BACKENDS = list(DIALECTS)


def sql(where: str, backend: str) -> tuple[str, dict[str, object]]:
    """The condition as the backend's SQL text (with bind names) and its bound values."""
    compiled = parse_where(where, TABLE, backend).compile(dialect=DIALECTS[backend])
    return str(compiled), dict(compiled.params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("where", "columns", "values"), [
    ("dataset='iris'", ["dataset"], ["iris"]),
    ("seed >= 3 AND kernel IN ('rbf','linear')", ["seed", "kernel"], [3, "rbf", "linear"]),
    ("ID = 7", ["ID"], [7]),
    ('"ID" = 7', ["ID"], [7]),
    ("id = 7", ["ID"], [7]),
    ("error LIKE '%Memory%'", ["error"], ["%Memory%"]),
    ("NOT (seed BETWEEN 1 AND 2) OR error IS NOT NULL", ["seed", "error"], [1, 2]),
    ("lower(dataset) = 'iris' AND seed % 2 = 1", ["dataset", "seed"], ["iris", 2, 1]),
    ("dataset = 'a:b' AND kernel <> 'it''s'", ["dataset", "kernel"], ["a:b", "it's"]),
])
def test_accepted_conditions_become_quoted_columns_and_bound_values(backend, where, columns, values):
    text, params = sql(where, backend)
    quote = "`" if backend == "mysql" else '"'
    for column in columns:
        # Mixed-case names are quoted (PostgreSQL needs it); plain lowercase ones need not be.
        assert f"runs.{quote}{column}{quote}" in text if column != column.lower() else f"runs.{column}" in text
    assert sorted(map(str, params.values())) == sorted(map(str, values))
    for value in values:  # values travel as parameters, never inside the SQL text
        if isinstance(value, str):
            assert value not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_condition_stays_one_group_under_the_callers_filter(backend):
    condition = parse_where("seed = 1 OR seed = 2", TABLE, backend)
    statement = sa.select(TABLE.c.ID).where(TABLE.c.status == "error", condition)
    text = str(statement.compile(dialect=DIALECTS[backend]))
    assert "AND (runs.seed = " in text and text.rstrip().endswith(")")


ESCAPES = [
    ("1=0) OR (1=1", "not valid SQL"),
    ("seed = 1) OR (1 = 1", "not valid SQL"),
    ("seed = 1; DELETE FROM runs", "exactly one condition"),
    ("seed = 1; ", None),  # a trailing ';' alone is tolerated (one statement)
    ("seed = 1 -- AND status = 'x'", "comments"),
    ("seed = 1 /* hidden */ OR 1 = 1", "comments"),
    ("seed IN (SELECT ID FROM runs)", "IN is not allowed"),
    ("(SELECT COUNT(*) FROM runs) > 0", "subqueries are not allowed"),
    ("EXISTS (SELECT 1)", "is not a condition"),
    ("sleep(5) = 0", "function SLEEP is not allowed"),
    ("pg_sleep(5) IS NULL", "function PG_SLEEP is not allowed"),
    ("benchmark(100000000, md5('x')) = 0", "function BENCHMARK is not allowed"),
    ("runs.seed = 1", "without a table"),
    ("other.seed = 1", "without a table"),
    ("password = 'x'", "is not a column of table 'runs'"),
    ("seed", "is not a condition"),
    ("seed = 1 OR 2", "need conditions on both sides"),
    ("seed = CAST('1' AS INT)", "is not allowed"),
    ("dataset = 'a' COLLATE nocase", "is not allowed"),
    ("seed = x'41'", "is not allowed"),
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("seed = 99999999999999999999999999999", "an integer beyond 64 bits"),
    ("seed = 9223372036854775808", "an integer beyond 64 bits"),
    ("seed = 1e999", "a number beyond double precision"),
    ("NOT " * 3000 + "seed = 1", "nested too deeply"),
    ("(" * 3000 + "seed = 1" + ")" * 3000, "nested too deeply"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("where", "expected"), ESCAPES)
def test_escapes_and_unsafe_forms_are_refused_with_the_reason(backend, where, expected):
    if expected is None:
        assert "runs.seed" in sql(where, backend)[0]
        return
    with pytest.raises(WhereError) as caught:
        parse_where(where, TABLE, backend)
    message = str(caught.value)
    assert message.startswith(f"invalid where condition {where!r}: ") and expected in message
    assert "\n" not in message
    assert isinstance(caught.value, ConfigError)


def test_unknown_column_lists_the_valid_ones():
    with pytest.raises(WhereError, match=r"the columns are \['ID', 'dataset', 'seed', 'kernel', 'error'"):
        parse_where("datset = 'iris'", TABLE, "postgresql")


def test_double_quotes_name_columns_on_mysql_too():
    # MySQL would read "ID" as a string (always false); here it is the column, as elsewhere.
    assert "runs.`ID` = " in sql('"ID" = 7', "mysql")[0]
    with pytest.raises(WhereError, match="'iris' is not a column"):
        parse_where('dataset = "iris"', TABLE, "mysql")


def test_not_a_string_and_for_option():
    with pytest.raises(WhereError, match="expected a string"):
        parse_where(7, TABLE, "sqlite")  # type: ignore[arg-type]
    err = WhereError("x is wrong", where="a = 1")
    assert str(err.for_option("--where")) == "invalid --where condition 'a = 1': x is wrong"


TOKENS = ["seed", "ID", '"ID"', "dataset", "status", "runs.seed", "other", "'iris'", "'a''b'", "3", "-1.5", "NULL",
          "TRUE", "=", "<>", "<", ">=", "<=>", "AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "ESCAPE", "BETWEEN", "IS",
          "(", ")", ",", ";", "--", "/*", "*/", "#", "SELECT", "FROM", "sleep", "lower", "%", "+", "||", "CAST", "AS",
          "INT", "x'41'", "?", ":name", "$1", "`seed`", "@x", "\\", "'"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_token_soup_is_a_where_error_or_a_condition(backend):
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    @hypothesis.settings(max_examples=600, deadline=None, derandomize=True)
    @hypothesis.given(strategies.lists(strategies.sampled_from(TOKENS), min_size=1, max_size=9))
    def check(tokens: list[str]) -> None:
        text = " ".join(tokens)
        try:
            condition = parse_where(text, TABLE, backend)
        except WhereError as err:
            assert "\n" not in str(err)
            return
        compiled = str(condition.compile(dialect=DIALECTS[backend]))
        assert ";" not in compiled and "--" not in compiled and "/*" not in compiled

    check()
