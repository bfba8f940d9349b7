"""Grid expansion, row validation and the canonical keyhash (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from py_experimenter.config import KeyfieldSpec
from py_experimenter.exceptions import FillError, InvalidValueError
from py_experimenter.grid import RowCanonicalizer, combine, grid_rows, keyhash

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
    ([("dataset", "a")], r"row is a list .* not a dict"),
    (None, r"row is a NoneType .* not a dict"),
])
def test_bad_rows_are_clear_errors(row, message):
    with pytest.raises(FillError, match=message):
        RowCanonicalizer(KEYFIELDS).normalize(row)


@pytest.mark.parametrize(("row", "message"), [
    ({"dataset": "a", "seed": 1.5, "rate": 1}, r"row 4 .*keyfield 'seed' \(INT\): value 1.5 refused: not a whole"),
    ({"dataset": "a", "seed": "one", "rate": 1}, r"keyfield 'seed' \(INT\): value 'one' refused: text that"),
    ({"dataset": "a" * 300, "seed": 1, "rate": 1}, r"'dataset' \(VARCHAR\(255\)\): value 'aaa.*….*longer than 255"),
    ({"dataset": "a", "seed": 1, "rate": object()}, r"'rate' \(DOUBLE\): value <object .* is not a number"),
])
def test_bad_values_name_row_field_type_and_rule(row, message):
    with pytest.raises(InvalidValueError, match=message):
        RowCanonicalizer(KEYFIELDS).normalize(row, 4)


def test_keyhash_ignores_keyfield_and_key_order():
    reordered = (KEYFIELDS[2], KEYFIELDS[0], KEYFIELDS[1])
    row = {"seed": 2, "rate": 0.5, "dataset": "iris"}
    assert keyhash(KEYFIELDS, row) == keyhash(reordered, row) == keyhash(reordered, dict(reversed(row.items())))


def test_keyhash_is_documented_formula():
    import hashlib
    expected = hashlib.sha256(b'[["dataset","iris"],["rate",0.5],["seed",2]]').hexdigest()[:32]
    assert keyhash(KEYFIELDS, {"seed": 2.0, "rate": "0.5", "dataset": "iris"}) == expected


def test_keyhash_depends_on_the_column_type():
    as_int = (KeyfieldSpec("seed", "INT"),)
    as_text = (KeyfieldSpec("seed", "VARCHAR(10)"),)
    assert keyhash(as_int, {"seed": 5}) == keyhash(as_int, {"seed": np.int64(5)}) == keyhash(as_int, {"seed": 5.0})
    assert keyhash(as_text, {"seed": "5"}) == keyhash(as_text, {"seed": 5})
    assert keyhash(as_int, {"seed": 5}) != keyhash(as_text, {"seed": "5"})


def test_combine_refuses_wrong_shapes():
    with pytest.raises(FillError, match=r"parameters\['seed'\] must be a list of values, got a int \(5\)"):
        combine(["seed"], {"seed": 5})
    with pytest.raises(FillError, match=r"parameters\['seed'\] must be a list"):
        combine(["seed"], {"seed": "abc"})
    with pytest.raises(FillError, match="parameters must be a dict"):
        combine(["seed"], [1, 2])  # type: ignore[arg-type]
    with pytest.raises(FillError, match=r"fixed_parameter_combinations\[1\] must be a dict"):
        combine(["seed"], None, [{"seed": 1}, 2])  # type: ignore[list-item]


def test_combine_like_1_4_2():
    rows = combine(["a", "a2", "b", "c"], {"b": [1, 2], "c": ["cat", "dog"]},
                   [{"a": 1, "a2": 2}, {"a": 2, "a2": 4}])
    assert len(rows) == 8
    assert {"a": 1, "a2": 2, "b": 1, "c": "cat"} in rows
    with pytest.raises(FillError, match="both in parameters and in fixed"):
        combine(["a", "b"], {"a": [1]}, [{"a": 2, "b": 1}])
    with pytest.raises(FillError, match="no parameter combination"):
        combine(["a"], None, None)
