"""Experiment grids: keyfield values → rows, and the canonical hash that identifies a row.

The keyhash makes fills idempotent: the same experiment always hashes the same, whatever
Python or numpy type its values arrive as and whatever order the keyfields are listed or
passed in, so a second fill (or two fills at once) adds nothing.

The keyhash, precisely (stable across releases; :func:`keyhash` computes it for existing
rows): each value is first converted by its column's checker
(:mod:`py_experimenter.values`: 5, 5.0 and ``numpy.int64(5)`` in an INT column are all 5;
``"5"`` in a VARCHAR column is the text "5"), then written in canonical form — integers,
floats (rounded to 15 significant digits, 6 for single-precision FLOAT / REAL, so that 0.3 and
0.30000000000000004 are one experiment), text, bools and NULL as JSON numbers / strings / true /
false / null, DECIMAL(p,s) as
the text of the rounded decimal (``"0.930"``), dates and times in ISO format, JSON values as
their JSON text with sorted keys, bytes as hex. The pairs ``[name, canonical value]`` are
sorted by keyfield name and encoded as compact JSON (``[["dataset","iris"],["seed",1]]``,
UTF-8, no ASCII escaping); the keyhash is the first 32 hex digits of its SHA-256.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from py_experimenter.config import KeyfieldSpec
from py_experimenter.db.schema import KEYHASH_LENGTH
from py_experimenter.exceptions import FillError
from py_experimenter.values import ColumnChecker, Refused, checker_for, invalid_value, plain_value, shorten

__all__ = ["RowCanonicalizer", "combine", "grid_rows", "keyhash", "plain_value"]


class RowCanonicalizer:
    """Turns keyfield rows into the values stored and the keyhash, per keyfield type.

    ``backend`` (sqlite, mysql, postgresql) matters only where a backend holds less than
    Python (whole seconds in MySQL's DATETIME and TIME).
    """

    def __init__(self, keyfields: Sequence[KeyfieldSpec], backend: str = "sqlite"):
        self.keyfields = tuple(keyfields)
        self.names = tuple(k.name for k in keyfields)
        self._name_set = frozenset(self.names)
        checkers = [checker_for(k.sql_type, backend) for k in self.keyfields]
        self._fields: tuple[tuple[str, ColumnChecker], ...] = tuple(zip(self.names, checkers, strict=True))
        self._sorted = tuple(sorted(self._fields))
        self._encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def normalize(self, row: Any, index: int | None = None) -> dict[str, Any]:
        """Check that ``row`` is a mapping of exactly the keyfields; convert each value.

        :raises FillError: not a mapping, or missing / unknown keyfields.
        :raises InvalidValueError: a value its column cannot hold (names the row and rule).
        """
        if not isinstance(row, Mapping):
            raise FillError(
                f"{_row_label(index)} is a {type(row).__name__} ({shorten(row)}), not a dict; every row "
                f"is a dict of the keyfields {list(self.names)}"
            )
        if (row.keys() if type(row) is dict else set(row)) != self._name_set:
            self._raise_mismatch(row, index)
        normalized = {}
        for name, check in self._fields:
            value = row[name]
            try:
                normalized[name] = check(value)
            except Refused as refused:
                where = f"{_row_label(index)} {shorten(dict(row), 160)}"
                raise invalid_value(where, "keyfield", name, check.sql_type, value, refused.rule) from None
        return normalized

    def _raise_mismatch(self, row: Mapping[str, Any], index: int | None) -> None:
        missing = [n for n in self.names if n not in row]
        extra = [str(n) for n in row if n not in self.names]
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unknown {extra}")
        raise FillError(
            f"{_row_label(index)} {shorten(dict(row), 160)} does not match the keyfields ({'; '.join(problems)}); "
            f"every row needs exactly the keyfields {list(self.names)}"
        )

    def keyhash(self, normalized: Mapping[str, Any]) -> str:
        """Hash of the canonical values (see the module docstring; hex, fixed length)."""
        pairs = [
            [name, None if (value := normalized[name]) is None else check.canonical(value)]
            for name, check in self._sorted
        ]
        return hashlib.sha256(self._encode(pairs).encode()).hexdigest()[:KEYHASH_LENGTH]

    def prepare(self, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Normalized rows with their ``keyhash``; duplicates within ``rows`` are dropped."""
        seen: set[str] = set()
        normalize, keyhash = self.normalize, self.keyhash
        for index, row in enumerate(rows):
            values = normalize(row, index)
            key = keyhash(values)
            if key in seen:
                continue
            seen.add(key)
            values["keyhash"] = key
            yield values


def keyhash(keyfields: Sequence[KeyfieldSpec], row: Mapping[str, Any], backend: str = "sqlite") -> str:
    """The keyhash of one row of keyfield values (as stored, or as a user would pass them).

    For migrations: recomputing it over a table's existing rows gives the hashes that new
    fills of the same experiments produce.
    """
    canonicalizer = RowCanonicalizer(keyfields, backend)
    return canonicalizer.keyhash(canonicalizer.normalize(row))


def _row_label(index: int | None) -> str:
    return "row" if index is None else f"row {index}"


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
    parameters = _checked_parameters(parameters)
    fixed = _checked_combinations(fixed_parameter_combinations)
    unknown = sorted(set(parameters) - set(keyfield_names))
    if unknown:
        raise FillError(f"parameters {unknown} are not keyfields; the keyfields are {list(keyfield_names)}")
    names = [n for n in keyfield_names if n in parameters]
    product = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(parameters[n] for n in names))
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


def _checked_parameters(parameters: Any) -> dict[str, list[Any]]:
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise FillError(
            f"parameters must be a dict {{keyfield: [values]}}, got a {type(parameters).__name__} "
            f"({shorten(parameters)})"
        )
    checked = {}
    for name, values in parameters.items():
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise FillError(
                f"parameters[{name!r}] must be a list of values, got a {type(values).__name__} "
                f"({shorten(values)}); write [{shorten(values)}] for a single value"
            )
        checked[name] = list(values)
    return checked


def _checked_combinations(combinations: Any) -> list[dict[str, Any]]:
    if combinations is None:
        return []
    if isinstance(combinations, str | bytes | Mapping) or not isinstance(combinations, Iterable):
        raise FillError(
            "fixed_parameter_combinations must be a list of dicts {keyfield: value}, got a "
            f"{type(combinations).__name__} ({shorten(combinations)})"
        )
    checked = []
    for index, combination in enumerate(combinations):
        if not isinstance(combination, Mapping):
            raise FillError(
                f"fixed_parameter_combinations[{index}] must be a dict {{keyfield: value}}, got a "
                f"{type(combination).__name__} ({shorten(combination)})"
            )
        checked.append(dict(combination))
    return checked
