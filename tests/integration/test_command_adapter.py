"""The command adapter on every backend: parameters in, results and logs back, and every outcome."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from py_experimenter.adapters import adapter_for
from py_experimenter.adapters.command import CommandAdapter
from py_experimenter.config import parse_experiment_config
from py_experimenter.exceptions import ConfigError, LeaseLostError
from py_experimenter.queue import Experiment, ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor
from tests.conftest import experiment_yaml

KEYFIELDS = {"dataset": {"type": "VARCHAR(50)", "values": ["iris"]}, "seed": {"type": "INT", "values": [1]}}
RESULTFIELDS = {"argv": "LONGTEXT", "params_file": "LONGTEXT", "env": "LONGTEXT", "cwd": "LONGTEXT", "value": "INT"}
LOGTABLES = {"events": {"step": "INT"}}
CUSTOM = {"budget": 5}

PRELUDE = 'import os as _os\n_cwd = _os.getcwd()\n_os.chdir(_os.environ["PY_EXPERIMENTER_RESULTS_DIR"])\n'

# Reports what arrived: the argument, params.json, the environment and the working directory.
ECHO = """
import json, os, sys
params = json.loads(sys.argv[1])
with open(os.path.join(os.environ["PY_EXPERIMENTER_RESULTS_DIR"], "params.json")) as handle:
    from_file = json.load(handle)
env = {k: v for k, v in os.environ.items()
       if k.startswith(("PY_EXPERIMENTER_", "TEST_", "CUDA_")) and not k.startswith("PY_EXPERIMENTER_TEST_")}
with open("results.json", "w") as handle:
    json.dump({"argv": json.dumps(params), "params_file": json.dumps(from_file), "env": json.dumps(env),
               "cwd": _cwd}, handle)
with open("logs.jsonl", "w") as handle:
    handle.write('{"events": {"step": 1}}\\n\\n{"events": [{"step": 2}, {"step": 3}]}\\n')
"""


def _alive(pid: int, within: float = 0.0) -> bool:
    """Whether ``pid`` still runs after ``within`` seconds (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + within
    while True:
        try:
            running = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            running = False
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.02)


class Run:
    """One adapter run's inputs and what came back."""

    def __init__(self, exp: Any, adapter: CommandAdapter, experiment: Experiment, outcome: Any):
        self.exp, self.adapter, self.experiment, self.outcome = exp, adapter, experiment, outcome

    @property
    def row(self) -> Any:
        return self.exp.get_table().iloc[0]

    def folder(self, results_dir: Path) -> Path:
        return results_dir / self.exp.config.table.name / str(self.experiment.id) / "attempt-1"


RunCommand = Callable[..., Run]


@pytest.fixture
def run_command(make_experimenter: Any, tmp_path: Path) -> Iterator[RunCommand]:
    """Write ``script`` to a file, make a table with an ``adapter: command`` config, claim its row, run it."""
    queues: list[ExperimentQueue] = []

    def run(script: str = ECHO, *, command: list[str] | None = None,
            should_stop: Callable[[], tuple[str, str] | None] | None = None,
            before_run: Callable[[Any], None] | None = None, **execution: Any) -> Run:
        path = tmp_path / "script.py"
        # The command runs in the executor's directory; these scripts work in their attempt folder.
        path.write_text(PRELUDE + textwrap.dedent(script))
        exp = make_experimenter(KEYFIELDS, RESULTFIELDS, LOGTABLES, Custom=CUSTOM, Execution={
            "adapter": "command", "command": command or [sys.executable, str(path), "{params}"], **execution})
        adapter = adapter_for(exp.config)
        assert isinstance(adapter, CommandAdapter)
        adapter.check()
        exp.fill_table_from_config()
        queue = ExperimentQueue(exp.db, WorkerIdentity())
        queues.append(queue)
        experiment = queue.claim()
        assert experiment is not None
        if before_run is not None:
            before_run(exp)
        outcome = adapter.run(experiment, ResultProcessor(queue, experiment), exp.config.custom, should_stop)
        return Run(exp, adapter, experiment, outcome)

    yield run
    for queue in queues:
        queue.close()


