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
- JSON: anything ``json.dumps`` accepts without NaN (numpy values converted, tuples become
  lists, keys must be text); reads back as the parsed JSON.
- BLOB: bytes, within 65,535 / 16,777,215 / 4 GiB - 1 bytes (BLOB / MEDIUMBLOB / LONGBLOB).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from py_experimenter.exceptions import InvalidValueError
from py_experimenter.sqltypes import sql_type_parts

FLOAT32_MAX = 3.4028234663852886e38
_INT_BITS = {"INT": 32, "INTEGER": 32, "MEDIUMINT": 32, "BIGINT": 64, "SMALLINT": 16, "TINYINT": 16}
_TEXT_BYTES = {"TEXT": 65535, "TINYTEXT": 65535, "MEDIUMTEXT": 16777215, "LONGTEXT": 4294967295}
_BLOB_BYTES = {"BLOB": 65535, "MEDIUMBLOB": 16777215, "LONGBLOB": 4294967295}
_MYSQL = "mysql"


class Refused(ValueError):
    """A value a column cannot hold; ``rule`` says why and what to do instead."""

    def __init__(self, rule: str):
        super().__init__(rule)
        self.rule = rule


def plain_value(value: Any) -> Any:
    """numpy scalars and 0-d arrays → Python scalars; everything else unchanged."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


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


def checker_for(sql_type: str, backend: str = "sqlite") -> ColumnChecker:
    """The checker for a column declared as ``sql_type`` on ``backend`` (sqlite, mysql, postgresql)."""
    name, args = sql_type_parts(sql_type)
    mysql = backend == _MYSQL
    if (name == "TINYINT" and args == (1,)) or name in ("BOOL", "BOOLEAN"):
        return ColumnChecker(sql_type, "boolean", _to_bool, _same)
    if name in _INT_BITS:
        bits = _INT_BITS[name]
        return ColumnChecker(sql_type, "integer", _integer(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1), _same)
    if name in ("FLOAT", "REAL"):
        return ColumnChecker(sql_type, "float", _floating(FLOAT32_MAX, "FLOAT (single precision)"), _same)
    if name in ("DOUBLE", "DOUBLE PRECISION") or (name in ("DECIMAL", "NUMERIC") and not args):
        return ColumnChecker(sql_type, "float", _floating(math.inf, name), _same)
    if name in ("DECIMAL", "NUMERIC"):
        precision, scale = args[0], args[1] if len(args) > 1 else 0
        return ColumnChecker(sql_type, "decimal", _decimal(precision, scale), str)
    if name == "VARCHAR":
        return ColumnChecker(sql_type, "string", _string(args[0], pad=False), _same)
    if name == "CHAR":
        return ColumnChecker(sql_type, "string", _string(args[0] if args else 1, pad=True), _same)
    if name in _TEXT_BYTES:
        return ColumnChecker(sql_type, "text", _text(_TEXT_BYTES[name]), _same)
    if name in ("DATETIME", "TIMESTAMP"):
        return ColumnChecker(sql_type, "datetime", _datetime(whole_seconds=mysql), _isoformat)
    if name == "DATE":
        return ColumnChecker(sql_type, "date", _to_date, _isoformat)
    if name == "TIME":
        return ColumnChecker(sql_type, "time", _time(whole_seconds=mysql), _isoformat)
    if name == "JSON":
        return ColumnChecker(sql_type, "json", _to_json, _json_canonical)
    if name in _BLOB_BYTES:
        return ColumnChecker(sql_type, "binary", _binary(_BLOB_BYTES[name]), bytes.hex)
    raise ValueError(f"no value rule for column type {sql_type!r}")  # sqltypes and values disagree


def _same(value: Any) -> Any:
    return value


def _kind(value: Any) -> str:
    return type(value).__name__


# -- numbers ---------------------------------------------------------------------------


def _integer(low: int, high: int) -> Callable[[Any], int]:
    wider = "a DOUBLE column" if high >= 2**63 - 1 else "BIGINT or a DOUBLE column"

    def convert(value: Any) -> int:
        if type(value) is not int:
            value = _as_int(value)
        if not low <= value <= high:
            raise Refused(f"out of the column's range {low}..{high}; use {wider}")
        return value

    return convert


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | decimal.Decimal):
        if not math.isfinite(value) or value != int(value):
            raise Refused("not a whole number; round it, or declare the column DOUBLE")
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise Refused("text that is not a whole number; give an int") from None
    raise Refused(f"a {_kind(value)} is not a whole number; give an int")


def _floating(limit: float, name: str) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if type(value) is not float:
            value = _as_float(value)
        if not math.isfinite(value):
            raise Refused("NaN and ±inf are not stored (MySQL/MariaDB cannot hold them); store None instead")
        if abs(value) > limit:
            raise Refused(f"out of the range of {name} (±{limit:.8g}); declare the column DOUBLE")
        return value + 0.0  # -0.0 → 0.0, as MySQL/MariaDB read it back

    return convert


def _as_float(value: Any) -> float:
    if isinstance(value, int | float | decimal.Decimal):
        try:
            return float(value)
        except OverflowError:
            raise Refused("too large for a double-precision number") from None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise Refused("text that is not a number; give a float") from None
    raise Refused(f"a {_kind(value)} is not a number; give a float (store arrays in a JSON column)")


def _decimal(precision: int, scale: int) -> Callable[[Any], decimal.Decimal]:
    step = decimal.Decimal(1).scaleb(-scale)
    bound = decimal.Decimal(10) ** (precision - scale)
    context = decimal.Context(prec=max(precision + 2, 28), traps=[decimal.InvalidOperation])

    def convert(value: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            number = decimal.Decimal(repr(value))
        elif isinstance(value, int | decimal.Decimal):
            number = decimal.Decimal(value)
        elif isinstance(value, str):
            try:
                number = decimal.Decimal(value.strip())
            except decimal.InvalidOperation:
                raise Refused("text that is not a number; give a float or Decimal") from None
        else:
            raise Refused(f"a {_kind(value)} is not a number; give a float or Decimal")
        if not number.is_finite():
            raise Refused("NaN and ±inf are not stored (MySQL/MariaDB cannot hold them); store None instead")
        if abs(number) >= bound:
            raise Refused(f"more than {precision - scale} digits before the decimal point; widen the DECIMAL")
        rounded = number.quantize(step, rounding=decimal.ROUND_HALF_UP, context=context)
        if abs(rounded) >= bound:
            raise Refused(f"more than {precision - scale} digits before the decimal point once rounded")
        return rounded + 0  # -0.00 → 0.00

    return convert


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise Refused("not a boolean; give True/False, 0/1 or 'true'/'false'")


# -- text --------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise Refused("contains a NUL character (PostgreSQL cannot store it); remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("contains a lone surrogate, which is not valid UTF-8; fix the text's encoding") from None


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise Refused("NaN and ±inf are not stored as text; store None instead")
        return repr(value) if isinstance(value, float) else str(value)
    raise Refused(f"a {_kind(value)} is not text; give a str (never stored as str(obj))")


def _string(length: int, *, pad: bool) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = value if type(value) is str else _as_text(value)
        if len(text) > length:
            raise Refused(f"longer than {length} characters ({len(text)}); shorten it or widen the column")
        if pad and text.endswith(" "):
            raise Refused("CHAR drops trailing spaces on MySQL and pads them on PostgreSQL; strip them or use VARCHAR")
        _check_text(text)
        return text

    return convert


def _text(max_bytes: int) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, list | tuple | dict) or type(value).__module__ == "numpy":
            text = _json_text(value)
        else:
            text = value if type(value) is str else _as_text(value)
        _check_text(text)
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise Refused(f"{size} bytes of UTF-8, more than the column's {max_bytes}; use LONGTEXT")
        return text

    return convert


# -- JSON --------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    value = plain_value(value)
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str):
            _check_text(value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused("NaN and ±inf are not valid JSON; store None instead")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise Refused("JSON object keys must be text")
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None and type(value).__module__ == "numpy":
        return _jsonable(tolist())
    raise Refused(f"a {_kind(value)} is not JSON (give dicts, lists, numbers, text, bools, None)")


def _to_json(value: Any) -> Any:
    return _jsonable(value)


def _json_text(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=False)


def _json_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# -- dates and times ---------------------------------------------------------------------


def _isoformat(value: Any) -> str:
    return str(value.isoformat())


def _check_year(value: dt.date) -> None:
    if value.year < 1000:
        raise Refused("year before 1000 (MySQL/MariaDB's DATETIME starts at 1000-01-01)")


def _datetime(*, whole_seconds: bool) -> Callable[[Any], dt.datetime]:
    def convert(value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise Refused("text that is not an ISO date-time such as '2024-05-01 12:30:00'") from None
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None and value.utcoffset() is not None:
                raise Refused("has a time zone; the column holds naive times: convert to UTC and drop tzinfo")
            value = dt.datetime(value.year, value.month, value.day, value.hour, value.minute,
                                value.second, 0 if whole_seconds else value.microsecond)
        elif isinstance(value, dt.date):
            value = dt.datetime(value.year, value.month, value.day)
        else:
            raise Refused(f"a {_kind(value)} is not a date-time; give a datetime or ISO text")
        _check_year(value)
        return value

    return convert


def _to_date(value: Any) -> dt.date:
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            raise Refused("text that is not an ISO date such as '2024-05-01'") from None
    if isinstance(value, dt.datetime):
        if value.time() != dt.time(0) or value.tzinfo is not None:
            raise Refused("a datetime with a time of day or time zone; give a date")
        value = value.date()
    elif not isinstance(value, dt.date):
        raise Refused(f"a {_kind(value)} is not a date; give a date or ISO text")
    value = dt.date(value.year, value.month, value.day)
    _check_year(value)
    return value


def _time(*, whole_seconds: bool) -> Callable[[Any], dt.time]:
    def convert(value: Any) -> dt.time:
        if isinstance(value, str):
            try:
                value = dt.time.fromisoformat(value.strip())
            except ValueError:
                raise Refused("text that is not an ISO time such as '12:30:00'") from None
        if not isinstance(value, dt.time):
            raise Refused(f"a {_kind(value)} is not a time of day; give a time or ISO text")
        if value.tzinfo is not None:
            raise Refused("has a time zone; the column holds naive times")
        return dt.time(value.hour, value.minute, value.second, 0 if whole_seconds else value.microsecond)

    return convert


# -- bytes -------------------------------------------------------------------------------


def _binary(max_bytes: int) -> Callable[[Any], bytes]:
    def convert(value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise Refused(f"a {_kind(value)} is not bytes; give bytes")
        data = bytes(value)
        if len(data) > max_bytes:
            raise Refused(f"{len(data)} bytes, more than the column's {max_bytes}; use LONGBLOB")
        return data

    return convert


def invalid_value(where: str, what: str, field: str, sql_type: str, value: Any, rule: str) -> InvalidValueError:
    """The error for a refused value: ``where`` (e.g. ``row 3 {...}``), ``what`` (keyfield,
    resultfield, column of logtable 'x'), the field, its type, the value shortened and the rule."""
    shown = shorten(value)
    return InvalidValueError(
        f"{where}: {what} {field!r} ({sql_type}): value {shown} refused: {rule}; nothing was written",
        where=where, field=field, column_type=sql_type, value=shown, rule=rule,
    )
