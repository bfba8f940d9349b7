"""Experiment grids: keyfield values → rows, and the canonical hash that identifies a row.

The keyhash makes fills idempotent: the same keyfield values always hash the same, whatever
Python or numpy type they arrive as, so a second fill (or two fills at once) adds nothing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from py_experimenter.config import KeyfieldSpec
from py_experimenter.db.schema import KEYHASH_LENGTH
from py_experimenter.exceptions import FillError
from py_experimenter.sqltypes import parse_sql_type


def plain_value(value: Any) -> Any:
    """numpy scalars → Python scalars; everything else unchanged."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    return value


class RowCanonicalizer:
    """Turns keyfield rows into the values stored and the keyhash, per keyfield type."""

    def __init__(self, keyfields: Sequence[KeyfieldSpec]):
        self.keyfields = tuple(keyfields)
        self.names = tuple(k.name for k in keyfields)
        self._kinds = tuple(_python_kind(k.sql_type) for k in keyfields)
        self._name_set = frozenset(self.names)
        self._fields = tuple(zip(self.names, self._kinds, strict=True))
        # json.dumps with these arguments builds a new encoder per call; the output is the same.
        self._encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def normalize(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Check that ``row`` has exactly the keyfields and coerce each value to its column kind."""
        if (row.keys() if type(row) is dict else set(row)) != self._name_set:
            self._raise_mismatch(row)
        normalized = {}
        for name, kind in self._fields:
            value = row[name]
            # Fast path (hot in large fills): a value already of its column kind stays as is.
            if type(value) is not kind and value is not None:
                value = _coerce(plain_value(value), kind, name)
            normalized[name] = value
        return normalized

    def _raise_mismatch(self, row: Mapping[str, Any]) -> None:
        missing = [n for n in self.names if n not in row]
        extra = [str(n) for n in row if n not in self.names]
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unknown {extra}")
        raise FillError(
            f"row {dict(row)!r} does not match the keyfields ({'; '.join(problems)}); "
            f"every row needs exactly the keyfields {list(self.names)}"
        )

    def keyhash(self, normalized: Mapping[str, Any]) -> str:
        """Hash of the canonical values, in keyfield order (hex, fixed length)."""
        canonical = [
            value if type(value) in _JSON_TEXT else _canonical(value)
            for value in map(normalized.__getitem__, self.names)
        ]
        try:
            # The same text as the encoder below, without its per-call setup (hot in large fills).
            payload = "[" + ",".join([_JSON_TEXT[type(value)](value) for value in canonical]) + "]"
        except KeyError:  # a subclass of int or str: let the json module decide
            payload = self._encode(canonical)
        return hashlib.sha256(payload.encode()).hexdigest()[:KEYHASH_LENGTH]

    def prepare(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Normalized rows with their ``keyhash``; duplicates within ``rows`` are dropped."""
        seen: set[str] = set()
        normalize, keyhash = self.normalize, self.keyhash
        for row in rows:
            values = normalize(row)
            key = keyhash(values)
            if key in seen:
                continue
            seen.add(key)
            values["keyhash"] = key
            yield values


def grid_rows(keyfields: Sequence[KeyfieldSpec]) -> Iterator[dict[str, Any]]:
    """The cartesian product of the configured keyfield values, in keyfield order."""
    missing = [k.name for k in keyfields if k.values is None]
    if missing:
        raise FillError(
            f"keyfields {missing} have no values in the configuration; give them `values:` "
            "or use fill_table_with_rows / fill_table_from_combination"
        )
    names = [k.name for k in keyfields]
    for combination in itertools.product(*(k.values or () for k in keyfields)):
        yield dict(zip(names, combination, strict=True))


def combine(
    keyfield_names: Sequence[str],
    parameters: Mapping[str, Iterable[Any]] | None = None,
    fixed_parameter_combinations: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for ``fill_table_from_combination``: each fixed combination × the product of ``parameters``."""
    parameters = dict(parameters or {})
    fixed = [dict(c) for c in (fixed_parameter_combinations or [])]
    unknown = sorted(set(parameters) - set(keyfield_names))
    if unknown:
        raise FillError(f"parameters {unknown} are not keyfields; the keyfields are {list(keyfield_names)}")
    names = [n for n in keyfield_names if n in parameters]
    product = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(list(parameters[n]) for n in names))
    ] if names else []
    if not fixed:
        rows = product
    elif not product:
        rows = fixed
    else:
        rows = []
        for base in product:
            for extra in fixed:
                overlap = sorted(set(base) & set(extra))
                if overlap:
                    raise FillError(
                        f"keyfields {overlap} are given both in parameters and in "
                        "fixed_parameter_combinations; give each keyfield in one place"
                    )
                rows.append({**base, **extra})
    if not rows:
        raise FillError("no parameter combination given: pass parameters and/or fixed_parameter_combinations")
    return rows


def _python_kind(sql_type: str) -> type:
    try:
        kind = parse_sql_type(sql_type).python_type
    except NotImplementedError:
        return object
    return float if kind is decimal.Decimal else kind


def _coerce(value: Any, kind: type, name: str) -> Any:
    if value is None or kind is object or type(value) is kind:
        return value
    try:
        return _CONVERTERS[kind](value)
    except (KeyError, TypeError, ValueError):
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    raise FillError(f"keyfield {name!r}: value {value!r} does not fit its column type ({kind.__name__})")


def _to_bool(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int | float):
        return bool(value)
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


_CONVERTERS: dict[type, Any] = {bool: _to_bool, int: _to_int, float: float, str: str}


#: JSON text of the exact types that :func:`_canonical` returns (and keeps as they are),
#: identical to ``json.dumps(..., ensure_ascii=False)``.
_JSON_TEXT: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,
    str: json.encoder.encode_basestring,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def _canonical(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value.normalize())
    return repr(value)
