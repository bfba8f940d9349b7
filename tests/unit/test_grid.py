"""Grid expansion, row validation and the canonical keyhash (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from py_experimenter.config import KeyfieldSpec
from py_experimenter.exceptions import FillError
from py_experimenter.grid import RowCanonicalizer, combine, grid_rows
from py_experimenter.result_processor import storable

KEYFIELDS = (
    KeyfieldSpec("dataset", "VARCHAR(255)", ("iris", "wine")),
    KeyfieldSpec("seed", "INT", (1, 2, 3)),
    KeyfieldSpec("rate", "DOUBLE", (0.1,)),
)


def test_grid_is_the_product_in_keyfield_order():
    rows = list(grid_rows(KEYFIELDS))
    assert len(rows) == 6
    assert rows[0] == {"dataset": "iris", "seed": 1, "rate": 0.1}
    assert rows[-1] == {"dataset": "wine", "seed": 3, "rate": 0.1}


def test_grid_without_values_names_the_keyfields():
    with pytest.raises(FillError, match=r"\['seed'\] have no values"):
        list(grid_rows((KeyfieldSpec("seed", "INT"),)))


@pytest.mark.parametrize("same", [
    {"dataset": "iris", "seed": np.int64(1), "rate": np.float32(0.5)},
    {"dataset": "iris", "seed": 1.0, "rate": 0.5},
    {"dataset": "iris", "seed": "1", "rate": "0.5"},
])
def test_keyhash_is_canonical_across_python_and_numpy_types(same):
    canon = RowCanonicalizer(KEYFIELDS)
    reference = canon.keyhash(canon.normalize({"dataset": "iris", "seed": 1, "rate": 0.5}))
    assert canon.keyhash(canon.normalize(same)) == reference


def test_keyhash_distinguishes_values_and_is_fixed_length():
    canon = RowCanonicalizer(KEYFIELDS)
    hashes = {canon.keyhash(canon.normalize(row)) for row in grid_rows(KEYFIELDS)}
    assert len(hashes) == 6 and {len(h) for h in hashes} == {32}


def test_prepare_drops_duplicates_within_one_fill():
    canon = RowCanonicalizer(KEYFIELDS)
    rows = list(canon.prepare([{"dataset": "a", "seed": 1, "rate": 1}, {"dataset": "a", "seed": 1.0, "rate": 1.0}]))
    assert len(rows) == 1 and rows[0]["seed"] == 1 and isinstance(rows[0]["rate"], float)


@pytest.mark.parametrize(("row", "message"), [
    ({"dataset": "a", "seed": 1}, r"missing \['rate'\]"),
    ({"dataset": "a", "seed": 1, "rate": 1, "extra": 2}, r"unknown \['extra'\]"),
    ({"dataset": "a", "seed": 1.5, "rate": 1}, "'seed': value 1.5 does not fit"),
    ({"dataset": "a", "seed": "one", "rate": 1}, "'seed': value 'one' does not fit"),
])
def test_bad_rows_are_clear_errors(row, message):
    with pytest.raises(FillError, match=message):
        RowCanonicalizer(KEYFIELDS).normalize(row)


def test_combine_like_1_4_2():
    rows = combine(["a", "a2", "b", "c"], {"b": [1, 2], "c": ["cat", "dog"]},
                   [{"a": 1, "a2": 2}, {"a": 2, "a2": 4}])
    assert len(rows) == 8
    assert {"a": 1, "a2": 2, "b": 1, "c": "cat"} in rows
    with pytest.raises(FillError, match="both in parameters and in fixed"):
        combine(["a", "b"], {"a": [1]}, [{"a": 2, "b": 1}])
    with pytest.raises(FillError, match="no parameter combination"):
        combine(["a"], None, None)


def test_storable_values():
    assert storable(np.float64(0.25)) == 0.25 and type(storable(np.float64(0.25))) is float
    assert type(storable(np.int32(3))) is int
    assert storable(np.array([1, 2])) == "[1, 2]"
    assert storable({"k": np.int64(1)}) == '{"k": 1}'
    assert storable("text") == "text"
