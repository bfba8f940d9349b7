"""Experiment IDs that no row can have (beyond the INT ID column, booleans) are one ConfigError on every
backend, never a raw OverflowError from the driver; numpy IDs from get_table() still work."""

from __future__ import annotations

import pytest

from py_experimenter.exceptions import ConfigError


def test_ids_beyond_64_bits_are_refused_and_numpy_ids_work(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT", "values": [1, 2]}}, {"score": "DOUBLE"})
    exp.fill_table_from_config()
    for bad in (2**31, -2**31 - 1, 2**63, 10**30):
        with pytest.raises(ConfigError, match=f"experiment ID {bad}: beyond the ID column's range"):
            exp.cancel_experiments([1, bad])
        with pytest.raises(ConfigError, match=r"experiment_id=.*expected an experiment ID \(a positive integer\)"):
            exp.unpause_experiment(bad, lambda k, rp, c: None)
    for bad in (True, 0, -1, "1", 1.0):
        with pytest.raises(ConfigError, match="expected an experiment ID"):
            exp.unpause_experiment(bad, lambda k, rp, c: None)
    assert set(exp.get_table()["status"]) == {"created"}  # nothing cancelled by the refused calls
    assert exp.cancel_experiments([2**31 - 1])["cancelled"] == 0  # the edge binds
    first = exp.get_table().sort_values("ID")["ID"].iloc[0]  # a numpy integer
    assert exp.cancel_experiments([first])["cancelled"] == 1
