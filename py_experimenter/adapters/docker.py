"""The docker adapter: each experiment runs in a fresh container of ``Execution.image`` (TimeEval style).

It follows the contract in :mod:`py_experimenter.adapters.contract` and talks to any Docker-API engine through
the ``docker`` package (``pip install 'py_experimenter[docker]'``): ``docker.from_env()`` honours ``DOCKER_HOST``,
so podman's API works too (``podman system service --time=0 unix:///run/podman/podman.sock &`` and
``DOCKER_HOST=unix:///run/podman/podman.sock``). Images are never pulled during a run: build or load them first.

Each container gets the attempt's folder read-write at ``/results`` (made writable for any user, as the image
may not run as root), ``Execution.datasets`` read-only at ``/data``, only ``Execution.env`` and the
``PY_EXPERIMENTER_*`` variables as its environment, ``network_mode`` = ``Execution.network`` (``none`` unless
set), a memory limit without swap (``mem_limit`` = ``memswap_limit`` = ``Execution.memory``),
``nano_cpus`` from ``Execution.cpus``, ``Execution.gpus`` GPUs through a device request, and the labels
``py_experimenter.table``, ``py_experimenter.experiment``, ``py_experimenter.attempt`` and
``py_experimenter.scope`` (which database's table: see :meth:`ExperimentAdapter.bind`). Without
``Execution.command`` the image's ENTRYPOINT gets the parameters JSON as its only argument, so such an image
needs an ENTRYPOINT (:meth:`DockerAdapter.check` says so otherwise).

The container is always removed (``remove(force=True)``), whatever happens: exit, timeout, stop, an error,
or an exception from a signal handler. Exit code 137 that the executor did not cause, and Docker's
``OOMKilled``, count as ``oom`` (podman reports ``OOMKilled: false`` for a memory-limit kill; its exit code
137 is right). Like commands, a non-zero exit whose last output lines report running out of memory is ``oom``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from py_experimenter.adapters.contract import (
    AdapterOutcome,
    AdapterUnavailableError,
    AttemptFiles,
    ExperimentAdapter,
    StopCheck,
    says_out_of_memory,
    tail,
)
from py_experimenter.config import ExperimentConfig
from py_experimenter.exceptions import ConfigError
from py_experimenter.queue import AttemptReport, Experiment
from py_experimenter.result_processor import ResultProcessor

__all__ = ["LABELS", "SCOPE_LABEL", "DockerAdapter"]

logger = logging.getLogger("py-experimenter")

POLL_SECONDS = 0.1
FIRST_POLL_SECONDS = 0.01
#: Label keys of every container the adapter starts (values: table name, experiment ID, attempt).
LABELS = ("py_experimenter.table", "py_experimenter.experiment", "py_experimenter.attempt")
#: Label of the table's scope (:func:`~py_experimenter.adapters.contract.table_scope`): tables of
#: the same name in other databases never touch each other's containers.
SCOPE_LABEL = "py_experimenter.scope"
_ENDED = frozenset({"exited", "dead", "stopped"})
_DEFAULT_HOST = "the default socket unix:///var/run/docker.sock"


def _docker() -> ModuleType:
    try:
        import docker
    except ImportError:
        raise ConfigError("the docker adapter needs the docker package: pip install 'py_experimenter[docker]'") \
            from None
    return docker


class DockerAdapter(ExperimentAdapter):
    """Runs each experiment in a container (``adapter: docker``); one engine client per process."""

    def __init__(self, config: ExperimentConfig):
        super().__init__(config)
        self._client: Any = None
        self._client_pid: int | None = None
        # The engine's API version, asked once by check(): each new client (one per executor
        # process) would otherwise ask again, ~0.5 s on podman.
        self._api_version: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_client_pid": None}

    @property
    def client(self) -> Any:
        """This process's ``docker.DockerClient`` (made again after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            self._client = _docker().from_env(version=self._api_version)
            self._client_pid = os.getpid()
        return self._client

    def check(self) -> None:
        """Ping the engine, find the image locally, validate the templates and the datasets folder."""
        docker = _docker()
        source, key = self.config.source, "PY_EXPERIMENTER.Execution.image"
        try:
            self._client, self._api_version = None, None
            self.client.ping()
            self._api_version = self.client.api.api_version
        except Exception as exc:
            self._client = None
            where = os.environ.get("DOCKER_HOST") or _DEFAULT_HOST
            raise ConfigError(
                f"cannot reach a Docker API at {where}: {_reason(exc)}; start Docker, or podman's API (podman "
                "system service --time=0 unix:///run/podman/podman.sock &) and set "
                "DOCKER_HOST=unix:///run/podman/podman.sock"
            ) from None
        image = self.execution.image
        try:
            found = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ConfigError(f"image {image!r} is not on the engine: build or load it first (no pulls during a "
                              "run)", source=source, key_path=key) from None
        except docker.errors.APIError as exc:
            raise ConfigError(f"cannot inspect image {image!r}: {_reason(exc)}", source=source, key_path=key) \
                from None
        if self.execution.command is None and not (found.attrs.get("Config") or {}).get("Entrypoint"):
            raise ConfigError(
                f"image {image!r} has no ENTRYPOINT to receive the parameters JSON: set a command, e.g. "
                "command: [python3, /app/run.py, '{params}'], or give the image an ENTRYPOINT",
                source=source, key_path="PY_EXPERIMENTER.Execution.command",
            )
        self.check_templates()
        self.check_folders()

    def run(
        self,
        experiment: Experiment,
        processor: ResultProcessor,
        custom: Mapping[str, Any],
        should_stop: StopCheck | None,
    ) -> AdapterOutcome:
        """Run one attempt in a new container and read its results back (see the module docstring)."""
        docker = _docker()
        import requests  # a dependency of docker

        ex = self.execution
        limits = self.limits_json(memory=ex.memory_bytes, cpus=ex.cpus, gpus=ex.gpus, timeout=ex.timeout,
                                  network=ex.network)
        with self.attempt_folder(experiment) as folder:
            folder.chmod(0o777)  # the image may run as any user
            try:
                files = self.prepare(experiment, custom, folder, results_dir="/results",
                                     data_dir=None if ex.datasets is None else "/data")
            except ConfigError as exc:
                return AdapterOutcome("error", str(exc), report=AttemptReport(limits=limits))
            name = f"py-experimenter-{self.config.table.name}-{experiment.id}-{experiment.attempt}-" \
                   f"{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            container: Any = None
            try:
                try:
                    container = self.client.containers.create(**self._create_args(experiment, files, name))
                    container.start()
                except docker.errors.APIError as exc:
                    return AdapterOutcome("error", f"the container could not be started: {_reason(exc)}",
                                          report=AttemptReport(duration_seconds=time.monotonic() - started,
                                                               image=_image_id(container), limits=limits))
                state, killed = self._wait(container, should_stop)
                report = AttemptReport(duration_seconds=time.monotonic() - started, image=_image_id(container),
                                       limits=limits)
                if killed is not None:
                    return AdapterOutcome(killed[0], killed[1], stop_kind=killed[2], report=report)
                kind, error = self._classify(container, state)
            except docker.errors.APIError as exc:  # e.g. removed by someone else while it ran
                return AdapterOutcome("error", f"the container failed: {_reason(exc)}", report=AttemptReport(
                    duration_seconds=time.monotonic() - started, image=_image_id(container), limits=limits))
            except requests.exceptions.RequestException as exc:
                raise AdapterUnavailableError(f"the Docker API stopped answering during experiment "
                                              f"{experiment.id}: {_reason(exc)}") from exc
            finally:
                _remove(self.client, container, name)
            problem = self.read_back(folder, processor)
        if problem is not None:
            kind, error = ("error", problem) if kind == "done" else (kind, f"{error}\n(also: {problem})")
        return AdapterOutcome(kind, error, report=report)

    def remove_orphans(self, is_live: Callable[[int, int], bool]) -> int:
        """Remove this table's containers whose attempt is no longer running (its executor was
        killed before it could remove them). Only containers labelled with this table's scope
        count: a table of the same name in another database is never touched."""
        if self.scope is None:
            logger.debug("docker adapter not bound to a table: no leftover containers are removed")
            return 0
        removed = 0
        for container in _orphans(self.client, self.config.table.name, self.scope, is_live):
            logger.warning("removing container %s left behind by a lost attempt", container.id[:12])
            _remove(self.client, container, container.id)
            removed += 1
        return removed

    def _create_args(self, experiment: Experiment, files: AttemptFiles, name: str) -> dict[str, Any]:
        ex = self.execution
        volumes = {str(files.folder): {"bind": "/results", "mode": "rw"}}
        if ex.datasets is not None:
            volumes[os.path.abspath(ex.datasets)] = {"bind": "/data", "mode": "ro"}
        labels = dict(zip(LABELS, (self.config.table.name, str(experiment.id), str(experiment.attempt)), strict=True))
        labels[SCOPE_LABEL] = self.scope or "unbound"
        args: dict[str, Any] = {
            "image": ex.image, "command": files.command if files.command is not None else [files.params],
            "environment": files.env, "volumes": volumes, "network_mode": ex.network, "labels": labels,
            "name": name,
        }
        if ex.memory_bytes is not None:
            args.update(mem_limit=ex.memory_bytes, memswap_limit=ex.memory_bytes)
        if ex.cpus is not None:
            args["nano_cpus"] = int(ex.cpus * 1e9)
        if ex.gpus > 0:
            args["device_requests"] = [_docker().types.DeviceRequest(count=ex.gpus, capabilities=[["gpu"]])]
        return args

    def _wait(self, container: Any, should_stop: StopCheck | None) -> tuple[dict[str, Any], Any]:
        """Poll until the container ends, the timeout passes or ``should_stop`` asks: (state, killed)."""
        start = time.monotonic()
        deadline = None if self.execution.timeout is None else start + self.execution.timeout
        poll = FIRST_POLL_SECONDS  # short containers are noticed quickly, long ones cost few calls
        while True:
            _reload(container)
            state = container.attrs.get("State") or {}
            if str(state.get("Status", "")).lower() in _ENDED:
                return state, None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return state, ("timeout", self.timeout_message(), None)
            if should_stop is not None:
                request = should_stop()
                if request is not None:
                    return state, ("stopped", request[1], request[0])
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - now)))
            poll = min(2 * poll, POLL_SECONDS)

    def _classify(self, container: Any, state: Mapping[str, Any]) -> tuple[str, str | None]:
        """(kind, error) of a container that ended by itself."""
        code = int(state.get("ExitCode") or 0)
        if code == 0 and not state.get("OOMKilled"):
            return "done", None
        output = tail(container.logs(stdout=True, stderr=True, tail=40).decode("utf-8", errors="replace"))
        shown = f"; the last lines of its output:\n{output}" if output.strip() else "; it printed nothing"
        memory = self.execution.memory_bytes
        limit = "" if memory is None else f" under its limit of {memory / 2**20:g} MiB (Execution.memory)"
        if state.get("OOMKilled") or code == 137:
            how = "OOMKilled" if state.get("OOMKilled") else "exit code 137: killed by SIGKILL, not by the executor"
            return "oom", f"the container ran out of memory{limit} ({how}){shown}"
        if says_out_of_memory(output):
            return "oom", f"the container ran out of memory{limit} and exited with code {code}{shown}"
        return "error", f"the container exited with code {code}{shown}"


