"""Experiment-file loading: the 1.4.2 format, our Execution section, and every error message."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from py_experimenter.config import (
    IDENTIFIER_RULE,
    ExecutionSpec,
    FieldSpec,
    KeyfieldSpec,
    LogtableSpec,
    load_experiment_config,
    parse_experiment_config,
)
from py_experimenter.exceptions import ConfigError, InvalidIdentifierError

EXAMPLES = Path(__file__).resolve().parents[2] / "config"

# Modelled on PyExperimenter 1.4.2's documented general-usage example.
EXAMPLE_142 = """
PY_EXPERIMENTER:
  n_jobs: 1

  Database:
    provider: sqlite
    database: py_experimenter
    use_ssh: False
    table:
      name: example_general_usage
      keyfields:
        dataset:
          type: VARCHAR(255)
          values: ['iris']
        cross_validation_splits:
          type: INT
          values: [5]
        seed:
          type: INT
          values:
            start: 2
            stop: 7
            step: 1
        kernel:
          type: VARCHAR(255)
          values: ['linear', 'poly', 'rbf', 'sigmoid']
      result_timestamps: True
      resultfields:
        pipeline: LONGTEXT
        train_f1: DECIMAL
        train_accuracy: DECIMAL
        test_f1: DECIMAL
        test_accuracy: DECIMAL
    logtables:
      train_scores:
        f1: DECIMAL
        accuracy: DECIMAL
        kernel: str
      test_f1:
        test_f1: DECIMAL

  Custom:
    path: sample_data

  CodeCarbon:
    offline_mode: False
    measure_power_secs: 25
    tracking_mode: process
    log_level: error
    save_to_file: True
    output_dir: output/CodeCarbon
