"""``--where`` / ``where=`` conditions: parsed, checked against an allowlist, rebuilt as SQLAlchemy.

A condition is user text such as ``dataset='iris' AND seed >= 3``. It is never pasted into
SQL. Instead it is parsed with sqlglot in the backend's dialect and must be exactly one
boolean expression made of the node types below, over the table's own columns:

* ``AND``, ``OR``, ``NOT``, parentheses;
* comparisons ``= <> != < <= > >=``, ``IS [NOT] NULL / TRUE / FALSE``, ``[NOT] IN (values)``,
  ``[NOT] BETWEEN``, ``[NOT] LIKE`` (with ``ESCAPE``), ``ILIKE`` (PostgreSQL);
* arithmetic ``+ - * / %`` and the functions in :data:`FUNCTIONS`;
* string and number literals, ``NULL``, ``TRUE``, ``FALSE``; column names (any case, quoted
  or not; ``"ID"`` works on every backend, MySQL included).

Everything else (subqueries, several statements, comments, unknown columns, other
functions, casts, collations, hex literals, ...) is rejected with a :class:`WhereError`. The
accepted tree is rebuilt as a SQLAlchemy expression: columns become the table's (quoted)
columns and literals become bound parameters, so the condition cannot leave its place in
the statement and the caller's own filters (e.g. the status) always apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import sqlalchemy as sa
import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL

from py_experimenter.exceptions import WhereError

__all__ = ["FUNCTIONS", "WhereError", "parse_where"]


class _MySQLStandardQuotes(MySQL):
    """MySQL with ANSI_QUOTES: ``"ID"`` names a column (as on the other backends), strings use ``'``."""

    class Tokenizer(MySQL.Tokenizer):
        QUOTES: ClassVar[list[Any]] = ["'"]
        IDENTIFIERS: ClassVar[list[Any]] = ["`", '"']


_DIALECTS: dict[str, Any] = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": _MySQLStandardQuotes}

_COMPARISONS: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
}
_ARITHMETIC: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
    exp.Div: lambda a, b: a / b,
    exp.Mod: lambda a, b: a % b,
}
#: Functions a condition may call (side-effect free, on every backend): sqlglot node → SQL name.
FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Lower: "lower", exp.Upper: "upper", exp.Length: "length", exp.Abs: "abs",
    exp.Coalesce: "coalesce", exp.Round: "round",
}
_BOOLEAN_NODES: tuple[type[exp.Expression], ...] = (
    exp.And, exp.Or, exp.Not, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Escape, exp.NullSafeEQ,
    *_COMPARISONS,
)
_HINT = ("give one condition over the table's columns, e.g. \"dataset = 'iris' AND seed >= 3\" "
         "(strings in single quotes)")


def parse_where(where: str, table: sa.Table, backend: str) -> sa.ColumnElement[bool]:
    """Check ``where`` and return it as a SQLAlchemy condition over ``table``'s columns.

    :param where: the user's condition, e.g. ``"kernel IN ('rbf', 'linear')"``.
    :param table: the experiment table; only its columns may be named.
    :param backend: ``sqlite``, ``mysql`` or ``postgresql`` (the SQL dialect to parse).
    :raises WhereError: not exactly one allowed boolean expression over the table's columns;
        the message says what is wrong and what is accepted.
    """
    if not isinstance(where, str):
        raise WhereError(f"expected a string with an SQL condition, got {type(where).__name__}", where=where)
    if not where.strip():
        raise WhereError(f"it is empty; {_HINT}", where=where)
    try:
        return _parse_where(where, table, backend)
    except RecursionError:  # thousands of NOTs or parentheses: sqlglot and SQLAlchemy recurse per level
        raise WhereError(f"nested too deeply; {_HINT}", where=where) from None


