"""Container engine support for tests: a Docker-API client (podman's on our machines).

``scripts/podman`` installs podman, builds the test images and starts its Docker-compatible
API; ``scripts/test`` exports ``DOCKER_HOST=unix:///run/podman/podman.sock``. Use the fixture
by importing it into a test module (``from tests.container_support import docker_client``).
Locally an unreachable engine skips the tests with a loud reason; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROBE_IMAGE = "py-experimenter/probe:latest"
EXAMPLE_IMAGE = "py-experimenter/example:latest"
ROOT = Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """``docker.from_env()`` after a successful ``ping()``; skip (locally) or fail (CI) otherwise."""
    problem: str
    try:
        import docker
    except ImportError:
        problem = "the docker SDK is not installed (pip install 'py-experimenter[docker]')"
    else:
        try:
            client = docker.from_env()
            client.ping()
        except Exception as err:  # any SDK, socket or HTTP error means "no usable engine"
            first_line = (str(err).splitlines() or [""])[0]
            problem = f"{type(err).__name__}: {first_line} (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')})"
        else:
            yield client
            client.close()
            _no_stray_oom_file()
            return
    message = f"container engine unreachable: {problem}; run scripts/podman"
    if _in_ci():
        pytest.fail(message)
    pytest.skip("!!! SKIPPED, NO CONTAINER ENGINE: " + message)


def _no_stray_oom_file() -> None:
    """podman's API service writes an empty ``oom`` into its working directory whenever a
    container is killed for memory: one in the repository root means the service runs there."""
    stray = ROOT / "oom"
    if stray.exists():
        pytest.fail(f"podman left {stray}: its API service runs in the repository root; run scripts/podman "
                    "(it restarts the service in /var/lib/py-experimenter-podman) and delete the file")


def leftover_containers(client: Any, label: str = "py_experimenter.table") -> list[Any]:
    """Containers (running or not) that carry ``label`` (``key`` or ``key=value``): after a test
    there should be none.

    Listing inspects each container; one removed in between (by another test or session)
    makes the engine answer "no such container": list again then.
    """
    import docker

    for attempt in range(5):
        try:
            return list(client.containers.list(all=True, filters={"label": label}))
        except docker.errors.APIError as err:  # podman: 500 "no such container", Docker: 404
            if attempt == 4 or "no such container" not in str(err).lower():
                raise
    raise AssertionError("unreachable")
