"""``launch --wait``'s progress display (launchers.progress.follow) on a real SQLite table."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from py_experimenter.exceptions import TableError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.launchers.progress import Progress, follow
from tests.conftest import experiment_yaml


def _experimenter(tmp_path: Path, rows: int) -> PyExperimenter:
    config = tmp_path / "experiment.yml"
    config.write_text(yaml.safe_dump(experiment_yaml("sqlite", "progress", {"seed": {"type": "INT",
                                                     "values": list(range(rows))}}, {"score": "DOUBLE"})))
    credentials = tmp_path / "credentials.yml"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": url}}}))
    return PyExperimenter(str(config), str(credentials), use_codecarbon=False)


def _slow(keyfields, result_processor, custom_fields):
    time.sleep(0.05)
    result_processor.process_results({"score": float(keyfields["seed"])})


def test_progress_counts():
    progress = Progress({"done": 5, "error": 1, "running": 2, "created": 4})
    assert (progress.total, progress.pending, progress.finished) == (12, 6, 6)
    assert progress.describe() == "done 5, error 1, running 2, created 4"


def test_follow_returns_when_the_table_is_drained(tmp_path: Path):
    experimenter = _experimenter(tmp_path, 20)
    experimenter.fill_table_from_config()
    worker = _experimenter(tmp_path, 20)
    thread = threading.Thread(target=worker.execute, args=(_slow,))
    out = io.StringIO()
    started = time.monotonic()
    thread.start()
    try:
        counts = follow(experimenter, out=out, interval=0.1, line_every=0.2, rich=False)
    finally:
        thread.join(30)
    assert counts == {"done": 20}
    assert time.monotonic() - started < 20
    lines = out.getvalue().strip().splitlines()
    assert len(lines) >= 2  # progress lines while it ran, then the summary
    assert re.search(r"progress: \d+/20 finished \(.*\), .*/min, ETA ", lines[0]), lines
    assert lines[-1].startswith("progress: drained in ") and lines[-1].endswith("done 20")
    assert "20/20 finished (done 20)" in lines[-2]


def test_follow_stops_when_no_executor_is_alive(tmp_path: Path):
    experimenter = _experimenter(tmp_path, 5)
    experimenter.fill_table_from_config()
    out = io.StringIO()
    calls = []
    counts = follow(experimenter, alive=lambda: calls.append(1) or 0, out=out, interval=0.1, rich=False)
    assert counts == {"created": 5} and calls == [1]
    assert out.getvalue().strip().splitlines()[-1] == (
        "progress: the executors ended with 5 experiments left (created 5); launch again to run them")


def test_follow_from_a_config_file_with_a_timeout_and_the_rich_bar(tmp_path: Path):
    experimenter = _experimenter(tmp_path, 3)
    experimenter.fill_table_from_config()
    out = io.StringIO()
    started = time.monotonic()
    counts = follow(tmp_path / "experiment.yml", alive=lambda: 1, out=out, interval=0.1, timeout=0.5, rich=True,
                    credentials=str(tmp_path / "credentials.yml"))
    assert counts == {"created": 3} and time.monotonic() - started < 10
    text = out.getvalue()
    assert "0/3" in text and "created 3" in text  # the bar's last frame
    assert text.strip().splitlines()[-1].startswith("progress: stopped following after ")


def test_follow_a_table_that_does_not_exist(tmp_path: Path):
    with pytest.raises(TableError):
        follow(_experimenter(tmp_path, 1), out=io.StringIO(), rich=False)


def test_follow_keeps_going_when_alive_cannot_tell(tmp_path: Path):
    experimenter = _experimenter(tmp_path, 2)
    experimenter.fill_table_from_config()
    answers = iter([RuntimeError("squeue: error: slurm_receive_msg: Socket timed out"), 0])

    def alive() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = io.StringIO()
    assert follow(experimenter, alive=alive, out=out, interval=0.05, rich=False) == {"created": 2}
    assert "note: cannot tell whether the executors still run (squeue: error: slurm_receive_msg" in out.getvalue()
    assert out.getvalue().strip().splitlines()[-1].startswith("progress: the executors ended with 2 experiments")
