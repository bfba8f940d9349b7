"""``py-experimenter launch``: --help is enough to use it; bad input fails once, in one line, before
anything starts (exit 2); SSH host lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from py_experimenter.cli import main as cli_main
from py_experimenter.exceptions import LaunchError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.launchers.ssh_hosts import Host, parse_hosts, read_hosts_file
from tests.conftest import experiment_yaml

FUNCTION = "def run(keyfields, result_processor, custom_fields):\n    pass\n"


@pytest.fixture
def sqlite_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A filled SQLite table in tmp_path (the current folder) and its experiment file."""
    monkeypatch.chdir(tmp_path)
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": f"sqlite:///{tmp_path / 'x.db'}"}}}))
    monkeypatch.setenv("PY_EXPERIMENTER_CREDENTIALS", str(credentials))
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("sqlite", "launch_cli", {"seed": {"type": "INT",
                                                                                     "values": [1, 2, 3]}})))
    (tmp_path / "fn.py").write_text(FUNCTION)
    PyExperimenter(str(config), str(credentials), use_codecarbon=False).fill_table_from_config()
    return config


def launch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["launch", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def nothing_started(folder: Path) -> bool:
    return not list((folder / "py_experimenter_logs").rglob("launch-*.json"))


def test_help_has_examples_for_every_backend(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        cli_main(["launch", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for backend in ("local", "ssh", "slurm"):
        assert f"py-experimenter launch exp.yml --on {backend} " in text
        assert f"{backend} options (--on {backend})" in text
    for option in ("--hosts", "--remote-python", "--ssh-option", "--stop", "--wait", "--fill", "-- RUN_OPTIONS",
                   "py-experimenter fill CONFIG", "shared file\nsystem", "exit codes"):
        assert option in text, option


def test_bad_run_options_fail_once_before_anything_starts(sqlite_table: Path, capsys: pytest.CaptureFixture[str]):
    base = [str(sqlite_table), "--on", "local", "-n", "3", "--function", "fn.py:run"]
    cases = [
        (["--", "--n-jobs", "x"], "the run options after --: --n-jobs='x': not an integer"),
        (["--", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--", "--function", "other:run"], "--function belongs to launch itself: write it before --"),
        (["--", "--deadline", "soon"], "--deadline='soon': not a deadline"),
        (["--", "--heartbeat-seconds", "500"], "--heartbeat-seconds: heartbeat_seconds (500) must be less than"),
    ]
    for extra, message in cases:
        code, out, err = launch(capsys, *base, *extra)
        assert code == 2, (extra, out, err)
        assert err.count("\n") == 1 and err.startswith("py-experimenter: error: ") and message in err, err
        assert "started" not in out
    assert nothing_started(sqlite_table.parent)


def test_unknown_or_missing_backend_lists_the_backends(sqlite_table: Path, capsys: pytest.CaptureFixture[str]):
    code, _, err = launch(capsys, str(sqlite_table), "--on", "kubernetes", "--function", "fn.py:run")
    assert code == 2 and "unknown backend; choose one of local, ssh, slurm" in err
    code, _, err = launch(capsys, str(sqlite_table), "--function", "fn.py:run")
    assert code == 2 and "--on local|ssh|slurm" in err
    assert nothing_started(sqlite_table.parent)


def test_launch_checks_table_function_and_counts_first(tmp_path: Path, sqlite_table: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    code, _, err = launch(capsys, str(sqlite_table), "--on", "local", "--table", "never_filled", "--function",
                          "fn.py:run")
    assert code == 2 and "table 'never_filled' does not exist yet" in err
    assert "run py-experimenter fill" in err and "--fill" in err
    code, _, err = launch(capsys, str(sqlite_table), "--on", "local")
    assert code == 2 and "no experiment function: pass --function" in err
    code, _, err = launch(capsys, str(sqlite_table), "--on", "local", "--function", "nosuchmodule:run")
    assert code == 2 and "nosuchmodule" in err
    code, _, err = launch(capsys, str(sqlite_table), "--on", "local", "-n", "0", "--function", "fn.py:run")
    assert code == 2 and "--executors=0" in err
    code, _, err = launch(capsys, str(sqlite_table), "--on", "ssh", "--function", "fn.py:run")
    assert code == 2 and "--on ssh needs hosts" in err
    code, _, err = launch(capsys, str(sqlite_table), "--on", "ssh", "--hosts", "a,a", "--function", "fn.py:run")
    assert code == 2 and "given twice" in err
    assert nothing_started(tmp_path)


def test_stop_without_launches_says_so(sqlite_table: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = launch(capsys, str(sqlite_table), "--stop")
    assert code == 0 and "no launch of table 'launch_cli' to stop" in out


def test_host_lists_and_files(tmp_path: Path):
    assert parse_hosts("node1, alice@node2:2222*4,[::1]:22*2") == [
        Host("node1"), Host("node2", "alice", 2222, 4), Host("::1", None, 22, 2)]
    assert Host("node2", "alice", 2222).ssh_args() == ["-p", "2222", "alice@node2"]
    assert Host("::1", None, 22).label == "[::1]:22"
    for bad, message in (("node1*0", "positive integer"), ("a:b:c", "is not a host"), ("node:70000", "65535")):
        with pytest.raises(LaunchError, match=message):
            parse_hosts(bad)
    hosts = tmp_path / "hosts"
    hosts.write_text("# lab machines\nnode1 4\nbob@node2:2200   # two GPUs\n\n")
    assert read_hosts_file(hosts) == [Host("node1", executors=4), Host("node2", "bob", 2200)]
    hosts.write_text("node1 4 extra\n")
    with pytest.raises(LaunchError, match="line 1"):
        read_hosts_file(hosts)
    with pytest.raises(LaunchError, match="cannot read it"):
        read_hosts_file(tmp_path / "missing")
