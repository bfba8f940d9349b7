"""The value checkers, per SQL type family (no database)."""

from __future__ import annotations

import datetime as dt
import decimal
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from py_experimenter.exceptions import PyExperimenterError
from py_experimenter.sqltypes import SUPPORTED_TYPES
from py_experimenter.values import (
    FLOAT32_MAX,
    Refused,
    checker_for,
    invalid_value,
    plain_value,
    refused_by_driver,
    shorten,
)

BACKENDS = ["sqlite", "mysql", "postgresql"]


@pytest.mark.parametrize(("sql_type", "low", "high"), [
    ("INT", -2**31, 2**31 - 1), ("INTEGER", -2**31, 2**31 - 1), ("MEDIUMINT", -2**31, 2**31 - 1),
    ("BIGINT", -2**63, 2**63 - 1), ("SMALLINT", -2**15, 2**15 - 1), ("TINYINT", -2**15, 2**15 - 1),
    ("INT UNSIGNED", -2**31, 2**31 - 1), ("int", -2**31, 2**31 - 1),
])
def test_integer_ranges(sql_type, low, high):
    check = checker_for(sql_type)
    assert check(low) == low and check(high) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(Refused, match=f"range {low}..{high}"):
            check(outside)


def test_integer_conversions():
    check = checker_for("INT")
    for same in (5, 5.0, np.int64(5), np.int8(5), np.float64(5.0), "5", " 5 ", decimal.Decimal("5"), np.array(5)):
        value = check(same)
        assert value == 5 and type(value) is int
    assert check(True) == 1 and type(check(True)) is int
    for bad, rule in [(5.5, "not a whole number"), (math.nan, "not a whole number"), ("five", "text that is not"),
                      ([5], "a list is not"), (np.array([5]), "a ndarray is not"), (object(), "a object is not")]:
        with pytest.raises(Refused, match=rule):
            check(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_are_refused_everywhere(backend):
    for sql_type in ("DOUBLE", "FLOAT", "DECIMAL", "DECIMAL(10,2)", "float"):
        check = checker_for(sql_type, backend)
        for bad in (math.nan, math.inf, -math.inf, np.float32("nan"), "nan", "inf"):
            with pytest.raises(Refused, match="NaN and ±inf"):
                check(bad)


def test_double_and_float():
    double = checker_for("DOUBLE")
    assert double(np.float32(0.5)) == 0.5 and type(double(np.float32(0.5))) is float
    assert double(3) == 3.0 and type(double(3)) is float
    assert double("0.25") == 0.25
    assert math.copysign(1, double(-0.0)) == 1.0
    with pytest.raises(Refused, match="too large"):
        double(10**400)
    with pytest.raises(Refused, match="not a number"):
        double("abc")
    with pytest.raises(Refused, match="a ndarray is not a number"):
        double(np.zeros(3))
    single = checker_for("FLOAT")
    assert single(FLOAT32_MAX) == FLOAT32_MAX
    with pytest.raises(Refused, match="single precision"):
        single(1e39)
    assert double(1e300) == 1e300


def test_decimal_rounds_half_up_and_limits_integer_digits():
    check = checker_for("DECIMAL(5,2)")
    assert check(2.675) == decimal.Decimal("2.68")  # from the shortest form '2.675', not the binary value
    assert check(0.125) == decimal.Decimal("0.13")
    assert check(-0.001) == decimal.Decimal("0.00") and str(check(-0.001)) == "0.00"
    assert check(999.994) == decimal.Decimal("999.99")
    with pytest.raises(Refused, match="3 digits before the decimal point once rounded"):
        check(999.995)
    with pytest.raises(Refused, match="3 digits before"):
        check(1000)
    assert checker_for("DECIMAL(5,2)").canonical(check(1)) == "1.00"


def test_booleans():
    check = checker_for("BOOL")
    for true in (True, np.bool_(True), 1, 1.0, "true", "TRUE", "1"):
        assert check(true) is True
    for false in (False, np.bool_(False), 0, "false", "0"):
        assert check(false) is False
    for bad in (2, "yes", 0.5, [True]):
        with pytest.raises(Refused, match="not a boolean"):
            check(bad)
    assert checker_for("TINYINT(1)").family == "boolean"


def test_strings():
    check = checker_for("VARCHAR(3)")
    assert check("abc") == "abc" and check("äöü") == "äöü" and check("𝄞𝄞𝄞") == "𝄞𝄞𝄞"  # characters, not bytes
    assert check(12) == "12" and check(0.5) == "0.5" and check(np.str_("ab")) == "ab"
    with pytest.raises(Refused, match="longer than 3 characters"):
        check("abcd")
    for bad, rule in [("a\x00", "NUL"), ("\ud800", "lone surrogate"), (True, "bool is not text"),
                      (b"ab", "bytes is not text"), (object(), "object is not text"), (["a"], "list is not text")]:
        with pytest.raises(Refused, match=rule):
            check(bad)
    char = checker_for("CHAR(4)")
    assert char("ab") == "ab"
    with pytest.raises(Refused, match="trailing spaces"):
        char("ab ")
    assert checker_for("CHAR")("a") == "a"
    with pytest.raises(Refused, match="longer than 1"):
        checker_for("CHAR")("ab")


def test_text_sizes_in_utf8_bytes_and_json_text():
    text = checker_for("TEXT")
    assert text("é" * 32767) == "é" * 32767  # 65,534 bytes
    with pytest.raises(Refused, match="65536 bytes of UTF-8, more than the column's 65535"):
        text("é" * 32768)
    assert checker_for("LONGTEXT")("é" * 40000) == "é" * 40000
    assert text([1, 2.5, "x"]) == '[1, 2.5, "x"]'
    assert text({"k": np.int64(1), "a": np.arange(2)}) == '{"k": 1, "a": [0, 1]}'
    with pytest.raises(Refused, match="NaN"):
        text([math.nan])
    with pytest.raises(Refused, match="set is not JSON"):
        text([{1, 2}])
    with pytest.raises(Refused, match="NUL"):
        text("a\x00b")


def test_json():
    check = checker_for("JSON")
    assert check({"a": [1, np.float64(0.5), None, True], "b": (1, 2)}) == {"a": [1, 0.5, None, True], "b": [1, 2]}
    assert check(np.arange(3)) == [0, 1, 2]
    assert check.canonical({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert check([2**63 - 1, -2**63]) == [2**63 - 1, -2**63]
    for bad, rule in [({1: "x"}, "keys must be text"), ([2**63], "beyond 64 bits"),
                      ([math.inf], "NaN"), (object(), "object is not JSON"),
                      ({"a": "\x00"}, "NUL"), ({"\x00": 1}, "NUL"), ({"\udc80": 1}, "lone surrogate")]:
        with pytest.raises(Refused, match=rule):
            check(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dates_and_times(backend):
    whole = backend == "mysql"
    moment = dt.datetime(2024, 5, 1, 12, 30, 15, 123456)
    check = checker_for("DATETIME", backend)
    assert check(moment) == (moment.replace(microsecond=0) if whole else moment)
    assert check("2024-05-01T12:30:15") == dt.datetime(2024, 5, 1, 12, 30, 15)
    assert check(dt.date(2024, 5, 1)) == dt.datetime(2024, 5, 1)
    for bad, rule in [(moment.replace(tzinfo=dt.timezone.utc), "time zone"), ("yesterday", "not an ISO"),
                      (dt.datetime(999, 1, 1), "year before 1000"), (1714566615, "int is not a date-time")]:
        with pytest.raises(Refused, match=rule):
            check(bad)
    date = checker_for("DATE", backend)
    assert date("2024-05-01") == dt.date(2024, 5, 1) == date(dt.datetime(2024, 5, 1))
    with pytest.raises(Refused, match="time of day"):
        date(moment)
    time = checker_for("TIME", backend)
    assert time("12:30:15.5") == dt.time(12, 30, 15, 0 if whole else 500000)
    assert checker_for("TIMESTAMP", backend).canonical(check(moment)).startswith("2024-05-01T12:30:15")


def test_binary():
    check = checker_for("BLOB")
    assert check(b"\x00\xff") == b"\x00\xff" and check(bytearray(b"ab")) == b"ab"
    with pytest.raises(Refused, match="65536 bytes"):
        check(b"x" * 65536)
    with pytest.raises(Refused, match="str is not bytes"):
        check("ab")
    assert check.canonical(b"\x01") == "01"


def test_none_is_null_everywhere_and_numpy_is_plain():
    for sql_type in ("INT", "DOUBLE", "VARCHAR(2)", "TEXT", "JSON", "DATETIME", "BOOL", "DECIMAL(4,1)", "BLOB"):
        assert checker_for(sql_type)(None) is None
    assert type(plain_value(np.float32(1.5))) is float and plain_value([1]) == [1]
    assert type(plain_value(np.array(2.5))) is float


def test_messages():
    assert shorten("x" * 200).endswith("…") and len(shorten("x" * 200)) == 80
    error = invalid_value("row 3 {'seed': 1}", "keyfield", "name", "VARCHAR(2)", "abc", "longer than 2 characters (3)")
    assert str(error) == ("row 3 {'seed': 1}: keyfield 'name' (VARCHAR(2)): value 'abc' refused: "
                          "longer than 2 characters (3); nothing was written")
    assert (error.field, error.column_type, error.value) == ("name", "VARCHAR(2)", "'abc'")


@settings(max_examples=200, deadline=None)
@given(st.integers())
def test_int_checker_property(value):
    try:
        stored = checker_for("INT")(value)
    except Refused:
        assert not -2**31 <= value < 2**31
    else:
        assert stored == value


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_varchar_checker_property(value):
    valid = len(value) <= 10 and "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    try:
        stored = checker_for("VARCHAR(10)")(value)
    except Refused:
        assert not valid
    else:
        assert valid and stored == value


@settings(max_examples=200, deadline=None)
@given(st.floats())
def test_double_checker_property(value):
    try:
        stored = checker_for("DOUBLE")(value)
    except Refused:
        assert not math.isfinite(value)
    else:
        assert stored == value


@pytest.mark.parametrize("sql_type", SUPPORTED_TYPES)
def test_every_supported_type_has_a_checker(sql_type):
    text = {"VARCHAR": "VARCHAR(5)"}.get(sql_type, sql_type)
    check = checker_for(text)
    assert check(None) is None and check.sql_type == text


def test_a_driver_refusal_becomes_invalid_value_error():
    from sqlalchemy import exc

    driver_error = exc.DataError("INSERT ...", {}, ValueError("value too long for type character varying(5)\nDETAIL"))
    error = refused_by_driver("process_results (experiment 3)", driver_error)
    assert str(error) == ("process_results (experiment 3): the database refused it: ValueError: value too long "
                          "for type character varying(5); nothing of this call was written")
    assert isinstance(error, PyExperimenterError)