def _orphans(client: Any, table: str, scope: str, is_live: Callable[[int, int], bool]) -> Iterator[Any]:
    docker = _docker()
    try:
        containers = client.containers.list(
            all=True, filters={"label": [f"{LABELS[0]}={table}", f"{SCOPE_LABEL}={scope}"]}, sparse=True)
    except docker.errors.APIError as exc:  # e.g. one removed while listing: next time
        logger.warning("could not list containers of table %s: %s", table, _reason(exc))
        return
    for container in containers:
        labels = container.attrs.get("Labels") or {}
        if labels.get(LABELS[0]) != table or labels.get(SCOPE_LABEL) != scope:
            continue  # engines differ in how they combine label filters: check both here
        try:
            experiment, attempt = int(labels[LABELS[1]]), int(labels[LABELS[2]])
        except (KeyError, ValueError):
            continue
        if not is_live(experiment, attempt):
            yield container


def _reload(container: Any, tries: int = 3) -> None:
    """Refresh the container's state; a server error while it exits (podman: "read
    /proc/<pid>/cgroup: no such process") is retried before it counts."""
    docker = _docker()
    for attempt in range(tries):
        try:
            container.reload()
            return
        except docker.errors.APIError as exc:
            if attempt == tries - 1 or not exc.is_server_error() or isinstance(exc, docker.errors.NotFound):
                raise
            time.sleep(0.05)


def _remove(client: Any, container: Any, name: str) -> None:
    """Remove the container (by name when creating it was interrupted); a signal does not stop that."""
    docker = _docker()
    interruption: BaseException | None = None
    for _ in range(3):
        try:
            (container if container is not None else client.containers.get(name)).remove(force=True, v=True)
            break
        except docker.errors.NotFound:
            break
        except Exception as exc:
            logger.warning("could not remove container %s: %s", name, _reason(exc))
            break
        except BaseException as exc:  # a signal handler's exception: finish removing, then raise it
            interruption = exc
    if interruption is not None:
        raise interruption


def _image_id(container: Any) -> str | None:
    if container is None:
        return None
    image = container.attrs.get("Image")
    if isinstance(image, str) and image and not image.startswith("sha256:") and len(image) == 64:
        return f"sha256:{image}"
    return image if isinstance(image, str) and image else None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
