"""The longest names each backend allows really work end to end; one character more is refused
at config time, before anything reaches the server."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.config import load_experiment_config
from py_experimenter.exceptions import InvalidIdentifierError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.identifiers import (
    foreign_key_name,
    identifier_limit,
    max_table_name_length,
)
from py_experimenter.result_processor import ResultProcessor
from tests.conftest import experiment_yaml


def _name(prefix: str, length: int) -> str:
    """A unique name of exactly ``length`` characters."""
    base = f"{prefix}{uuid.uuid4().hex[:10]}"
    return (base + "x" * length)[:length]


def _longest(provider: str) -> dict[str, str]:
    limit = identifier_limit(provider)
    table = _name("t", max_table_name_length(provider))
    return {
        "table": table,
        "logtable": _name("l", limit - len(table) - 2),  # <table>__<logtable> exactly at the limit
        "keyfield": _name("k", limit),
        "resultfield": _name("r", limit - len("_timestamp")),  # <field>_timestamp exactly at the limit
        "logcolumn": _name("c", limit),
    }


def test_longest_allowed_names_create_fill_execute_and_read_back(backend, make_experimenter) -> None:
    names = _longest(backend.provider)
    keyfield, resultfield, logtable, logcolumn = (
        names["keyfield"], names["resultfield"], names["logtable"], names["logcolumn"]
    )
    exp = make_experimenter(
        {keyfield: {"type": "INT", "values": [1, 2, 3]}},
        {resultfield: "INT"},
        {logtable: {logcolumn: "INT"}},
        table=names["table"],
        result_timestamps=True,
    )
    exp.create_table()
    assert exp.fill_table_from_config() == 3

    def run(keyfields: dict, result_processor: ResultProcessor, custom: dict) -> None:
        value = keyfields[keyfield]
        result_processor.process_results({resultfield: value * 10})
        result_processor.process_logs({logtable: {logcolumn: value + 100}})

    assert exp.execute(run) == 3
    table = exp.get_table()
    assert list(table["status"]) == ["done"] * 3
    assert sorted(table[resultfield]) == [10, 20, 30]
    assert table[f"{resultfield}_timestamp"].notna().all()
    logs = exp.get_logtable(logtable)
    assert sorted(logs[logcolumn]) == [101, 102, 103]

    # What the server really stored is what the schema names: no name was cut or replaced.
    inspector = sa.inspect(exp.db.engine)
    schema = exp.db.schema
    for table_ in schema.all_tables:
        assert inspector.has_table(table_.name), table_.name
        assert {c["name"] for c in inspector.get_columns(table_.name)} == {c.name for c in table_.columns}
        stored = {i["name"] for i in inspector.get_indexes(table_.name)}
        stored |= {u["name"] for u in inspector.get_unique_constraints(table_.name)}
        expected = {i.name for i in table_.indexes}
        expected |= {c.name for c in table_.constraints if isinstance(c, sa.UniqueConstraint)}
        assert expected <= stored, (table_.name, expected - stored)
        if backend.provider != "sqlite":
            fks = [fk["name"] for fk in inspector.get_foreign_keys(table_.name)]
            ours = [fk.constraint.name for fk in table_.foreign_keys]
            assert len(fks) == len(ours) == (0 if table_ is schema.main else 1)
            if backend.provider == "mysql":
                assert fks == ours
            for name in fks:
                assert len(name.encode()) <= identifier_limit(backend.provider)


@pytest.mark.parametrize("what", ["table", "logtable", "keyfield", "resultfield", "logcolumn"])
def test_one_character_more_is_refused_at_config_time(backend, what: str) -> None:
    names = _longest(backend.provider)
    names[what] += "z"
    data = experiment_yaml(
        backend.provider,
        names["table"],
        {names["keyfield"]: {"type": "INT", "values": [1]}},
        {names["resultfield"]: "INT"},
        {names["logtable"]: {names["logcolumn"]: "INT"}},
        result_timestamps=True,
    )
    path = backend.workdir / "long.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(InvalidIdentifierError) as info:
        PyExperimenter(str(path), str(backend.credentials_file()), use_codecarbon=False)
    message = str(info.value)
    limit = identifier_limit(backend.provider)
    assert str(limit) in message and backend.provider in message, message
    assert names[what] in message, message
    # nothing reached the server
    engine = sa.create_engine(backend.url)
    try:
        assert not sa.inspect(engine).has_table(names["table"])
        assert not sa.inspect(engine).has_table(names["table"][:limit])
    finally:
        engine.dispose()


def test_server_chosen_foreign_key_names_match_ours(backend) -> None:
    """Tables created before the names were explicit got MariaDB's own foreign key names
    (``<child>_ibfk_1``): ours are the same where that name fits, so such tables match."""
    if backend.provider != "mysql":
        assert foreign_key_name("anything__attempts", backend.provider) is None  # the server picks
        return
    engine = sa.create_engine(backend.url)
    parent = _name("p", 20)
    # MariaDB 10.11 generates <child>_ibfk_1 only up to 63 characters (a 57-character child is
    # refused: "Identifier name ... is too long"), although it accepts 64 given explicitly.
    children = [_name("c", identifier_limit("mysql") - len("_ibfk_1") - 1), _name("d", 30)]
    metadata = sa.MetaData()
    sa.Table(parent, metadata, sa.Column("ID", sa.Integer, primary_key=True))
    for child in children:
        sa.Table(child, metadata, sa.Column("ID", sa.Integer, primary_key=True),
                 sa.Column("experiment_id", sa.Integer, sa.ForeignKey(f"{parent}.ID")))
    try:
        metadata.create_all(engine)
        inspector = sa.inspect(engine)
        for child in children:
            assert [fk["name"] for fk in inspector.get_foreign_keys(child)] == [foreign_key_name(child, "mysql")]
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def test_table_name_argument_is_checked_against_the_provider(backend) -> None:
    data = experiment_yaml(backend.provider, "short", {"seed": {"type": "INT", "values": [1]}})
    path = backend.workdir / "exp.yml"
    path.write_text(yaml.safe_dump(data))
    longest = max_table_name_length(backend.provider)
    assert load_experiment_config(path, table_name="t" * longest).table.name == "t" * longest
    with pytest.raises(InvalidIdentifierError, match=r"table_name argument.*_codecarbon") as info:
        load_experiment_config(path, table_name="t" * (longest + 1))
    assert f"at most {longest}" in str(info.value)
