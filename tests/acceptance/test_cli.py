"""The py-experimenter command: fill, `run` processes racing, status, run options, reset, cancel, errors."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from py_experimenter.cli import main as cli_main
from py_experimenter.config import ExecutionSpec
from py_experimenter.config_execution import override_execution
from py_experimenter.exceptions import ConfigError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from tests.conftest import Backend, experiment_yaml

FUNCTION = textwrap.dedent('''
    import os

    def run(keyfields, result_processor, custom_fields):
        fd = os.open(custom_fields["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{result_processor.experiment_id}\\n".encode())
        os.close(fd)
        result_processor.process_results({"score": keyfields["seed"] * 0.5})
        if keyfields["seed"] == 7:
            raise RuntimeError("seed 7 always fails")
''')


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "py_experimenter.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _config(backend: Backend, table: str, ledger: Path) -> Path:
    keyfields = {"dataset": {"type": "VARCHAR(20)", "values": ["a", "b", "c"]},
                 "seed": {"type": "INT", "values": {"start": 0, "stop": 100}}}
    data = experiment_yaml(backend.provider, table, keyfields, {"score": "DOUBLE"}, Custom={"ledger": str(ledger)})
    path = backend.workdir / "experiment.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_fill_run_status_from_the_shell(backend: Backend):
    work = backend.workdir
    ledger = work / "ledger.txt"
    table = f"cli_{uuid.uuid4().hex[:10]}"
    config = str(_config(backend, table, ledger))
    credentials = str(backend.credentials_file())
    (work / "experiments_fn.py").write_text(FUNCTION)

    dry = cli("fill", config, "--dry-run", cwd=work)
    assert dry.returncode == 0 and "300 experiments" in dry.stdout

    filled = cli("fill", config, "--credentials", credentials, cwd=work)
    assert filled.returncode == 0, filled.stderr
    assert "added 300" in filled.stdout

    runners = [
        subprocess.Popen([sys.executable, "-m", "py_experimenter.cli", "run", config, "--credentials", credentials,
                          "--function", "experiments_fn:run", "--n-jobs", "2"],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [runner.communicate(timeout=300) for runner in runners]
    assert [r.returncode for r in runners] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    total = sum(int(out.split("ran ")[1].split()[0]) for out, _ in outputs)
    assert total == 300

    counts = collections.Counter(ledger.read_text().split())
    assert len(counts) == 300 and set(counts.values()) == {1}

    status = cli("status", config, "--credentials", credentials, cwd=work)
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[3:]}
    assert lines["done"] == "297" and lines["error"] == "3" and lines["total"] == "300"

    by = cli("status", config, "--credentials", credentials, "--by", "dataset", cwd=work)
    assert by.returncode == 0 and "99" in by.stdout

    cleanup = cli("status", config, "--credentials", credentials, "--by", "nope", cwd=work)
    assert cleanup.returncode == 2 and "keyfields are ['dataset', 'seed']" in cleanup.stderr
    _drop(backend, table)


def _drop(backend: Backend, table: str) -> None:
    from py_experimenter.experimenter import PyExperimenter

    PyExperimenter(str(backend.workdir / "experiment.yml"), str(backend.credentials_file()),
                   use_codecarbon=False).delete_table()


def test_bad_input_is_one_clear_line(tmp_path: Path):
    config = tmp_path / "bad.yml"
    config.write_text("PY_EXPERIMENTER:\n  Database:\n    provider: sqlite\n    database: x\n"
                      "    table:\n      name: t\n      keyfields:\n        seed:\n          value: [1]\n")
    result = cli("fill", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "PY_EXPERIMENTER.Database.table.keyfields.seed" in result.stderr and "values" in result.stderr

    good = tmp_path / "good.yml"
    good.write_text(config.read_text().replace("value:", "values:"))
    no_function = cli("run", str(good), cwd=tmp_path)
    assert no_function.returncode == 2 and "--function" in no_function.stderr
    bad_function = cli("run", str(good), "--function", "nosuchmodule:run", cwd=tmp_path)
    assert bad_function.returncode == 2 and "no module named 'nosuchmodule'" in bad_function.stderr


def test_mysql_without_credentials_names_the_fix(tmp_path: Path):
    config = tmp_path / "mysql.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("mysql", "t", {"seed": {"type": "INT", "values": [1]}})))
    env = {"PATH": "/usr/bin:/bin"}
    result = cli("status", str(config), "--credentials", str(tmp_path / "missing.yml"), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "missing.yml" in result.stderr and "PY_EXPERIMENTER_CREDENTIALS" in result.stderr


# -- in-process: run option overrides, reset, cancel -----------------------------------------

def quick_experiment(keyfields, result_processor, custom_fields):
    """An experiment function for the in-process tests (``--function tests.acceptance.test_cli:...``)."""
    result_processor.process_results({"score": 1.0})
    if keyfields["dataset"] == "b":
        raise RuntimeError("dataset b always fails")


QUICK = "tests.acceptance.test_cli:quick_experiment"
KEYFIELDS = {"dataset": {"type": "VARCHAR(20)", "values": ["a", "b"]}, "seed": {"type": "INT", "values": [1, 2, 3]}}


def _run_cli(*args: str) -> int:
    return cli_main([str(a) for a in args])


@pytest.fixture
def filled(make_experimenter, backend: Backend) -> tuple[PyExperimenter, list[str]]:
    """A filled table (a × 1..3, b × 1..3) and the CLI arguments naming it."""
    experimenter = make_experimenter(KEYFIELDS, {"score": "DOUBLE"})
    experimenter.fill_table_from_config()
    return experimenter, [experimenter.config.source, "--credentials", str(backend.credentials_file())]


def test_override_execution_applies_the_file_rules():
    spec = ExecutionSpec(lease_seconds=120, heartbeat_seconds=30)
    new = override_execution(spec, "command line", lease_seconds="600", max_attempts="1", memory="2g",
                             isolation="Process", timeout=None)
    assert (new.lease_seconds, new.max_attempts, new.memory, new.isolation) == (600.0, 1, "2g", "process")
    assert new.heartbeat_seconds == 30 and new.timeout is None and spec.lease_seconds == 120
    assert override_execution(spec, "command line") == spec

    cases = [
        ({"heartbeat_seconds": "120"}, "--heartbeat-seconds", "must be less than lease_seconds"),
        ({"lease_seconds": 10}, "--lease-seconds", "must be less than lease_seconds (10)"),
        ({"memory": "lots"}, "--memory", "invalid memory size 'lots'"),
        ({"timeout": "-5"}, "--timeout", "expected a number > 0"),
        ({"max_attempts": "0"}, "--max-attempts", "expected an integer >= 1"),
        ({"grace_seconds": "soon"}, "--grace-seconds", "expected a number, got 'soon'"),
        ({"isolation": "thread"}, "--isolation", "expected one of inline, process"),
        ({"database_outage_seconds": "-1"}, "--database-outage-seconds", "expected a number >= 0"),
    ]
    for values, option, message in cases:
        with pytest.raises(ConfigError) as caught:
            override_execution(spec, "command line", **values)
        assert str(caught.value).startswith(f"command line: {option}: "), caught.value
        assert message in str(caught.value)


def test_run_options_reach_the_executor(filled, capsys):
    experimenter, target = filled
    # Experiment 1 was claimed by an executor that vanished: its lease expired a minute ago.
    stale = ExperimentQueue(experimenter.db, WorkerIdentity(name="vanished"), lease_seconds=-60).claim()
    assert stale is not None and stale.id == 1
    # --max-attempts 1: the lost try fails it instead of running it again (the file says 3).
    code = _run_cli("run", *target, "--function", QUICK, "--max-attempts", "1", "--lease-seconds", "60",
                    "--heartbeat-seconds", "15")
    assert code == 0
    assert "ran 5 experiments" in capsys.readouterr().out
    table = experimenter.get_table().set_index("ID")
    assert table.loc[1, "status"] == "error" and "max_attempts=1" in table.loc[1, "error"]
    assert list(experimenter.get_attempts_table()["outcome"].iloc[:1]) == ["lost"]


def test_run_options_from_the_environment_and_bad_values(tmp_path, monkeypatch, capsys):
    config = tmp_path / "exp.yml"
    data = experiment_yaml("sqlite", "t", {"seed": {"type": "INT", "values": [1]}})
    config.write_text(yaml.safe_dump(data))
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": f"sqlite:///{tmp_path / 'x.db'}"}}}))
    base = ["run", config, "--credentials", credentials, "--function", QUICK]

    assert _run_cli(*base, "--heartbeat-seconds", "500") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("py-experimenter: error: command line: --heartbeat-seconds: ") and "\n" not in err

    monkeypatch.setenv("PY_EXPERIMENTER_MEMORY", "lots")
    assert _run_cli(*base) == 2
    err = capsys.readouterr().err.strip()
    assert "--memory: invalid memory size 'lots'" in err and "\n" not in err

    monkeypatch.setenv("PY_EXPERIMENTER_MEMORY", "1g")
    monkeypatch.setenv("PY_EXPERIMENTER_LEASE_SECONDS", "5")
    seen = {}

    def execute(self: PyExperimenter, *args: object, **kwargs: object) -> int:
        seen["spec"] = self.config.execution
        return 0

    monkeypatch.setattr(PyExperimenter, "execute", execute)
    assert _run_cli(*base, "--timeout", "30", "--heartbeat-seconds", "1", "--isolation", "process") == 0
    spec = seen["spec"]
    assert (spec.memory, spec.lease_seconds, spec.heartbeat_seconds, spec.timeout, spec.isolation) == (
        "1g", 5.0, 1.0, 30.0, "process")


def test_reset_and_cancel_print_counts(filled, capsys):
    experimenter, target = filled
    assert _run_cli("run", *target, "--function", QUICK) == 0
    capsys.readouterr()

    assert _run_cli("reset", *target, "--status", "error", "--where", "seed >= 2") == 0
    assert "reset 2 experiments to 'created'" in capsys.readouterr().out
    table = experimenter.get_table().set_index("ID")
    assert list(table["status"]) == ["done"] * 3 + ["error", "created", "created"]
    assert len(experimenter.get_attempts_table()) == 6

    assert _run_cli("reset", *target, "--status", "error", "--status", "created") == 0
    assert "reset 3 experiments" in capsys.readouterr().out

    assert _run_cli("cancel", *target, "--id", "4", "--id", "1") == 0
    out = capsys.readouterr().out
    assert "cancel requested for 0 running experiments; cancelled 1 experiments that had not started" in out
    assert _run_cli("cancel", *target, "--where", "dataset = 'b'") == 0
    assert "cancelled 2 experiments" in capsys.readouterr().out
    table = experimenter.get_table().set_index("ID")
    assert list(table["status"]) == ["done"] * 3 + ["error"] * 3
    assert set(table["error"].iloc[3:]) == {"cancelled before it started (cancel requested)"}

    assert _run_cli("cancel", *target) == 2
    assert "name the experiments to cancel: --id N" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["reset", "cancel"])
def test_bad_where_is_one_line_and_changes_nothing(filled, capsys, command):
    experimenter, target = filled
    before = experimenter.get_table()
    status = ["--status", "all"] if command == "reset" else []
    assert _run_cli(command, *target, *status, "--where", "no_such_column = 'x'") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("py-experimenter: error: invalid --where condition \"no_such_column = 'x'\": ")
    assert "\n" not in err and "is not a column of table" in err and "'seed'" in err  # lists the valid columns
    assert experimenter.get_table().equals(before)

    assert _run_cli(command, *target, *status, "--where", " ") == 2
    assert "invalid --where condition ' ': it is empty" in capsys.readouterr().err


def test_reset_from_the_shell(filled):
    experimenter, target = filled
    experimenter.execute(quick_experiment)
    entry_point = Path(sys.executable).with_name("py-experimenter")
    assert entry_point.exists(), "install the package (pip install -e .) for the py-experimenter command"
    result = subprocess.run([str(entry_point), "reset", *target, "--status", "error", "--where", "seed = 3"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("reset 1 experiments to 'created' in " + repr(experimenter.config.table.name))
    assert experimenter.get_table()["status"].tolist() == ["done"] * 3 + ["error", "error", "created"]

    bad = subprocess.run([str(entry_point), "reset", *target, "--status", "error", "--where", "seed ="],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "invalid --where condition" in bad.stderr
