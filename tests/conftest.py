"""Shared fixtures: the three real backends and throw-away experiment tables.

MariaDB and PostgreSQL are real servers brought up by ``scripts/services``. Locally an
unreachable server skips its tests with a loud reason; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.experimenter import PyExperimenter

SERVER_URLS = {
    "mysql": os.environ.get(
        "PY_EXPERIMENTER_TEST_MYSQL_URL", "mysql+pymysql://pyexp:pyexp-test@127.0.0.1:3306/py_experimenter_test"
    ),
    "postgresql": os.environ.get(
        "PY_EXPERIMENTER_TEST_POSTGRES_URL",
        "postgresql+psycopg://pyexp:pyexp-test@127.0.0.1:5432/py_experimenter_test",
    ),
}
BACKENDS = ["sqlite", "mysql", "postgresql"]
_reachable: dict[str, str | None] = {}


def _server_problem(provider: str) -> str | None:
    """None when the server answers, else why not (cached per session)."""
    if provider not in _reachable:
        engine = sa.create_engine(SERVER_URLS[provider])
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[provider] = None
        except Exception as err:  # any driver or network error means "not usable"
            _reachable[provider] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        finally:
            engine.dispose()
    return _reachable[provider]


def require_server(provider: str) -> None:
    """Skip (locally) or fail (CI=true) when the server for ``provider`` is unreachable."""
    if provider == "sqlite":
        return
    problem = _server_problem(provider)
    if problem:
        message = f"{provider} server unreachable ({problem}); run scripts/services"
        if _in_ci():
            pytest.fail(message)
        pytest.skip("!!! SKIPPED, NO SERVER: " + message)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class SlurmCluster:
    """The single-node Slurm cluster of ``scripts/slurm``: partition names and CPUs of its node."""

    partitions: tuple[str, ...]
    cpus: int

    @property
    def partition(self) -> str:
        return self.partitions[0]


def _slurm_problem() -> str | None:
    """None when sbatch / sinfo answer and a node is usable, else why not."""
    import shutil
    import subprocess

    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo / sbatch not on PATH"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P %T %c"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if result.returncode != 0:
        return f"sinfo failed: {(result.stderr or result.stdout).strip().splitlines()[:1]}"
    if not any(line.split()[1] in ("idle", "mixed", "allocated", "completing") for line in result.stdout.splitlines()):
        return f"no usable node: {result.stdout.strip()!r}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The real Slurm cluster; skips locally (fails under CI=true) when it is not up (run scripts/slurm)."""
    import subprocess

    problem = _slurm_problem()
    if problem:
        message = f"Slurm is not usable ({problem}); run scripts/slurm"
        if _in_ci():
            pytest.fail(message)
        pytest.skip("!!! SKIPPED, NO SLURM: " + message)
    listing = subprocess.run(["sinfo", "-h", "-o", "%P %c"], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    partitions = tuple(line.split()[0].rstrip("*") for line in lines if line.strip())
    cpus = max(int(line.split()[1]) for line in lines if line.strip())
    return SlurmCluster(partitions=partitions, cpus=cpus)


@dataclass
class Backend:
    """Where a test's experiment table lives."""

    provider: str
    url: str
    workdir: Path

    def credentials_file(self) -> Path:
        path = self.workdir / "credentials.yml"
        path.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": self.url}}}))
        return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test using this runs once per backend: SQLite file, MariaDB, PostgreSQL."""
    provider = request.param
    require_server(provider)
    url = f"sqlite:///{tmp_path / 'experiments.db'}" if provider == "sqlite" else SERVER_URLS[provider]
    return Backend(provider, url, tmp_path)


def experiment_yaml(
    provider: str,
    table: str,
    keyfields: dict[str, Any],
    resultfields: dict[str, str] | None = None,
    logtables: dict[str, dict[str, str]] | None = None,
    result_timestamps: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """An experiment file as a dict, in PyExperimenter 1.4.2's format."""
    database: dict[str, Any] = {
        "provider": provider,
        "database": "py_experimenter_test",
        "table": {"name": table, "keyfields": keyfields, "resultfields": resultfields or {},
                  "result_timestamps": result_timestamps},
    }
    if logtables:
        database["logtables"] = logtables
    return {"PY_EXPERIMENTER": {"n_jobs": 1, "Database": database, **extra}}


MakeExperimenter = Callable[..., PyExperimenter]


@pytest.fixture
def make_experimenter(backend: Backend) -> Iterator[MakeExperimenter]:
    """Factory for PyExperimenter objects on a fresh uuid-named table; tables dropped afterwards."""
    created: list[PyExperimenter] = []

    def make(keyfields: dict[str, Any], resultfields: dict[str, str] | None = None,
             logtables: dict[str, dict[str, str]] | None = None, table: str | None = None,
             result_timestamps: bool = False, use_codecarbon: bool = False, **extra: Any) -> PyExperimenter:
        name = table or f"t_{uuid.uuid4().hex[:12]}"
        path = backend.workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(experiment_yaml(backend.provider, name, keyfields, resultfields,
                                                       logtables, result_timestamps, **extra),
                                      sort_keys=False))
        experimenter = PyExperimenter(str(path), str(backend.credentials_file()), use_codecarbon=use_codecarbon)
        created.append(experimenter)
        return experimenter

    yield make
    for experimenter in created:
        experimenter.delete_table()
        experimenter.db.dispose()
