"""The Hydra launcher plugin ``hydra/launcher=py_experimenter``: a ``--multirun`` sweep fills the
table without running anything and returns at once; the same sweep again adds nothing;
executors (``py-experimenter run ... --function py_experimenter.hydra_task:run_hydra_task``)
then call the task function with each job's rebuilt config and store what it returns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.experimenter import PyExperimenter
from py_experimenter.hydra_sweep import hydra_table, lookup_job
from tests.conftest import SERVER_URLS, SlurmCluster, experiment_yaml, require_server

pytest.importorskip("hydra", reason="hydra-core is in the test extra")

TASK = "py_experimenter.hydra_task:run_hydra_task"
APP = textwrap.dedent('''
    import hydra

    @hydra.main(version_base="1.1", config_path="conf", config_name="config")
    def main(cfg):
        if cfg.dataset == "broken":
            return {"not_a_resultfield": 1}
        if "score" not in cfg.returns:
            return 10 * cfg.seed + len(cfg.dataset)
        return {"score": 10 * cfg.seed + len(cfg.dataset), "epochs_seen": cfg.train.epochs}

    if __name__ == "__main__":
        main()
''')
KEYFIELDS = {"dataset": {"type": "VARCHAR(20)"}, "seed": {"type": "INT", "values": [1]},
             "model": {"type": "VARCHAR(20)"}}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Hydra app with a config group (model) and a nested key (train.epochs) in ``tmp_path``;
    its table on SQLite, or on the provider the test is parametrized with."""
    provider = getattr(request, "param", "sqlite")
    require_server(provider)
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - model: small\n  - _self_\n"
                                      "dataset: a\nseed: 1\nreturns: [score]\ntrain:\n  epochs: 5\n")
    (conf / "model" / "small.yaml").write_text("width: 8\n")
    (conf / "model" / "large.yaml").write_text("width: 64\n")
    (tmp_path / "app.py").write_text(APP)
    table = f"hplug_{uuid.uuid4().hex[:10]}"
    spec = experiment_yaml(provider, table, KEYFIELDS, {"score": "INT", "epochs_seen": "INT"})
    credentials = {"CREDENTIALS": {"Database": {"url": SERVER_URLS[provider]}}} if provider != "sqlite" else {}
    if provider == "sqlite":
        spec["PY_EXPERIMENTER"]["Database"]["database"] = "experiments"
    (tmp_path / "experiment.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "credentials.yml").write_text(yaml.safe_dump(credentials))
    yield tmp_path
    experimenter = _experimenter()
    experimenter.delete_table()  # with its <table>__hydra
    experimenter.db.dispose()


def _experimenter(config: str = "experiment.yml") -> PyExperimenter:
    return PyExperimenter(config, "credentials.yml", use_codecarbon=False)


def _sweep(*overrides: str, config: str = "experiment.yml") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "app.py", "--multirun", "hydra/launcher=py_experimenter",
            f"hydra.launcher.experiment_config={config}", "hydra.launcher.credentials=credentials.yml", *overrides]
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)


def _run(config: str = "experiment.yml") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "py_experimenter", "run", config, "--credentials", "credentials.yml",
            "--function", TASK]
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("app", ["sqlite", "mysql"], indirect=True)
def test_a_sweep_fills_rows_without_running_them_and_executors_store_the_return_values(app: Path) -> None:
    started = time.monotonic()
    first = _sweep("dataset=a,bb", "seed=1,2", "model=small,large", "train.epochs=7")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-3000:]
    assert "8 rows added, 0 already there" in first.stdout, first.stdout
    assert "keyfield 'seed': swept values [2] are not among its configured values [1]" in first.stdout
    assert TASK in first.stdout  # how to run them
    assert took < 30, f"the sweep took {took:.1f} s to return"
    table = _experimenter().get_table()
    assert len(table) == 8 and set(table["status"]) == {"created"}
    assert set(table["model"]) == {"small", "large"}  # a config group gives its option's name
    assert not list((app / "multirun").rglob("*.db"))

    again = _sweep("dataset=a,bb", "seed=1,2", "model=small,large", "train.epochs=7")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 rows added, 8 already there" in again.stdout
    assert len(_experimenter().get_table()) == 8

    ran = _run()
    assert ran.returncode == 0, ran.stderr[-3000:]
    table = _experimenter().get_table()
    assert set(table["status"]) == {"done"}, table[["status", "error"]]
    for row in table.itertuples():
        assert row.score == 10 * row.seed + len(row.dataset)
        assert row.epochs_seen == 7  # the rebuilt config carries the sweep's other overrides


