"""Smoke test of the container engine itself (podman's Docker API on our machines).

No py_experimenter code: this checks that what the docker adapter relies on works through the
Docker SDK against ``DOCKER_HOST`` — the test image, bind mounts (results rw, data ro), no
network, a hard memory limit without swap (exit code 137), and removal.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.container_support import PROBE_IMAGE, docker_client, leftover_containers

__all__ = ["docker_client"]  # the fixture, imported for pytest

LABEL = "py_experimenter.table"


def run_probe(client: Any, tmp_path: Path, mode: str) -> tuple[int, Path, str]:
    """Run the probe image in ``mode`` like the docker adapter would; return (exit code, results dir, logs)."""
    results = tmp_path / "results"
    data = tmp_path / "data"
    results.mkdir()
    data.mkdir()
    (data / "input.txt").write_text("read-only input\n")
    params = {
        "experiment_id": 1,
        "attempt": 1,
        "table": "engine_smoke",
        "keyfields": {"mode": mode},
        "custom": {"note": "smoke"},
        "results_dir": "/results",
        "data_dir": "/data",
    }
    (results / "params.json").write_text(json.dumps(params))
    table = f"engine_smoke_{uuid.uuid4().hex[:8]}"
    container = None
    try:
        container = client.containers.run(
            PROBE_IMAGE,
            command=[json.dumps(params)],
            detach=True,
            volumes={
                str(results): {"bind": "/results", "mode": "rw"},
                str(data): {"bind": "/data", "mode": "ro"},
            },
            environment={"PY_EXPERIMENTER_PARAMS": json.dumps(params)},
            network_mode="none",
            mem_limit="256m",
            memswap_limit="256m",
            labels={LABEL: table},
        )
        status = container.wait(timeout=120)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return int(status["StatusCode"]), results, logs
    finally:
        if container is not None:
            container.remove(force=True)
        assert leftover_containers(client, f"{LABEL}={table}") == []


def test_ok_mode_reads_params_and_writes_results(docker_client: Any, tmp_path: Path) -> None:
    code, results, logs = run_probe(docker_client, tmp_path, "ok")
    assert code == 0, logs
    assert "probe: mode=ok" in logs
    values = json.loads((results / "results.json").read_text())
    assert json.loads(values["echo"]) == {"mode": "ok", "note": "smoke"}
    assert json.loads(json.loads(values["argv"])[0])["keyfields"] == {"mode": "ok"}
    lines = (results / "logs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"events": {"step": 1}}, {"events": {"step": 2}}]


def test_data_mount_is_read_only(docker_client: Any, tmp_path: Path) -> None:
    code, results, logs = run_probe(docker_client, tmp_path, "readonly")
    assert code == 0, logs
    assert json.loads((results / "results.json").read_text()) == {"data_writable": False}
    assert not (tmp_path / "data" / "x").exists()


@pytest.mark.timeout(180)
def test_memory_limit_kills_with_137(docker_client: Any, tmp_path: Path) -> None:
    code, results, logs = run_probe(docker_client, tmp_path, "alloc")
    # podman reports OOMKilled: false for a memory-limit kill; the exit code is the signal.
    assert code == 137, logs
    assert "allocated" not in logs
    assert not (results / "results.json").exists()
