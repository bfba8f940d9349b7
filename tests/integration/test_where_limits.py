"""``where`` conditions that parse but that no driver can bind, on every backend: one WhereError,
never a raw OverflowError / DataError / RecursionError, and nothing reset or cancelled."""

from __future__ import annotations

import pytest

from py_experimenter.exceptions import WhereError


@pytest.mark.parametrize(("where", "message"), [
    ("seed = 99999999999999999999999999999", "an integer beyond 64 bits"),
    ("seed > -9223372036854775809", "an integer beyond 64 bits"),
    ("seed < 1e999", "a number beyond double precision"),
    ("NOT " * 3000 + "seed = 1", "nested too deeply"),
    ("(" * 3000 + "seed = 1" + ")" * 3000, "nested too deeply"),
])
def test_unbindable_or_too_deep_conditions_are_where_errors(make_experimenter, where, message):
    exp = make_experimenter({"seed": {"type": "INT", "values": [1, 2]}}, {"score": "DOUBLE"})
    exp.fill_table_from_config()
    assert exp.cancel_experiments(where="seed = 2")["cancelled"] == 1
    before = exp.get_table().sort_values("ID")[["ID", "status", "error"]].to_dict("records")
    with pytest.raises(WhereError, match=message):
        exp.reset_experiments("all", where=where)
    with pytest.raises(WhereError, match=message):
        exp.cancel_experiments(where=where)
    assert exp.get_table().sort_values("ID")[["ID", "status", "error"]].to_dict("records") == before
    assert exp.reset_experiments("error", where="seed = 9223372036854775807") == 0  # the edge still binds
