"""PyExperimenter 1.4.2's Hydra pattern, tried as a new user would: ``add_experiment_and_execute``
inside ``@hydra.main(version_base="1.1")`` under ``--multirun``, with Hydra's basic launcher and
with the submitit local launcher.

Hydra changes each job's working directory, so the relative experiment file, credential file
and SQLite database must resolve against the folder the app was started from; a sweep run
again skips what is done (and says so); an extended sweep runs only the new jobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, SlurmCluster, experiment_yaml, require_server

pytest.importorskip("hydra", reason="hydra-core is in the test extra")

APP = textwrap.dedent('''
    import hydra
    from py_experimenter.experimenter import PyExperimenter

    def experiment(keyfields, result_processor, custom_fields):
        result_processor.process_results({"score": 10 * keyfields["seed"] + len(keyfields["dataset"])})

    @hydra.main(version_base="1.1", config_path="conf", config_name="config")
    def main(cfg):
        experimenter = PyExperimenter("config/experiment.yml", "config/credentials.yml", use_codecarbon=False)
        experimenter.add_experiment_and_execute(cfg, experiment)  # the job's DictConfig: exactly the keyfields

    if __name__ == "__main__":
        main()
''')

KEYFIELDS = {"dataset": {"type": "VARCHAR(20)", "values": ["a", "bb"]}, "seed": {"type": "INT", "values": [1, 2]}}


BOTH = pytest.mark.parametrize("app", ["sqlite", "mysql"], indirect=True)


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny Hydra app in ``tmp_path`` whose experiment file and credentials are relative paths;
    the test runs in that folder too (its SQLite file is relative to it)."""
    monkeypatch.chdir(tmp_path)
    provider = getattr(request, "param", "sqlite")
    require_server(provider)
    table = f"hydra142_{uuid.uuid4().hex[:10]}"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("dataset: a\nseed: 1\n")
    (tmp_path / "config").mkdir()
    spec = experiment_yaml(provider, table, KEYFIELDS, {"score": "INT"})
    if provider == "sqlite":
        spec["PY_EXPERIMENTER"]["Database"]["database"] = "experiments"  # experiments.db, relative
        credentials: dict = {"CREDENTIALS": {"Database": {}}}
    else:
        credentials = {"CREDENTIALS": {"Database": {"url": SERVER_URLS[provider]}}}
    (tmp_path / "config" / "experiment.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "config" / "credentials.yml").write_text(yaml.safe_dump(credentials))
    (tmp_path / "app.py").write_text(APP)
    yield tmp_path
    experimenter = _experimenter(tmp_path)
    experimenter.delete_table()
    experimenter.db.dispose()


def _experimenter(folder: Path) -> PyExperimenter:
    assert Path.cwd() == folder
    return PyExperimenter("config/experiment.yml", "config/credentials.yml", use_codecarbon=False)


def _sweep(folder: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    done = subprocess.run([sys.executable, "app.py", "--multirun", *overrides], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=180)
    done.stdout += done.stderr
    return done


def _results(folder: Path) -> dict[tuple[str, int], tuple[str, int]]:
    table = _experimenter(folder).get_table()
    return {(r.dataset, int(r.seed)): (r.status, None if r.score != r.score else int(r.score))
            for r in table.itertuples()}


@BOTH
def test_basic_launcher_runs_each_job_once_and_a_rerun_resumes(app: Path) -> None:
    first = _sweep(app, "dataset=a,bb", "seed=1,2")
    assert first.returncode == 0, first.stdout[-3000:]
    assert _results(app) == {(d, s): ("done", 10 * s + len(d)) for d in ("a", "bb") for s in (1, 2)}
    assert not list((app / "multirun").rglob("*.db")), "a job made its own SQLite file in its Hydra folder"

    again = _sweep(app, "dataset=a,bb", "seed=1,2")
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("is already 'done': skipped") == 4, again.stdout[-3000:]
    assert len(_experimenter(app).get_attempts_table()) == 4

    extended = _sweep(app, "dataset=a,bb,ccc", "seed=1,2")
    assert extended.returncode == 0, extended.stdout[-3000:]
    assert extended.stdout.count("is already 'done': skipped") == 4
    assert "keyfield 'dataset' = 'ccc' is not among its configured values ['a', 'bb']" in extended.stdout
    results = _results(app)
    assert len(results) == 6 and results[("ccc", 2)] == ("done", 23)
    assert len(_experimenter(app).get_attempts_table()) == 6


def test_submitit_local_launcher_records_one_row_per_job(app: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is in the test extra")
    done = _sweep(app, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=3", "dataset=a,bb", "seed=1,2")
    assert done.returncode == 0, done.stdout[-3000:]
    assert _results(app) == {(d, s): ("done", 10 * s + len(d)) for d in ("a", "bb") for s in (1, 2)}
    attempts = _experimenter(app).get_attempts_table()
    assert len(attempts) == 4 and attempts["outcome"].eq("done").all()


@pytest.mark.parametrize("app", ["mysql"], indirect=True)
def test_submitit_slurm_launcher_records_one_row_per_array_task(app: Path, slurm_cluster: SlurmCluster) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is in the test extra")
    done = _sweep(app, "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
                  "hydra.launcher.timeout_min=5", "dataset=a,bb", "seed=1,2")
    assert done.returncode == 0, done.stdout[-3000:]
    assert _results(app) == {(d, s): ("done", 10 * s + len(d)) for d in ("a", "bb") for s in (1, 2)}
    attempts = _experimenter(app).get_attempts_table()
    assert len(attempts) == 4 and attempts["outcome"].eq("done").all()
    assert attempts["job_id"].str.fullmatch(r"\d+_[0-3]").all() and attempts["job_id"].nunique() == 4
