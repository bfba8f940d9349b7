"""Column types: PyExperimenter 1.4.2's MySQL-style type strings → portable SQLAlchemy types.

Experiment files name column types the way PyExperimenter 1.4.2 did, as MySQL type strings
(``VARCHAR(255)``, ``INT``, ``DECIMAL``, ``LONGTEXT``) plus a few Python-ish aliases used in
its examples (``str``, ``int``, ``float``, ``bool``). :func:`parse_sql_type` maps each onto a
SQLAlchemy type that works on SQLite, MySQL/MariaDB and PostgreSQL alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import types as sa
from sqlalchemy.dialects import mysql

_MYSQL = ("mysql", "mariadb")

_Factory = Callable[[tuple[int, ...]], sa.TypeEngine]


@dataclass(frozen=True)
class _Rule:
    factory: _Factory
    max_args: int = 0  # how many parenthesised integers the type accepts
    min_args: int = 0
    numeric: bool = False  # accepts the UNSIGNED suffix


def _integer(args: tuple[int, ...]) -> sa.TypeEngine:
    return sa.Integer()


def _tinyint(args: tuple[int, ...]) -> sa.TypeEngine:
    # MySQL's idiom for booleans is TINYINT(1); any other TINYINT is a small integer.
    return sa.Boolean() if args == (1,) else sa.SmallInteger()


def _decimal(args: tuple[int, ...]) -> sa.TypeEngine:
    if not args:
        return sa.Double()
    precision = args[0]
    scale = args[1] if len(args) > 1 else 0
    if precision < 1 or scale > precision:
        raise ValueError(f"DECIMAL({precision},{scale}) needs precision >= 1 and scale <= precision")
    return sa.Numeric(precision, scale, asdecimal=False)


def _string(args: tuple[int, ...]) -> sa.TypeEngine:
    if args[0] < 1:
        raise ValueError("VARCHAR length must be at least 1")
    return sa.String(args[0])


def _char(args: tuple[int, ...]) -> sa.TypeEngine:
    length = args[0] if args else 1
    if length < 1:
        raise ValueError("CHAR length must be at least 1")
    return sa.CHAR(length)


def _const(factory: Callable[[], sa.TypeEngine]) -> _Factory:
    return lambda args: factory()


_INT = _Rule(_integer, max_args=1, numeric=True)  # INT(11): display width, ignored
_RULES: dict[str, _Rule] = {
    "INT": _INT,
    "INTEGER": _INT,
    "MEDIUMINT": _INT,
    "BIGINT": _Rule(_const(sa.BigInteger), max_args=1, numeric=True),
    "SMALLINT": _Rule(_const(sa.SmallInteger), max_args=1, numeric=True),
    "TINYINT": _Rule(_tinyint, max_args=1, numeric=True),
    "BOOL": _Rule(_const(sa.Boolean)),
    "BOOLEAN": _Rule(_const(sa.Boolean)),
    "FLOAT": _Rule(_const(sa.Float), max_args=2, numeric=True),
    "REAL": _Rule(_const(sa.Float), numeric=True),
    "DOUBLE": _Rule(_const(sa.Double), max_args=2, numeric=True),
    "DOUBLE PRECISION": _Rule(_const(sa.Double), numeric=True),
    "DECIMAL": _Rule(_decimal, max_args=2, numeric=True),
    "NUMERIC": _Rule(_decimal, max_args=2, numeric=True),
    "VARCHAR": _Rule(_string, max_args=1, min_args=1),
    "CHAR": _Rule(_char, max_args=1),
    "TEXT": _Rule(_const(sa.Text)),
    "TINYTEXT": _Rule(_const(sa.Text)),
    "MEDIUMTEXT": _Rule(_const(lambda: sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL))),
    "LONGTEXT": _Rule(_const(lambda: sa.Text().with_variant(mysql.LONGTEXT(), *_MYSQL))),
    "DATETIME": _Rule(_const(sa.DateTime)),
    "TIMESTAMP": _Rule(_const(sa.DateTime)),
    "DATE": _Rule(_const(sa.Date)),
    "TIME": _Rule(_const(sa.Time)),
    "JSON": _Rule(_const(sa.JSON)),
    "BLOB": _Rule(_const(sa.LargeBinary)),
    "MEDIUMBLOB": _Rule(_const(lambda: sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL))),
    "LONGBLOB": _Rule(_const(lambda: sa.LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL))),
}
# Python-ish aliases, matched in lower case only (1.4.2's examples use ``str`` in logtables).
# ``float`` means a Python float, i.e. double precision, unlike SQL ``FLOAT`` (single
# precision on MySQL); ``STR`` in capitals is accepted too, as it cannot mean anything else.
_PYTHON_ALIASES: dict[str, Callable[[], sa.TypeEngine]] = {
    "str": lambda: sa.String(255),
    "int": sa.Integer,
    "float": sa.Double,
    "bool": sa.Boolean,
}

SUPPORTED_TYPES: tuple[str, ...] = (*_RULES, *_PYTHON_ALIASES)

_SYNTAX = re.compile(
    r"^(?P<name>[A-Za-z]+(?: PRECISION)?)"
    r"(?: ?\( ?(?P<args>\d+(?: ?, ?\d+)*) ?\))?"
    r"(?P<unsigned> UNSIGNED)?$",
    re.IGNORECASE,
)


_ALIAS_PARTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "str": ("VARCHAR", (255,)),
    "int": ("INT", ()),
    "float": ("DOUBLE", ()),
    "bool": ("BOOL", ()),
}


def sql_type_parts(text: str) -> tuple[str, tuple[int, ...]]:
    """The canonical type name and its integer arguments: ``'varchar( 20 )'`` → ``('VARCHAR', (20,))``.

    Python-ish aliases map onto what they mean (``str`` → ``('VARCHAR', (255,))``). Call it
    on a type that :func:`parse_sql_type` accepts; anything else raises ``ValueError``.
    """
    parse_sql_type(text)  # the one place that decides what is valid
    normalized = " ".join(text.split())
    if normalized.lower() == "str" or normalized in _ALIAS_PARTS:
        return _ALIAS_PARTS[normalized.lower() if normalized.lower() == "str" else normalized]
    match = _SYNTAX.match(normalized)
    assert match is not None  # parse_sql_type accepted it
    args = tuple(int(a) for a in match.group("args").replace(" ", "").split(",")) if match["args"] else ()
    return match.group("name").upper(), args


def parse_sql_type(text: str) -> sa.TypeEngine:
    """Return the portable SQLAlchemy type for a 1.4.2-style column type string.

    Case and extra spaces do not matter; ``UNSIGNED`` is accepted on numeric types and
    ignored. The mapping:

    - ``INT`` / ``INTEGER`` / ``MEDIUMINT`` → Integer, ``BIGINT`` → BigInteger,
      ``SMALLINT`` / ``TINYINT`` → SmallInteger, but ``TINYINT(1)`` → Boolean;
      display widths such as ``INT(11)`` are ignored.
    - ``BOOL`` / ``BOOLEAN`` → Boolean.
    - ``FLOAT`` / ``REAL`` → Float; ``DOUBLE`` / ``DOUBLE PRECISION`` → Double.
    - Bare ``DECIMAL`` / ``NUMERIC`` → Double. PyExperimenter 1.4.2 passed a bare ``DECIMAL``
      straight to MySQL, which reads it as ``DECIMAL(10,0)`` and silently rounds every value
      to an integer (an accuracy of 0.93 was stored as 1). We store a double instead.
      ``DECIMAL(p,s)`` / ``NUMERIC(p,s)`` → Numeric(p, s) returning floats.
    - ``VARCHAR(n)`` → String(n) (the length is required); ``CHAR(n)`` → CHAR(n).
    - ``TEXT`` / ``TINYTEXT`` → Text; ``MEDIUMTEXT`` / ``LONGTEXT`` → Text, rendered as
      MEDIUMTEXT / LONGTEXT on MySQL and MariaDB (whose plain TEXT holds only 64 KiB).
    - ``DATETIME`` / ``TIMESTAMP`` → DateTime, ``DATE`` → Date, ``TIME`` → Time, ``JSON`` → JSON.
    - ``BLOB`` → LargeBinary; ``MEDIUMBLOB`` / ``LONGBLOB`` likewise, with the big MySQL type.
    - Python-ish aliases (lower case only): ``str`` → String(255), ``int`` → Integer,
      ``float`` → Double, ``bool`` → Boolean.

    :raises ValueError: for an unknown type or wrong arguments; the message lists the
        supported type names.
    """
    if not isinstance(text, str):
        raise ValueError(f"a column type must be a string such as 'VARCHAR(255)', got {type(text).__name__}")
    normalized = " ".join(text.split())
    if normalized in _PYTHON_ALIASES or normalized.lower() == "str":
        return _PYTHON_ALIASES[normalized.lower() if normalized.lower() == "str" else normalized]()
    match = _SYNTAX.match(normalized)
    name = match.group("name").upper() if match else ""
    rule = _RULES.get(name)
    if match is None or rule is None:
        raise ValueError(
            f"unknown column type {text!r}; supported types: {', '.join(SUPPORTED_TYPES)} "
            "(with lengths where they apply, e.g. VARCHAR(255), DECIMAL(10,4))"
        )
    args = tuple(int(a) for a in match.group("args").replace(" ", "").split(",")) if match["args"] else ()
    if not rule.min_args <= len(args) <= rule.max_args:
        if rule.max_args == 0:
            wanted = "no arguments"
        elif rule.min_args:
            wanted = f"exactly {rule.min_args} argument, e.g. {name}(255)"
        else:
            wanted = "at most 1 argument" if rule.max_args == 1 else f"at most {rule.max_args} arguments"
        raise ValueError(f"column type {text!r}: {name} takes {wanted}")
    if match.group("unsigned") and not rule.numeric:
        raise ValueError(f"column type {text!r}: UNSIGNED applies to numeric types only")
    try:
        return rule.factory(args)
    except ValueError as exc:
        raise ValueError(f"column type {text!r}: {exc}") from None
