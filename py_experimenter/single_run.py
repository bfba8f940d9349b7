"""Running one named experiment in this process: ``add_experiment_and_execute`` and
``unpause_experiment`` of :class:`~py_experimenter.experimenter.PyExperimenter`.

``add_experiment_and_execute`` is PyExperimenter 1.4.2's pattern for Hydra / submitit sweeps
(one Hydra job per experiment, each adding its own row and running it at once). A sweep run
again must resume, not fail: an experiment that is already ``done``, ``error``, ``running`` or
``paused`` is skipped with a log line saying so, and only what is still ``created`` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from py_experimenter.exceptions import ExperimentNotRunnableError
from py_experimenter.fill import fill_rows
from py_experimenter.grid import RowCanonicalizer
from py_experimenter.shutdown import GracefulShutdown
from py_experimenter.status import ExperimentStatus
from py_experimenter.values import Refused, checker_for, shorten

if TYPE_CHECKING:
    from py_experimenter.config import KeyfieldSpec
    from py_experimenter.db.database import Database
    from py_experimenter.executor import Executor, ExperimentFunction

__all__ = ["add_and_run", "run_one", "unconfigured_values", "warn_unconfigured_values"]

#: Why each status other than ``created`` is not run again, and how to run it anyway.
_SKIP_HINTS = {
    "done": "reset_experiments('done') to run it again",
    "error": "reset_experiments('error') to run it again",
    "running": "another process runs it now",
    "paused": "unpause_experiment(ID, function) continues it",
}


def add_and_run(db: Database, make_executor: Any, keyfield_values: Mapping[str, Any],
                function: ExperimentFunction, logger: logging.Logger, grace_seconds: float) -> bool:
    """Add the experiment of ``keyfield_values`` (if new) and run it now, in this process.

    :param make_executor: called with the function, returns the :class:`Executor` to run it.
    :returns: True when it ran; False when it was skipped because it is no longer
        ``created`` (done, error, running or paused: logged with the reason).
    """
    values = _plain(keyfield_values)
    if isinstance(values, Mapping):
        warn_unconfigured_values(db.schema.spec.keyfields, values, logger, db.backend)
    fill_rows(db, [values])
    canonicalizer = RowCanonicalizer(db.schema.spec.keyfields, db.backend)
    experiment_id, status = _find(db, canonicalizer.keyhash(canonicalizer.normalize(values)))
    if status != ExperimentStatus.CREATED.value:
        hint = _SKIP_HINTS.get(status, "reset it to run it again")
        logger.warning("experiment %d %s is already %r: skipped (%s)", experiment_id, shorten(values, 160),
                       status, hint)
        return False
    logger.info("running experiment %d %s", experiment_id, shorten(values, 160))
    return run_one(db, make_executor(function), experiment_id, ExperimentStatus.CREATED, grace_seconds)


def run_one(db: Database, executor: Executor, experiment_id: int, expected: ExperimentStatus,
            grace_seconds: float) -> bool:
    """Claim experiment ``experiment_id`` in state ``expected`` and run it with ``executor``.

    SIGTERM / SIGINT (main thread only) hand the row back, as in ``execute()``. Everything the
    executor opened (heartbeat thread, connections, emissions tracker) is closed afterwards.

    :raises ExperimentNotRunnableError: there is no such experiment, or it is not ``expected``.
    """
    shutdown = GracefulShutdown(grace_seconds)
    try:
        with shutdown:
            executor.shutdown = shutdown
            experiment = executor.queue.claim_id(experiment_id, expected)
            if experiment is None:
                current = status_of(db, experiment_id)
                if current is None:
                    raise ExperimentNotRunnableError(f"there is no experiment with ID {experiment_id}")
                raise ExperimentNotRunnableError(
                    f"experiment {experiment_id} is {current!r}, not {expected.value!r}; "
                    f"reset it first (reset_experiments({current!r})) to run it again"
                )
            executor.run_experiment(experiment)
        return True
    finally:
        executor.shutdown = None
        if executor.heartbeat is not None:  # its thread, started for this one experiment
            executor.heartbeat.close()
        executor.queue.close()
        if executor.emissions is not None:
            executor.emissions.close()


def warn_unconfigured_values(keyfields: tuple[KeyfieldSpec, ...] | list[KeyfieldSpec], values: Mapping[str, Any],
                             logger: logging.Logger, backend: str = "sqlite") -> list[str]:
    """Log a warning for each keyfield whose value is not among the experiment file's
    ``values`` for it (the row is still added, as in 1.4.2); returns the keyfields named."""
    outside = unconfigured_values(keyfields, [values], backend)
    by_name = {k.name: k for k in keyfields}
    for name, found in outside.items():
        logger.warning("keyfield %r = %s is not among its configured values %s in the experiment file; "
                       "adding the experiment anyway", name, shorten(found[0]),
                       shorten(list(by_name[name].values or ()), 200))
    return list(outside)


def unconfigured_values(keyfields: tuple[KeyfieldSpec, ...] | list[KeyfieldSpec], rows: Sequence[Mapping[str, Any]],
                        backend: str = "sqlite") -> dict[str, list[Any]]:
    """Per keyfield with configured ``values``: the values of ``rows`` that are not among them
    (each once, in order)."""
    outside: dict[str, list[Any]] = {}
    for keyfield in keyfields:
        if keyfield.values is None:
            continue
        check = checker_for(keyfield.sql_type, backend)
        try:
            configured = {check.canonical(check(v)) for v in keyfield.values}
        except (Refused, TypeError, ValueError):
            continue
        seen = set()
        for row in rows:
            if keyfield.name not in row:
                continue
            try:
                canonical = check.canonical(check(row[keyfield.name]))
            except (Refused, TypeError, ValueError):
                continue  # the fill names a value its column cannot hold
            if canonical not in configured and canonical not in seen:
                seen.add(canonical)
                outside.setdefault(keyfield.name, []).append(row[keyfield.name])
    return outside


def status_of(db: Database, experiment_id: int) -> str | None:
    """The status of experiment ``experiment_id``; None when there is none."""
    main = db.schema.main
    with db.begin() as conn:
        return conn.scalar(sa.select(main.c.status).where(main.c.ID == experiment_id))


def _find(db: Database, keyhash: str) -> tuple[int, str]:
    main = db.schema.main
    with db.begin() as conn:
        row = conn.execute(sa.select(main.c.ID, main.c.status).where(main.c.keyhash == keyhash)).one()
    return int(row.ID), str(row.status)


def _plain(keyfield_values: Mapping[str, Any]) -> Any:
    """A plain dict (a Hydra ``DictConfig`` node too), so that the fill checks it as the user's row."""
    if type(keyfield_values) is not dict and hasattr(keyfield_values, "_get_node"):  # an OmegaConf container
        from omegaconf import OmegaConf

        container = OmegaConf.to_container(keyfield_values, resolve=True)
        if isinstance(container, dict):
            return container
    return dict(keyfield_values) if isinstance(keyfield_values, Mapping) else keyfield_values
