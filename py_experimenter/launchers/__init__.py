"""Start executors where the compute is: detached processes on this machine (:mod:`.local`),
on SSH hosts (:mod:`.ssh`) or as one Slurm job array through submitit (:mod:`.slurm`).

Executors are stateless and the table is the queue, so a launch is only "start K executors
there": each one runs ``python -m py_experimenter run CONFIG ...`` (:class:`ExecutorCommand`)
and drains the table on its own. Nothing has to stay alive on the launching side.
"""

from __future__ import annotations

from py_experimenter.launchers.command import ExecutorCommand

__all__ = ["ExecutorCommand"]
