"""Property tests on SQLite, MariaDB and PostgreSQL: every generated value either reads back
equal (within the column's documented precision) or is refused with InvalidValueError, and a
refused fill / process_results / process_logs call leaves the table unchanged.

Each column has a test-side oracle (``valid``, ``expected``) written independently of
py_experimenter.values, so a checker that refused good values or let bad ones through fails.
One table per test function; the examples reuse it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from py_experimenter.exceptions import InvalidValueError
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor

# PY_EXPERIMENTER_TEST_EXAMPLES=500 for a deeper search than the default run.
# deadline=None and too_slow suppressed: a loaded CI machine makes draws and database round trips slow,
# which says nothing about the values read back.
SETTINGS = settings(max_examples=int(os.environ.get("PY_EXPERIMENTER_TEST_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FLOAT32_MAX = float(np.finfo(np.float32).max)
UTC = dt.timezone.utc


class Junk:
    """An object that is no scalar (its str() would be '<...Junk object at 0x...>')."""


JUNK = st.sampled_from([Junk(), [1, 2], {"a": 1}, np.zeros(2), {1, 2}])
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=16)  # includes NUL and lone surrogates


def _int_value(value: Any) -> int | None:
    """The int a value means, independently of the library (None: not a whole number)."""
    if isinstance(value, bool | int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _good_text(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@dataclass(frozen=True)
class Column:
    sql_type: str
    values: st.SearchStrategy[Any]
    valid: Callable[[Any, str], bool]  # (value, backend)
    expected: Callable[[Any, str], Any]  # what reads back
    base: Any  # a valid value for rows that test another column
    equal: Callable[[Any, Any, str], bool] = lambda read, want, backend: bool(read == want and type(read) is type(want))


def _integer(bits: int, extra: int) -> Column:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = st.one_of(st.integers(low - extra, high + extra), st.integers(), st.floats(-1e20, 1e20),
                       st.integers(-1000, 1000).map(np.int64), st.from_regex(r"-?[0-9]{1,21}", fullmatch=True), JUNK)

    def valid(value: Any, backend: str) -> bool:
        number = _int_value(value)
        return number is not None and low <= number <= high

    return Column(f"{'INT' if bits == 32 else 'BIGINT' if bits == 64 else 'SMALLINT'}", values, valid,
                  lambda v, b: _int_value(v), 0)


def _float_ok(value: Any, limit: float) -> bool:
    return isinstance(value, float | int | np.floating) and math.isfinite(float(value)) and abs(float(value)) <= limit


def _close_float(read: Any, want: Any, backend: str) -> bool:
    if backend == "mysql":  # single precision there: about 6 significant digits
        return math.isclose(read, want, rel_tol=1e-5, abs_tol=1.2e-38)
    return bool(read == want)


def _decimal_expected(value: Any, backend: str) -> float:
    number = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
    return float(number.quantize(decimal.Decimal("0.001"), rounding=decimal.ROUND_HALF_UP))


def _decimal_valid(value: Any, backend: str) -> bool:
    if not isinstance(value, float | decimal.Decimal) or not math.isfinite(value):
        return False
    return abs(_decimal_expected(value, backend)) < 1e5


def _bool_valid(value: Any, backend: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    if isinstance(value, int):
        return value in (0, 1)
    return isinstance(value, str) and value.lower() in ("true", "false", "1", "0")


def _bool_expected(value: Any, backend: str) -> bool:
    return value.lower() in ("true", "1") if isinstance(value, str) else bool(value)


def _datetime_expected(value: dt.datetime, backend: str) -> dt.datetime:
    return value.replace(microsecond=0) if backend == "mysql" else value


COLUMNS: dict[str, Column] = {
    "i": _integer(32, 10),
    "bi": _integer(64, 10),
    "si": _integer(16, 10),
    "d": Column("DOUBLE", st.one_of(st.floats(), st.integers(-2**60, 2**60), JUNK),
                lambda v, b: _float_ok(v, math.inf), lambda v, b: float(v), 0.5),
    "f": Column("FLOAT", st.one_of(st.floats(), st.floats(width=32).map(np.float32), JUNK),
                lambda v, b: _float_ok(v, FLOAT32_MAX), lambda v, b: float(v), 0.25,
                equal=lambda read, want, b: _close_float(read, want, b)),
    "n": Column("DECIMAL(8,3)", st.one_of(st.decimals(-10**6, 10**6, places=4), st.floats(-2e5, 2e5), JUNK),
                _decimal_valid, _decimal_expected, 1.5,  # SQLite's NUMERIC gives whole values back as int
                equal=lambda read, want, b: isinstance(read, int | float) and read == want),
    "b": Column("BOOL", st.one_of(st.booleans(), st.integers(-1, 2), st.sampled_from(["true", "False", "1", "yes"]),
                                  st.booleans().map(np.bool_), JUNK),
                _bool_valid, _bool_expected, True),
    "v": Column("VARCHAR(12)", st.one_of(ANY_TEXT, JUNK),
                lambda v, b: isinstance(v, str) and len(v) <= 12 and _good_text(v), lambda v, b: v, "x"),
    "c": Column("CHAR(4)", st.one_of(st.text(st.characters(blacklist_categories=()), max_size=6), JUNK),
                lambda v, b: isinstance(v, str) and len(v) <= 4 and not v.endswith(" ") and _good_text(v),
                lambda v, b: v, "ab",
                equal=lambda read, want, b: read.rstrip(" ") == want),  # PostgreSQL pads CHAR(n)
    "t": Column("TEXT", st.one_of(ANY_TEXT, st.lists(st.integers(-5, 5), max_size=3), st.just(Junk())),
                lambda v, b: isinstance(v, list) or (isinstance(v, str) and _good_text(v)),
                lambda v, b: json.dumps(v) if isinstance(v, list) else v, "text"),
    "dtm": Column("DATETIME", st.one_of(st.datetimes(), st.datetimes(timezones=st.just(UTC)), JUNK),
                  lambda v, b: isinstance(v, dt.datetime) and v.tzinfo is None and v.year >= 1000,
                  _datetime_expected, dt.datetime(2024, 5, 1, 12, 0)),
    "da": Column("DATE", st.one_of(st.dates(), JUNK), lambda v, b: isinstance(v, dt.date) and v.year >= 1000,
                 lambda v, b: v, dt.date(2024, 5, 1)),
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _json_valid(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return _good_text(value)
    if isinstance(value, list):
        return all(_json_valid(v) for v in value)
    if isinstance(value, dict):
        return all(_good_text(k) and _json_valid(v) for k, v in value.items())
    return True


JSON_COLUMN = Column("JSON", st.one_of(JSON_VALUES, JUNK.filter(lambda v: not isinstance(v, list | dict))),
                     lambda v, b: _json_valid(v) and not isinstance(v, Junk | set),
                     lambda v, b: v.tolist() if isinstance(v, np.ndarray) else v, {"a": 1},
                     # SQLite's JSON column has NUMERIC affinity: a top-level 1.0 reads back as 1
                     equal=lambda read, want, b: bool(read == want))
# JSON apart from the scalar families, so that a JSON-only problem shows as such.
FAMILIES = pytest.mark.parametrize("spec", [COLUMNS, {"js": JSON_COLUMN}], ids=["scalars", "json"])
KEYFIELDS = {"n_row": "BIGINT", **{name: c.sql_type for name, c in COLUMNS.items()}}


def _back(value: Any) -> Any:
    """A DataFrame cell as a plain Python value."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _draw(columns: dict[str, Column]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(sorted(columns)).flatmap(lambda name: st.tuples(st.just(name), columns[name].values))


