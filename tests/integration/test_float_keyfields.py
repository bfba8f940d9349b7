"""Float keyfields identify an experiment by its value to 15 (FLOAT: 7) significant digits.

PyExperimenter 1.4.2 built ranges with ``np.arange`` (0.30000000000000004), ours are exact
decimals (0.3): after migrating a 1.4.2 table, a fill must not add the done experiment again.
A FLOAT's single-precision read-back, filled again, is the same experiment too.
"""

from __future__ import annotations

import numpy as np

from py_experimenter.grid import keyhash
from tests.conftest import MakeExperimenter


def test_arange_and_exact_range_values_are_one_experiment(make_experimenter: MakeExperimenter) -> None:
    exp = make_experimenter({"lr": {"type": "DOUBLE", "values": {"start": 0.1, "stop": 0.5, "step": 0.1}},
                             "seed": {"type": "INT", "values": [1]}})
    old_style = [{"lr": float(v), "seed": 1} for v in np.arange(0.1, 0.5, 0.1)]
    assert 0.30000000000000004 in [r["lr"] for r in old_style]
    assert exp.fill_table_with_rows(old_style) == 4
    assert exp.fill_table_from_config() == 0
    assert len(exp.get_table()) == 4


def test_a_float_columns_read_back_is_the_same_experiment(make_experimenter: MakeExperimenter) -> None:
    exp = make_experimenter({"alpha": {"type": "FLOAT", "values": [0.1, 0.123456789, 3.3]}})
    assert exp.fill_table_from_config() == 3
    stored = [{"alpha": float(v)} for v in exp.get_table()["alpha"]]
    assert exp.fill_table_with_rows(stored) == 0
    as_single = [{"alpha": float(np.float32(v))} for v in (0.1, 0.123456789, 3.3)]
    assert exp.fill_table_with_rows(as_single) == 0


def test_distinct_values_stay_distinct() -> None:
    from py_experimenter.config import KeyfieldSpec

    double = (KeyfieldSpec("x", "DOUBLE"),)
    assert keyhash(double, {"x": 0.3}) == keyhash(double, {"x": 0.30000000000000004})
    assert keyhash(double, {"x": 0.3}) != keyhash(double, {"x": 0.3000000001})
    assert keyhash(double, {"x": 1e-300}) != keyhash(double, {"x": 2e-300})
