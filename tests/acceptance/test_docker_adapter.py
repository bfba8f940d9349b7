"""The docker adapter against a real Docker-API engine (podman's on our machines, see scripts/podman).

The probe image (tests/images/probe) does what its keyfield ``mode`` says. After every run no container
of the test's table may be left on the engine.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from py_experimenter.adapters import adapter_for
from py_experimenter.adapters.docker import DockerAdapter
from py_experimenter.config import parse_experiment_config
from py_experimenter.exceptions import ConfigError
from py_experimenter.queue import Experiment, ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor
from tests.conftest import experiment_yaml
from tests.container_support import PROBE_IMAGE, docker_client, leftover_containers  # noqa: F401

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
RESULTFIELDS = {"echo": "LONGTEXT", "argv": "LONGTEXT", "env": "LONGTEXT", "data_writable": "BOOLEAN"}
LOGTABLES = {"events": {"step": "INT"}}
CUSTOM = {"budget": 5}


class Run:
    """One adapter run: the table, the claimed experiment, the outcome and the results folder."""

    def __init__(self, exp: Any, experiment: Experiment, outcome: Any, results: Path):
        self.exp, self.experiment, self.outcome = exp, experiment, outcome
        self.folder = results / exp.config.table.name / str(experiment.id) / "attempt-1"

    @property
    def row(self) -> Any:
        return self.exp.get_table().iloc[0]


@pytest.fixture
def run_probe(make_experimenter: Any, docker_client: Any, tmp_path: Path) -> Iterator[Callable[..., Run]]:  # noqa: F811
    """Run the probe image in ``mode`` for one claimed row; afterwards no container of the table is left."""
    queues: list[ExperimentQueue] = []
    tables: list[str] = []

    def run(mode: str, *, should_stop: Callable[[], tuple[str, str] | None] | None = None, **execution: Any) -> Run:
        results = tmp_path / "results"
        exp = make_experimenter({"mode": {"type": "VARCHAR(20)", "values": [mode]}}, RESULTFIELDS, LOGTABLES,
                                Custom=CUSTOM, Execution={"adapter": "docker", "image": PROBE_IMAGE,
                                                          "results_dir": str(results), **execution})
        tables.append(exp.config.table.name)
        adapter = adapter_for(exp.config)
        assert isinstance(adapter, DockerAdapter)
        adapter.check()
        exp.fill_table_from_config()
        queue = ExperimentQueue(exp.db, WorkerIdentity())
        queues.append(queue)
        experiment = queue.claim()
        assert experiment is not None
        outcome = adapter.run(experiment, ResultProcessor(queue, experiment), exp.config.custom, should_stop)
        assert leftover_containers(docker_client, label=f"py_experimenter.table={exp.config.table.name}") == []
        return Run(exp, experiment, outcome, results)

    yield run
    for queue in queues:
        queue.close()
    for table in tables:
        assert leftover_containers(docker_client, label=f"py_experimenter.table={table}") == []


def _ok_round_trip(run_probe: Callable[..., Run], docker_client: Any) -> None:  # noqa: F811
    run = run_probe("ok", memory="512m", cpus=1, timeout=120)
    assert run.outcome.kind == "done", run.outcome.error
    row = run.row
    assert json.loads(row["echo"]) == {"mode": "ok", **CUSTOM}
    argv = json.loads(row["argv"])
    assert len(argv) == 1  # no command: the ENTRYPOINT gets the parameters JSON as its only argument
    assert json.loads(argv[0]) == {
        "experiment_id": run.experiment.id, "attempt": 1, "table": run.exp.config.table.name,
        "keyfields": {"mode": "ok"}, "custom": CUSTOM, "results_dir": "/results", "data_dir": None,
    }
    assert sorted(run.exp.get_logtable("events")["step"]) == [1, 2]
    assert {"params.json", "results.json", "logs.jsonl"} <= {p.name for p in run.folder.iterdir()}
    assert json.loads((run.folder / "params.json").read_text()) == json.loads(argv[0])
    report = run.outcome.report
    assert report.image == docker_client.images.get(PROBE_IMAGE).id
    assert json.loads(report.limits) == {"memory": 512 * 2**20, "cpus": 1.0, "gpus": 0, "timeout": 120.0,
                                         "network": "none"}
    assert report.duration_seconds > 0


@SQLITE
def test_ok_parameters_results_and_logs_round_trip(run_probe, docker_client):  # noqa: F811
    _ok_round_trip(run_probe, docker_client)


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_ok_round_trip_on_mariadb(run_probe, docker_client):  # noqa: F811
    _ok_round_trip(run_probe, docker_client)


@SQLITE
def test_a_command_is_appended_to_the_entrypoint_with_placeholders_filled(run_probe):
    run = run_probe("ok", command=["{params}", "--mode={mode}", "{{x}}"])
    assert run.outcome.kind == "done", run.outcome.error
    argv = json.loads(run.row["argv"])
    assert json.loads(argv[0])["keyfields"] == {"mode": "ok"} and argv[1:] == ["--mode=ok", "{x}"]


@SQLITE
def test_environment_holds_only_our_variables(run_probe, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    run = run_probe("env", env={"TEST_MODE": "{mode}", "TEST_BUDGET": "{budget}"}, datasets=str(data))
    assert run.outcome.kind == "done", run.outcome.error
    env = json.loads(run.row["env"])
    assert json.loads(env.pop("PY_EXPERIMENTER_PARAMS"))["data_dir"] == "/data"
    assert env == {"PY_EXPERIMENTER_RESULTS_DIR": "/results", "PY_EXPERIMENTER_DATA_DIR": "/data",
                   "PY_EXPERIMENTER_EXPERIMENT_ID": str(run.experiment.id), "PY_EXPERIMENTER_ATTEMPT": "1",
                   "TEST_MODE": "env", "TEST_BUDGET": "5"}


@SQLITE
def test_a_failing_container_is_an_error_with_its_log_tail(run_probe):
    run = run_probe("fail")
    assert run.outcome.kind == "error"
    assert "the container exited with code 3" in run.outcome.error
    assert "line 1\n" in run.outcome.error and run.outcome.error.endswith("line 30")


@SQLITE
def test_a_memory_limit_kill_is_oom(run_probe):
    run = run_probe("alloc", memory="256m")
    assert run.outcome.kind == "oom", run.outcome.error
    assert "ran out of memory under its limit of 256 MiB" in run.outcome.error


@SQLITE
def test_timeout_kills_and_removes_the_container(run_probe):
    started = time.monotonic()
    run = run_probe("sleep", timeout=2)
    assert time.monotonic() - started < 30
    assert run.outcome.kind == "timeout"
    assert "exceeded its timeout of 2 s (Execution.timeout)" in run.outcome.error
    assert run.outcome.report.duration_seconds >= 2


@SQLITE
def test_datasets_are_mounted_read_only(run_probe, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    run = run_probe("readonly", datasets=str(data))
    assert run.outcome.kind == "done", run.outcome.error
    assert not run.row["data_writable"] and not (data / "x").exists()


@SQLITE
def test_should_stop_kills_and_removes_the_container(run_probe):
    first: list[float] = []

    def should_stop() -> tuple[str, str] | None:
        first.append(time.monotonic())
        return ("lost", "the lease was lost") if first[-1] - first[0] > 1 else None

    run = run_probe("sleep", should_stop=should_stop)
    assert run.outcome.kind == "stopped" and run.outcome.stop_kind == "lost"
    assert run.outcome.error == "the lease was lost"
    assert first[-1] - first[0] < 15 and len(first) >= 5  # polled about every 0.1 s


@SQLITE
def test_an_exception_while_waiting_removes_the_container(run_probe):
    first: list[float] = []

    def interrupted() -> None:
        first.append(time.monotonic())
        if first[-1] - first[0] > 1:
            raise KeyboardInterrupt  # what a signal handler's exception (ExecutorInterrupted) looks like

    with pytest.raises(KeyboardInterrupt):
        run_probe("sleep", should_stop=interrupted)
    # the fixture checks that the container is gone


@SQLITE
def test_an_exception_while_creating_removes_the_container(run_probe, monkeypatch):
    from docker.models.containers import ContainerCollection

    create = ContainerCollection.create

    def create_then_interrupt(self: Any, *args: Any, **kwargs: Any) -> Any:
        create(self, *args, **kwargs)
        raise KeyboardInterrupt  # the container exists, but the adapter never got hold of it

    monkeypatch.setattr(ContainerCollection, "create", create_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_probe("ok")


@SQLITE
def test_a_container_that_cannot_start_is_an_error(run_probe):
    run = run_probe("ok", network="no-such-network")
    assert run.outcome.kind == "error"
    assert run.outcome.error.startswith("the container could not be started: ")


@SQLITE
def test_an_unknown_resultfield_is_an_error_naming_it(run_probe):
    run = run_probe("badresults")
    assert run.outcome.kind == "error"
    assert run.outcome.error.startswith("results.json: ['nope'] are not resultfields")


# -- check() ------------------------------------------------------------------------------------------


def _adapter(**execution: Any) -> DockerAdapter:
    data = experiment_yaml("sqlite", "t_check", {"mode": {"type": "VARCHAR(20)", "values": ["ok"]}},
                           Execution={"adapter": "docker", "image": PROBE_IMAGE, **execution})
    adapter = adapter_for(parse_experiment_config(data, "exp.yml"))
    assert isinstance(adapter, DockerAdapter)
    return adapter


def test_an_unreachable_engine_is_a_config_error(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(ConfigError) as err:
        _adapter().check()
    message = str(err.value)
    assert message.startswith("cannot reach a Docker API at unix:///nonexistent.sock: ")
    assert "DOCKER_HOST=unix:///run/podman/podman.sock" in message


def test_a_missing_image_is_a_config_error(docker_client):  # noqa: F811
    with pytest.raises(ConfigError, match=r"image 'py-experimenter/no-such-image:1' is not on the engine: build or "
                                          r"load it first \(no pulls during a run\)"):
        _adapter(image="py-experimenter/no-such-image:1").check()


def test_an_image_without_entrypoint_needs_a_command(docker_client):  # noqa: F811
    with pytest.raises(ConfigError, match="has no ENTRYPOINT"):
        _adapter(image="localpython:latest").check()
    _adapter(image="localpython:latest", command=["python3", "-c", "print({mode!r})"]).check()


def test_an_unknown_placeholder_is_a_config_error(docker_client):  # noqa: F811
    with pytest.raises(ConfigError, match=r"unknown placeholder \{seed\}.*valid: attempt, data_dir"):
        _adapter(command=["{seed}"]).check()


@SQLITE
def test_remove_orphans_only_takes_lost_attempts_of_its_own_table_scope(make_experimenter, docker_client):  # noqa: F811
    from py_experimenter.adapters.docker import LABELS, SCOPE_LABEL
    from py_experimenter.adapters.scope import table_scope

    exp = make_experimenter({"mode": {"type": "VARCHAR(20)", "values": ["sleep"]}},
                            Execution={"adapter": "docker", "image": PROBE_IMAGE})
    table = exp.config.table.name
    adapter = adapter_for(exp.config)
    assert adapter.remove_orphans(lambda _e, _a: False) == 0  # unbound: removes nothing
    adapter.bind(exp.db)
    ours = table_scope(exp.db)[0]
    assert adapter.scope == ours

    def create(scope: str, experiment: int) -> Any:
        labels = {LABELS[0]: table, LABELS[1]: str(experiment), LABELS[2]: "1", SCOPE_LABEL: scope}
        return docker_client.containers.create(PROBE_IMAGE, labels=labels, network_mode="none")

    lost, live, foreign = create(ours, 1), create(ours, 2), create("0123456789abcdef", 1)
    try:
        assert adapter.remove_orphans(lambda experiment, attempt: experiment == 2) == 1
        left = {c.id for c in leftover_containers(docker_client, label=f"py_experimenter.table={table}")}
        assert left == {live.id, foreign.id}, "removed a live container or another database's"
        assert lost.id not in left
    finally:
        for container in (lost, live, foreign):
            with contextlib.suppress(Exception):
                container.remove(force=True)
