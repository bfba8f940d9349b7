"""The py-experimenter command: fill, several `run` processes racing, status, clear errors."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import yaml

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
    assert bad_function.returncode == 2 and "cannot import 'nosuchmodule'" in bad_function.stderr


def test_mysql_without_credentials_names_the_fix(tmp_path: Path):
    config = tmp_path / "mysql.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("mysql", "t", {"seed": {"type": "INT", "values": [1]}})))
    env = {"PATH": "/usr/bin:/bin"}
    result = cli("status", str(config), "--credentials", str(tmp_path / "missing.yml"), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "missing.yml" in result.stderr and "PY_EXPERIMENTER_CREDENTIALS" in result.stderr
