"""The backend contract: the same behaviour on SQLite, MariaDB and PostgreSQL (real servers)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from py_experimenter.exceptions import (
    ExperimentNotRunnableError,
    FillError,
    InvalidLogFieldError,
    InvalidResultFieldError,
    LeaseLostError,
    TableError,
)
from py_experimenter.experimenter import ExperimentStatus, PyExperimenter
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor

KEYFIELDS = {
    "dataset": {"type": "VARCHAR(255)", "values": ["iris", "wine"]},
    "seed": {"type": "INT", "values": {"start": 0, "stop": 3}},
    "rate": {"type": "DOUBLE", "values": [0.1]},
}
RESULTS = {"accuracy": "DECIMAL", "pipeline": "LONGTEXT", "n_iter": "INT"}
LOGS = {"train": {"epoch": "INT", "loss": "DOUBLE"}}


@pytest.fixture
def exp(make_experimenter) -> PyExperimenter:
    return make_experimenter(KEYFIELDS, RESULTS, LOGS)


def _queue(experimenter: PyExperimenter) -> ExperimentQueue:
    return ExperimentQueue(experimenter.db, WorkerIdentity(name="test"))


def test_table_layout_keeps_pyexperimenter_column_order(exp):
    exp.create_table()
    columns = list(exp.get_table().columns)
    assert columns[:13] == [
        "ID", "dataset", "seed", "rate", "creation_date", "status", "start_date", "name", "machine",
        "accuracy", "pipeline", "n_iter", "end_date",
    ]
    assert columns[13] == "error"
    assert {"attempt", "worker", "lease_until", "heartbeat_at", "priority", "keyhash"} <= set(columns)
    assert list(exp.get_logtable("train").columns) == ["ID", "experiment_id", "timestamp", "epoch", "loss", "attempt"]


def test_fill_is_idempotent_and_ordered(exp):
    assert exp.fill_table_from_config() == 6
    assert exp.fill_table_from_config() == 0
    exp.fill_table_with_rows([{"dataset": "iris", "seed": np.int64(0), "rate": np.float64(0.1)}])
    table = exp.get_table()
    assert len(table) == 6
    assert list(table["ID"]) == [1, 2, 3, 4, 5, 6]
    assert list(zip(table["dataset"], table["seed"], strict=True)) == [
        ("iris", 0), ("iris", 1), ("iris", 2), ("wine", 0), ("wine", 1), ("wine", 2)
    ]
    assert set(table["status"]) == {"created"}


def test_fill_from_combination_and_bad_rows(exp):
    added = exp.fill_table_from_combination(
        fixed_parameter_combinations=[{"dataset": "a", "rate": 1.0}, {"dataset": "b", "rate": 2.0}],
        parameters={"seed": [1, 2]},
    )
    assert added == 4
    with pytest.raises(FillError, match="keyfields"):
        exp.fill_table_with_rows([{"dataset": "x", "seed": 1}])
    with pytest.raises(FillError, match="not keyfields"):
        exp.fill_table_from_combination(parameters={"colour": ["red"]})
    assert len(exp.get_table()) == 4


def test_claims_follow_id_order_and_end_with_none(exp):
    exp.fill_table_from_config()
    queue = _queue(exp)
    claimed = [queue.claim() for _ in range(6)]
    assert [c.id for c in claimed] == [1, 2, 3, 4, 5, 6]
    assert all(c.attempt == 1 for c in claimed)
    assert claimed[0].keyfields == {"dataset": "iris", "seed": 0, "rate": 0.1}
    assert queue.claim() is None
    table = exp.get_table()
    assert set(table["status"]) == {"running"}
    assert table["lease_until"].notna().all()
    queue.close()


def test_results_logs_and_status_are_written(exp):
    exp.fill_table_from_config()

    def run(keyfields, rp: ResultProcessor, custom):
        rp.process_results({"accuracy": np.float32(0.75), "n_iter": np.int64(7)})
        logs = {"train": {"epoch": 1, "loss": 0.5}}
        rp.process_logs(logs)
        rp.process_logs({"train": [{"epoch": 2, "loss": 0.25}, {"epoch": 3}]})
        assert logs == {"train": {"epoch": 1, "loss": 0.5}}  # input not mutated
        rp.process_results({"pipeline": f"svm-{keyfields['seed']}"})

    assert exp.execute(run, max_experiments=2) == 2
    table = exp.get_table()
    done = table[table["status"] == "done"]
    assert list(done["ID"]) == [1, 2]
    assert list(done["accuracy"]) == [0.75, 0.75]
    assert list(done["n_iter"]) == [7, 7]
    assert list(done["pipeline"]) == ["svm-0", "svm-1"]
    assert done["end_date"].notna().all() and done["start_date"].notna().all()
    logs = exp.get_logtable("train")
    assert len(logs) == 6
    assert list(logs[logs["experiment_id"] == 1]["epoch"]) == [1, 2, 3]
    assert set(logs["attempt"]) == {1}


def test_invalid_result_and_log_fields_are_clear_errors(exp):
    exp.fill_table_from_config()
    seen: list[str] = []

    def run(keyfields, rp, custom):
        with pytest.raises(InvalidResultFieldError) as result_error:
            rp.process_results({"acuracy": 1})
        seen.append(str(result_error.value))
        with pytest.raises(InvalidLogFieldError) as log_error:
            rp.process_logs({"train": {"epoc": 1}})
        seen.append(str(log_error.value))
        with pytest.raises(InvalidLogFieldError):
            rp.process_logs({"nope": {"epoch": 1}})

    exp.execute(run, max_experiments=1)
    assert "accuracy" in seen[0] and "pipeline" in seen[0]
    assert "'epoch'" in seen[1] and "'loss'" in seen[1]
    assert exp.get_table()["status"][0] == "done"


def test_return_values_map_to_status_like_1_4_2(exp):
    exp.fill_table_from_config()
    outcomes = iter([None, ExperimentStatus.DONE, ExperimentStatus.ERROR, ExperimentStatus.PAUSED, "bogus"])

    def run(keyfields, rp, custom):
        value = next(outcomes)
        return value

    exp.execute(run, max_experiments=5)

    def explode(keyfields, rp, custom):
        raise RuntimeError("kaboom")

    exp.execute(explode)
    table = exp.get_table().set_index("ID")
    assert list(table["status"]) == ["done", "done", "error", "paused", "error", "error"]
    assert "returned 'bogus'" in table.loc[5, "error"]
    assert "Traceback" in table.loc[6, "error"] and "RuntimeError: kaboom" in table.loc[6, "error"]
    attempts = exp.get_attempts_table()
    assert list(attempts["outcome"]) == ["done", "done", "error", "paused", "error", "error"]


def test_fencing_rejects_a_stale_attempt(exp):
    exp.fill_table_from_config()
    queue = _queue(exp)
    first = queue.claim()
    assert first is not None
    assert exp.reset_experiments("running") == 1
    second = queue.claim()
    assert second is not None and second.id == first.id and second.attempt == first.attempt + 1
    stale = ResultProcessor(queue, first)
    with pytest.raises(LeaseLostError):
        stale.process_results({"accuracy": 0.1})
    with pytest.raises(LeaseLostError):
        stale.process_logs({"train": {"epoch": 99}})
    with pytest.raises(LeaseLostError):
        queue.finish(first, ExperimentStatus.DONE)
    ResultProcessor(queue, second).process_results({"accuracy": 0.9})
    queue.finish(second, ExperimentStatus.DONE)
    row = exp.get_table().set_index("ID").loc[first.id]
    assert row["status"] == "done" and row["accuracy"] == 0.9 and row["attempt"] == 2
    assert exp.get_logtable("train").empty
    attempts = exp.get_attempts_table()
    assert list(attempts["outcome"]) == ["cancelled", "done"]
    queue.close()


def test_reset_in_place_keeps_ids_logs_and_history(exp):
    exp.fill_table_from_config()

    def run(keyfields, rp, custom):
        rp.process_logs({"train": {"epoch": 1, "loss": 1.0}})
        rp.process_results({"accuracy": 0.5})
        if keyfields["seed"] == 1:
            raise ValueError("bad seed")

    exp.execute(run)
    before = exp.get_table()
    assert exp.reset_experiments("error") == 2
    after = exp.get_table()
    assert list(after["ID"]) == list(before["ID"])
    reset_rows = after[after["status"] == "created"]
    assert list(reset_rows["seed"]) == [1, 1]
    assert reset_rows["error"].isna().all() and reset_rows["accuracy"].isna().all()
    assert len(exp.get_logtable("train")) == 6
    exp.execute(lambda k, rp, c: None)
    table = exp.get_table()
    assert set(table["status"]) == {"done"}
    assert list(table[table["seed"] == 1]["attempt"]) == [2, 2]
    assert len(exp.get_attempts_table()) == 8
    assert exp.reset_experiments("all") == 6
    assert set(exp.get_table()["status"]) == {"created"}


def test_add_experiment_and_execute(exp, caplog):
    ran: list[dict] = []
    exp.add_experiment_and_execute({"dataset": "new", "seed": 9, "rate": 0.5},
                                   lambda k, rp, c: ran.append(k))
    assert ran == [{"dataset": "new", "seed": 9, "rate": 0.5}]
    table = exp.get_table()
    assert list(table["status"]) == ["done"]
    # A re-run (a Hydra sweep started again) skips what is done, with a warning, and raises nothing.
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        exp.add_experiment_and_execute({"dataset": "new", "seed": 9, "rate": 0.5}, lambda k, rp, c: ran.append(k))
    assert len(ran) == 1 and "is already 'done': skipped" in caplog.text
    exp.fill_table_with_rows([{"dataset": "queued", "seed": 1, "rate": 0.5}])
    exp.add_experiment_and_execute({"dataset": "queued", "seed": 1, "rate": 0.5},
                                   lambda k, rp, c: ran.append(k))
    assert len(ran) == 2 and len(exp.get_table()) == 2


def test_unpause_and_attach(exp):
    exp.fill_table_from_config()
    exp.execute(lambda k, rp, c: ExperimentStatus.PAUSED, max_experiments=1)
    with pytest.raises(ExperimentNotRunnableError):
        exp.unpause_experiment(2, lambda k, rp, c: None)
    exp.unpause_experiment(1, lambda k, rp, c: rp.process_results({"n_iter": 2}))
    row = exp.get_table().set_index("ID").loc[1]
    assert row["status"] == "done" and row["n_iter"] == 2 and row["attempt"] == 2

    queue = _queue(exp)
    running = queue.claim()
    assert running is not None
    exp.attach(lambda rp: rp.process_results({"pipeline": "attached"}), running.id)
    assert exp.get_table().set_index("ID").loc[running.id, "pipeline"] == "attached"
    with pytest.raises(ExperimentNotRunnableError, match="not running"):
        exp.attach(lambda rp: None, 1)
    queue.close()


def test_result_timestamps_come_from_the_database_clock(make_experimenter):
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, result_timestamps=True)
    exp.fill_table_from_config()
    exp.execute(lambda k, rp, c: rp.process_results({"score": 1.5}), max_experiments=1)
    row = exp.get_table().iloc[0]
    assert row["score"] == 1.5
    assert pd_time(row["score_timestamp"]) >= pd_time(row["start_date"])
    start = pd_time(row["start_date"])
    assert abs((start - dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).total_seconds()) < 120


def pd_time(value) -> dt.datetime:
    import pandas as pd

    return pd.Timestamp(value).to_pydatetime()


def test_existing_table_with_other_columns_is_refused(backend, make_experimenter):
    first = make_experimenter(KEYFIELDS, RESULTS)
    first.create_table()
    second = make_experimenter({"other": {"type": "INT", "values": [1]}}, table=first.config.table.name)
    with pytest.raises(TableError, match="different columns"):
        second.create_table()


def test_delete_table_drops_everything(exp):
    exp.fill_table_from_config()
    exp.delete_table()
    inspector = sa.inspect(exp.db.engine)
    assert not any(name.startswith(exp.config.table.name) for name in inspector.get_table_names())


def test_sql_keywords_and_mixed_case_names_are_quoted(make_experimenter):
    exp = make_experimenter(
        {"order": {"type": "INT", "values": [1, 2]}, "Select": {"type": "VARCHAR(10)", "values": ["x"]}},
        {"group": "INT"}, {"From": {"where": "INT"}}, table=f"Mixed_{uuid.uuid4().hex[:8]}",
    )
    exp.fill_table_from_config()

    def run(keyfields, rp, custom):
        rp.process_results({"group": keyfields["order"] * 10})
        rp.process_logs({"From": {"where": keyfields["order"]}})

    assert exp.execute(run) == 2
    assert list(exp.get_table()["group"]) == [10, 20]
    assert list(exp.get_logtable("From")["where"]) == [1, 2]


def test_max_experiments_counts_across_processes_and_random_order_drains(exp):
    exp.fill_table_from_combination(parameters={"dataset": ["a", "b", "c"], "seed": list(range(4)), "rate": [0.5]})
    assert exp.execute(lambda k, rp, c: None, n_jobs=3, max_experiments=5) == 5
    assert (exp.get_table()["status"] == "done").sum() == 5
    assert exp.execute(lambda k, rp, c: None, random_order=True, max_experiments=100) == 7
    assert set(exp.get_table()["status"]) == {"done"}