def _check_read(column: Column, read: Any, value: Any, backend: str) -> None:
    want = column.expected(value, backend)
    assert column.equal(_back(read), want, backend), (value, read, want)


def _snapshot(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(repr(_back(v)) for v in row) for row in frame.itertuples(index=False)]


def test_fill_values_round_trip_or_are_refused(make_experimenter, backend):
    exp = make_experimenter({name: {"type": t} for name, t in KEYFIELDS.items()})
    exp.create_table()
    counter = itertools.count()

    @SETTINGS
    @given(st.lists(_draw(COLUMNS), min_size=1, max_size=3))
    def check(drawn: list[tuple[str, Any]]) -> None:
        before = exp.get_table()
        rows, valid = [], True
        for name, value in drawn:
            rows.append({**{n: c.base for n, c in COLUMNS.items()}, name: value, "n_row": next(counter)})
            valid = valid and COLUMNS[name].valid(value, backend.provider)
        try:
            added = exp.fill_table_with_rows(rows)
        except InvalidValueError:
            assert not valid, drawn
            assert _snapshot(exp.get_table()) == _snapshot(before)  # a refused fill writes nothing
            return
        assert valid, drawn
        assert added == len(rows)
        table = exp.get_table().set_index("n_row")
        for row, (name, value) in zip(rows, drawn, strict=True):
            _check_read(COLUMNS[name], table.loc[row["n_row"], name], value, backend.provider)

    check()


