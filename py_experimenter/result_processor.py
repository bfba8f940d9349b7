"""What the experiment function receives to write results and logs (fenced writes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from py_experimenter.exceptions import InvalidLogFieldError, InvalidResultFieldError, InvalidValueError
from py_experimenter.queue import Experiment, ExperimentQueue
from py_experimenter.values import ColumnChecker, Refused, checker_for, invalid_value, shorten

logger = logging.getLogger("py-experimenter")


class ResultProcessor:
    """Writes one experiment's results and logs; every write is fenced to its attempt.

    A write after the attempt was taken over (lease expired, experiment reset) raises
    :class:`~py_experimenter.exceptions.LeaseLostError` and changes nothing.
    """

    def __init__(self, queue: ExperimentQueue, experiment: Experiment):
        self._queue = queue
        self._experiment = experiment
        spec, backend = queue.db.schema.spec, queue.db.backend
        self._resultfields = spec.resultfield_names
        self._result_checkers = {f.name: checker_for(f.sql_type, backend) for f in spec.resultfields}
        self._logtables = {log.name: tuple(f.name for f in log.fields) for log in spec.logtables}
        self._log_checkers = {log.name: {f.name: checker_for(f.sql_type, backend) for f in log.fields}
                              for log in spec.logtables}

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

        Every value is checked against its column first (see :mod:`py_experimenter.values`);
        one refused value means nothing of the call is written.

        :raises InvalidResultFieldError: a key is not a resultfield (the message lists them).
        :raises InvalidValueError: ``results`` is not a dict, or a value its column cannot hold.
        """
        if not isinstance(results, Mapping):
            raise InvalidValueError(
                f"process_results expects a dict {{resultfield: value}}, got a {type(results).__name__} "
                f"({shorten(results)}); nothing was written", where="process_results",
            )
        unknown = [k for k in results if k not in self._resultfields]
        if unknown:
            raise InvalidResultFieldError(
                f"{unknown} are not resultfields of this table; the resultfields are "
                f"{list(self._resultfields)} (add new ones to `resultfields` in the experiment file)"
            )
        where = f"process_results (experiment {self.experiment_id})"
        values = {name: _checked(self._result_checkers[name], value, where, "resultfield", name)
                  for name, value in results.items()}
        self._check_packet(values, where, "resultfield", self._result_checkers)
        self._queue.write_results(self._experiment, values)

    def process_logs(self, logs: Mapping[str, Mapping[str, Any] | list[Mapping[str, Any]]]) -> None:
        """Append rows to logtables: ``{logtable: {column: value}}`` (or a list of such rows).

        The input is not modified. Each row gets the experiment ID, the attempt and the
        database time. Every value is checked first; all rows of one call are written
        together or not at all.

        :raises InvalidLogFieldError: an unknown logtable or column (the message lists the valid ones).
        :raises InvalidValueError: ``logs`` or a row is not a dict, or a value its column cannot hold.
        """
        if not isinstance(logs, Mapping):
            raise InvalidValueError(
                f"process_logs expects a dict {{logtable: {{column: value}} or [rows]}}, got a "
                f"{type(logs).__name__} ({shorten(logs)}); nothing was written", where="process_logs",
            )
        prepared: dict[str, list[dict[str, Any]]] = {}
        for logtable, entries in logs.items():
            if logtable not in self._logtables:
                raise InvalidLogFieldError(
                    f"{logtable!r} is not a logtable of this table; the logtables are {list(self._logtables)}"
                )
            columns, checkers = self._logtables[logtable], self._log_checkers[logtable]
            grouped: list[dict[str, Any]] = []
            for index, row in enumerate(_log_rows(logtable, entries)):
                if not isinstance(row, Mapping):
                    raise InvalidValueError(
                        f"process_logs: logtable {logtable!r} row {index} is a {type(row).__name__} "
                        f"({shorten(row)}), not a dict {{column: value}}; nothing was written",
                        where=f"process_logs logtable {logtable!r} row {index}",
                    )
                unknown = [c for c in row if c not in columns]
                if unknown:
                    raise InvalidLogFieldError(
                        f"{unknown} are not columns of logtable {logtable!r}; its columns are {list(columns)}"
                    )
                where = f"process_logs (experiment {self.experiment_id}) logtable {logtable!r} row {index}"
                grouped.append({c: _checked(checkers[c], row.get(c), where, "column", c) for c in columns})
                self._check_packet(grouped[-1], where, "column", checkers)
            if grouped:
                prepared[logtable] = grouped
        if prepared:
            self._queue.write_logs(self._experiment, prepared)

    def _check_packet(self, values: Mapping[str, Any], where: str, what: str,
                      checkers: Mapping[str, ColumnChecker]) -> None:
        """Refuse one write that MySQL/MariaDB would not accept in one packet (it drops the
        connection instead of answering, which would be retried as an outage)."""
        sizes = {name: _wire_bytes(value) for name, value in values.items()}
        if sum(sizes.values()) <= _SMALL_WRITE:
            return
        limit = self._queue.db.max_packet_bytes()
        if limit is None or sum(sizes.values()) + _STATEMENT_MARGIN <= limit:
            return
        name = max(sizes, key=lambda n: sizes[n])
        raise invalid_value(
            where, what, name, checkers[name].sql_type, values[name],
            f"about {sum(sizes.values())} bytes in one write, more than the server's max_allowed_packet "
            f"({limit} bytes); raise max_allowed_packet on the server or store less",
        )


#: Writes below this many bytes of values never ask the server for its packet limit.
_SMALL_WRITE = 1 << 20
#: Room for the statement's text and its other values.
_STATEMENT_MARGIN = 64 << 10
_ESCAPED = frozenset(b"\0\n\r\x1a'\"\\")


def _wire_bytes(value: Any) -> int:
    """Bytes a text / binary value takes in a MySQL statement (escaped characters count twice)."""
    if isinstance(value, list | dict):  # a JSON column's value, sent as JSON text
        value = json.dumps(value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        return 32
    return len(data) + sum(data.count(c) for c in _ESCAPED)


def _log_rows(logtable: str, entries: Any) -> list[Any]:
    if isinstance(entries, Mapping):
        return [entries]
    if isinstance(entries, str | bytes) or not isinstance(entries, Iterable):
        raise InvalidValueError(
            f"process_logs: logtable {logtable!r} takes a dict {{column: value}} or a list of them, got a "
            f"{type(entries).__name__} ({shorten(entries)}); nothing was written",
            where=f"process_logs logtable {logtable!r}",
        )
    return list(entries)


def _checked(check: ColumnChecker, value: Any, where: str, what: str, name: str) -> Any:
    try:
        return check(value)
    except Refused as refused:
        raise invalid_value(where, what, name, check.sql_type, value, refused.rule) from None
