"""Container experiments end to end through ``py-experimenter run`` on the real engine (podman).

A table whose ``Execution.adapter`` is ``docker`` runs with no Python function; results and
logs come back from the container's ``/results``; two executors run each row once; SIGTERM
hands a running container's row back; no container is ever left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import Backend, experiment_yaml
from tests.container_support import EXAMPLE_IMAGE, PROBE_IMAGE, docker_client, leftover_containers

__all__ = ["docker_client"]

ROOT = Path(__file__).resolve().parents[2]


def _config(backend: Backend, name: str, data: dict[str, Any]) -> tuple[PyExperimenter, list[str]]:
    path = backend.workdir / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = str(backend.credentials_file())
    experimenter = PyExperimenter(str(path), credentials, use_codecarbon=False)
    experimenter.fill_table_from_config()
    return experimenter, [sys.executable, "-m", "py_experimenter.cli", "run", str(path), "--credentials", credentials]


def _mine(client: Any, table: str) -> list[Any]:
    return leftover_containers(client, f"py_experimenter.table={table}")


def test_example_image_table_runs_end_to_end_from_the_cli(backend: Backend, docker_client: Any):
    example_file = ROOT / "docs" / "examples" / "container" / "experiment.yml"
    example = yaml.safe_load(example_file.read_text())["PY_EXPERIMENTER"]
    table = f"box_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(backend.provider, table, example["Database"]["table"]["keyfields"],
                           example["Database"]["table"]["resultfields"], example["Database"]["logtables"],
                           Execution={**example["Execution"], "results_dir": str(backend.workdir / "results")})
    experimenter, command = _config(backend, table, data)
    done = subprocess.run(command, cwd=backend.workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ran 6 experiments" in done.stdout
    rows = experimenter.get_table()
    assert set(rows["status"]) == {"done"} and rows["score"].notna().all()
    assert len(experimenter.get_logtable("progress")) == 3 * 6
    attempts = experimenter.get_attempts_table()
    assert set(attempts["outcome"]) == {"done"}
    assert attempts["image"].str.startswith("sha256:").all()
    assert attempts["limits"].str.contains('"memory"').all()
    assert _mine(docker_client, table) == []
    assert EXAMPLE_IMAGE in example["Execution"]["image"]
    experimenter.delete_table()


def test_two_executors_run_each_container_row_exactly_once(backend: Backend, docker_client: Any):
    table = f"box_{uuid.uuid4().hex[:10]}"
    results = backend.workdir / "results"
    data = experiment_yaml(backend.provider, table,
                           {"mode": {"type": "VARCHAR(20)", "values": ["ok"]},
                            "seed": {"type": "INT", "values": list(range(12))}},
                           {"echo": "TEXT", "argv": "TEXT"}, {"events": {"step": "INT"}},
                           Execution={"adapter": "docker", "image": PROBE_IMAGE, "results_dir": str(results),
                                      "lease_seconds": 30, "heartbeat_seconds": 2})
    experimenter, command = _config(backend, table, data)
    executors = [subprocess.Popen(command, cwd=backend.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [e.communicate(timeout=300) for e in executors]
    for executor, (_out, err) in zip(executors, outputs, strict=True):
        assert executor.returncode == 0, err[-3000:]
    rows = experimenter.get_table()
    assert set(rows["status"]) == {"done"} and set(rows["attempt"]) == {1}
    runs = sorted(p.relative_to(results / table) for p in (results / table).glob("*/attempt-*"))
    assert [str(p.parent) for p in runs] == sorted(str(i) for i in rows["ID"]), "a row ran twice or not at all"
    workers = set(experimenter.get_attempts_table()["worker"])
    assert len(workers) == 2, f"one executor did all the work: {workers}"
    assert _mine(docker_client, table) == []
    experimenter.delete_table()


def test_sigterm_hands_a_running_container_back_and_removes_it(backend: Backend, docker_client: Any):
    table = f"box_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(backend.provider, table, {"mode": {"type": "VARCHAR(20)", "values": ["sleep"]}},
                           Execution={"adapter": "docker", "image": PROBE_IMAGE, "grace_seconds": 0.5,
                                      "lease_seconds": 30, "heartbeat_seconds": 2})
    experimenter, command = _config(backend, table, data)
    executor = subprocess.Popen(command, cwd=backend.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(c.status == "running" for c in _mine(docker_client, table)):
            assert executor.poll() is None, executor.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.1)
        executor.send_signal(signal.SIGTERM)
        _out, err = executor.communicate(timeout=60)
    finally:
        executor.kill()
    assert executor.returncode == 0, err[-3000:]
    assert list(experimenter.get_table()["status"]) == ["created"]
    assert list(experimenter.get_attempts_table()["outcome"]) == ["interrupted"]
    assert _mine(docker_client, table) == []
    experimenter.delete_table()


def test_container_of_a_killed_executor_is_removed_by_the_peer_that_takes_its_row_back(
        tmp_path: Path, docker_client: Any):
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'experiments.db'}", tmp_path)
    table = f"box_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml("sqlite", table, {"mode": {"type": "VARCHAR(20)", "values": ["sleep"]}},
                           Execution={"adapter": "docker", "image": PROBE_IMAGE, "timeout": 3,
                                      "lease_seconds": 2, "heartbeat_seconds": 0.5})
    experimenter, command = _config(backend, table, data)
    victim = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _mine(docker_client, table):
            assert victim.poll() is None, victim.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.1)
        orphan = _mine(docker_client, table)[0].id
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert [c.id for c in _mine(docker_client, table)] == [orphan]  # kill -9: nobody removed it
        time.sleep(1.5)  # two missed heartbeats: the rescuer waits for the lease instead of leaving
        rescuer = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        victim.kill()
    assert rescuer.returncode == 0, rescuer.stderr[-3000:]
    assert "left behind by a lost attempt" in rescuer.stderr
    assert list(experimenter.get_attempts_table()["outcome"]) == ["lost", "timeout"]
    assert _mine(docker_client, table) == []
    experimenter.delete_table()
