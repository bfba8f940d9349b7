"""Deadlines from ``run --deadline`` / ``PY_EXPERIMENTER_DEADLINE`` and from Slurm's environment."""

from __future__ import annotations

from datetime import datetime

import pytest

from py_experimenter.deadline import parse_deadline, resolve_deadline, slurm_job_end
from py_experimenter.exceptions import ArgumentError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("+600", 600), ("600s", 600), ("+90m", 5400), ("90m", 5400), ("2h", 7200), ("+0.5", 0.5), (" 30 S ", 30),
])
def test_relative_deadlines(text: str, seconds: float):
    assert parse_deadline(text, now=NOW) == pytest.approx(NOW + seconds)


def test_absolute_deadlines():
    assert parse_deadline("1900000000", now=NOW) == 1_900_000_000
    local = datetime(2026, 12, 2, 18, 0, 0)
    assert parse_deadline("2026-12-02T18:00:00", now=NOW) == pytest.approx(local.timestamp())
    assert parse_deadline("2026-12-02T18:00:00+00:00", now=NOW) == pytest.approx(1796234400)


@pytest.mark.parametrize("text", ["soon", "600", "-5m", "12:00 tomorrow", ""])
def test_bad_deadlines_name_the_accepted_forms(text: str):
    with pytest.raises(ArgumentError) as caught:
        parse_deadline(text, now=NOW)
    message = str(caught.value)
    assert message.startswith(f"--deadline={text!r}") and "'90m'" in message and "Unix time" in message


def test_environment_deadline_wins_over_slurm(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_END_TIME", "1900000000")
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "1850000000")
    assert resolve_deadline() == 1_850_000_000
    monkeypatch.delenv("PY_EXPERIMENTER_DEADLINE")
    assert resolve_deadline() == 1_900_000_000


def test_slurm_end_time(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_END_TIME", "1900000000")
    assert slurm_job_end() is None  # not inside a job
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert slurm_job_end() == 1_900_000_000


def test_slurm_job_without_squeue_runs_without_a_deadline(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here
    assert slurm_job_end() is None


def test_bad_environment_deadline_names_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PY_EXPERIMENTER_DEADLINE", "tomorrow")
    with pytest.raises(ArgumentError, match="PY_EXPERIMENTER_DEADLINE='tomorrow'"):
        resolve_deadline()
