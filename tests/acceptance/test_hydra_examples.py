"""docs/examples/hydra runs as docs/hydra.md shows: the plugin's sweep fills the table without
running it, an executor then runs every row, and the 1.4.2-style app runs its jobs at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra", reason="hydra-core is in the test extra")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "hydra"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    work = tmp_path / "hydra"
    shutil.copytree(EXAMPLE, work)
    return work


def _call(work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    done = subprocess.run([sys.executable, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _status(work: Path) -> str:
    return _call(work, "-m", "py_experimenter", "status", "experiment.yml").stdout


def test_the_plugin_example_fills_then_an_executor_runs_every_row(example: Path) -> None:
    sweep = _call(example, "train.py", "--multirun", "hydra/launcher=py_experimenter",
                  "hydra.launcher.experiment_config=experiment.yml", "dataset=iris,wine", "seed=0,1,2",
                  "model=small,large")
    assert "12 rows added, 0 already there" in sweep.stdout, sweep.stdout
    assert "created              12" in _status(example)
    ran = _call(example, "-m", "py_experimenter", "run", "experiment.yml", "--function",
                "py_experimenter.hydra_task:run_hydra_task")
    assert "ran 12 experiments" in ran.stdout, ran.stdout + ran.stderr
    assert "done                 12" in _status(example)


def test_the_142_example_runs_each_job_and_skips_done_ones(example: Path) -> None:
    _call(example, "train_142.py", "--multirun", "dataset=iris,wine", "seed=0", "model=small")
    again = _call(example, "train_142.py", "--multirun", "dataset=iris", "seed=0,1", "model=small")
    assert "is already 'done': skipped" in again.stdout + again.stderr
    assert "done                  3" in _status(example)