def test_parameters_arrive_and_results_and_logs_come_back(run_command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"TEST_SEED": "{seed}", "TEST_BUDGET": "{budget}", "TEST_FILE": "{params_file}", "TEST_BRACES": "{{x}}",
           "TEST_ID": "{experiment_id}/{attempt}/{dataset}"}
    run = run_command(results_dir="results", env=env)
    assert run.outcome.kind == "done" and run.outcome.error is None
    folder = run.folder(tmp_path / "results")
    expected = {"experiment_id": run.experiment.id, "attempt": 1, "table": run.exp.config.table.name,
                "keyfields": {"dataset": "iris", "seed": 1}, "custom": CUSTOM, "results_dir": str(folder),
                "data_dir": None}
    row = run.row
    assert json.loads(row["argv"]) == expected
    assert json.loads(row["params_file"]) == expected
    assert row["cwd"] == os.getcwd()  # the executor's directory: relative paths in the command work
    seen = json.loads(row["env"])
    assert json.loads(seen.pop("PY_EXPERIMENTER_PARAMS")) == expected
    assert seen == {
        "PY_EXPERIMENTER_RESULTS_DIR": str(folder), "PY_EXPERIMENTER_EXPERIMENT_ID": str(run.experiment.id),
        "PY_EXPERIMENTER_ATTEMPT": "1", "TEST_SEED": "1", "TEST_BUDGET": "5", "TEST_BRACES": "{x}",
        "TEST_FILE": str(folder / "params.json"), "TEST_ID": f"{run.experiment.id}/1/iris",
    }
    assert sorted(run.exp.get_logtable("events")["step"]) == [1, 2, 3]
    assert {p.name for p in folder.iterdir()} == {"params.json", "results.json", "logs.jsonl", "output.log"}
    report = run.outcome.report
    assert report.image is None and report.duration_seconds > 0 and report.cpu_seconds > 0
    assert report.max_rss_mb > 1
    assert json.loads(report.limits) == {"memory": None, "timeout": None, "gpus": 0}


