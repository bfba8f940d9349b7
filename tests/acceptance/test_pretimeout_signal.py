"""Slurm's / submitit's pre-timeout signal (SIGUSR2) hands the running experiment back as
``interrupted`` within the grace period, and another executor finishes it; a bad --deadline is
one line, exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import yaml

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import Backend, experiment_yaml

FUNCTION = textwrap.dedent('''
    import os, time

    def run(keyfields, result_processor, custom_fields):
        marker = custom_fields["marker"]
        if not os.path.exists(marker):   # the first attempt runs "too long"
            open(marker, "w").close()
            time.sleep(120)
        result_processor.process_results({"score": 1.0})
''')


def _start(config: Path, credentials: Path, work: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "py_experimenter", "run", str(config), "--credentials", str(credentials),
         "--function", str(work / "fn.py") + ":run", *extra],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_usr2_hands_the_running_experiment_back(backend: Backend):
    work = backend.workdir
    (work / "fn.py").write_text(FUNCTION)
    table = f"usr2_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml(backend.provider, table, {"seed": {"type": "INT", "values": [1]}}, {"score": "DOUBLE"},
                           Custom={"marker": str(work / "started")})
    config = work / "experiment.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = backend.credentials_file()
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    experimenter.fill_table_from_config()
    try:
        first = _start(config, credentials, work, "--grace-seconds", "2")
        deadline = time.monotonic() + 60
        while not (work / "started").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            time.sleep(0.1)
        signalled = time.monotonic()
        first.send_signal(signal.SIGUSR2)
        output, _ = first.communicate(timeout=30)
        assert first.returncode == 0, output
        assert time.monotonic() - signalled < 10  # the 2 s grace period, not the 120 s experiment
        assert "SIGUSR2" in output
        row = experimenter.get_table().iloc[0]
        assert row["status"] == "created"
        attempts = experimenter.get_attempts_table()
        assert list(attempts["outcome"]) == ["interrupted"]

        second = _start(config, credentials, work)
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 0, output
        row = experimenter.get_table().iloc[0]
        assert row["status"] == "done" and row["score"] == 1.0 and row["attempt"] == 2
        assert list(experimenter.get_attempts_table().sort_values("attempt")["outcome"]) == ["interrupted", "done"]
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_bad_deadline_is_one_line(tmp_path: Path):
    config = tmp_path / "experiment.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("sqlite", "t", {"seed": {"type": "INT", "values": [1]}})))
    done = subprocess.run([sys.executable, "-m", "py_experimenter", "run", str(config), "--function", "os:getcwd",
                           "--deadline", "soon"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PY_EXPERIMENTER_DEADLINE": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--deadline='soon'" in lines[0] and "'90m'" in lines[0]