def _running(exp: Any, **keys: Any) -> tuple[ExperimentQueue, ResultProcessor]:
    exp.fill_table_with_rows([keys])
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="values"))
    experiment = queue.claim()
    assert experiment is not None
    return queue, ResultProcessor(queue, experiment)


@FAMILIES
def test_results_round_trip_or_are_refused(make_experimenter, backend, spec):
    exp = make_experimenter({"k": {"type": "INT"}}, {name: c.sql_type for name, c in spec.items()})
    queue, processor = _running(exp, k=1)

    @SETTINGS
    @given(st.dictionaries(st.sampled_from(sorted(spec)), st.none(), min_size=1, max_size=3)
           .flatmap(lambda keys: st.tuples(*(spec[k].values.map(lambda v, k=k: (k, v)) for k in keys))))
    def check(drawn: tuple[tuple[str, Any], ...]) -> None:
        before = _snapshot(exp.get_table())
        valid = all(spec[name].valid(value, backend.provider) for name, value in drawn)
        try:
            processor.process_results(dict(drawn))
        except InvalidValueError:
            assert not valid, drawn
            assert _snapshot(exp.get_table()) == before
            return
        assert valid, drawn
        row = exp.get_table().iloc[0]
        for name, value in drawn:
            _check_read(spec[name], row[name], value, backend.provider)

    try:
        check()
    finally:
        queue.close()


@FAMILIES
def test_logs_round_trip_or_are_refused(make_experimenter, backend, spec):
    exp = make_experimenter({"k": {"type": "INT"}}, logtables={"lg": {n: c.sql_type for n, c in spec.items()}})
    queue, processor = _running(exp, k=1)
    base = {n: c.base for n, c in spec.items()}

    @SETTINGS
    @given(st.lists(_draw(spec), min_size=1, max_size=3))
    def check(drawn: list[tuple[str, Any]]) -> None:
        before = len(exp.get_logtable("lg"))
        valid = all(spec[name].valid(value, backend.provider) for name, value in drawn)
        try:
            processor.process_logs({"lg": [{**base, name: value} for name, value in drawn]})
        except InvalidValueError:
            assert not valid, drawn
            assert len(exp.get_logtable("lg")) == before  # no row of a refused call is written
            return
        assert valid, drawn
        table = exp.get_logtable("lg")
        assert len(table) == before + len(drawn)
        for (_, row), (name, value) in zip(table.iloc[before:].iterrows(), drawn, strict=True):
            _check_read(spec[name], row[name], value, backend.provider)

    try:
        check()
    finally:
        queue.close()
