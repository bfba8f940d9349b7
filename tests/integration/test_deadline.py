"""An executor with a deadline claims no experiment that cannot finish before it, and leaves."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from py_experimenter.status import ExperimentStatus
from tests.conftest import MakeExperimenter

KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2, 3]}}


def sleepy(seconds: float) -> Any:
    def run(keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
        time.sleep(seconds)
    return run


def statuses(experimenter: Any) -> list[str]:
    return sorted(experimenter.get_table()["status"])


def test_near_deadline_with_expected_seconds_claims_nothing(make_experimenter: MakeExperimenter,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture):
    experimenter = make_experimenter(KEYFIELDS, Execution={"expected_seconds": 60, "grace_seconds": 1})
    experimenter.fill_table_from_config()
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "+20")
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert experimenter.execute(sleepy(0)) == 0
    assert statuses(experimenter) == ["created"] * 3
    assert any("not claiming another experiment" in r.message and "about 60 s" in r.message for r in caplog.records)


def test_far_deadline_drains_the_table(make_experimenter: MakeExperimenter, monkeypatch: pytest.MonkeyPatch):
    experimenter = make_experimenter(KEYFIELDS, Execution={"expected_seconds": 60, "grace_seconds": 1})
    experimenter.fill_table_from_config()
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "+1h")
    assert experimenter.execute(sleepy(0)) == 3
    assert statuses(experimenter) == ["done"] * 3


def test_durations_of_finished_attempts_estimate_the_next(make_experimenter: MakeExperimenter,
                                                          monkeypatch: pytest.MonkeyPatch):
    """Without expected_seconds: unknown until one finished, then the finished ones' durations."""
    experimenter = make_experimenter(KEYFIELDS, Execution={"grace_seconds": 0})
    experimenter.fill_table_from_config()
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "+60")
    assert experimenter.execute(sleepy(1.0), max_experiments=1) == 1  # nothing finished yet: it fits
    durations = experimenter.get_attempts_table()["duration_seconds"]
    assert durations.iloc[0] >= 1.0
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "+0.8")  # less than the 1 s the first one took
    assert experimenter.execute(sleepy(1.0)) == 0
    assert statuses(experimenter) == ["created", "created", "done"]


def test_slurm_job_end_is_the_deadline(make_experimenter: MakeExperimenter, monkeypatch: pytest.MonkeyPatch):
    experimenter = make_experimenter(KEYFIELDS, Execution={"expected_seconds": 120})
    experimenter.fill_table_from_config()
    monkeypatch.delenv("PY_EXPERIMENTER_DEADLINE", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 90))
    assert experimenter.execute(sleepy(0)) == 0  # 90 s left, experiments take 120 s
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    assert experimenter.execute(sleepy(0)) == 3
    assert statuses(experimenter) == [ExperimentStatus.DONE.value] * 3
    assert set(experimenter.get_attempts_table()["job_id"]) == {"4240_2"}  # array job and task id
    assert set(experimenter.get_table()["job_id"]) == {"4240_2"}
