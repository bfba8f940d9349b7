"""What the experiment function receives to write results and logs (fenced writes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from py_experimenter.exceptions import InvalidLogFieldError, InvalidResultFieldError
from py_experimenter.grid import plain_value
from py_experimenter.queue import Experiment, ExperimentQueue

logger = logging.getLogger("py-experimenter")


def storable(value: Any) -> Any:
    """A value the database driver accepts: numpy → Python, arrays / lists / dicts → JSON text."""
    value = plain_value(value)
    tolist = getattr(value, "tolist", None)
    if tolist is not None and type(value).__module__ == "numpy":
        value = tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=lambda v: plain_value(v) if plain_value(v) is not v else str(v))
    return value


class ResultProcessor:
    """Writes one experiment's results and logs; every write is fenced to its attempt.

    A write after the attempt was taken over (lease expired, experiment reset) raises
    :class:`~py_experimenter.exceptions.LeaseLostError` and changes nothing.
    """

    def __init__(self, queue: ExperimentQueue, experiment: Experiment):
        self._queue = queue
        self._experiment = experiment
        spec = queue.db.schema.spec
        self._resultfields = spec.resultfield_names
        self._logtables = {log.name: tuple(f.name for f in log.fields) for log in spec.logtables}

    @property
    def experiment_id(self) -> int:
        """The experiment's row ID."""
        return self._experiment.id

    @property
    def attempt(self) -> int:
        """Which try of this experiment is running (1 for the first)."""
        return self._experiment.attempt

    def process_results(self, results: Mapping[str, Any]) -> None:
        """Write resultfield values; may be called many times (later values overwrite).

        :raises InvalidResultFieldError: a key is not a resultfield (the message lists them).
        """
        unknown = [k for k in results if k not in self._resultfields]
        if unknown:
            raise InvalidResultFieldError(
                f"{unknown} are not resultfields of this table; the resultfields are "
                f"{list(self._resultfields)} (add new ones to `resultfields` in the experiment file)"
            )
        self._queue.write_results(self._experiment, {k: storable(v) for k, v in results.items()})

    def process_logs(self, logs: Mapping[str, Mapping[str, Any] | list[Mapping[str, Any]]]) -> None:
        """Append rows to logtables: ``{logtable: {column: value}}`` (or a list of such rows).

        The input is not modified. Each row gets the experiment ID, the attempt and the
        database time. All rows of one call are written together or not at all.

        :raises InvalidLogFieldError: an unknown logtable or column (the message lists the valid ones).
        """
        prepared: dict[str, list[dict[str, Any]]] = {}
        for logtable, entries in logs.items():
            if logtable not in self._logtables:
                raise InvalidLogFieldError(
                    f"{logtable!r} is not a logtable of this table; the logtables are {list(self._logtables)}"
                )
            rows = [entries] if isinstance(entries, Mapping) else list(entries)
            columns = self._logtables[logtable]
            grouped: list[dict[str, Any]] = []
            for row in rows:
                unknown = [c for c in row if c not in columns]
                if unknown:
                    raise InvalidLogFieldError(
                        f"{unknown} are not columns of logtable {logtable!r}; its columns are {list(columns)}"
                    )
                grouped.append({c: storable(row.get(c)) for c in columns})
            if grouped:
                prepared[logtable] = grouped
        if prepared:
            self._queue.write_logs(self._experiment, prepared)
