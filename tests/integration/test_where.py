"""``where`` on SQLite, MariaDB and PostgreSQL: the documented forms select the right rows, and
attempts to escape the condition change nothing (done rows keep their results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from py_experimenter.exceptions import DatabaseError, WhereError
from py_experimenter.experimenter import PyExperimenter

KEYFIELDS = {
    "dataset": {"type": "VARCHAR(20)", "values": ["iris", "wine"]},
    "seed": {"type": "INT", "values": [1, 2, 3, 4]},
    "kernel": {"type": "VARCHAR(20)", "values": ["rbf", "linear", "poly"]},
}
# 24 rows, IDs in grid order: dataset-major, then seed, then kernel.


def _half_fail(keyfields: dict[str, Any], result_processor: Any, custom: Any) -> None:
    result_processor.process_results({"score": float(keyfields["seed"])})
    if keyfields["kernel"] == "poly":
        raise MemoryError("poly kernels run out of Memory")


@pytest.fixture
def exp(make_experimenter) -> PyExperimenter:
    experimenter = make_experimenter(KEYFIELDS, {"score": "DOUBLE"})
    experimenter.fill_table_from_config()
    experimenter.execute(_half_fail)
    table = experimenter.get_table()
    assert (table["status"] == "done").sum() == 16 and (table["status"] == "error").sum() == 8
    return experimenter


def _rows(experimenter: PyExperimenter) -> pd.DataFrame:
    return experimenter.get_table().set_index("ID")


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal frames, whatever pandas made of the missing values (None / NaN, object / str)."""
    def plain(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(plain(left), plain(right))


def _expected(table: pd.DataFrame, mask: pd.Series, status: str = "error") -> list[int]:
    return sorted(int(i) for i in table.index[mask & (table["status"] == status)])


@pytest.mark.parametrize(("where", "select"), [
    ("dataset='iris'", lambda t: t["dataset"] == "iris"),
    ("seed >= 3 AND kernel IN ('rbf','poly')", lambda t: (t["seed"] >= 3) & t["kernel"].isin(["rbf", "poly"])),
    ("ID = 6", lambda t: t.index == 6),
    ('"ID" = 9', lambda t: t.index == 9),
    ("id = 12", lambda t: t.index == 12),
    ("error LIKE '%Memory%' AND seed < 3", lambda t: t["error"].fillna("").str.contains("Memory") & (t["seed"] < 3)),
    ("NOT (seed BETWEEN 2 AND 3) AND dataset <> 'iris'", lambda t: ~t["seed"].between(2, 3) & (t["dataset"] != "iris")),
])
def test_documented_conditions_reset_exactly_their_rows(exp, where, select):
    before = _rows(exp)
    chosen = _expected(before, select(before))
    assert chosen, "each case selects at least one error row"
    assert exp.reset_experiments("error", where=where) == len(chosen)
    after = _rows(exp)
    assert sorted(int(i) for i in after.index[after["status"] == "created"]) == chosen
    done = before["status"] == "done"
    _same(after[done], before[done])


ESCAPES = [
    "1=0) OR (1=1",
    "seed = 1) OR (status = 'done'",
    "seed = 1 OR 1 = 1) OR (1 = 1",
    "seed = 99; UPDATE {table} SET status = 'created'",
    "seed = 99 -- ) OR (1 = 1",
    "seed = 99 /* ) OR (1 = 1 */",
    "seed IN (SELECT ID FROM {table})",
    "status = 'done') OR ('a' = 'a",
    "sleep(0) = 0 OR 1 = 1",
    "{table}.status = 'done'",
]


@pytest.mark.parametrize("where", ESCAPES)
def test_escape_attempts_change_nothing(exp, where):
    before = _rows(exp)
    text = where.format(table=exp.config.table.name)
    with pytest.raises(WhereError):
        exp.reset_experiments("error", where=text)
    with pytest.raises(WhereError):
        exp.cancel_experiments(where=text)
    after = _rows(exp)
    _same(after, before)
    assert after.loc[after["status"] == "done", "score"].notna().all()


def test_an_or_inside_the_condition_never_reaches_done_rows(exp):
    # Valid SQL that selects every row: the status filter still applies.
    before = _rows(exp)
    assert exp.reset_experiments("error", where="seed = 1 OR 1 = 1") == 8
    after = _rows(exp)
    done = before["status"] == "done"
    _same(after[done], before[done])
    assert (after.loc[~done, "status"] == "created").all()


def test_a_value_the_database_rejects_is_a_where_error(exp, backend):
    before = _rows(exp)
    if backend.provider == "postgresql":  # PostgreSQL refuses text for an integer column
        with pytest.raises(WhereError, match="the database rejected a value"):
            exp.reset_experiments("error", where="seed = 'three'")
    else:  # SQLite and MariaDB compare and match nothing
        assert exp.reset_experiments("error", where="seed = 'three'") == 0
    _same(_rows(exp), before)


def test_cli_escape_attempt_is_one_line_and_changes_nothing(exp, backend, tmp_path: Path):
    before = _rows(exp)
    entry = Path(sys.executable).with_name("py-experimenter")
    config = backend.workdir / f"{exp.config.table.name}.yml"
    result = subprocess.run(
        [str(entry), "reset", str(config), "--credentials", str(backend.credentials_file()),
         "--status", "error", "--where", "1=0) OR (1=1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("py-experimenter: error: invalid --where condition")
    _same(_rows(exp), before)


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)  # row locks: servers only
def test_a_lock_timeout_is_retried_and_never_called_an_invalid_where(exp, backend):
    setting = "SET innodb_lock_wait_timeout = 1" if backend.provider == "mysql" else "SET lock_timeout = '1s'"
    sa.event.listen(exp.db.engine, "connect", lambda dbapi, _record: dbapi.cursor().execute(setting))
    exp.db.engine.dispose()  # new connections get the short lock timeout
    main = exp.db.schema.main
    holder = sa.create_engine(backend.url)
    try:
        with holder.connect() as conn, conn.begin():  # another session holds an error row's lock
            conn.execute(sa.select(main.c.ID).where(main.c.ID == 3).with_for_update())
            with pytest.raises(DatabaseError) as caught:
                exp.reset_experiments("error", where="seed >= 1")
        message = str(caught.value)
        assert not isinstance(caught.value, WhereError) and "invalid where" not in message
        assert "lock" in message.lower() and "\n" not in message
        assert exp.reset_experiments("error", where="seed >= 1") == 8  # the lock is gone: it works
    finally:
        holder.dispose()
