"""An executor's deadline: the end of its Slurm job, or ``run --deadline``.

An executor with a deadline claims no experiment that cannot finish before it, judged by
``Execution.expected_seconds`` or, without it, by the durations of this table's finished
attempts; when nothing fits it leaves the rest to other jobs and exits normally.

Where the deadline comes from, first found wins: ``PY_EXPERIMENTER_DEADLINE`` (set by
``py-experimenter run --deadline``; an ISO time, a Unix time, or ``+90``, ``90s``, ``30m``,
``2h`` from now), else inside a Slurm job (``SLURM_JOB_ID``) the job's end time
(``SLURM_JOB_END_TIME`` where Slurm sets it, else ``squeue``), else none.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from py_experimenter.exceptions import ArgumentError

logger = logging.getLogger("py-experimenter")

DEADLINE_ENV = "PY_EXPERIMENTER_DEADLINE"
_RELATIVE = re.compile(r"^\+?\s*(\d+(?:\.\d+)?)\s*([smh]?)$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Finished attempts whose durations estimate the next experiment's.
RECENT_ATTEMPTS = 200
#: The estimate is refreshed at most this often (one small query).
ESTIMATE_REFRESH_SECONDS = 30.0
DEADLINE_FORMS = ("'+600' or '600s' (seconds from now), '90m', '2h', an ISO time such as "
                  "'2026-12-02T18:00:00' (local time unless it has an offset), or a Unix time")


def parse_deadline(text: str, *, name: str = "--deadline", now: float | None = None) -> float:
    """The deadline ``text`` names, as a Unix time; :class:`ArgumentError` naming the forms."""
    now = time.time() if now is None else now
    value = str(text).strip()
    relative = _RELATIVE.match(value)
    if relative and (value.startswith("+") or relative.group(2)):
        return now + float(relative.group(1)) * _UNIT_SECONDS[relative.group(2).lower()]
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if number > 1e9:
            return number
        raise ArgumentError(f"{name}={text!r}: a bare number must be a Unix time; for seconds from now "
                            f"write '+{value}'. Accepted: {DEADLINE_FORMS}")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ArgumentError(f"{name}={text!r}: not a deadline. Accepted: {DEADLINE_FORMS}") from None


def slurm_job_end() -> float | None:
    """The end of the Slurm job this process runs in, as a Unix time; None outside a job or
    for a job without a time limit (or when Slurm cannot tell)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end and end.isdigit() and int(end) > 0:
        return float(end)
    try:
        found = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                               timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.warning("cannot read the end time of Slurm job %s (%s): running without a deadline", job, err)
        return None
    text = found.stdout.strip().splitlines()[0] if found.stdout.strip() else ""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:  # UNLIMITED, N/A, or squeue failed
        if found.returncode != 0:
            logger.warning("squeue could not tell the end time of Slurm job %s: %s", job,
                           (found.stderr.strip().splitlines() or ["no output"])[0])
        return None


def resolve_deadline() -> float | None:
    """This executor's deadline (see the module docstring), or None."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if text:
        return parse_deadline(text, name=DEADLINE_ENV)
    return slurm_job_end()


@dataclass
class Deadline:
    """Whether the next experiment still fits before ``at`` (a Unix time).

    ``margin`` seconds are kept free at the end (the grace period for handing back).
    ``expected`` is the configured duration of one experiment; without it the 90th percentile
    of the table's recent finished attempts is used, and while none has finished, any fits.
    """

    at: float
    margin: float = 0.0
    expected: float | None = None
    _estimate: float | None = field(default=None, init=False)
    _estimated_at: float = field(default=float("-inf"), init=False)

    def time_left(self) -> float:
        """Seconds until the deadline (negative once it passed)."""
        return self.at - time.time()

    def expected_seconds(self, attempts: sa.Table, conn_factory: Any) -> float | None:
        """The duration the next experiment is expected to take, or None if unknown."""
        if self.expected is not None:
            return self.expected
        if time.monotonic() - self._estimated_at >= ESTIMATE_REFRESH_SECONDS:
            self._estimated_at = time.monotonic()
            self._estimate = _recent_duration(attempts, conn_factory)
        return self._estimate

    def refusal(self, attempts: sa.Table, conn_factory: Any) -> str | None:
        """Why no further experiment should be claimed, or None when one fits."""
        left = self.time_left() - self.margin
        if left <= 0:
            return f"the deadline is {max(0.0, self.time_left()):.0f} s away (grace period {self.margin:g} s)"
        expected = self.expected_seconds(attempts, conn_factory)
        if expected is not None and expected > left:
            return (f"the deadline is {self.time_left():.0f} s away and experiments take about {expected:.0f} s "
                    f"(grace period {self.margin:g} s)")
        return None


def _recent_duration(attempts: sa.Table, conn_factory: Any) -> float | None:
    """The 90th percentile of the last finished attempts' durations (None when none finished)."""
    query = (sa.select(attempts.c.duration_seconds)
             .where(attempts.c.outcome == "done", attempts.c.duration_seconds.is_not(None))
             .order_by(attempts.c.ID.desc()).limit(RECENT_ATTEMPTS))
    with conn_factory() as conn:
        durations = sorted(float(value) for value in conn.scalars(query))
    if not durations:
        return None
    return durations[min(len(durations) - 1, int(0.9 * len(durations)))]
