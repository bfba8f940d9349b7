"""Connection problems give one clear error without the password; codecarbon is optional."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.exceptions import DatabaseConnectionError
from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, experiment_yaml, require_server

SECRET = "s3cr3t-Pa55word"


@pytest.mark.parametrize("provider", ["mysql", "postgresql"])
def test_wrong_password_never_shows_the_password(provider: str, tmp_path: Path, caplog):
    require_server(provider)
    url = sa.engine.make_url(SERVER_URLS[provider]).set(username="no_such_user", password=SECRET)
    config = tmp_path / "exp.yml"
    keyfields = {"seed": {"type": "INT", "values": [1]}}
    config.write_text(yaml.safe_dump(experiment_yaml(provider, "t_never_created", keyfields)))
    credentials = tmp_path / "cred.yml"
    plain_url = url.render_as_string(hide_password=False)
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": plain_url}}}))
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    assert SECRET not in repr(experimenter)
    with pytest.raises(DatabaseConnectionError) as error:
        experimenter.fill_table_from_config()
    assert SECRET not in str(error.value) and "***" in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert SECRET not in caplog.text


def test_codecarbon_missing_warns_once_and_experiments_run(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # as if the extra were not installed
    monkeypatch.setattr("py_experimenter.emissions._not_installed_warned", False)
    config = tmp_path / "exp.yml"
    document = experiment_yaml("sqlite", "t", {"seed": {"type": "INT", "values": [1, 2]}},
                               CodeCarbon={"offline_mode": True})
    config.write_text(yaml.safe_dump(document))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = PyExperimenter(str(config), str(tmp_path / "none.yml"))
        PyExperimenter(str(config), str(tmp_path / "none.yml"))
    messages = [str(w.message) for w in caught if "codecarbon" in str(w.message)]
    assert len(messages) == 1 and "py-experimenter[codecarbon]" in messages[0]
    assert first.fill_table_from_config() == 2
    assert first.execute(lambda k, rp, c: None) == 2
    assert first.get_codecarbon_table().empty


def test_add_experiment_and_execute_in_a_fresh_process(tmp_path: Path):
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("sqlite", "fresh", {"seed": {"type": "INT"}}, {"out": "INT"})))
    script = (
        "from py_experimenter.experimenter import PyExperimenter\n"
        "e = PyExperimenter('exp.yml', use_codecarbon=False)\n"
        "e.add_experiment_and_execute({'seed': 4}, lambda k, rp, c: rp.process_results({'out': k['seed'] * 2}))\n"
        "print(e.get_table()[['seed', 'status', 'out']].values.tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[4, 'done', 8]]"
