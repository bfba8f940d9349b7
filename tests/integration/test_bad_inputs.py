"""Bad values and bad shapes, on SQLite, MariaDB and PostgreSQL: one clear PyExperimenterError,
never a raw TypeError / DataError / driver error, and nothing of the refused call written."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from py_experimenter.exceptions import (
    FillError,
    InvalidLogFieldError,
    InvalidResultFieldError,
    InvalidValueError,
    PyExperimenterError,
)
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor

KEYFIELDS = {"dataset": {"type": "VARCHAR(8)"}, "seed": {"type": "INT"}}
RESULTS = {"score": "DOUBLE", "big": "BIGINT", "label": "VARCHAR(5)", "notes": "LONGTEXT", "flag": "BOOL",
           "when": "DATETIME", "price": "DECIMAL(6,2)"}
LOGS = {"train": {"epoch": "INT", "loss": "DOUBLE", "phase": "VARCHAR(5)"}}


@pytest.fixture
def exp(make_experimenter):
    experimenter = make_experimenter(KEYFIELDS, RESULTS, LOGS)
    experimenter.create_table()
    return experimenter


@pytest.fixture
def running(exp):
    exp.fill_table_with_rows([{"dataset": "a", "seed": 1}])
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="bad-inputs"))
    experiment = queue.claim()
    assert experiment is not None
    yield ResultProcessor(queue, experiment)
    queue.close()


# -- fills: shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "message"), [
    ([["a", 1]], r"row 0 is a list \(\['a', 1\]\), not a dict"),
    ([{"dataset": "a", "seed": 1}, None], r"row 1 is a NoneType \(None\), not a dict"),
    ([("dataset", "seed")], r"row 0 is a tuple"),
    (None, r"rows must be a list .* got a NoneType"),
    ({"dataset": "a", "seed": 1}, r"got a dict .* wrap a single row in a list"),
    ("dataset", r"rows must be a list .* got a str"),
    (5, r"got a int \(5\)"),
])
def test_fill_with_rows_of_the_wrong_shape(exp, rows, message):
    with pytest.raises(FillError, match=message):
        exp.fill_table_with_rows(rows)
    assert len(exp.get_table()) == 0


def test_fill_from_combination_with_a_scalar_instead_of_a_list(exp):
    with pytest.raises(FillError, match=r"parameters\['seed'\] must be a list of values, got a int \(5\); write \[5\]"):
        exp.fill_table_from_combination(fixed_parameter_combinations=[{"dataset": "a"}], parameters={"seed": 5})
    with pytest.raises(FillError, match=r"fixed_parameter_combinations\[0\] must be a dict"):
        exp.fill_table_from_combination(fixed_parameter_combinations=["a"], parameters={"seed": [5]})
    assert len(exp.get_table()) == 0


# -- fills: values the column cannot hold ---------------------------------------------


@pytest.mark.parametrize(("row", "message"), [
    ({"dataset": "a", "seed": 2**31}, r"'seed' \(INT\): value 2147483648 refused: out of the column's range"),
    ({"dataset": "a", "seed": -2**31 - 1}, r"'seed' \(INT\): .*range -2147483648..2147483647"),
    ({"dataset": "a", "seed": 10**30}, r"'seed' \(INT\): .*out of the column's range"),
    ({"dataset": "abcdefghi", "seed": 1},
     r"'dataset' \(VARCHAR\(8\)\): value 'abcdefghi' refused: longer than 8 characters \(9\)"),
    ({"dataset": "a\x00b", "seed": 1}, r"'dataset' .* NUL character"),
    ({"dataset": "\udc80", "seed": 1}, r"'dataset' .* lone surrogate"),
    ({"dataset": "a", "seed": math.nan}, r"'seed' \(INT\): value nan refused: not a whole number"),
    ({"dataset": "a", "seed": object()}, r"'seed' \(INT\): value <object object at .*> refused"),
    ({"dataset": object(), "seed": 1},
     r"'dataset' \(VARCHAR\(8\)\): value <object object .* refused: a object is not text.*never stored as str\(obj\)"),
    ({"dataset": ["a"], "seed": 1}, r"'dataset' .* a list is not text"),
    ({"dataset": "a", "seed": np.array([1, 2])}, r"'seed' .* a ndarray is not a whole number"),
])
def test_fill_values_the_column_cannot_hold(exp, row, message):
    with pytest.raises(InvalidValueError, match=r"row 1 \{.*\}: keyfield " + message):
        exp.fill_table_with_rows([{"dataset": "ok", "seed": 0}, row])
    assert len(exp.get_table()) == 0  # the good row before it was not written either


def test_fill_bigint_and_float_limits(make_experimenter):
    exp = make_experimenter({"big": {"type": "BIGINT"}, "x": {"type": "DOUBLE"}, "f": {"type": "FLOAT"}})
    assert exp.fill_table_with_rows([{"big": 2**63 - 1, "x": 1e308, "f": 3.4e38},
                                     {"big": -2**63, "x": -5e-324, "f": 0.5}]) == 2
    for row, message in [({"big": 2**63, "x": 1.0, "f": 0.5}, r"'big' \(BIGINT\).*range"),
                         ({"big": 1, "x": math.inf, "f": 0.5}, r"'x' \(DOUBLE\): value inf refused: NaN and ±inf"),
                         ({"big": 1, "x": math.nan, "f": 0.5}, r"'x' .* NaN and ±inf .* store None"),
                         ({"big": 1, "x": 1.0, "f": 1e39}, r"'f' \(FLOAT\).*single precision")]:
        with pytest.raises(InvalidValueError, match=message):
            exp.fill_table_with_rows([row])
    table = exp.get_table().sort_values("ID")
    assert list(table["big"]) == [2**63 - 1, -2**63]
    assert list(table["x"]) == [1e308, -5e-324]


def test_a_refused_batch_writes_nothing(exp):
    rows = [{"dataset": "n", "seed": i} for i in range(5000)] + [{"dataset": "n", "seed": 2**40}]
    with pytest.raises(InvalidValueError, match=r"row 5000 .*'seed' \(INT\): value 1099511627776"):
        exp.fill_table_with_rows(rows)
    assert len(exp.get_table()) == 0
    rows[-1]["seed"] = 5000
    assert exp.fill_table_with_rows(rows) == 5001
    assert len(exp.get_table()) == 5001


def test_a_refused_generator_fill_writes_nothing(exp):
    def rows():
        yield from ({"dataset": "g", "seed": i} for i in range(3))
        yield {"dataset": "g", "seed": "three"}

    with pytest.raises(InvalidValueError, match=r"row 3 .*text that is not a whole number"):
        exp.fill_table_with_rows(rows())
    assert len(exp.get_table()) == 0


# -- the keyhash: the same experiment is one row ------------------------------------------


def test_equal_values_of_other_types_are_one_experiment(exp):
    assert exp.fill_table_with_rows([{"dataset": "a", "seed": 5}]) == 1
    assert exp.fill_table_with_rows([{"seed": 5.0, "dataset": "a"}, {"dataset": np.str_("a"), "seed": np.int64(5)},
                                     {"dataset": "a", "seed": "5"}]) == 0
    assert exp.fill_table_with_rows([{"dataset": 5, "seed": 5}, {"dataset": "5", "seed": 5}]) == 1  # text "5", once
    table = exp.get_table()
    assert sorted(table["dataset"]) == ["5", "a"] and list(table["seed"]) == [5, 5]


def test_reordered_keyfields_in_the_config_do_not_duplicate(make_experimenter):
    first = make_experimenter({"dataset": {"type": "VARCHAR(8)", "values": ["a", "b"]},
                               "seed": {"type": "INT", "values": [1, 2]}})
    assert first.fill_table_from_config() == 4
    second = make_experimenter({"seed": {"type": "INT", "values": [1, 2, 3]},
                                "dataset": {"type": "VARCHAR(8)", "values": ["a", "b"]}},
                               table=first.config.table.name)
    assert second.fill_table_from_config() == 2  # only seed 3 is new
    assert len(first.get_table()) == 6
    assert first.get_table()["keyhash"].is_unique


# -- values that are stored read back equal --------------------------------------------


def test_edge_values_read_back_equal(make_experimenter, backend):
    exp = make_experimenter({"i": {"type": "INT"}, "s": {"type": "VARCHAR(4)"}, "d": {"type": "DECIMAL(6,2)"},
                             "t": {"type": "DATETIME"}, "b": {"type": "BOOL"}, "c": {"type": "CHAR(3)"}})
    moment = dt.datetime(2024, 2, 29, 23, 59, 58, 654321)
    exp.fill_table_with_rows([
        {"i": -2**31, "s": "𝄞é中a", "d": 9999.994, "t": moment, "b": np.bool_(True), "c": "ab"},
        {"i": 2**31 - 1, "s": "", "d": 2.675, "t": "1000-01-01 00:00:00", "b": "false", "c": "x"},
    ])
    table = exp.get_table().sort_values("ID")
    assert list(table["i"]) == [-2**31, 2**31 - 1]
    assert list(table["s"]) == ["𝄞é中a", ""]
    assert list(table["d"]) == [9999.99, 2.68]
    stored = moment.replace(microsecond=0) if backend.provider == "mysql" else moment
    assert [t.to_pydatetime() if hasattr(t, "to_pydatetime") else t for t in table["t"]] == [
        stored, dt.datetime(1000, 1, 1)]
    assert [bool(b) for b in table["b"]] == [True, False]
    assert [c.rstrip(" ") for c in table["c"]] == ["ab", "x"]


# -- results ---------------------------------------------------------------------------


def _results(exp):
    return exp.get_table().iloc[0][list(RESULTS)].to_dict()


@pytest.mark.parametrize(("results", "message"), [
    ({"score": "high"}, r"'score' \(DOUBLE\): value 'high' refused: text that is not a number"),
    ({"score": np.array([0.1, 0.2])},
     r"'score' \(DOUBLE\): value array\(\[0.1, 0.2\]\) refused: a ndarray is not a number"),
    ({"score": math.nan}, r"'score' \(DOUBLE\): value nan refused: NaN and ±inf"),
    ({"score": 0.5, "big": 2**64}, r"'big' \(BIGINT\): .*range"),
    ({"label": "toolong"}, r"'label' \(VARCHAR\(5\)\): value 'toolong' refused: longer than 5"),
    ({"notes": "a\x00"}, r"'notes' \(LONGTEXT\).*NUL"),
    ({"notes": object()}, r"'notes' \(LONGTEXT\): value <object object.*is not text"),
    ({"flag": 2}, r"'flag' \(BOOL\): value 2 refused: not a boolean"),
    ({"when": "soon"}, r"'when' \(DATETIME\): value 'soon' refused: text that is not an ISO date-time"),
    ({"price": 12345.0}, r"'price' \(DECIMAL\(6,2\)\): .*more than 4 digits"),
])
def test_results_the_column_cannot_hold(exp, running, results, message):
    running.process_results({"score": 0.25, "label": "first"})
    before = _results(exp)
    with pytest.raises(InvalidValueError, match=r"process_results \(experiment \d+\): resultfield " + message):
        running.process_results({"label": "new", **results})
    assert _results(exp) == before  # nothing of the call written, not even the good values


@pytest.mark.parametrize("results", [None, [("score", 1.0)], "score=1", 0.5])
def test_results_that_are_not_a_dict(exp, running, results):
    with pytest.raises(InvalidValueError, match=r"process_results expects a dict \{resultfield: value\}, got a"):
        running.process_results(results)


def test_unknown_resultfield(running):
    with pytest.raises(InvalidResultFieldError, match=r"\['nope'\] are not resultfields"):
        running.process_results({"score": 1.0, "nope": 1})


def test_results_accept_numpy_scalars_and_json_encode_lists_into_text(exp, running):
    running.process_results({"score": np.float32(0.5), "big": np.int64(2**40), "flag": np.bool_(True),
                             "notes": [1, np.int64(2)], "price": np.float64(3.14159),
                             "when": dt.date(2024, 1, 2), "label": None})
    row = exp.get_table().iloc[0]
    assert row["score"] == 0.5 and row["big"] == 2**40 and bool(row["flag"]) is True
    assert row["notes"] == "[1, 2]" and row["price"] == 3.14
    assert row["when"] == dt.datetime(2024, 1, 2) and row["label"] is None


# -- logs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("logs", "error", "message"), [
    (None, InvalidValueError, r"process_logs expects a dict"),
    ({"train": [[1, 0.5]]}, InvalidValueError, r"logtable 'train' row 0 is a list \(\[1, 0.5\]\), not a dict"),
    ({"train": [{"epoch": 1}, None]}, InvalidValueError, r"logtable 'train' row 1 is a NoneType"),
    ({"train": 5}, InvalidValueError, r"logtable 'train' takes a dict .* got a int"),
    ({"train": [{"epoch": 1}, {"loss": "low"}]}, InvalidValueError,
     r"logtable 'train' row 1: column 'loss' \(DOUBLE\): value 'low' refused: text that is not a number"),
    ({"train": {"epoch": 2**31}}, InvalidValueError, r"column 'epoch' \(INT\).*range"),
    ({"train": {"phase": "\ud800"}}, InvalidValueError, r"column 'phase' .*lone surrogate"),
    ({"train": {"loss": np.ones(3)}}, InvalidValueError, r"column 'loss' \(DOUBLE\).*ndarray is not a number"),
    ({"nope": {"epoch": 1}}, InvalidLogFieldError, r"'nope' is not a logtable"),
    ({"train": {"epoch": 1, "acc": 1}}, InvalidLogFieldError, r"\['acc'\] are not columns of logtable 'train'"),
])
def test_bad_logs(exp, running, logs, error, message):
    running.process_logs({"train": {"epoch": 0, "loss": 1.0, "phase": "a"}})
    with pytest.raises(error, match=message):
        running.process_logs(logs)
    assert issubclass(error, PyExperimenterError)
    assert len(exp.get_logtable("train")) == 1  # the earlier call only


def test_logs_round_trip(exp, running):
    running.process_logs({"train": [{"epoch": np.int64(1), "loss": np.float64(0.125), "phase": "fit"},
                                    {"epoch": 2, "loss": None, "phase": "évalu"}]})
    table = exp.get_logtable("train")
    assert list(table["epoch"]) == [1, 2] and table["loss"].iloc[0] == 0.125 and math.isnan(table["loss"].iloc[1])
    assert list(table["phase"]) == ["fit", "évalu"]


def test_time_blob_and_text_families_read_back_equal(make_experimenter, backend):
    results = {"tm": "TIME", "ts": "TIMESTAMP", "da": "DATE", "bl": "BLOB", "mt": "MEDIUMTEXT",
               "tx": "TEXT", "tiny": "TINYINT", "sm": "SMALLINT", "real": "REAL", "num": "NUMERIC(4,1)"}
    exp = make_experimenter({"k": {"type": "INT"}}, results)
    exp.fill_table_with_rows([{"k": 1}])
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="families"))
    experiment = queue.claim()
    assert experiment is not None
    values = {"tm": dt.time(23, 59, 58, 250000), "ts": "2024-05-01T10:00:00", "da": dt.date(1000, 1, 1),
              "bl": b"\x00\x01\xff", "mt": "é" * 40000,
              "tx": ("a", 1), "tiny": -32768, "sm": 32767, "real": 0.1, "num": -999.94}
    try:
        ResultProcessor(queue, experiment).process_results(values)
        with pytest.raises(InvalidValueError, match=r"'tx' \(TEXT\): value 'é{20,}.*65536 bytes of UTF-8"):
            ResultProcessor(queue, experiment).process_results({"tx": "é" * 32768, "sm": 1})
    finally:
        queue.close()
    row = exp.get_table().iloc[0]
    whole = backend.provider == "mysql"
    assert row["tm"] == dt.time(23, 59, 58, 0 if whole else 250000)
    assert row["ts"] == dt.datetime(2024, 5, 1, 10) and row["da"] == dt.date(1000, 1, 1)
    assert bytes(row["bl"]) == b"\x00\x01\xff" and row["mt"] == "é" * 40000
    assert row["tx"] == '["a", 1]' and row["tiny"] == -32768 and row["sm"] == 32767
    assert row["real"] == pytest.approx(0.1, rel=1e-6) and row["num"] == -999.9


def test_json_results_read_back_or_are_refused(make_experimenter, backend):
    exp = make_experimenter({"k": {"type": "INT"}}, {"js": "JSON", "n": "INT"})
    exp.fill_table_with_rows([{"k": 1}])
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="json"))
    experiment = queue.claim()
    assert experiment is not None
    processor = ResultProcessor(queue, experiment)
    value = {"nested": [1, 2.5, None, True, "é", (3, 4)], "n": 2**53, "arr": np.arange(2), "f": np.float32(0.5)}
    try:
        processor.process_results({"js": value, "n": 1})
        for bad, rule in [({"x": math.inf}, "NaN and ±inf are not valid JSON"), ({1: "a"}, "keys must be text"),
                          ({"s": {1, 2}}, "a set is not JSON"), ({"t": "a\x00"}, "NUL")]:
            with pytest.raises(InvalidValueError, match=r"resultfield 'js' \(JSON\): .*" + rule):
                processor.process_results({"js": bad, "n": 2})
    finally:
        queue.close()
    row = exp.get_table().iloc[0]
    assert row["js"] == {"nested": [1, 2.5, None, True, "é", [3, 4]], "n": 2**53, "arr": [0, 1], "f": 0.5}
    assert row["n"] == 1