"""


def write(tmp_path: Path, text: str, name: str = "experiment.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * spaces) if text else ""


def doc(
    *,
    keyfields: str = "seed: {type: INT, values: [1, 2]}",
    table: str = "",
    database: str = "",
    top: str = "",
    name: str = "exp",
    provider: str = "sqlite",
) -> str:
    """A small valid experiment file with snippets added at the given levels."""
    return (
        "PY_EXPERIMENTER:\n"
        f"{_indent(top, 2)}\n"
        "  Database:\n"
        f"    provider: {provider}\n"
        "    database: db\n"
        f"{_indent(database, 4)}\n"
        "    table:\n"
        f"      name: {name}\n"
        f"{_indent(table, 6)}\n"
        "      keyfields:\n"
        f"{_indent(keyfields, 8)}\n"
    )


RESERVED_LIST = "ID, creation_date, status, start_date, name, machine, end_date, error, attempt"
KF = "PY_EXPERIMENTER.Database.table.keyfields"

# (YAML text, fragments the message must contain, exception class)
MALFORMED = [
    pytest.param(
        doc(table="keyfeilds: {}"),
        ["PY_EXPERIMENTER.Database.table.keyfeilds", "unknown key 'keyfeilds'", "did you mean 'keyfields'",
         "valid keys here: name, keyfields, resultfields, result_timestamps"],
        ConfigError, id="unknown-table-key-suggests-closest",
    ),
    pytest.param(
        doc(database="provder: mysql"),
        ["PY_EXPERIMENTER.Database.provder", "did you mean 'provider'",
         "provider, database, table, logtables, use_ssh"],
        ConfigError, id="unknown-database-key",
    ),
    pytest.param(
        doc(top="Custon: {a: 1}"),
        ["PY_EXPERIMENTER.Custon", "did you mean 'Custom'", "n_jobs, Database, Custom, CUSTOM"],
        ConfigError, id="unknown-section",
    ),
    pytest.param(
        doc(table="logtables: {t: {x: INT}}"),
        ["PY_EXPERIMENTER.Database.table.logtables", "belongs under PY_EXPERIMENTER.Database"],
        ConfigError, id="logtables-in-wrong-place",
    ),
    pytest.param(
        "PY_EXPERIMENTER:\n  n_jobs: 2\n",
        ["PY_EXPERIMENTER.Database", "missing required key 'Database'"],
        ConfigError, id="missing-database",
    ),
    pytest.param(
        "Database: {}\n",
        ["missing the root key PY_EXPERIMENTER", "found: Database"],
        ConfigError, id="missing-root",
    ),
    pytest.param(
        "PY_EXPERIMENTER:\n  Database:\n    provider: sqlite\n    database: db\n"
        "    table:\n      keyfields: {seed: {type: INT}}\n",
        ["PY_EXPERIMENTER.Database.table.name", "missing required key 'name'"],
        ConfigError, id="missing-table-name",
    ),
    pytest.param(
        doc(name="my-table"),
        ["PY_EXPERIMENTER.Database.table.name", "'my-table'", IDENTIFIER_RULE],
        InvalidIdentifierError, id="bad-table-name",
    ),
    pytest.param(
        doc(name="t" * 60),
        ["PY_EXPERIMENTER.Database.table.name", "at most 53", "__attempts"],
        InvalidIdentifierError, id="table-name-too-long-for-companion-tables",
    ),
    pytest.param(
        doc(keyfields="1seed: {type: INT}"),
        [f"{KF}.1seed", IDENTIFIER_RULE],
        InvalidIdentifierError, id="bad-keyfield-name",
    ),
    pytest.param(
        doc(keyfields="yes: {type: INT}"),
        ["True", "YAML read it as a boolean; quote it", IDENTIFIER_RULE],
        InvalidIdentifierError, id="yaml-boolean-keyfield-name",
    ),
    pytest.param(
        doc(keyfields="status: {type: INT}"),
        [f"{KF}.status", "reserved", RESERVED_LIST, "keyhash", "cancel_requested"],
        InvalidIdentifierError, id="reserved-keyfield",
    ),
    pytest.param(
        doc(table="resultfields: {Machine: INT}"),
        ["PY_EXPERIMENTER.Database.table.resultfields.Machine", "reserved", "case-insensitive",
         RESERVED_LIST],
        InvalidIdentifierError, id="reserved-resultfield-case-insensitive",
    ),
    pytest.param(
        doc(table="resultfields: {bad name: INT}"),
        ["resultfields.bad name", IDENTIFIER_RULE],
        InvalidIdentifierError, id="bad-resultfield-name",
    ),
    pytest.param(
        doc(database="logtables: {scores: {timestamp: INT}}"),
        ["PY_EXPERIMENTER.Database.logtables.scores.timestamp", "reserved",
         "ID, experiment_id, timestamp, attempt"],
        InvalidIdentifierError, id="reserved-logtable-column",
    ),
    pytest.param(
        doc(database="logtables: {scores: {f-1: INT}}"),
        ["PY_EXPERIMENTER.Database.logtables.scores.f-1", IDENTIFIER_RULE],
        InvalidIdentifierError, id="bad-logtable-column",
    ),
    pytest.param(
        doc(database="logtables: {attempts: {x: INT}}"),
        ["PY_EXPERIMENTER.Database.logtables.attempts", "reserved", "attempts"],
        InvalidIdentifierError, id="reserved-logtable-name",
    ),
    pytest.param(
        doc(database="logtables: {2scores: {x: INT}}"),
        ["PY_EXPERIMENTER.Database.logtables.2scores", IDENTIFIER_RULE],
        InvalidIdentifierError, id="bad-logtable-name",
    ),
    pytest.param(
        doc(name="t" * 40, database=f"logtables: {{{'l' * 30}: {{x: INT}}}}"),
        [f"{'t' * 40}__{'l' * 30}", "longer than 64"],
        InvalidIdentifierError, id="logtable-full-name-too-long",
    ),
    pytest.param(
        doc(database="logtables: {scores: {}}"),
        ["PY_EXPERIMENTER.Database.logtables.scores", "at least one column"],
        ConfigError, id="logtable-without-columns",
    ),
    pytest.param(
        doc(database="logtables: {scores: {loss: DOUBLE, LOSS: INT}}"),
        ["logtables.scores.loss", "defined twice"],
        ConfigError, id="duplicate-logtable-column",
    ),
    pytest.param(
        doc(table="resultfields: {SEED: INT}"),
        ["PY_EXPERIMENTER.Database.table.resultfields.SEED", "defined twice", f"{KF}.seed",
         "case-insensitively"],
        ConfigError, id="duplicate-column-across-keyfields-and-resultfields",
    ),
    pytest.param(
        doc(table="resultfields: {f1: DOUBLE, f1_timestamp: DATETIME}\nresult_timestamps: true"),
        ["resultfields.f1_timestamp", "collides", "result_timestamps", "'f1'"],
        ConfigError, id="result-timestamp-collision",
    ),
    pytest.param(
        doc(keyfields="{}"),
        [KF, "no keyfields", "at least one"],
        ConfigError, id="no-keyfields",
    ),
    pytest.param(
        doc(keyfields="- seed\n- kernel"),
        [KF, "expected a mapping of keyfield name", "got a list"],
        ConfigError, id="keyfields-as-list",
    ),
    pytest.param(
        doc(keyfields="seed: INT"),
        [f"{KF}.seed", "expected a mapping with 'type'", "got a string"],
        ConfigError, id="keyfield-body-as-string",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 1, stop: 5, step: 0}}"),
        [f"{KF}.seed.values.step", "step must not be 0"],
        ConfigError, id="range-step-zero",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 5, stop: 1}}"),
        [f"{KF}.seed.values", "is empty", "stop is exclusive"],
        ConfigError, id="range-empty",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 1, stop: 1}}"),
        [f"{KF}.seed.values", "is empty"],
        ConfigError, id="range-start-equals-stop",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 1}}"),
        [f"{KF}.seed.values.stop", "missing required key 'stop'"],
        ConfigError, id="range-without-stop",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 1, stop: 5, steps: 2}}"),
        [f"{KF}.seed.values.steps", "did you mean 'step'", "valid keys here: start, stop, step"],
        ConfigError, id="range-unknown-key",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: a, stop: 5}}"),
        [f"{KF}.seed.values.start", "expected a number", "a string"],
        ConfigError, id="range-non-numeric",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: {start: 0, stop: 10000000}}"),
        [f"{KF}.seed.values", "10000000 values", "bigger step"],
        ConfigError, id="range-too-large",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: []}"),
        [f"{KF}.seed.values", "values is empty", "give a list"],
        ConfigError, id="empty-values",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, values: [1, [2, 3]]}"),
        [f"{KF}.seed.values[1]", "string, number, boolean or date", "a list"],
        ConfigError, id="nested-value",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT, valus: [1]}"),
        [f"{KF}.seed.valus", "did you mean 'values'", "valid keys here: type, values"],
        ConfigError, id="unknown-keyfield-key",
    ),
    pytest.param(
        doc(keyfields="dataset: {type: VARCHR(255)}"),
        [f"{KF}.dataset.type", "unknown column type 'VARCHR(255)'", "supported types", "VARCHAR"],
        ConfigError, id="bad-keyfield-type",
    ),
    pytest.param(
        doc(table="resultfields: {acc: PERCENT}"),
        ["PY_EXPERIMENTER.Database.table.resultfields.acc", "unknown column type 'PERCENT'", "DOUBLE"],
        ConfigError, id="bad-resultfield-type",
    ),
    pytest.param(
        doc(table="resultfields: {acc: }"),
        ["resultfields.acc", "expected a column type", "nothing (null)"],
        ConfigError, id="resultfield-without-type",
    ),
    pytest.param(
        doc(database="logtables: {scores: {loss: VARCHAR}}"),
        ["PY_EXPERIMENTER.Database.logtables.scores.loss", "VARCHAR takes exactly 1 argument"],
        ConfigError, id="bad-logtable-type",
    ),
    pytest.param(
        doc(table="resultfields: [acc]"),
        ["PY_EXPERIMENTER.Database.table.resultfields", "expected a mapping of resultfield name", "a list"],
        ConfigError, id="resultfields-as-list",
    ),
    pytest.param(
        doc(table="result_timestamps: maybe"),
        ["PY_EXPERIMENTER.Database.table.result_timestamps", "expected true or false"],
        ConfigError, id="result-timestamps-not-bool",
    ),
    pytest.param(
        doc(database="use_ssh: maybe"),
        ["PY_EXPERIMENTER.Database.use_ssh", "expected true or false", "'maybe'"],
        ConfigError, id="use-ssh-not-bool",
    ),
    pytest.param(
        doc(provider="oracle"),
        ["PY_EXPERIMENTER.Database.provider", "expected one of sqlite, mysql, postgresql", "'oracle'"],
        ConfigError, id="unknown-provider",
    ),
    pytest.param(
        doc(top="n_jobs: 0"),
        ["PY_EXPERIMENTER.n_jobs", "expected an integer >= 1", "got 0"],
        ConfigError, id="n-jobs-zero",
    ),
    pytest.param(
        doc(top="n_jobs: four"),
        ["PY_EXPERIMENTER.n_jobs", "expected an integer >= 1", "a string"],
        ConfigError, id="n-jobs-not-int",
    ),
    pytest.param(
        doc(top="Custom: {a: 1}\nCUSTOM: {b: 2}"),
        ["PY_EXPERIMENTER.CUSTOM", "either Custom or CUSTOM, not both"],
        ConfigError, id="custom-twice",
    ),
    pytest.param(
        doc(top="CodeCarbon: [a, b]"),
        ["PY_EXPERIMENTER.CodeCarbon", "expected a mapping", "a list"],
        ConfigError, id="codecarbon-not-mapping",
    ),
    pytest.param(
        doc(top="Execution: {lease: 60}"),
        ["PY_EXPERIMENTER.Execution.lease", "did you mean 'lease_seconds'", "heartbeat_seconds",
         "results_dir"],
        ConfigError, id="execution-unknown-key",
    ),
    pytest.param(
        doc(top="Execution: {lease_seconds: 20}"),
        ["PY_EXPERIMENTER.Execution.heartbeat_seconds", "must be less than lease_seconds (20)"],
        ConfigError, id="heartbeat-not-below-lease",
    ),
    pytest.param(
        doc(top="Execution: {adapter: kubernetes}"),
        ["PY_EXPERIMENTER.Execution.adapter", "function, docker, command"],
        ConfigError, id="unknown-adapter",
    ),
    pytest.param(
        doc(top="Execution: {isolation: thread}"),
        ["PY_EXPERIMENTER.Execution.isolation", "inline, process"],
        ConfigError, id="unknown-isolation",
    ),
    pytest.param(
        doc(top="Execution: {memory: lots}"),
        ["PY_EXPERIMENTER.Execution.memory", "'512m'"],
        ConfigError, id="bad-memory",
    ),
    pytest.param(
        doc(top="Execution: {memory: 2048}"),
        ["PY_EXPERIMENTER.Execution.memory", "a number and a unit"],
        ConfigError, id="memory-without-unit",
    ),
    pytest.param(
        doc(top="Execution: {max_attempts: 0}"),
        ["PY_EXPERIMENTER.Execution.max_attempts", ">= 1"],
        ConfigError, id="max-attempts-zero",
    ),
    pytest.param(
        doc(top="Execution: {timeout: -5}"),
        ["PY_EXPERIMENTER.Execution.timeout", "> 0"],
        ConfigError, id="negative-timeout",
    ),
    pytest.param(
        doc(top="Execution: {timeout: 60}"),
        ["PY_EXPERIMENTER.Execution.timeout", "isolation: process"],
        ConfigError, id="timeout-inline",
    ),
    pytest.param(
        doc(top="Execution: {memory: 2g}"),
        ["PY_EXPERIMENTER.Execution.memory", "isolation: process"],
        ConfigError, id="memory-inline",
    ),
    pytest.param(
        doc(top="Execution: {database_outage_seconds: -1}"),
        ["PY_EXPERIMENTER.Execution.database_outage_seconds", ">= 0"],
        ConfigError, id="negative-outage",
    ),
    pytest.param(
        doc(top="Execution: {cpus: true}"),
        ["PY_EXPERIMENTER.Execution.cpus", "expected a number", "a boolean"],
        ConfigError, id="cpus-bool",
    ),
    pytest.param(
        doc(top="Execution: {adapter: command, command: [python, run.py, 3]}"),
        ["PY_EXPERIMENTER.Execution.command[2]", "expected a string", "quote it"],
        ConfigError, id="command-non-string-part",
    ),
    pytest.param(
        doc(top="Execution: {adapter: command, command: \"python 'unclosed\"}"),
        ["PY_EXPERIMENTER.Execution.command", "cannot split"],
        ConfigError, id="command-bad-quoting",
    ),
    pytest.param(
        doc(top="Execution: {adapter: docker}"),
        ["PY_EXPERIMENTER.Execution.image", "adapter 'docker' needs an image"],
        ConfigError, id="docker-without-image",
    ),
    pytest.param(
        doc(top="Execution: {adapter: command}"),
        ["PY_EXPERIMENTER.Execution.command", "adapter 'command' needs a command"],
        ConfigError, id="command-adapter-without-command",
    ),
    pytest.param(
        doc(top="Execution: [function]"),
        ["PY_EXPERIMENTER.Execution", "expected a mapping", "a list"],
        ConfigError, id="execution-not-mapping",
    ),
    pytest.param(
        "PY_EXPERIMENTER:\n  Database:\n    provider: sqlite\n   database: db\n",
        ["YAML syntax error at line 4"],
        ConfigError, id="yaml-syntax-error",
    ),
    pytest.param(
        doc(keyfields="seed: {type: INT}\nkernel: {type: TEXT}\nseed: {type: TEXT}"),
        ["YAML syntax error at line", "duplicate key 'seed'"],
        ConfigError, id="yaml-duplicate-key",
    ),
    pytest.param("", ["the experiment file is empty"], ConfigError, id="empty-file"),
    pytest.param(
        "- PY_EXPERIMENTER\n",
        ["expected a mapping with the key PY_EXPERIMENTER", "a list"],
        ConfigError, id="root-is-list",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "fragments", "error"), MALFORMED)
def test_malformed_file_names_file_path_problem_and_fix(
    tmp_path: Path, text: str, fragments: list[str], error: type[ConfigError]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment_config(path)
    message = str(info.value)
    assert type(info.value) is error, message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_experiment_config(missing)
    assert str(missing) in str(info.value)


def test_1_4_2_example(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_142)
    config = load_experiment_config(path)

    assert config.source == str(path)
    assert config.n_jobs == 1
    assert config.database.provider == "sqlite"
    assert config.database.database == "py_experimenter"
    table = config.table
    assert table.name == "example_general_usage"
    assert table.keyfields == (
        KeyfieldSpec("dataset", "VARCHAR(255)", ("iris",)),
        KeyfieldSpec("cross_validation_splits", "INT", (5,)),
        KeyfieldSpec("seed", "INT", (2, 3, 4, 5, 6)),
        KeyfieldSpec("kernel", "VARCHAR(255)", ("linear", "poly", "rbf", "sigmoid")),
    )
    assert table.keyfield_names == ("dataset", "cross_validation_splits", "seed", "kernel")
    # the schema adds <field>_timestamp itself; the spec keeps the user's fields only
    assert table.result_timestamps is True
    assert table.resultfields == (
        FieldSpec("pipeline", "LONGTEXT"),
        FieldSpec("train_f1", "DECIMAL"),
        FieldSpec("train_accuracy", "DECIMAL"),
        FieldSpec("test_f1", "DECIMAL"),
        FieldSpec("test_accuracy", "DECIMAL"),
    )
    assert table.logtables == (
        LogtableSpec(
            "train_scores",
            (FieldSpec("f1", "DECIMAL"), FieldSpec("accuracy", "DECIMAL"), FieldSpec("kernel", "str")),
        ),
        LogtableSpec("test_f1", (FieldSpec("test_f1", "DECIMAL"),)),
    )
    assert config.custom == {"path": "sample_data"}
    assert config.codecarbon == {
        "offline_mode": False,
        "measure_power_secs": 25,
        "tracking_mode": "process",
        "log_level": "error",
        "save_to_file": True,
        "output_dir": "output/CodeCarbon",
    }
    assert config.execution == ExecutionSpec()


def test_overrides_replace_table_and_database_names(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_142)
    config = load_experiment_config(path, table_name="other_table", database_name="other_db")
    assert config.table.name == "other_table"
    assert config.database.database == "other_db"


def test_overrides_make_file_names_optional(tmp_path: Path) -> None:
    text = (
        "PY_EXPERIMENTER:\n  Database:\n    provider: sqlite\n    table: {keyfields: {seed: {type: INT}}}\n"
    )
    config = load_experiment_config(write(tmp_path, text), table_name="t", database_name="d")
    assert (config.table.name, config.database.database) == ("t", "d")


def test_bad_table_name_override_is_an_identifier_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdentifierError, match="table_name argument") as info:
        load_experiment_config(write(tmp_path, EXAMPLE_142), table_name="drop table;")
    assert IDENTIFIER_RULE in str(info.value)


def test_override_changes_logtable_length_check(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdentifierError, match="longer than 64"):
        load_experiment_config(write(tmp_path, EXAMPLE_142), table_name="t" * 52)


def test_upper_case_custom_and_codecarbon_spellings(tmp_path: Path) -> None:
    path = write(tmp_path, doc(top="CUSTOM: {path: data}\nCODECARBON: {offline_mode: true}"))
    config = load_experiment_config(path)
    assert config.custom == {"path": "data"}
    assert config.codecarbon == {"offline_mode": True}


def test_sections_default_to_empty(tmp_path: Path) -> None:
    config = load_experiment_config(write(tmp_path, doc()))
    assert (config.n_jobs, config.custom, config.codecarbon) == (1, {}, {})
    assert config.table.resultfields == () and config.table.logtables == ()
    assert config.table.result_timestamps is False


def test_execution_defaults_match_design(tmp_path: Path) -> None:
    execution = load_experiment_config(write(tmp_path, doc(top="Execution: {}"))).execution
    assert execution == ExecutionSpec()
    assert (execution.adapter, execution.lease_seconds, execution.heartbeat_seconds) == (
        "function",
        120.0,
        30.0,
    )
    assert (execution.max_attempts, execution.isolation, execution.gpus) == (3, "inline", 0)
    assert execution.memory_bytes is None


def test_execution_values(tmp_path: Path) -> None:
    top = """\
    Execution:
      adapter: command
      lease_seconds: 60
      heartbeat_seconds: 15
      max_attempts: 5
      isolation: process
      timeout: 3600
      memory: 2g
      cpus: 1.5
      gpus: 1
      command: "apptainer exec image.sif python run.py --seed {seed} --name 'a b'"
      datasets: /data/in
      results_dir: /data/out
    """
    execution = load_experiment_config(write(tmp_path, doc(top=top))).execution
    assert execution.adapter == "command"
    assert execution.lease_seconds == 60.0 and isinstance(execution.lease_seconds, float)
    assert execution.timeout == 3600.0
    assert execution.memory == "2g" and execution.memory_bytes == 2 * 1024**3
    assert execution.cpus == 1.5 and execution.gpus == 1
    assert execution.command == (
        "apptainer", "exec", "image.sif", "python", "run.py", "--seed", "{seed}", "--name", "a b",
    )  # fmt: skip
    assert (execution.datasets, execution.results_dir) == ("/data/in", "/data/out")


def test_execution_null_means_none_and_docker_list_command(tmp_path: Path) -> None:
    top = "Execution: {adapter: docker, image: 'python:3.12', command: [python, -c, pass], timeout: null}"
    execution = load_experiment_config(write(tmp_path, doc(top=top))).execution
    assert execution.image == "python:3.12"
    assert execution.command == ("python", "-c", "pass")
    assert execution.timeout is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("[a, b]", ("a", "b")),
        ("iris", ("iris",)),
        ("5", (5,)),
        ("{start: 0, stop: 3}", (0, 1, 2)),
        ("{start: 0, stop: 10, step: 3}", (0, 3, 6, 9)),
        ("{start: 5, stop: 0, step: -2}", (5, 3, 1)),
        ("{start: 0.1, stop: 0.5, step: 0.1}", (0.1, 0.2, 0.3, 0.4)),
        ("{start: 0, stop: 1, step: 0.25}", (0.0, 0.25, 0.5, 0.75)),
        ("{start: 0.1, stop: 0.55, step: 0.1}", (0.1, 0.2, 0.3, 0.4, 0.5)),
        ("{start: 1.0, stop: 0.0, step: -0.25}", (1.0, 0.75, 0.5, 0.25)),
        ("{start: 0.001, stop: 0.004, step: 0.001}", (0.001, 0.002, 0.003)),
    ],
)
def test_keyfield_values(tmp_path: Path, values: str, expected: tuple[Any, ...]) -> None:
    config = load_experiment_config(
        write(tmp_path, doc(keyfields=f"seed: {{type: DOUBLE, values: {values}}}"))
    )
    got = config.table.keyfields[0].values
    assert got == expected
    assert [type(v) for v in got or ()] == [type(v) for v in expected]


def test_keyfield_type_defaults_to_varchar_and_values_are_optional(tmp_path: Path) -> None:
    config = load_experiment_config(write(tmp_path, doc(keyfields="dataset:\nseed: {type: INT}")))
    assert config.table.keyfields == (KeyfieldSpec("dataset", "VARCHAR(255)"), KeyfieldSpec("seed", "INT"))


@pytest.mark.parametrize(
    ("written", "provider"), [("postgres", "postgresql"), ("MySQL", "mysql"), ("SQLite", "sqlite")]
)
def test_provider_spellings(tmp_path: Path, written: str, provider: str) -> None:
    assert load_experiment_config(write(tmp_path, doc(provider=written))).database.provider == provider


def test_custom_is_copied(tmp_path: Path) -> None:
    data = yaml.safe_load(doc(top="Custom: {nested: {a: [1, 2]}}"))
    config = parse_experiment_config(data, "<dict>")
    data["PY_EXPERIMENTER"]["Custom"]["nested"]["a"].append(3)
    assert config.custom == {"nested": {"a": [1, 2]}}
    assert type(config.custom) is dict


def test_parse_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^from-hydra: PY_EXPERIMENTER\.n_jobs: "):
        parse_experiment_config(yaml.safe_load(doc(top="n_jobs: -1")), "from-hydra")


@pytest.mark.parametrize("name", ["example_sqlite.yml", "example_mysql.yml", "example_postgresql.yml"])
def test_shipped_examples_load(name: str) -> None:
    config = load_experiment_config(EXAMPLES / name)
    assert config.table.keyfield_names == ("dataset", "seed", "kernel")
    assert [len(k.values or ()) for k in config.table.keyfields] == [2, 5, 3]
    assert config.table.logtables and config.custom


def test_sqlite_example_shows_the_execution_defaults() -> None:
    assert load_experiment_config(EXAMPLES / "example_sqlite.yml").execution == ExecutionSpec()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def test_any_wrong_type_anywhere_is_a_config_error_never_a_raw_exception() -> None:
    base = yaml.safe_load(EXAMPLE_142)
    base["PY_EXPERIMENTER"]["Execution"] = {
        "adapter": "docker",
        "image": "x",
        "command": ["a"],
        "memory": "1g",
    }
    replacements: list[Any] = [None, [], {}, [1], {"x": 1}, "x", 0, -1, 1.5, True, "VARCHAR(255)"]
    for path in _paths(base):
        for replacement in replacements:
            data = copy.deepcopy(base)
            node = data
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = replacement
            try:
                parse_experiment_config(data, "fuzz")
            except ConfigError as exc:
                assert str(exc).startswith("fuzz: ")


def test_yaml_anchors_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    keyfields = "seed: &kf {type: INT, values: [1, 2]}\nfold:\n  <<: *kf\n  values: [3, 4]"
    config = load_experiment_config(write(tmp_path, doc(keyfields=keyfields)))
    assert config.table.keyfields == (
        KeyfieldSpec("seed", "INT", (1, 2)),
        KeyfieldSpec("fold", "INT", (3, 4)),
    )


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(doc(top="Custom: {city: 'Z\xfcrich'}").encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_experiment_config(path)
