"""Value checkers: what a column of each SQL type family accepts, and the value it stores.

One :class:`ColumnChecker` per column (keyfield, resultfield or logtable column), built from
the user's type string. ``checker(value)`` returns the value handed to the driver, or raises
:class:`Refused` naming the rule; callers turn that into an
:class:`~py_experimenter.exceptions.InvalidValueError` that names the row and the field.
The rules are the same on SQLite, MySQL/MariaDB and PostgreSQL unless said otherwise, so a
value accepted on one backend is accepted (and reads back equal) on the others:

- ``None`` is NULL in every column.
- numpy scalars (``np.int64``, ``np.float32``, ``np.bool_``, ``np.str_``) and 0-d arrays are
  converted to Python scalars first; other arrays, lists, dicts and objects are refused,
  except in JSON columns (stored as JSON) and TEXT-family columns (stored as JSON text). A
  value is never stored as ``str(obj)``.
- Integers (INT, BIGINT, SMALLINT, TINYINT, MEDIUMINT): the signed range of the type
  (``UNSIGNED`` is ignored, as in the schema); integral floats, ``Decimal`` and integer text
  (``"5"``) are converted, ``True``/``False`` become 1/0.
- DOUBLE / bare DECIMAL: finite numbers; numeric text is parsed. NaN and ±inf are refused on
  every backend (MySQL/MariaDB cannot hold them, SQLite turns NaN into NULL): store None.
- FLOAT / REAL: as DOUBLE, within single precision's range (|x| <= 3.4028234e38). MySQL and
  MariaDB keep single precision, so a value reads back equal to about 6 significant digits
  there; SQLite and PostgreSQL keep doubles and read back exactly.
- DECIMAL(p,s): rounded half-up to ``s`` decimals (from the number's shortest decimal
  form), then at most ``p - s`` integer digits; reads back as the float of that decimal.
- BOOL / TINYINT(1): bools, 0/1 and the text ``true``/``false``/``1``/``0``.
- VARCHAR(n) / CHAR(n): text of at most ``n`` characters (ints, floats and Decimals are
  written as text); CHAR refuses trailing spaces (MySQL strips them, PostgreSQL pads to ``n``:
  CHAR values read back equal after ``rstrip(' ')``).
- TEXT / TINYTEXT: at most 65,535 bytes of UTF-8, MEDIUMTEXT 16,777,215, LONGTEXT 4 GiB - 1
  (MySQL's limits, applied everywhere).
- Every text: NUL characters (PostgreSQL cannot store them) and lone surrogates (not UTF-8)
  are refused.
- DATETIME / TIMESTAMP, DATE, TIME: ``datetime`` / ``date`` / ``time`` objects or ISO text,
  naive (no time zone), years 1000 to 9999. MySQL/MariaDB hold whole seconds: the fraction is
  dropped there before storing (and before hashing a keyfield).
- JSON: anything ``json.dumps`` accepts without NaN or integers beyond 64 bits (numpy values
  converted, tuples become lists, keys must be text); reads back as the parsed JSON.
- BLOB: bytes, within 65,535 / 16,777,215 / 4 GiB - 1 bytes (BLOB / MEDIUMBLOB / LONGBLOB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc

from py_experimenter.exceptions import InvalidValueError
from py_experimenter.sqltypes import sql_type_parts
from py_experimenter.value_rules import (
    FLOAT32_MAX,
    Refused,
    binary,
    datetime_rule,
    decimal_rule,
    floating,
    integer,
    isoformat,
    json_canonical,
    plain_value,
    same,
    string,
    text,
    time_rule,
    to_bool,
    to_date,
    to_json,
)

__all__ = ["DRIVER_REFUSALS", "FLOAT32_MAX", "ColumnChecker", "Refused", "checker_for", "invalid_value", "plain_value",
           "refused_by_driver", "shorten"]

_INT_BITS = {"INT": 32, "INTEGER": 32, "MEDIUMINT": 32, "BIGINT": 64, "SMALLINT": 16, "TINYINT": 16}
_TEXT_BYTES = {"TEXT": 65535, "TINYTEXT": 65535, "MEDIUMTEXT": 16777215, "LONGTEXT": 4294967295}
_BLOB_BYTES = {"BLOB": 65535, "MEDIUMBLOB": 16777215, "LONGBLOB": 4294967295}
_MYSQL = "mysql"


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for messages."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class ColumnChecker:
    """Checks and converts values for one column type on one backend.

    ``family`` is one of integer, float, decimal, boolean, string, text, datetime, date, time,
    json, binary. ``canonical(stored)`` is the JSON-able form used in the keyhash.
    """

    sql_type: str
    family: str
    convert: Callable[[Any], Any]
    canonical: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        """The value to store, or :class:`Refused`."""
        if value is None:
            return None
        return self.convert(plain_value(value))


def _significant(digits: int) -> Callable[[float], float]:
    """Keyhash form of a float: rounded to ``digits`` significant digits, so that 0.3 and
    0.30000000000000004 (1.4.2's ``np.arange`` ranges) or a FLOAT's single-precision read-back
    are the same experiment."""
    pattern = f".{digits}g"
    return lambda value: float(format(value, pattern))


def checker_for(sql_type: str, backend: str = "sqlite") -> ColumnChecker:
    """The checker for a column declared as ``sql_type`` on ``backend`` (sqlite, mysql, postgresql)."""
    name, args = sql_type_parts(sql_type)
    mysql = backend == _MYSQL
    if (name == "TINYINT" and args == (1,)) or name in ("BOOL", "BOOLEAN"):
        return ColumnChecker(sql_type, "boolean", to_bool, same)
    if name in _INT_BITS:
        bits = _INT_BITS[name]
        return ColumnChecker(sql_type, "integer", integer(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1), same)
    if name in ("FLOAT", "REAL"):
        return ColumnChecker(sql_type, "float", floating(FLOAT32_MAX, "FLOAT (single precision)"), _significant(6))
    if name in ("DOUBLE", "DOUBLE PRECISION") or (name in ("DECIMAL", "NUMERIC") and not args):
        return ColumnChecker(sql_type, "float", floating(math.inf, name), _significant(15))
    if name in ("DECIMAL", "NUMERIC"):
        precision, scale = args[0], args[1] if len(args) > 1 else 0
        return ColumnChecker(sql_type, "decimal", decimal_rule(precision, scale), str)
    if name == "VARCHAR":
        return ColumnChecker(sql_type, "string", string(args[0], pad=False), same)
    if name == "CHAR":
        return ColumnChecker(sql_type, "string", string(args[0] if args else 1, pad=True), same)
    if name in _TEXT_BYTES:
        return ColumnChecker(sql_type, "text", text(_TEXT_BYTES[name]), same)
    if name in ("DATETIME", "TIMESTAMP"):
        return ColumnChecker(sql_type, "datetime", datetime_rule(whole_seconds=mysql), isoformat)
    if name == "DATE":
        return ColumnChecker(sql_type, "date", to_date, isoformat)
    if name == "TIME":
        return ColumnChecker(sql_type, "time", time_rule(whole_seconds=mysql), isoformat)
    if name == "JSON":
        return ColumnChecker(sql_type, "json", to_json, json_canonical)
    if name in _BLOB_BYTES:
        return ColumnChecker(sql_type, "binary", binary(_BLOB_BYTES[name]), bytes.hex)
    raise ValueError(f"no value rule for column type {sql_type!r}")  # sqltypes and values disagree


def invalid_value(where: str, what: str, field: str, sql_type: str, value: Any, rule: str) -> InvalidValueError:
    """The error for a refused value: ``where`` (e.g. ``row 3 {...}``), ``what`` (keyfield,
    resultfield, column of logtable 'x'), the field, its type, the value shortened and the rule."""
    shown = shorten(value)
    return InvalidValueError(
        f"{where}: {what} {field!r} ({sql_type}): value {shown} refused: {rule}; nothing was written",
        where=where, field=field, column_type=sql_type, value=shown, rule=rule,
    )


#: Driver errors that mean "this value was refused" (not a lost connection or a deadlock).
DRIVER_REFUSALS: tuple[type[BaseException], ...] = (sa_exc.DataError, sa_exc.IntegrityError)


def refused_by_driver(where: str, error: BaseException,
                      outcome: str = "nothing of this call was written") -> InvalidValueError:
    """A driver's refusal of a value that passed the checks (a safety net; the checks should
    catch every such value first), as an InvalidValueError with the driver's first line."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    rule = f"the database refused it: {type(cause).__name__}: {text[0] if text else ''}"
    return InvalidValueError(f"{where}: {rule}; {outcome}", where=where, rule=rule)
