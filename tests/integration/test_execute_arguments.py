"""``execute()`` / ``reset_experiments()`` / ``cancel_experiments()`` check their arguments
before any row is claimed or changed; errors name the parameter and the rule."""

from __future__ import annotations

from typing import Any

import pytest

from py_experimenter.exceptions import ArgumentError, ConfigError, WhereError
from py_experimenter.experimenter import PyExperimenter

# The checks do not depend on the backend: SQLite is enough (the claim paths are tested elsewhere).
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _ok(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
    result_processor.process_results({"score": 1.0})


@pytest.fixture
def exp(make_experimenter) -> PyExperimenter:
    experimenter = make_experimenter({"seed": {"type": "INT", "values": [1, 2, 3]}}, {"score": "DOUBLE"})
    experimenter.fill_table_from_config()
    return experimenter


def _untouched(experimenter: PyExperimenter) -> None:
    assert set(experimenter.get_table()["status"]) == {"created"}
    assert experimenter.get_attempts_table().empty


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"experiment_function": "name"}, "experiment_function='name': expected a function"),
    ({"experiment_function": 42}, "experiment_function=42: expected a function"),
    ({"n_jobs": "2"}, "n_jobs='2': expected a positive integer such as 4, got str"),
    ({"n_jobs": 0}, "n_jobs=0: must be a positive integer"),
    ({"n_jobs": -1}, "n_jobs=-1: must be a positive integer"),
    ({"n_jobs": True}, "n_jobs=True: expected a positive integer such as 4, got bool"),
    ({"n_jobs": 2.0}, "n_jobs=2.0: expected a positive integer"),
    ({"max_experiments": "5"}, "max_experiments='5': expected a positive integer"),
    ({"max_experiments": 0}, "max_experiments=0: must be a positive integer"),
    ({"max_experiments": -2}, "max_experiments=-2: must be a positive integer"),
    ({"max_experiments": False}, "max_experiments=False: expected a positive integer"),
    ({"random_order": "yes"}, "random_order='yes': expected True or False"),
    ({"random_order": 1}, "random_order=1: expected True or False"),
])
def test_execute_refuses_bad_arguments_before_claiming(exp, kwargs, message):
    arguments = {"experiment_function": _ok, **kwargs}
    with pytest.raises(ArgumentError) as caught:
        exp.execute(**arguments)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError)
    _untouched(exp)


def test_execute_accepts_the_documented_values(exp):
    assert exp.execute(_ok, n_jobs=1, max_experiments=1, random_order=True) == 1
    assert exp.execute(_ok, n_jobs=None, max_experiments=-1) == 2
    assert set(exp.get_table()["status"]) == {"done"}


def test_execute_fn_minus_one_runs_everything_as_in_1_4_2(exp):
    # ``execute(fn, -1)``: an older PyExperimenter's call (second argument max_experiments), found in
    # 1.4.2 users' scripts and in 1.4.2's own tests; 1.4.2 took -1 as random_order=True and ran all.
    with pytest.warns(FutureWarning, match=r"execute\(experiment_function, max_experiments=-1\)"):
        assert exp.execute(_ok, -1) == 3
    assert set(exp.get_table()["status"]) == {"done"}


def test_reset_and_cancel_check_their_arguments(exp):
    with pytest.raises(ArgumentError, match="where=3: expected a string"):
        exp.reset_experiments("created", where=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown status 'finished'; valid statuses are"):
        exp.reset_experiments("finished")
    with pytest.raises(WhereError, match="'sed' is not a column"):
        exp.reset_experiments("created", where="sed = 1")
    with pytest.raises(ConfigError, match="experiment ID '2': expected an integer"):
        exp.cancel_experiments(["2"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="experiment IDs '12'"):
        exp.cancel_experiments("12")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="experiment ID True"):
        exp.cancel_experiments([True])
    with pytest.raises(ArgumentError, match="where=b'x'"):
        exp.cancel_experiments(where=b"x")  # type: ignore[arg-type]
    _untouched(exp)
    assert exp.cancel_experiments(2) == {"requested": 0, "cancelled": 1}
