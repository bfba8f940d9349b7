"""OmegaConf ``${...}`` interpolation in experiment files (as 1.4.2 resolved it), Hydra configs,
and the plain YAML features that must stay untouched."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from py_experimenter.config import load_experiment_config, parse_experiment_config
from py_experimenter.exceptions import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yml"
    path.write_text(textwrap.dedent(text))
    return path


FILE = """
PY_EXPERIMENTER:
  n_jobs: 1
  Database:
    provider: sqlite
    database: ${PY_EXPERIMENTER.Database.table.name}_db
    table:
      name: exp_${PY_EXPERIMENTER.Custom.study}
      keyfields:
        dataset:
          type: VARCHAR(50)
          values: ${PY_EXPERIMENTER.Custom.datasets}
        seed:
          type: INT
          values: ["${PY_EXPERIMENTER.Custom.first_seed}", 7]
        user:
          type: VARCHAR(50)
          values: ["${oc.env:PYEXP_TEST_USER}", "${oc.env:PYEXP_TEST_UNSET,nobody}"]
  Custom:
    study: grid
    datasets: [iris, wine]
    first_seed: 3
    paths:
      root: /data
      train: ${.root}/train
"""


def test_references_env_vars_lists_and_nested_values_are_resolved(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYEXP_TEST_USER", "alice")
    monkeypatch.delenv("PYEXP_TEST_UNSET", raising=False)
    config = load_experiment_config(write(tmp_path, FILE))
    assert config.table.name == "exp_grid"
    assert config.database.database == "exp_grid_db"  # nested: refers to a key that is itself interpolated
    values = {k.name: k.values for k in config.table.keyfields}
    assert values == {"dataset": ("iris", "wine"), "seed": (3, 7), "user": ("alice", "nobody")}
    assert config.custom["paths"] == {"root": "/data", "train": "/data/train"}


PLAIN = """
PY_EXPERIMENTER:
  Database:
    provider: sqlite
    database: db
    table:
      name: exp
      keyfields:
        seed: &seeds
          type: INT
          values: {start: 0, stop: 6, step: 2}
        other: *seeds
        day: {type: DATE, values: [2024-01-31]}
        price: {type: VARCHAR(20), values: ["$5", "cost: $HOME", "a$", "\\\\${not_a_key}"]}
  Execution:
    adapter: command
    command: [run, "{seed}", "--other={other}", "${PY_EXPERIMENTER.Custom.flag}"]
    env: {SEED: "{seed}"}
  Custom:
    flag: --fast
    base: &base {a: 1, b: 2}
    merged:
      <<: *base
      b: 3
