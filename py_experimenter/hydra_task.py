"""The experiment function that runs the rows of a Hydra sweep added by the launcher plugin
``hydra/launcher=py_experimenter``::

    py-experimenter run CONFIG --function py_experimenter.hydra_task:run_hydra_task

For each claimed row it reads the row's entry in ``<table>__hydra``, rebuilds the job's composed
config with Hydra's compose API (the same config source, config name, version base and
overrides), imports the user's task function (the function under ``@hydra.main``: its module is
imported, or its file loaded, so keep the ``if __name__ == "__main__":`` guard), calls it with
that config and stores its return value: a number or text goes to the table's single
resultfield, a mapping to the resultfields it names; ``None`` stores nothing, and an
``ExperimentStatus`` is passed on (``PAUSED``). The task runs in the executor's working folder,
with no Hydra run directory and no ``HydraConfig``.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from py_experimenter.function_loader import load_function
from py_experimenter.hydra_sweep import HydraJob, HydraSweepError, lookup_job
from py_experimenter.launchers.command import require_extra
from py_experimenter.result_processor import ResultProcessor
from py_experimenter.status import ExperimentStatus

__all__ = ["compose_job", "run_hydra_task", "store_return", "task_callable"]


def run_hydra_task(keyfields: dict[str, Any], result_processor: ResultProcessor,
                   custom_config: dict[str, Any]) -> ExperimentStatus | None:
    """Run the Hydra task of this row with its rebuilt config and store what it returns."""
    require_extra("hydra", "hydra", "running the rows of a Hydra sweep (py_experimenter.hydra_task)")
    db = result_processor._queue.db
    job = lookup_job(db, result_processor.experiment_id)
    if job is None:
        raise HydraSweepError(
            f"experiment {result_processor.experiment_id} {keyfields} was not added by a Hydra sweep "
            f"(no entry in {db.schema.main.name}__hydra); run it with its own --function"
        )
    with warnings.catch_warnings():
        # The app's version_base warning (Hydra 1.1 compatibility): its user saw it when sweeping.
        warnings.filterwarnings("ignore", category=UserWarning, message=r"\s*version_base")
        cfg = compose_job(job)
        task = task_callable(job.task_function)
    return store_return(result_processor, task(cfg))


def compose_job(job: HydraJob) -> Any:
    """The job's composed config (without the ``hydra`` node), rebuilt with Hydra's compose API."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    source = job.config_source
    context: Any
    if source.startswith("file://"):
        context = initialize_config_dir(config_dir=source[len("file://"):], version_base=job.version_base)
    elif source.startswith("pkg://"):
        context = initialize_config_module(config_module=source[len("pkg://"):], version_base=job.version_base)
    else:
        raise HydraSweepError(f"experiment {job.experiment_id}: config source {source!r} is neither file:// "
                              "nor pkg://; sweep it again with the launcher plugin")
    with context:
        return compose(config_name=job.config_name, overrides=list(job.overrides))


def task_callable(spec: str) -> Callable[[Any], Any]:
    """The task function named ``spec``, unwrapped from ``@hydra.main``."""
    return inspect.unwrap(load_function(spec, option="the Hydra task function"))


def store_return(result_processor: ResultProcessor, returned: Any) -> ExperimentStatus | None:
    """Store a task's return value (see the module docstring); returns an ``ExperimentStatus``
    it returned, else None."""
    if returned is None:
        return None
    if isinstance(returned, ExperimentStatus):
        return returned
    if hasattr(returned, "_get_node"):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        returned = OmegaConf.to_container(returned, resolve=True)
    if isinstance(returned, Mapping):
        result_processor.process_results(dict(returned))
        return None
    resultfields = list(result_processor._resultfields)
    if not isinstance(returned, numbers.Number | str):
        raise HydraSweepError(
            f"the Hydra task returned a {type(returned).__name__} ({returned!r:.80}); return a number (stored in the "
            f"single resultfield) or a dict of resultfields {resultfields}"
        )
    if len(resultfields) != 1:
        what = "has no resultfields" if not resultfields else f"has the resultfields {resultfields}"
        raise HydraSweepError(
            f"the Hydra task returned {returned!r:.80}, but the table {what}: a single value needs exactly one "
            "resultfield; return a dict {resultfield: value} instead"
        )
    result_processor.process_results({resultfields[0]: returned})
    return None
