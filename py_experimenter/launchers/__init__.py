"""Start executors where the compute is: detached processes on this machine (:mod:`.local`),
on SSH hosts (:mod:`.ssh`) or as one Slurm job array through submitit (:mod:`.slurm`).

Executors are stateless and the table is the queue, so a launch is only "start K executors
there": each one runs ``python -m py_experimenter run CONFIG ...`` (:class:`ExecutorCommand`)
and drains the table on its own. Nothing has to stay alive on the launching side.

``launch_local``, ``launch_ssh`` and ``launch_slurm`` are the Python form of
``py-experimenter launch --on local|ssh|slurm``; they are imported on first use, so importing
this package needs neither submitit nor an ssh client.
"""

from __future__ import annotations

import importlib
from typing import Any

from py_experimenter.launchers.command import ExecutorCommand

__all__ = ["ExecutorCommand", "launch_local", "launch_slurm", "launch_ssh"]

_LAUNCHERS = {"launch_local": "local", "launch_ssh": "ssh", "launch_slurm": "slurm"}


def __getattr__(name: str) -> Any:
    """``launch_local`` / ``launch_ssh`` / ``launch_slurm``, imported from their backend module on first use."""
    if name in _LAUNCHERS:
        return getattr(importlib.import_module(f"{__name__}.{_LAUNCHERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