def test_placeholders_fill_the_command_line_and_datasets_are_given_by_host_path(run_command, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    script = """
        import json, os, sys
        with open("results.json", "w") as handle:
            json.dump({"argv": json.dumps(sys.argv[1:]), "env": os.environ["PY_EXPERIMENTER_DATA_DIR"]}, handle)
    """
    run = run_command(script, command=[sys.executable, str(tmp_path / "script.py"), "--seed={seed:03d}",
                                       "{dataset}", "{data_dir}", "{{literal}}"], datasets=str(data))
    assert run.outcome.kind == "done", run.outcome.error
    assert json.loads(run.row["argv"]) == ["--seed=001", "iris", str(data), "{literal}"]
    assert run.row["env"] == str(data)


def test_a_failing_command_is_an_error_with_the_last_40_lines_and_its_results_are_kept(run_command):
    script = """
        import json, sys
        json.dump({"value": 7}, open("results.json", "w"))
        for i in range(1, 51):
            print(f"line {i}", file=sys.stderr)
        sys.exit(3)
    """
    run = run_command(script)
    assert run.outcome.kind == "error"
    error = run.outcome.error
    assert "exited with code 3" in error
    shown = [line for line in error.splitlines() if line.startswith("line ")]
    assert shown == [f"line {i}" for i in range(11, 51)]
    assert run.row["value"] == 7


def test_timeout_kills_the_command_and_what_it_started(run_command, tmp_path):
    script = f"""
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        open({str(tmp_path / "grandchild")!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    started = time.monotonic()
    run = run_command(script, timeout=1)
    assert time.monotonic() - started < 15
    assert run.outcome.kind == "timeout"
    assert "exceeded its timeout of 1 s (Execution.timeout)" in run.outcome.error
    assert run.outcome.report.duration_seconds >= 1
    # SIGKILL went to the whole group; a process we do not reap dies a moment later
    assert not _alive(int((tmp_path / "grandchild").read_text()), within=5)


def test_should_stop_kills_the_command_and_reports_stopped(run_command, tmp_path):
    flag = tmp_path / "started"
    script = f"""
        import os, time
        open({str(flag)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """
    calls = []

    def should_stop() -> tuple[str, str] | None:
        calls.append(time.monotonic())
        return ("cancelled", "cancel requested") if flag.exists() else None

    started = time.monotonic()
    run = run_command(script, should_stop=should_stop)
    assert time.monotonic() - started < 15
    assert run.outcome.kind == "stopped" and run.outcome.stop_kind == "cancelled"
    assert run.outcome.error == "cancel requested"
    assert not _alive(int(flag.read_text()))
    assert run.row["status"] == "running"  # the executor, not the adapter, finishes the row


def test_an_exception_while_waiting_kills_and_reaps_the_command(run_command, tmp_path):
    flag = tmp_path / "started"
    script = f"""
        import os, time
        open({str(flag)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """

    def interrupted() -> None:
        if flag.exists():
            raise KeyboardInterrupt  # what a signal handler's exception (ExecutorInterrupted) looks like

    with pytest.raises(KeyboardInterrupt):
        run_command(script, should_stop=interrupted)
    assert not _alive(int(flag.read_text()))


def test_a_template_that_does_not_fit_the_values_is_an_error_of_that_experiment(run_command):
    run = run_command(command=[sys.executable, "-c", "pass", "{dataset:03d}"])
    assert run.outcome.kind == "error"
    assert "Execution.command[3]: cannot fill in '{dataset:03d}' for experiment" in run.outcome.error


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('json.dump({"nope": 1}, open("results.json", "w"))', ["results.json:", "'nope'", "resultfields"]),
        ('open("results.json", "w").write("[1, 2]")', ["results.json:", "JSON object"]),
        ('open("results.json", "w").write("{bad")', ["results.json:", "not a valid JSON"]),
        ('open("logs.jsonl", "w").write(\'{"events": {"step": 1}}\\n{bad\\n\')', ["logs.jsonl line 2:", "JSON"]),
        ('open("logs.jsonl", "w").write(\'{"nolog": {"a": 1}}\\n\')', ["logs.jsonl line 1:", "'nolog'", "events"]),
        ('open("logs.jsonl", "w").write(\'{"events": {"stp": 1}}\\n\')', ["logs.jsonl line 1:", "stp", "step"]),
    ],
    ids=["unknown-resultfield", "results-not-object", "results-not-json", "log-not-json", "unknown-logtable",
         "unknown-log-column"],
)
def test_bad_results_or_logs_make_an_error_naming_the_file_and_problem(run_command, script, expected):
    run = run_command("import json\n" + script)
    assert run.outcome.kind == "error"
    for part in expected:
        assert part in run.outcome.error


def test_log_lines_before_a_bad_one_are_kept(run_command):
    run = run_command('open("logs.jsonl", "w").write(\'{"events": {"step": 1}}\\n{"events": {"step": 2}}\\n7\\n\')')
    assert run.outcome.kind == "error" and "logs.jsonl line 3" in run.outcome.error
    assert sorted(run.exp.get_logtable("events")["step"]) == [1, 2]


def test_a_lost_lease_propagates(run_command):
    with pytest.raises(LeaseLostError):
        run_command('import json\njson.dump({"value": 1}, open("results.json", "w"))',
                    before_run=lambda exp: exp.reset_experiments("running"))


def test_memory_limit_is_an_address_space_limit_and_a_memory_error_is_oom(run_command):
    run = run_command("hog = bytearray(2 * 1024**3)\n", memory="256m")
    assert run.outcome.kind == "oom", run.outcome.error
    assert "ran out of memory (address-space limit 256 MiB, Execution.memory)" in run.outcome.error
    assert "MemoryError" in run.outcome.error
    assert json.loads(run.outcome.report.limits)["memory"] == 256 * 2**20


@pytest.mark.parametrize("command", [
    [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
    ["/bin/sh", "-c", "exit 137"],
], ids=["sigkill", "exit-137"])
def test_a_kill_we_did_not_send_is_oom(run_command, command):
    run = run_command(command=command)
    assert run.outcome.kind == "oom" and "SIGKILL" in run.outcome.error


def test_a_signal_other_than_sigkill_is_an_error(run_command):
    run = run_command(command=[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert run.outcome.kind == "error" and "signal SIGTERM" in run.outcome.error


def test_a_missing_executable_is_an_error_not_a_crash(run_command):
    run = run_command(command=["/nonexistent/program", "{params}"])
    assert run.outcome.kind == "error"
    assert "cannot start the command '/nonexistent/program'" in run.outcome.error


def test_without_results_dir_a_temporary_folder_is_used_and_removed(run_command):
    run = run_command()
    assert run.outcome.kind == "done", run.outcome.error
    folder = Path(json.loads(run.row["argv"])["results_dir"])
    assert folder.name == "attempt-1" and not folder.exists()


@pytest.mark.parametrize(("preset", "expected"), [(None, "0,1"), ("3", "3")])
def test_gpus_set_cuda_visible_devices_unless_already_set(run_command, monkeypatch, preset, expected):
    if preset is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", preset)
    run = run_command(gpus=2)
    assert json.loads(run.row["env"])["CUDA_VISIBLE_DEVICES"] == expected


# -- check(): no database needed ------------------------------------------------------------------


def _adapter(**execution: Any) -> CommandAdapter:
    data = experiment_yaml("sqlite", "t_check", KEYFIELDS, Custom=CUSTOM,
                           Execution={"adapter": "command", **execution})
    adapter = adapter_for(parse_experiment_config(data, "exp.yml"))
    assert isinstance(adapter, CommandAdapter)
    return adapter


@pytest.mark.parametrize("where", ["command", "env"])
def test_an_unknown_placeholder_is_a_config_error_listing_the_valid_names(where):
    execution: dict[str, Any] = {"command": ["run", "{seed}"]}
    if where == "command":
        execution["command"] = ["run", "--x={nope}"]
    else:
        execution["env"] = {"TEST_X": "{nope}"}
    with pytest.raises(ConfigError) as err:
        _adapter(**execution).check()
    message = str(err.value)
    assert message.startswith("exp.yml: PY_EXPERIMENTER.Execution.")
    assert "unknown placeholder {nope}" in message
    for name in ("attempt", "budget", "data_dir", "dataset", "experiment_id", "params", "params_file",
                 "results_dir", "seed"):
        assert name in message


def test_a_malformed_template_is_a_config_error():
    with pytest.raises(ConfigError, match=r"command\[1\]: malformed template '\{seed'"):
        _adapter(command=["run", "{seed"]).check()


def test_a_missing_datasets_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets folder .* does not exist"):
        _adapter(command=["run"], datasets=str(tmp_path / "missing")).check()


def test_an_unwritable_results_dir_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the results folder"):
        _adapter(command=["run"], results_dir=str(tmp_path / "file" / "results")).check()


def test_adapter_for_the_function_adapter_is_a_value_error():
    data = experiment_yaml("sqlite", "t_check", KEYFIELDS)
    with pytest.raises(ValueError, match="function"):
        adapter_for(parse_experiment_config(data, "exp.yml"))


def test_check_accepts_format_specs_and_attribute_lookups():
    _adapter(command=["run", "{seed:03d}", "{params!s}", "{dataset[0]}", "{{not a placeholder}}"]).check()