def _parse_where(where: str, table: sa.Table, backend: str) -> sa.ColumnElement[bool]:
    try:
        trees = sqlglot.parse(where, read=_DIALECTS[backend])
    except sqlglot.errors.SqlglotError as err:
        raise WhereError(f"not valid SQL ({_first_line(err)}); {_HINT}", where=where) from None
    statements = [tree for tree in trees if tree is not None]
    if len(statements) != 1:
        raise WhereError(f"exactly one condition is allowed, found {len(statements)} statements (no ';'); {_HINT}",
                         where=where)
    tree: exp.Expression = statements[0]  # type: ignore[assignment]
    for node in tree.walk():
        if node.comments:
            raise WhereError(f"comments (-- , /* */, #) are not allowed; {_HINT}", where=where)
    if not isinstance(_unparen(tree), _BOOLEAN_NODES):
        raise WhereError(f"{tree.sql()!r} is not a condition (a comparison such as column = value); {_HINT}",
                         where=where)
    try:
        return _Translator(where, table, backend).condition(tree)
    except (sa.exc.SQLAlchemyError, TypeError, ValueError) as err:  # e.g. seed LIKE NULL
        if isinstance(err, WhereError):
            raise
        raise WhereError(f"this combination is not allowed ({_first_line(err)}); {_HINT}", where=where) from None


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Translator:
    """sqlglot tree → SQLAlchemy expression, one allowed node type at a time."""

    def __init__(self, where: str, table: sa.Table, backend: str):
        self.where = where
        # Text compared with a date column: SQLite stores dates as text (compare as strings);
        # PostgreSQL infers the type of an untyped parameter ('2024-01-31' as a timestamp).
        self.text_type: sa.types.TypeEngine[Any] = sa.types.NullType() if backend == "postgresql" else sa.String()
        self.table = table
        self.columns = {c.name: c for c in table.columns}
        self.folded = {c.name.lower(): c for c in table.columns}

    def fail(self, node: exp.Expression, rule: str) -> WhereError:
        return WhereError(f"{node.sql()!r}: {rule}; {_HINT}", where=self.where)

    def condition(self, node: exp.Expression) -> Any:
        node = _unparen(node)
        if not isinstance(node, _BOOLEAN_NODES):
            raise self.fail(node, "AND / OR / NOT need conditions on both sides, not a value")
        return self.value(node)

    def _args(self, node: exp.Expression, allowed: set[str]) -> None:
        extra = [key for key, value in node.args.items() if value not in (None, False, []) and key not in allowed]
        if extra:
            raise self.fail(node, f"this form of {type(node).__name__.upper()} is not allowed ({', '.join(extra)})")

    def value(self, node: exp.Expression) -> Any:
        kind = type(node)
        negate = bool(node.args.get("negate"))
        if kind is exp.Paren:
            return self.value(node.this)
        if kind in (exp.And, exp.Or):
            self._args(node, {"this", "expression"})
            parts = (self.condition(node.this), self.condition(node.expression))
            return sa.and_(*parts) if kind is exp.And else sa.or_(*parts)
        if kind is exp.Not:
            self._args(node, {"this"})
            return sa.not_(self.condition(node.this))
        if kind in _COMPARISONS:
            self._args(node, {"this", "expression"})
            return _COMPARISONS[kind](self.value(node.this), self.value(node.expression))
        if kind is exp.NullSafeEQ:
            self._args(node, {"this", "expression"})
            return self.value(node.this).is_not_distinct_from(self.value(node.expression))
        if kind is exp.Is:
            self._args(node, {"this", "expression", "negate"})
            if not isinstance(node.expression, (exp.Null, exp.Boolean)):
                raise self.fail(node, "IS takes NULL, TRUE or FALSE")
            left, right = self.value(node.this), self.value(node.expression)
            return left.is_not(right) if negate else left.is_(right)
        if kind is exp.In:
            self._args(node, {"this", "expressions", "negate"})
            values = [self.value(item) for item in node.expressions]
            column = self.value(node.this)
            return column.not_in(values) if negate else column.in_(values)
        if kind is exp.Between:
            self._args(node, {"this", "low", "high", "negate", "symmetric"})
            if node.args.get("symmetric"):
                raise self.fail(node, "BETWEEN SYMMETRIC is not allowed")
            between = self.value(node.this).between(self.value(node.args["low"]), self.value(node.args["high"]))
            return sa.not_(between) if negate else between
        if kind is exp.Escape:
            self._args(node, {"this", "expression"})
            like = node.this
            if not isinstance(like, (exp.Like, exp.ILike)):
                raise self.fail(node, "ESCAPE belongs to LIKE")
            return self._like(like, escape=self._string(node.expression, "ESCAPE"))
        if kind in (exp.Like, exp.ILike):
            return self._like(node, escape=None)
        if kind in _ARITHMETIC:
            self._args(node, {"this", "expression", "safe", "typed"})  # flags of the dialect's division
            return _ARITHMETIC[kind](self.value(node.this), self.value(node.expression))
        if kind is exp.Neg:
            self._args(node, {"this"})
            return -self.value(node.this)
        if kind in FUNCTIONS:
            return self._function(node)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Literal):
            return self._literal(node)
        if kind is exp.Null:
            return sa.null()
        if kind is exp.Boolean:
            return sa.true() if node.this else sa.false()
        if isinstance(node, (exp.Select, exp.Subquery, exp.Query)):
            raise self.fail(node, "subqueries are not allowed")
        if isinstance(node, exp.Func):
            allowed = ", ".join(sorted(FUNCTIONS.values()))
            raise self.fail(node, f"function {_function_name(node)} is not allowed (allowed: {allowed})")
        raise self.fail(node, f"{type(node).__name__} is not allowed in a condition")

    def _like(self, node: exp.Expression, escape: str | None) -> Any:
        self._args(node, {"this", "expression", "negate"})
        # type_coerce: LIKE on a number column is plain SQL (no CAST rendered), not a type error.
        column, pattern = sa.type_coerce(self.value(node.this), sa.String()), self.value(node.expression)
        if isinstance(node, exp.ILike):
            result = column.ilike(pattern, escape=escape)
        else:
            result = column.like(pattern, escape=escape)
        return sa.not_(result) if node.args.get("negate") else result

    def _function(self, node: exp.Expression) -> Any:
        arguments = [node.this, *node.expressions] if node.args.get("this") is not None else list(node.expressions)
        for key, value in node.args.items():
            if key not in ("this", "expressions") and value not in (None, False, []):
                if isinstance(node, exp.Round) and key == "decimals":
                    arguments.append(value)
                    continue
                raise self.fail(node, f"this form of {FUNCTIONS[type(node)]} is not allowed ({key})")
        return getattr(sa.func, FUNCTIONS[type(node)])(*(self.value(a) for a in arguments))

    def _column(self, node: exp.Column) -> sa.ColumnElement[Any]:
        if node.table or node.args.get("db") or node.args.get("catalog"):
            raise self.fail(node, "name the column without a table (only this table's columns can be used)")
        name = node.name
        column = self.columns.get(name)
        if column is None:
            column = self.folded.get(name.lower())
        if column is None:
            raise WhereError(
                f"{name!r} is not a column of table {self.table.name!r}; the columns are {list(self.columns)} "
                "(strings go in single quotes: 'iris')", where=self.where,
            )
        return column

    def _literal(self, node: exp.Literal) -> Any:
        if node.is_string:
            return sa.literal(node.this, type_=self.text_type)
        text = str(node.this)
        try:
            number: int | float = int(text) if node.is_int else float(text)
        except ValueError:
            raise self.fail(node, "not a number") from None
        if isinstance(number, int) and not -2**63 <= number < 2**63:
            raise self.fail(node, "an integer beyond 64 bits (no column holds it)")
        if isinstance(number, float) and not math.isfinite(number):
            raise self.fail(node, "a number beyond double precision")
        return sa.literal(number)

    def _string(self, node: exp.Expression, what: str) -> str:
        if not isinstance(node, exp.Literal) or not node.is_string:
            raise self.fail(node, f"{what} takes a string literal")
        return str(node.this)


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    return node.sql_name()
