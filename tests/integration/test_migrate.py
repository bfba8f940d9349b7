"""``migrate`` on all three backends: tables of PyExperimenter 1.4.2's layout and of older
configurations are brought up to date in place (every row kept), unsafe changes are refused
with every difference listed and nothing changed, and ``--dry-run`` changes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from py_experimenter.cli import main as cli_main
from py_experimenter.exceptions import MigrationError, TableError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.recovery import LeaseRecovery
from py_experimenter.sqltypes import parse_sql_type

KEYFIELDS = {"dataset": {"type": "VARCHAR(255)", "values": ["iris", "wine"]},
             "seed": {"type": "INT", "values": [1, 2, 3]}}
RESULTS = {"accuracy": "DOUBLE", "model": "VARCHAR(255)"}
LOGTABLES = {"scores": {"f1": "DOUBLE", "note": "VARCHAR(255)"}}


def snapshot(exp: PyExperimenter) -> dict[str, Any]:
    """Every table of the experiment's database that belongs to it: columns with types, index
    column lists, and all rows (sorted), read straight from the database."""
    prefix = exp.config.table.name
    result: dict[str, Any] = {}
    with exp.db.connect() as conn:
        inspector = sa.inspect(conn)
        for name in sorted(inspector.get_table_names()):
            if name != prefix and not name.startswith((prefix + "__", prefix + "_codecarbon")):
                continue
            columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(name)]
            indexes = sorted(tuple(i["column_names"]) for i in inspector.get_indexes(name))
            table = sa.table(name, *(sa.column(c) for c, _ in columns))
            rows = sorted(tuple(str(v) for v in row) for row in conn.execute(sa.select(table)))
            result[name] = {"columns": columns, "indexes": indexes, "rows": rows}
    return result


def legacy_table(exp: PyExperimenter, rows: list[dict[str, Any]], logs: list[dict[str, Any]]) -> None:
    """Create the experiment's tables the way PyExperimenter 1.4.2 laid them out (no
    bookkeeping columns, no keyhash, no attempts table, logtables without ``attempt``) and
    insert ``rows`` / ``logs`` (logs go to the first logtable)."""
    spec = exp.config.table
    metadata = sa.MetaData()
    text = sa.Text()
    main = sa.Table(
        spec.name, metadata,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(k.name, parse_sql_type(k.sql_type)) for k in spec.keyfields),
        sa.Column("creation_date", sa.DateTime), sa.Column("status", sa.String(255)),
        sa.Column("start_date", sa.DateTime), sa.Column("name", text), sa.Column("machine", sa.String(255)),
        *(sa.Column(r.name, parse_sql_type(r.sql_type)) for r in spec.resultfields),
        sa.Column("end_date", sa.DateTime), sa.Column("error", text),
    )
    logtables = [
        sa.Table(f"{spec.name}__{log.name}", metadata,
                 sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
                 sa.Column("experiment_id", sa.Integer, sa.ForeignKey(f"{spec.name}.ID", ondelete="CASCADE")),
                 sa.Column("timestamp", sa.DateTime),
                 *(sa.Column(f.name, parse_sql_type(f.sql_type)) for f in log.fields))
        for log in spec.logtables
    ]
    # 1.4.2's codecarbon table, here with only a few of its columns (an older codecarbon layout).
    sa.Table(f"{spec.name}_codecarbon", metadata,
             sa.Column("ID", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("experiment_id", sa.Integer, sa.ForeignKey(f"{spec.name}.ID", ondelete="CASCADE")),
             sa.Column("codecarbon_timestamp", sa.DateTime), sa.Column("project_name", sa.String(255)))
    with exp.db.begin() as conn:
        metadata.create_all(conn)
        conn.execute(sa.insert(main), rows)
        if logs:
            conn.execute(sa.insert(logtables[0]), logs)


T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def legacy_rows() -> list[dict[str, Any]]:
    def row(dataset: str, seed: int, status: str, **values: Any) -> dict[str, Any]:
        started = status != "created"
        base = {"dataset": dataset, "seed": seed, "creation_date": T0, "status": status,
                "start_date": T0 if started else None, "name": "v142" if started else None,
                "machine": "node1" if started else None, "accuracy": None, "model": None,
                "end_date": T0 if status in ("done", "error") else None, "error": None}
        return {**base, **values}

    return [
        row("iris", 1, "done", accuracy=0.93, model="svc"),
        row("iris", 2, "error", error="Traceback: boom"),
        row("iris", 3, "running"),
        row("wine", 1, "created"),
    ]


LEGACY_LOGS = [{"experiment_id": 1, "timestamp": T0, "f1": 0.9, "note": "first"},
               {"experiment_id": 1, "timestamp": T0, "f1": 0.95, "note": "second"},
               {"experiment_id": 3, "timestamp": T0, "f1": 0.5, "note": "before the kill"}]


def test_legacy_table_is_refused_then_migrated_with_every_row_kept(backend, make_experimenter):
    exp = make_experimenter(KEYFIELDS, RESULTS, LOGTABLES)
    legacy_table(exp, legacy_rows(), LEGACY_LOGS)
    before = snapshot(exp)

    with pytest.raises(TableError, match="py-experimenter migrate CONFIG") as refused:
        exp.fill_table_from_config()
    message = str(refused.value)
    assert "migrate_table()" in message and "add bookkeeping column 'keyhash'" in message
    assert f"{exp.config.table.name}__attempts: create the table" in message
    assert snapshot(exp) == before  # refusing created nothing (no attempts table either)

    report = exp.migrate_table()
    assert any("compute the keyhash of 4 rows" in c for c in report.changes)
    assert any("1 running rows have no lease" in c for c in report.changes)

    table = exp.get_table().set_index("ID")
    assert list(table.index) == [1, 2, 3, 4]
    assert list(table["status"]) == ["done", "error", "running", "created"]
    assert list(table["attempt"]) == [1, 1, 1, 0]
    assert table.loc[1, "accuracy"] == 0.93 and table.loc[1, "model"] == "svc"
    assert table.loc[2, "error"] == "Traceback: boom"
    assert table["keyhash"].notna().all() and table["keyhash"].is_unique
    logs = exp.get_logtable("scores").sort_values("ID")
    assert list(logs["f1"]) == [0.9, 0.95, 0.5] and list(logs["attempt"]) == [1, 1, 1]
    attempts = exp.get_attempts_table().set_index("experiment_id")
    assert sorted(attempts.index) == [1, 2, 3]
    assert attempts.loc[1, "outcome"] == "done" and attempts.loc[2, "outcome"] == "error"
    assert attempts.loc[2, "error"] == "Traceback: boom" and pd.isna(attempts.loc[3, "outcome"])

    # The keyhashes are those a fill computes: the grid adds only the two missing rows.
    assert exp.fill_table_from_config() == 2
    # 1.4.2's running row has an expired lease: normal recovery takes it back as lost.
    assert LeaseRecovery(exp.db, max_attempts=3).recover() == 1
    table = exp.get_table().set_index("ID")
    assert table.loc[3, "status"] == "created"
    outcomes = exp.get_attempts_table().set_index(["experiment_id", "attempt"])["outcome"]
    assert outcomes[(3, 1)] == "lost"

    def run(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
        result_processor.process_results({"accuracy": 0.5 + keyfields["seed"] / 10, "model": "new"})
        result_processor.process_logs({"scores": {"f1": 0.1, "note": "ours"}})

    assert exp.execute(run) == 4  # the recovered row, the created one and the two new ones
    table = exp.get_table().set_index("ID")
    assert set(table["status"]) == {"done", "error"}
    assert table.loc[1, "accuracy"] == 0.93 and table.loc[1, "model"] == "svc"  # 1.4.2's result unchanged
    assert table.loc[3, "attempt"] == 2 and table.loc[3, "model"] == "new"
    assert exp.migrate_table().changes == []  # up to date now
    with exp.db.connect() as conn:
        codecarbon = {c["name"] for c in sa.inspect(conn).get_columns(exp.db.schema.codecarbon.name)}
    assert codecarbon == {c.name for c in exp.db.schema.codecarbon.columns}  # missing columns added


def test_duplicate_legacy_rows_are_refused_with_their_ids(backend, make_experimenter):
    exp = make_experimenter(KEYFIELDS, RESULTS, LOGTABLES)
    rows = legacy_rows()
    legacy_table(exp, [*rows, {**rows[0], "status": "created"}, {**rows[1], "status": "created"}], [])
    before = snapshot(exp)
    with pytest.raises(MigrationError) as refused:
        exp.migrate_table()
    message = str(refused.value)
    assert "rows with IDs [1, 5] are the same experiment" in message
    assert "rows with IDs [2, 6] are the same experiment" in message
    assert "nothing was changed" in message and "DELETE FROM" in message
    assert snapshot(exp) == before


def test_resultfield_and_logtable_added_by_migrate_keep_the_data(backend, make_experimenter):
    old = make_experimenter(KEYFIELDS, {"accuracy": "DOUBLE"}, {"scores": {"f1": "DOUBLE"}})
    old.fill_table_from_config()

    def run_old(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
        result_processor.process_results({"accuracy": keyfields["seed"] / 10})
        result_processor.process_logs({"scores": {"f1": 0.7}})

    assert old.execute(run_old, max_experiments=2) == 2
    before = old.get_table()
    name = old.config.table.name
    new = make_experimenter(KEYFIELDS, {"accuracy": "DOUBLE", "runtime": "DOUBLE"},
                            {"scores": {"f1": "DOUBLE"}, "losses": {"loss": "DOUBLE"}},
                            table=name, result_timestamps=True)
    try:
        _add_resultfield_and_logtable(backend, old, new, before)
    finally:
        new.delete_table()  # first: its new logtable refers to the main table


def _add_resultfield_and_logtable(backend: Any, old: PyExperimenter, new: PyExperimenter, before: pd.DataFrame) -> None:
    name = new.config.table.name
    with pytest.raises(TableError, match="py-experimenter migrate") as refused:
        new.create_table()
    for expected in ("add resultfield column 'runtime'", "add resultfield column 'runtime_timestamp'",
                     "add resultfield column 'accuracy_timestamp'", f"{name}__losses: create the table"):
        assert expected in str(refused.value)

    assert cli_main(["migrate", str(backend.workdir / f"{name}.yml"),
                     "--credentials", str(backend.credentials_file())]) == 0
    after = new.get_table()
    kept = [c for c in before.columns]
    assert after[kept].equals(before[kept])
    assert after["runtime"].isna().all()
    assert list(new.get_logtable("scores")["f1"]) == [0.7, 0.7]

    def run_new(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
        result_processor.process_results({"accuracy": 1.0, "runtime": 3.5})
        result_processor.process_logs({"losses": {"loss": 0.25}})

    assert new.execute(run_new) == 4
    table = new.get_table()
    assert set(table["status"]) == {"done"} and (table["runtime"].notna().sum() == 4)
    assert table["runtime_timestamp"].notna().sum() == 4
    assert len(new.get_logtable("losses")) == 4


def test_unsafe_changes_are_refused_with_every_difference_and_nothing_changed(backend, make_experimenter):
    old = make_experimenter({"seed": {"type": "INT", "values": [1, 2]}, "fold": {"type": "INT", "values": [0]}},
                            {"accuracy": "DOUBLE", "model": "VARCHAR(255)"}, {"scores": {"f1": "DOUBLE"}})
    old.fill_table_from_config()
    name = old.config.table.name
    before = snapshot(old)
    # seed INT -> VARCHAR, fold renamed to split, accuracy DOUBLE -> VARCHAR, model dropped.
    new = make_experimenter({"seed": {"type": "VARCHAR(255)", "values": ["1", "2"]},
                             "split": {"type": "INT", "values": [0]}},
                            {"accuracy": "VARCHAR(255)"}, {"scores": {"f1": "DOUBLE"}}, table=name)
    with pytest.raises(TableError) as opened:
        new.fill_table_from_config()
    with pytest.raises(MigrationError) as migrated:
        new.migrate_table()
    for message in (str(opened.value), str(migrated.value)):
        assert "keyfield 'seed': type changed from" in message and "(integer)" in message
        assert "to VARCHAR(255) (string) in the configuration" in message
        assert "keyfield 'split' is in the configuration but not in the table" in message
        assert "column 'fold'" in message and "column 'model'" in message
        assert "resultfield 'accuracy': type changed" in message
        assert "nothing was changed" in message
    assert snapshot(new) == before

    code = cli_main(["migrate", str(backend.workdir / f"{name}.yml"), "--credentials", str(backend.credentials_file())])
    assert code != 0 and snapshot(new) == before


def test_dry_run_changes_nothing(backend, make_experimenter, capsys):
    exp = make_experimenter(KEYFIELDS, RESULTS, LOGTABLES)
    legacy_table(exp, legacy_rows(), LEGACY_LOGS)
    before = snapshot(exp)
    report = exp.migrate_table(dry_run=True)
    assert report.dry_run and any("add bookkeeping column 'attempt'" in c for c in report.changes)
    assert snapshot(exp) == before
    name = exp.config.table.name
    assert cli_main(["migrate", str(backend.workdir / f"{name}.yml"),
                     "--credentials", str(backend.credentials_file()), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing written" in out and "compute the keyhash of 4 rows" in out
    assert snapshot(exp) == before


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_create_tables_reports_the_servers_reason(backend, make_experimenter):
    exp = make_experimenter(KEYFIELDS, RESULTS)
    attempts = exp.db.schema.attempts.name
    # Something else already holds the attempts table's name, so CREATE TABLE fails:
    # an index of that name (SQLite) or a type (PostgreSQL: a table's row type shares it).
    with exp.db.begin() as conn:
        if backend.provider == "sqlite":
            conn.exec_driver_sql("CREATE TABLE blocker (x INTEGER)")
            conn.exec_driver_sql(f'CREATE INDEX "{attempts}" ON blocker (x)')
        else:
            conn.exec_driver_sql(f'CREATE TYPE "{attempts}" AS ENUM (\'a\')')
    try:
        with pytest.raises(TableError) as failed:
            exp.create_table()
        message = str(failed.value)
        assert "could not be created" in message and f"'{attempts}'" in message
        assert ("already an index named" in message) if backend.provider == "sqlite" else ("already exists" in message)
        assert "pyexp-test" not in message  # never the password
    finally:
        with exp.db.begin() as conn:
            if backend.provider == "sqlite":
                conn.exec_driver_sql("DROP TABLE blocker")
            else:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{exp.config.table.name}"')
                conn.exec_driver_sql(f'DROP TYPE "{attempts}"')


def test_a_new_logtable_alone_is_created_when_the_table_is_opened(backend, make_experimenter):
    old = make_experimenter(KEYFIELDS, RESULTS, LOGTABLES)
    assert old.fill_table_from_config() == 6
    new = make_experimenter(KEYFIELDS, RESULTS, {**LOGTABLES, "losses": {"loss": "DOUBLE"}},
                            table=old.config.table.name)
    try:
        assert new.fill_table_from_config() == 0  # opens the table: creates the logtable, adds nothing
        assert new.get_logtable("losses").empty and len(new.get_table()) == 6
    finally:
        new.delete_table()


def _open(paths: tuple[str, str]) -> str | None:
    try:
        experimenter = PyExperimenter(paths[0], paths[1], use_codecarbon=False)
        experimenter.create_table()
        experimenter.db.dispose()
        return None
    except Exception as err:  # reported to the test, which shows it
        return f"{type(err).__name__}: {err}"


def test_concurrent_creation_of_a_new_table_succeeds_everywhere(backend, make_experimenter):
    import multiprocessing

    exp = make_experimenter(KEYFIELDS, RESULTS, LOGTABLES)
    paths = (str(backend.workdir / f"{exp.config.table.name}.yml"), str(backend.credentials_file()))
    with multiprocessing.get_context("fork").Pool(4) as pool:
        outcomes = pool.map(_open, [paths] * 4)
    assert outcomes == [None] * 4
    assert exp.migrate_table().changes == []  # complete: every column and index is there
