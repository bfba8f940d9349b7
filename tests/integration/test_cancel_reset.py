"""Selective reset (``where``) and cancellation, on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from py_experimenter.exceptions import ConfigError
from py_experimenter.experimenter import ExperimentStatus, PyExperimenter
from py_experimenter.queue import ExperimentQueue, WorkerIdentity

KEYFIELDS = {
    "dataset": {"type": "VARCHAR(20)", "values": ["iris", "wine"]},
    "seed": {"type": "INT", "values": [1, 2, 3]},
}
CANCELLED_BEFORE_START = "cancelled before it started (cancel requested)"


@pytest.fixture
def exp(make_experimenter) -> PyExperimenter:
    experimenter = make_experimenter(KEYFIELDS, {"score": "DOUBLE"}, {"train": {"loss": "DOUBLE"}})
    experimenter.fill_table_from_config()
    return experimenter


def _queue(experimenter: PyExperimenter) -> ExperimentQueue:
    return ExperimentQueue(experimenter.db, WorkerIdentity(name="test"))


def _wine_fails(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
    result_processor.process_logs({"train": {"loss": 0.5}})
    result_processor.process_results({"score": float(keyfields["seed"])})
    if keyfields["dataset"] == "wine":
        raise RuntimeError("wine always fails")


def _ids(table: pd.DataFrame, status: str) -> list[int]:
    return sorted(int(i) for i in table.loc[table["status"] == status, "ID"])


def _plain(row: pd.Series) -> dict[str, Any]:
    return {key: None if pd.isna(value) else value for key, value in row.items()}


def test_reset_where_touches_only_matching_rows_and_keeps_history(exp):
    exp.execute(_wine_fails)
    before = exp.get_table()
    assert _ids(before, "done") == [1, 2, 3] and _ids(before, "error") == [4, 5, 6]

    # The OR stays inside the condition: done rows with seed 1 or 2 are not reset.
    assert exp.reset_experiments("error", where="seed = 1 OR seed = 2") == 2
    after = exp.get_table()
    assert list(after["ID"]) == list(before["ID"])
    assert _ids(after, "created") == [4, 5] and _ids(after, "error") == [6] and _ids(after, "done") == [1, 2, 3]
    assert after.set_index("ID").loc[4, ["error", "score"]].isna().all()
    assert len(exp.get_attempts_table()) == 6 and len(exp.get_logtable("train")) == 6

    # Colons and percent signs in the condition are SQL text, not bind parameters.
    assert exp.reset_experiments("error", "done", where="dataset LIKE 'ir%' AND name <> 'a:b'") == 3
    assert _ids(exp.get_table(), "created") == [1, 2, 3, 4, 5]

    exp.execute(lambda keyfields, rp, custom: rp.process_results({"score": 1.0}))
    table = exp.get_table().set_index("ID")
    assert (table.loc[[1, 2, 3, 4, 5], "attempt"] == 2).all() and table.loc[6, "status"] == "error"
    attempts = exp.get_attempts_table()
    assert len(attempts) == 11
    assert sorted(attempts.loc[attempts["experiment_id"] == 4, "attempt"]) == [1, 2]


def test_reset_running_with_where_closes_only_matching_attempts(exp):
    queue = _queue(exp)
    first, second = queue.claim(), queue.claim()
    assert first is not None and second is not None and first.keyfields == {"dataset": "iris", "seed": 1}
    assert exp.reset_experiments("running", where="dataset = 'iris' AND seed = 1") == 1
    table = exp.get_table().set_index("ID")
    assert table.loc[first.id, "status"] == "created" and table.loc[second.id, "status"] == "running"
    attempts = exp.get_attempts_table().set_index("experiment_id")
    assert attempts.loc[first.id, "outcome"] == "cancelled"
    assert pd.isna(attempts.loc[second.id, "ended_at"]) and pd.isna(attempts.loc[second.id, "outcome"])
    queue.close()


@pytest.mark.parametrize("where", ["no_such_column = 1", "seed = = 1", "outcome IS NULL"])
def test_reset_with_a_bad_where_changes_nothing(exp, where):
    queue = _queue(exp)
    running = queue.claim()
    assert running is not None
    before, attempts_before = exp.get_table(), exp.get_attempts_table()
    # "outcome" is a column of the attempts table only: the statement closing attempts may
    # accept it, the one resetting rows does not, and the whole reset is rolled back.
    with pytest.raises(ConfigError, match="invalid where condition") as caught:
        exp.reset_experiments("running", "created", where=where)
    assert "\n" not in str(caught.value)
    pd.testing.assert_frame_equal(exp.get_table(), before)
    pd.testing.assert_frame_equal(exp.get_attempts_table(), attempts_before)
    queue.close()


def test_cancel_created_running_done_and_paused(exp):
    queue = _queue(exp)
    done = queue.claim()
    running = queue.claim()
    assert done is not None and running is not None
    queue.finish(done, ExperimentStatus.DONE)
    main = exp.db.schema.main
    with exp.db.begin() as conn:
        conn.execute(sa.update(main).where(main.c.ID == 6).values(status="paused"))
    before = exp.get_table().set_index("ID")

    counts = exp.cancel_experiments([done.id, running.id, 3, 6])
    assert counts == {"requested": 1, "cancelled": 2}

    table = exp.get_table().set_index("ID")
    assert table.loc[running.id, "status"] == "running" and bool(table.loc[running.id, "cancel_requested"])
    for experiment_id in (3, 6):
        row = table.loc[experiment_id]
        assert row["status"] == "error" and row["error"] == CANCELLED_BEFORE_START
        assert not pd.isna(row["end_date"]) and not bool(row["cancel_requested"])
    assert _plain(table.loc[done.id]) == _plain(before.loc[done.id])
    assert list(table.loc[[4, 5], "status"]) == ["created", "created"]  # not selected
    attempts = exp.get_attempts_table()
    assert sorted(attempts["experiment_id"]) == sorted([done.id, running.id])  # none for 3 and 6

    # The running one is fenced as before; a reset clears the request.
    assert exp.reset_experiments("running") == 1
    assert not exp.get_table().set_index("ID").loc[running.id, "cancel_requested"]
    queue.close()


def test_cancel_by_where_and_by_single_id(exp):
    assert exp.cancel_experiments(where="dataset = 'wine' AND seed > 1") == {"requested": 0, "cancelled": 2}
    assert exp.cancel_experiments(1) == {"requested": 0, "cancelled": 1}
    assert exp.cancel_experiments(1) == {"requested": 0, "cancelled": 0}  # already error: left alone
    assert exp.cancel_experiments([2, 3, 4], where="seed = 2") == {"requested": 0, "cancelled": 1}
    table = exp.get_table().set_index("ID")
    assert _ids(table.reset_index(), "error") == [1, 2, 5, 6]
    assert exp.get_attempts_table().empty


def test_cancel_needs_a_selection_and_a_valid_where(exp):
    with pytest.raises(ConfigError, match="name the experiments to cancel"):
        exp.cancel_experiments()
    before = exp.get_table()
    with pytest.raises(ConfigError, match="invalid where condition"):
        exp.cancel_experiments([1, 2], where="nope(")
    pd.testing.assert_frame_equal(exp.get_table(), before)
