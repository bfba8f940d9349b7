"""What the Slurm launcher checks before it submits anything: Slurm reachable, the partition
known, the time limit and memory values well formed. Each problem is one :class:`LaunchError`
line naming the fix."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass

from py_experimenter.exceptions import LaunchError

#: Seconds a Slurm client command may take before Slurm counts as unreachable.
SLURM_TIMEOUT = 30.0
_TIME_UNIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?$", re.IGNORECASE)
_TIME_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_MEM_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}
TIME_FORMS = "minutes (90), '90m', '2h', '1d', 'HH:MM:SS' (01:30:00) or 'D-HH:MM' (1-12:00)"
MEM_FORMS = "'4G', '500M', '1.5G' or a number of megabytes"


def first_line(text: str) -> str:
    """The first non-empty line of a command's message (Slurm's errors are one line, plus noise)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "no message"


def parse_time_limit(value: int | float | str) -> int:
    """A time limit per executor in whole minutes (rounded up), as Slurm's ``--time`` takes it.

    Accepts a number of minutes, ``'90m'``, ``'2h'``, ``'1d'``, ``'30s'`` and Slurm's own
    ``[D-]HH:MM:SS`` / ``MM:SS`` / ``D-HH[:MM]`` forms; :class:`LaunchError` otherwise.
    """
    text = str(value).strip()
    minutes: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        minutes = float(value)
    elif match := _TIME_UNIT.match(text):
        unit = (match.group(2) or "m").lower()[0]
        minutes = float(match.group(1)) * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[unit]
    elif match := _TIME_CLOCK.match(text):
        days, first, second, third = match.groups()
        numbers = [int(part) for part in (first, second, third) if part is not None]
        if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            hours, mins, secs = [*numbers, 0, 0][:3]
            minutes = int(days) * 1440 + hours * 60 + mins + secs / 60
        elif len(numbers) == 3:  # HH:MM:SS
            minutes = numbers[0] * 60 + numbers[1] + numbers[2] / 60
        elif len(numbers) == 2:  # MM:SS
            minutes = numbers[0] + numbers[1] / 60
    if minutes is None or not math.isfinite(minutes) or minutes <= 0:
        raise LaunchError(f"time limit {value!r} is not a time limit; give {TIME_FORMS}")
    return max(1, math.ceil(minutes - 1e-9))


def parse_mem(value: int | float | str) -> str:
    """Memory per executor in Slurm's ``--mem`` form (whole megabytes: ``'4096M'``)."""
    match = _MEM.match(str(value).strip())
    megabytes = float(match.group(1)) * _MEM_FACTOR_MB[match.group(2).upper()] if match else 0.0
    if isinstance(value, bool) or megabytes < 1 or not math.isfinite(megabytes):
        raise LaunchError(f"memory {value!r} is not an amount of memory; give {MEM_FORMS}")
    return f"{math.ceil(megabytes)}M"


def parse_sbatch_option(text: str) -> tuple[str, str | bool]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) of ``--sbatch``, the key without leading dashes."""
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
        raise LaunchError(f"--sbatch {text!r}: expected KEY=VALUE with an sbatch option name, "
                          "e.g. --sbatch constraint=a100 or --sbatch exclusive")
    return key.replace("_", "-"), (value if sep else True)


def _slurm_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        said = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        detail = f" ({first_line(said)})" if said.strip() else ""
        raise LaunchError(f"Slurm is not reachable from here: {argv[0]} did not answer within "
                          f"{SLURM_TIMEOUT:g} s{detail}; check that slurmctld runs (scontrol ping)") from None
    except OSError as err:
        raise LaunchError(f"Slurm is not reachable from here: cannot run {argv[0]} ({err})") from None


@dataclass(frozen=True)
class Partition:
    """A Slurm partition and its time limits in minutes (None: not set / infinite)."""

    name: str
    default: bool
    default_minutes: int | None
    max_minutes: int | None

    def time_limit(self, asked: int | None, fallback: int) -> int:
        """The time limit per executor: ``asked``, else the partition's default time, else
        ``fallback`` capped at the partition's maximum."""
        if asked is not None:
            return asked
        if self.default_minutes is not None:
            return self.default_minutes
        return fallback if self.max_minutes is None else min(fallback, self.max_minutes)


def _limit(text: str) -> int | None:
    try:
        return parse_time_limit(text)
    except LaunchError:  # infinite, n/a, UNLIMITED
        return None


def check_slurm(partition: str | None) -> Partition:
    """The partition to submit to (``partition``, else Slurm's default); :class:`LaunchError` when
    ``sbatch``, ``srun``, ``squeue`` or ``sinfo`` is missing or failing, or ``partition`` is unknown."""
    for tool in ("sbatch", "srun", "sinfo", "squeue"):
        if shutil.which(tool) is None:
            raise LaunchError(f"Slurm is not reachable from here: {tool} not found on PATH; run launch on a "
                              "login node of the cluster (or load Slurm's module, e.g. module load slurm)")
    listing = _slurm_command(["sinfo", "-h", "-o", "%P|%L|%l"])
    if listing.returncode != 0:
        raise LaunchError(f"Slurm is not reachable from here: sinfo failed: "
                          f"{first_line(listing.stderr or listing.stdout)}")
    found: dict[str, Partition] = {}
    for line in listing.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            name = parts[0].rstrip("*")
            found.setdefault(name, Partition(name, parts[0].endswith("*"), _limit(parts[1]), _limit(parts[2])))
    names = sorted(found, key=lambda name: not found[name].default)
    if not names:
        raise LaunchError("Slurm is reachable but sinfo lists no partition; ask the cluster's administrators")
    if partition is None:
        return found[names[0]]
    if partition not in found:
        raise LaunchError(f"unknown Slurm partition {partition!r}; the partitions are "
                          f"{', '.join(names)} (--partition NAME)")
    return found[partition]


def slurm_states(job_ids: list[str]) -> list[str]:
    """The states (``PENDING``, ``RUNNING``, ...) of the array tasks of ``job_ids`` that Slurm
    still lists (one per task; a pending array's tasks are expanded with ``-r``)."""
    if not job_ids:
        return []
    found = _slurm_command(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%T"])
    if found.returncode != 0:
        message = found.stderr or found.stdout
        if "Invalid job id" in message:  # every job already left squeue
            return []
        raise LaunchError(f"squeue failed: {first_line(message)}")
    return [line.strip() for line in found.stdout.splitlines() if line.strip()]