"""


def test_plain_yaml_features_are_untouched(tmp_path) -> None:
    config = load_experiment_config(write(tmp_path, PLAIN))
    values = {k.name: k.values for k in config.table.keyfields}
    assert values["seed"] == values["other"] == (0, 2, 4)
    assert values["day"] == (dt.date(2024, 1, 31),)
    assert values["price"] == ("$5", "cost: $HOME", "a$", "${not_a_key}")  # \${ is OmegaConf's escape
    assert config.execution.command == ("run", "{seed}", "--other={other}", "--fast")
    assert config.execution.env == {"SEED": "{seed}"}
    assert config.custom["merged"] == {"a": 1, "b": 3}


def test_files_without_interpolation_are_not_given_to_omegaconf(tmp_path) -> None:
    # a null key is fine for OmegaConf-free data (our checker decides), and '???' stays text
    text = PLAIN.replace("${PY_EXPERIMENTER.Custom.flag}", "???").replace("\\\\${not_a_key}", "x")
    config = load_experiment_config(write(tmp_path, text))
    assert config.execution.command[-1] == "???"


@pytest.mark.parametrize(
    ("snippet", "key_path", "fragments"),
    [
        ("database: ${PY_EXPERIMENTER.Custom.nope}", "PY_EXPERIMENTER.Database.database",
         ["'${PY_EXPERIMENTER.Custom.nope}'", "not found", "absolute from the top", "\\${"]),
        ("database: sh -c 'echo ${HOME}'", "PY_EXPERIMENTER.Database.database",
         ["Interpolation key 'HOME' not found", "a shell variable", "\\${...}"]),
        ("database: ${PY_EXPERIMENTER.Database.database}", "PY_EXPERIMENTER.Database.database",
         ["Recursive interpolation", "cycle"]),
        ("database: ${shout:db}", "PY_EXPERIMENTER.Database.database",
         ["Unsupported interpolation type shout", "no such resolver", "oc.env", "\\${"]),
        ("database: ${oc.env:PYEXP_TEST_UNSET}", "PY_EXPERIMENTER.Database.database",
         ["environment variable 'PYEXP_TEST_UNSET' is not set", "${oc.env:PYEXP_TEST_UNSET,default}"]),
        ("database: x ${ y", "PY_EXPERIMENTER.Database.database", ["not a valid interpolation", "\\${"]),
    ],
)
def test_bad_interpolations_are_config_errors_with_file_and_key_path(
    tmp_path, monkeypatch, snippet, key_path, fragments
) -> None:
    monkeypatch.delenv("PYEXP_TEST_UNSET", raising=False)
    text = f"""
    PY_EXPERIMENTER:
      Database:
        provider: sqlite
        {snippet}
        table: {{name: exp, keyfields: {{seed: {{type: INT}}}}}}
      Custom: {{a: 1}}
    """
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment_config(path)
    assert type(info.value) is ConfigError
    assert info.value.key_path == key_path
    message = str(info.value)
    assert message.startswith(f"{path}: {key_path}: ")
    assert "Traceback" not in message and "object_type" not in message and "full_key" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_cycle_through_two_keys_and_list_item_paths(tmp_path) -> None:
    text = """
    PY_EXPERIMENTER:
      Database:
        provider: sqlite
        database: db
        table:
          name: exp
          keyfields: {seed: {type: INT, values: [1, "${PY_EXPERIMENTER.Custom.missing}"]}}
      Custom: {a: "${PY_EXPERIMENTER.Custom.b}", b: "${PY_EXPERIMENTER.Custom.a}"}
    """
    with pytest.raises(ConfigError) as info:
        load_experiment_config(write(tmp_path, text))
    # the first failing key is reported: the list item (Database comes before Custom)
    assert info.value.key_path == "PY_EXPERIMENTER.Database.table.keyfields.seed.values[1]"
    with pytest.raises(ConfigError, match=r"PY_EXPERIMENTER\.Custom\.[ab]: .*cycle"):
        load_experiment_config(write(tmp_path, text.replace('"${PY_EXPERIMENTER.Custom.missing}"', "2")))


def test_a_key_omegaconf_cannot_hold_is_named(tmp_path) -> None:
    text = """
    PY_EXPERIMENTER:
      Database: {provider: sqlite, database: "${PY_EXPERIMENTER.Custom.db}", table: {name: t, keyfields: {s: {}}}}
      Custom: {db: x, null: 1}
    """
    with pytest.raises(ConfigError, match=r"PY_EXPERIMENTER\.Custom\.None: the key None .*quote it"):
        load_experiment_config(write(tmp_path, text))


def test_hydra_dictconfig_is_accepted_with_interpolations_against_its_root(monkeypatch) -> None:
    monkeypatch.setenv("PYEXP_TEST_USER", "bob")
    cfg = OmegaConf.create({
        "study": "sweep",
        "seeds": [1, 2],
        "PY_EXPERIMENTER": {
            "Database": {
                "provider": "sqlite",
                "database": "${oc.env:PYEXP_TEST_USER}_db",
                "table": {"name": "${study}_table", "keyfields": {"seed": {"type": "INT", "values": "${seeds}"}}},
            },
        },
    })
    # a Hydra app passes its whole cfg (its own keys next to PY_EXPERIMENTER) or cfg.PY_EXPERIMENTER;
    # interpolations resolve against the whole config either way
    for given in (cfg, cfg.PY_EXPERIMENTER):
        config = parse_experiment_config(given, "hydra config")
        assert config.table.name == "sweep_table" and config.database.database == "bob_db"
        assert config.table.keyfields[0].values == (1, 2)
    # keys outside PY_EXPERIMENTER are not resolved (${hydra:...} needs a running Hydra app)
    cfg.other = "${hydra:runtime.cwd}"
    assert parse_experiment_config(cfg, "hydra config").table.name == "sweep_table"
    cfg.PY_EXPERIMENTER.Database.database = "${nope}"
    with pytest.raises(ConfigError, match=r"^hydra config: PY_EXPERIMENTER\.Database\.database: .*'\$\{nope\}'"):
        parse_experiment_config(cfg.PY_EXPERIMENTER, "hydra config")
    # the default source name
    with pytest.raises(ConfigError, match=r"^<experiment configuration>: PY_EXPERIMENTER: missing the root key"):
        parse_experiment_config(OmegaConf.create({"other": 1}))
