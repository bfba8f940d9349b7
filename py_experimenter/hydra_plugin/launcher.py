"""The Hydra launcher ``hydra/launcher=py_experimenter``: a non-blocking, resumable sweep.

::

    python app.py --multirun hydra/launcher=py_experimenter \\
        hydra.launcher.experiment_config=config/experiment.yml dataset=iris,wine seed=1,2,3

adds one row per job to the experiment table (none twice: running the same sweep again adds
nothing) and returns at once. The rows are run by executors started here
(``hydra.launcher.executors=4 hydra.launcher.backend=local|slurm``) or later::

    py-experimenter run config/experiment.yml --function py_experimenter.hydra_task:run_hydra_task

Each executor rebuilds the job's composed config, calls the task function under ``@hydra.main``
with it and stores its return value (a number, or a dict of resultfields). How swept keys map
onto keyfields: :mod:`py_experimenter.hydra_sweep`.

Hydra imports this module at every start-up (plugin discovery): py_experimenter itself is
imported only when a sweep is launched.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module before it
# is in sys.modules, where dataclasses would look string annotations up.
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: The experiment function the executors of a sweep run.
TASK_FUNCTION = "py_experimenter.hydra_task:run_hydra_task"


@dataclass
class SlurmConf:
    """``hydra.launcher.slurm.*``: the options of ``py_experimenter.launchers.slurm.launch_slurm``
    (None: Slurm's or launch_slurm's default)."""

    partition: str | None = None
    #: per executor: minutes, "90m", "2h" or "HH:MM:SS".
    time_limit: str | None = None
    cpus_per_executor: int | None = None
    mem: str | None = None
    gpus: str | None = None
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    #: further sbatch options, {"constraint": "a100"}.
    sbatch: dict[str, Any] = field(default_factory=dict)
    #: shell lines run before each executor (module load ..., source venv/bin/activate).
    setup: list[str] = field(default_factory=list)
    signal_seconds: int | None = None
    job_name: str | None = None


@dataclass
class PyExperimenterLauncherConf:
    """``hydra.launcher.*`` of ``hydra/launcher=py_experimenter``."""

    _target_: str = "hydra_plugins.py_experimenter_launcher.launcher.PyExperimenterLauncher"
    #: the py_experimenter experiment file (relative to the folder the app is started from).
    experiment_config: str | None = None
    credentials: str | None = None
    table: str | None = None
    database: str | None = None
    #: executors to start after filling; 0: only fill the table and return.
    executors: int = 0
    #: where the executors run: local (detached processes here) or slurm (one job array).
    backend: str = "local"
    log_dir: str = "py_experimenter_logs"
    #: further ``py-experimenter run`` options for every executor.
    run_args: list[str] = field(default_factory=list)
    #: with backend=slurm: partition, time_limit, cpus_per_executor, mem, gpus, ...
    slurm: SlurmConf = field(default_factory=SlurmConf)


ConfigStore.instance().store(group="hydra/launcher", name="py_experimenter", node=PyExperimenterLauncherConf,
                             provider="py_experimenter")


class PyExperimenterLauncher(Launcher):
    """Fills the experiment table from the sweep's jobs instead of running them."""

    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from py_experimenter.exceptions import (
            ConfigError,
            DatabaseConnectionError,
            DatabaseUnavailableError,
            PyExperimenterError,
            TableError,
        )

        # One line, and the exit status the py-experimenter command gives: 2 for bad input or an
        # unusable database, 1 when the database stayed away (a SystemExit passes Hydra's handler).
        try:
            return self._launch(job_overrides, initial_job_idx)
        except PyExperimenterError as err:
            usage = isinstance(err, ConfigError | DatabaseConnectionError | TableError)
            print(f"hydra/launcher=py_experimenter: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            raise SystemExit(2 if usage and not isinstance(err, DatabaseUnavailableError) else 1) from None

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from py_experimenter.hydra_launch import fill_sweep, start_executors, task_function_spec

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        config, hydra_context = self.config, self.hydra_context
        jobs = [list(overrides) for overrides in job_overrides]

        def compose(overrides: Sequence[str]) -> tuple[Any, Any]:
            sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
            return sweep_config, sweep_config.hydra.runtime.choices

        experimenter_path, report = fill_sweep(self.params, config, jobs, compose,
                                               task_function_spec(self.task_function), initial_job_idx)
        log.debug("%d jobs: %d rows added, %d already there", len(jobs), report.added, report.existing)
        start_executors(self.params, experimenter_path, TASK_FUNCTION)
        return [JobReturn(overrides=overrides, task_name=str(config.hydra.job.name), status=JobStatus.COMPLETED,
                          _return_value=None) for overrides in jobs]