def test_a_number_goes_to_the_single_resultfield_and_unknown_keys_are_an_error_row(app: Path) -> None:
    spec = yaml.safe_load((app / "experiment.yml").read_text())
    spec["PY_EXPERIMENTER"]["Database"]["table"]["name"] += "_n"
    spec["PY_EXPERIMENTER"]["Database"]["table"]["resultfields"] = {"score": "INT"}
    (app / "number.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # seed, not swept, is an interpolation: the keyfield values come from composing each job then.
    config = (app / "conf" / "config.yaml").read_text().replace("seed: 1", "seed: ${base_seed}\nbase_seed: 3")
    (app / "conf" / "config.yaml").write_text(config)
    try:
        done = _sweep("dataset=a,broken", "returns=[]", config="number.yml")
        assert done.returncode == 0, done.stderr[-3000:]
        assert _run("number.yml").returncode == 0
        table = _experimenter("number.yml").get_table().set_index("dataset")
        assert table.loc["a", "status"] == "done" and table.loc["a", "score"] == 31
        assert table.loc["broken", "status"] == "error"
        assert "not_a_resultfield" in table.loc["broken", "error"] and "['score']" in table.loc["broken", "error"]
    finally:
        experimenter = _experimenter("number.yml")
        experimenter.delete_table()
        experimenter.db.dispose()


def test_a_swept_key_that_is_no_keyfield_is_one_clear_error(app: Path) -> None:
    done = _sweep("dataset=a,bb", "train.epochs=1,2")
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "['train.epochs'] map to no keyfield" in errors[0], done.stderr
    assert "['dataset', 'seed', 'model']" in errors[0]
    assert "Traceback" not in done.stderr
    experimenter = _experimenter()
    experimenter.create_table()
    assert len(experimenter.get_table()) == 0
    missing = _sweep("dataset=a,bb", config="nope.yml")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1] == (
        f"hydra/launcher=py_experimenter: error: {app / 'nope.yml'}: experiment file not found; check the path")


def _wait_until_all_done(experimenter: PyExperimenter, rows: int, seconds: float) -> None:
    """Poll the table until every row is done (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        table = experimenter.get_table()
        if set(table["status"]) == {"done"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(table) == rows and set(table["status"]) == {"done"}, table[["status", "error"]]


def test_executors_started_by_the_plugin_run_the_rows(app: Path) -> None:
    done = _sweep("dataset=a,bb", "seed=1,2", "hydra.launcher.executors=2", "hydra.launcher.backend=local",
                  "hydra.launcher.log_dir=logs")
    assert done.returncode == 0, done.stderr[-3000:]
    experimenter = _experimenter()
    _wait_until_all_done(experimenter, rows=4, seconds=60)
    assert len(set(experimenter.get_attempts_table()["experiment_id"])) == 4
    side = hydra_table(experimenter.db)
    with experimenter.db.begin() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(side)) == 4
    experimenter.delete_table()  # drops the side table too: a new table reusing the IDs gets fresh entries
    assert not sa.inspect(experimenter.db.engine).has_table(side.name)
    experimenter.db.dispose()


def test_executors_started_on_slurm_by_the_plugin_run_the_rows(app: Path, slurm_cluster: SlurmCluster) -> None:
    done = _sweep("dataset=a,bb", "seed=1,2", "hydra.launcher.executors=2", "hydra.launcher.backend=slurm",
                  "hydra.launcher.log_dir=logs", f"hydra.launcher.slurm.partition={slurm_cluster.partition}",
                  "hydra.launcher.slurm.time_limit=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted job array" in done.stdout, done.stdout
    experimenter = _experimenter()
    _wait_until_all_done(experimenter, rows=4, seconds=90)
    attempts = experimenter.get_attempts_table()
    assert attempts["job_id"].str.fullmatch(r"\d+_[01]").all(), attempts["job_id"]
    experimenter.db.dispose()


def test_a_task_in_a_package_started_with_python_m_is_imported_by_its_module_name(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    package = tmp_path / "mypkg"
    (package / "conf").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "config.yaml").write_text("dataset: a\nseed: 1\n")
    (package / "helpers.py").write_text("def score(cfg):\n    return 10 * cfg.seed + len(cfg.dataset)\n")
    (package / "train.py").write_text(textwrap.dedent('''
        import hydra
        from .helpers import score  # a relative import: the module must be imported, not loaded as a file

        @hydra.main(version_base=None, config_path="conf", config_name="config")
        def main(cfg):
            return score(cfg)

        if __name__ == "__main__":
            main()
    '''))
    spec = experiment_yaml("sqlite", "pkg_task", {"dataset": {"type": "VARCHAR(9)"}, "seed": {"type": "INT"}},
                           {"score": "INT"})
    spec["PY_EXPERIMENTER"]["Database"]["database"] = "experiments"
    (tmp_path / "experiment.yml").write_text(yaml.safe_dump(spec))
    (tmp_path / "credentials.yml").write_text("{}")
    sweep = subprocess.run([sys.executable, "-m", "mypkg.train", "-m", "hydra/launcher=py_experimenter",
                            "hydra.launcher.experiment_config=experiment.yml", "dataset=a,bb", "seed=2"],
                           env=_env(), capture_output=True, text=True, timeout=120)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    ran = _run()
    assert ran.returncode == 0, ran.stderr[-3000:]
    experimenter = _experimenter()
    table = experimenter.get_table().set_index("dataset")
    assert list(table["status"]) == ["done", "done"] and list(table["score"]) == [21, 22]
    assert lookup_job(experimenter.db, 1).task_function == "mypkg.train:main"
    experimenter.delete_table()
    experimenter.db.dispose()
