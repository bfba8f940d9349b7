"""The conversion rules behind :mod:`py_experimenter.values`, one per SQL type family.

Each rule takes a non-None Python scalar (numpy already converted) and returns the value to
store, or raises :class:`Refused` with the rule that was broken and what to do instead.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

FLOAT32_MAX = 3.4028234663852886e38


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


def same(value: Any) -> Any:
    return value


def _kind(value: Any) -> str:
    return type(value).__name__


# -- numbers ---------------------------------------------------------------------------


def integer(low: int, high: int) -> Callable[[Any], int]:
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


def floating(limit: float, name: str) -> Callable[[Any], float]:
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


def decimal_rule(precision: int, scale: int) -> Callable[[Any], decimal.Decimal]:
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


def to_bool(value: Any) -> bool:
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


def string(length: int, *, pad: bool) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = value if type(value) is str else _as_text(value)
        if len(text) > length:
            raise Refused(f"longer than {length} characters ({len(text)}); shorten it or widen the column")
        if pad and text.endswith(" "):
            raise Refused("CHAR drops trailing spaces on MySQL and pads them on PostgreSQL; strip them or use VARCHAR")
        _check_text(text)
        return text

    return convert


def text(max_bytes: int) -> Callable[[Any], str]:
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
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise Refused("a JSON integer beyond 64 bits (SQLite would keep it only approximately)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused("NaN and ±inf are not valid JSON; store None instead")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise Refused("JSON object keys must be text")
        for key in value:
            _check_text(key)
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None and type(value).__module__ == "numpy":
        return _jsonable(tolist())
    raise Refused(f"a {_kind(value)} is not JSON (give dicts, lists, numbers, text, bools, None)")


def to_json(value: Any) -> Any:
    return _jsonable(value)


def _json_text(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=False)


def json_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# -- dates and times ---------------------------------------------------------------------


def isoformat(value: Any) -> str:
    return str(value.isoformat())


def _check_year(value: dt.date) -> None:
    if value.year < 1000:
        raise Refused("year before 1000 (MySQL/MariaDB's DATETIME starts at 1000-01-01)")


def datetime_rule(*, whole_seconds: bool) -> Callable[[Any], dt.datetime]:
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


def to_date(value: Any) -> dt.date:
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


def time_rule(*, whole_seconds: bool) -> Callable[[Any], dt.time]:
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


def binary(max_bytes: int) -> Callable[[Any], bytes]:
    def convert(value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise Refused(f"a {_kind(value)} is not bytes; give bytes")
        data = bytes(value)
        if len(data) > max_bytes:
            raise Refused(f"{len(data)} bytes, more than the column's {max_bytes}; use LONGBLOB")
        return data

    return convert
