"""An experiment or credential file given as something that is not a path: one ConfigError /
CredentialsError naming what was given, never a raw TypeError from os.fspath."""

from __future__ import annotations

import pytest
import yaml

from py_experimenter.credentials import load_credentials
from py_experimenter.exceptions import ConfigError, CredentialsError
from py_experimenter.experimenter import PyExperimenter


@pytest.mark.parametrize("given", [None, 5, {"PY_EXPERIMENTER": {}}, ["exp.yml"]])
def test_experiment_file_that_is_not_a_path(given):
    with pytest.raises(ConfigError, match=rf"experiment file must be given as a path .* got a {type(given).__name__}"):
        PyExperimenter(given, use_codecarbon=False)


@pytest.mark.parametrize("given", [5, ["creds.yml"], {"CREDENTIALS": {}}])
def test_credential_file_that_is_not_a_path(given):
    message = rf"credential file must be given as a path .* got a {type(given).__name__}"
    with pytest.raises(CredentialsError, match=message):
        load_credentials(given, required=True)


def test_a_server_experiment_with_a_credential_path_that_is_not_a_path(tmp_path):
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump({"PY_EXPERIMENTER": {"n_jobs": 1, "Database": {
        "provider": "postgresql", "database": "x",
        "table": {"name": "t", "keyfields": {"seed": {"type": "INT"}}}}}}))
    with pytest.raises(CredentialsError, match="credential file must be given as a path"):
        PyExperimenter(str(path), 5, use_codecarbon=False)
