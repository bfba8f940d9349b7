"""What the launcher plugin ``hydra/launcher=py_experimenter`` does when Hydra hands it a sweep:
fill the table (:func:`fill_sweep`), print how to run the rows, and optionally start executors
(:func:`start_executors`) through :mod:`py_experimenter.launchers.local` or ``.slurm``."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from py_experimenter.exceptions import ConfigError, LaunchError
from py_experimenter.hydra_sweep import SweepReport, record_sweep

__all__ = ["fill_sweep", "start_executors", "task_function_spec"]

BACKENDS = ("local", "slurm")
_OPTION = "hydra.launcher"


def task_function_spec(task_function: Callable[..., Any]) -> str:
    """``MODULE:QUALNAME`` of the function under ``@hydra.main`` (also when started as
    ``python -m MODULE``); ``/abs/app.py:QUALNAME`` when it lives in the script Hydra was
    started as (``python app.py``)."""
    module = getattr(task_function, "__module__", None)
    qualname = getattr(task_function, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise ConfigError(
            f"the Hydra task function {task_function!r} cannot be imported by an executor: define it at the "
            "top level of a module or script"
        )
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":  # python -m package.module
            return f"{spec.name.removesuffix('.__main__')}:{qualname}" if spec.name.endswith(".__main__") \
                else f"{spec.name}:{qualname}"
        main_file = getattr(main, "__file__", None)
        if not main_file:
            raise ConfigError("the Hydra task function lives in an interactive session; put it in a script or module")
        return f"{os.path.abspath(main_file)}:{qualname}"
    return f"{module}:{qualname}"


def hydra_version_base() -> str | None:
    """The ``version_base`` of the running Hydra app (``"1.1"``, ``"1.3"``)."""
    from hydra.version import getbase

    version = getbase()
    return None if version is None else str(version)


def _config_source(config: Any) -> str:
    for source in config.hydra.runtime.config_sources:
        if source.provider == "main":
            if source.schema == "file":
                return f"file://{os.path.abspath(source.path)}"
            return f"{source.schema}://{source.path}"
    raise ConfigError("the Hydra app has no primary config source (config_path); give @hydra.main a config_path")


def _experiment_file(params: Mapping[str, Any]) -> str:
    path = params.get("experiment_config")
    if not path:
        raise ConfigError(
            f"{_OPTION}.experiment_config is not set: give the py_experimenter experiment file, e.g. "
            f"{_OPTION}.experiment_config=config/experiment.yml"
        )
    return os.path.abspath(str(path))


def fill_sweep(params: Mapping[str, Any], config: Any, jobs: Sequence[Sequence[str]],
               compose: Callable[[Sequence[str]], tuple[Any, Any]], task_function: str,
               initial_job_idx: int = 0) -> tuple[str, SweepReport]:
    """Add the sweep's rows and side-table entries, print what happened and how to run them.

    :param params: the launcher's config (``experiment_config``, ``credentials``, ``table``, ...).
    :param config: the multirun config Hydra gives the launcher.
    :returns: the experiment file (absolute) and the report.
    """
    from py_experimenter.experimenter import PyExperimenter

    path = _experiment_file(params)
    backend = str(params.get("backend") or "local")
    if backend not in BACKENDS:
        raise ConfigError(f"{_OPTION}.backend={backend!r}: expected one of {list(BACKENDS)}")
    credentials = params.get("credentials")
    experimenter = PyExperimenter(path, os.path.abspath(credentials) if credentials else None,
                                  table_name=params.get("table"), database_name=params.get("database"),
                                  use_codecarbon=False)
    sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))  # with the job's number: where Hydra would run it
    try:
        experimenter.create_table()
        report = record_sweep(
            experimenter.db, jobs, compose, config_source=_config_source(config),
            config_name=config.hydra.job.config_name, version_base=hydra_version_base(),
            task_function=task_function, base=(config, config.hydra.runtime.choices),
            run_dirs=[os.path.join(sweep_dir, str(initial_job_idx + i)) for i in range(len(jobs))],
        )
    finally:
        experimenter.db.dispose()
    table = experimenter.config.table.name
    print(f"py_experimenter: {len(jobs)} jobs of the sweep -> table {table}: {report.added} rows added, "
          f"{report.existing} already there")
    configured = {k.name: list(k.values or ()) for k in experimenter.config.table.keyfields}
    for name, values in report.unconfigured.items():
        print(f"py_experimenter: warning: keyfield {name!r}: swept values {values} are not among its configured "
              f"values {configured[name]} in the experiment file; added anyway")
    if report.changed:
        print(f"py_experimenter: warning: {report.changed} of the rows already there were swept before with other "
              "overrides of parameters that are not keyfields; they keep their first config (make those parameters "
              "keyfields to sweep them)")
    if not params.get("executors"):
        run = ["py-experimenter", "run", path, "--function", "py_experimenter.hydra_task:run_hydra_task"]
        if credentials:
            run[3:3] = ["--credentials", os.path.abspath(credentials)]
        print(f"run them with: {shlex.join(run)}\n  (or: py-experimenter launch {shlex.quote(path)} --on local|slurm "
              f"-n K --function py_experimenter.hydra_task:run_hydra_task)")
    return path, report


def start_executors(params: Mapping[str, Any], path: str, function: str) -> dict[str, Any] | None:
    """Start ``params['executors']`` executors of the sweep's table (none for 0)."""
    executors = params.get("executors") or 0
    if isinstance(executors, bool) or not isinstance(executors, int) or executors < 0:
        raise LaunchError(f"{_OPTION}.executors={executors!r}: expected a whole number (0: only fill the table)")
    if not executors:
        return None
    credentials = params.get("credentials")
    common: dict[str, Any] = {
        "function": function, "credentials": os.path.abspath(credentials) if credentials else None,
        "table": params.get("table"), "database": params.get("database"),
        "run_args": [str(a) for a in params.get("run_args") or ()],
        "log_dir": os.path.abspath(str(params.get("log_dir") or "py_experimenter_logs")), "out": sys.stdout,
    }
    if params.get("backend", "local") == "slurm":
        from py_experimenter.launchers.slurm import launch_slurm

        slurm = {k: v for k, v in dict(params.get("slurm") or {}).items() if v not in (None, {}, [])}
        return launch_slurm(path, executors, **common, **slurm)
    from py_experimenter.launchers.local import launch_local

    return launch_local(path, executors, **common)
