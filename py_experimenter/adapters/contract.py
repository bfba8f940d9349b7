"""The contract between the executor and an experiment that runs as a container or a command.

One attempt of one experiment, step by step:

1. **Folder.** A fresh host folder ``<results_dir>/<table>/<experiment_id>/attempt-<n>/`` is created
   (``Execution.results_dir`` is relative to the current directory; when it is null a temporary folder is
   used and removed afterwards). A container sees it read-write at ``/results``; a command is given its
   host path (``{results_dir}``, ``$PY_EXPERIMENTER_RESULTS_DIR``) and runs in the executor's directory.
   ``Execution.datasets`` (a host folder)
   is mounted read-only at ``/data`` in a container; a command is given its host path.
2. **Parameters.** The experiment's parameters as JSON::

       {"experiment_id": 7, "attempt": 1, "table": "my_table",
        "keyfields": {"dataset": "iris", "seed": 1}, "custom": {...},
        "results_dir": "/results" (container) or the host path (command),
        "data_dir": "/data" (container, when datasets is set), the host path (command), or null}

   arrive three ways: written to ``params.json`` in the folder before the start, in the environment
   variable ``PY_EXPERIMENTER_PARAMS``, and as one command-line argument wherever ``{params}`` appears in
   ``Execution.command``. Also in the environment: ``PY_EXPERIMENTER_RESULTS_DIR``,
   ``PY_EXPERIMENTER_EXPERIMENT_ID``, ``PY_EXPERIMENTER_ATTEMPT`` and, when datasets is set,
   ``PY_EXPERIMENTER_DATA_DIR``.
3. **Command and environment.** Each string of ``Execution.command`` and each value of ``Execution.env``
   is a template (``str.format``) with these placeholders: every keyfield, every ``Custom`` key,
   ``params`` (the JSON text), ``params_file``, ``results_dir``, ``data_dir`` (empty when there are no
   datasets), ``experiment_id`` and ``attempt``; the built-in names win over a keyfield or custom key of
   the same name, a keyfield over a custom key. ``{{`` and ``}}`` are literal braces. An unknown
   placeholder is a :class:`~py_experimenter.exceptions.ConfigError` from :meth:`ExperimentAdapter.check`
   (before any experiment is claimed). A container without ``command`` runs its image's ``ENTRYPOINT``
   with the parameters JSON as its only argument (TimeEval style), so the image needs an ENTRYPOINT; a
   ``command`` follows Docker's rules (it replaces the image's CMD and is appended to its ENTRYPOINT).
4. **Read-back.** When the process or container has ended by itself (not after a timeout or a stop),
   ``results.json`` (if present) must hold one JSON object of resultfield values, written with
   ``process_results``; each non-empty line of ``logs.jsonl`` (if present) must be a JSON object
   ``{"logtable": {"column": value}}`` (or ``{"logtable": [rows]}``), written with ``process_logs``
   (consecutive lines in one transaction). A bad file or line makes the outcome ``error`` with a message
   naming the file, the line and the problem; log lines before a bad one are kept. Results and logs are
   read back after a failed run too (what an experiment reported before failing is kept).
5. **Outcome** (:class:`AdapterOutcome`): exit code 0 → ``done``; another exit code → ``error`` with the
   code and the last 40 lines of the output; killed by a ``SIGKILL`` the executor did not send, exit
   code 137, Docker's ``OOMKilled``, or (commands) an output that ends with an out-of-memory message →
   ``oom``; ``Execution.timeout`` elapsed → killed, ``timeout``; ``should_stop()`` returned
   ``(kind, reason)`` (polled about every 0.1 s) → killed, ``stopped`` with ``stop_kind`` = kind.

:meth:`ExperimentAdapter.run` returns an outcome for everything that concerns the experiment itself. It
raises :class:`~py_experimenter.exceptions.LeaseLostError` (a fenced write was rejected: the attempt is
no longer ours), :class:`~py_experimenter.exceptions.DatabaseUnavailableError`,
:class:`AdapterUnavailableError` (the container engine stopped answering mid-run: not the experiment's
fault) and any ``BaseException`` from a signal handler — always after the process or container is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from py_experimenter.adapters.scope import OWNER_FILE, results_folder, table_scope
from py_experimenter.config import ExperimentConfig
from py_experimenter.db.retry import first_line
from py_experimenter.exceptions import (
    ConfigError,
    DatabaseUnavailableError,
    LeaseLostError,
    PyExperimenterError,
)
from py_experimenter.grid import plain_value
from py_experimenter.queue import AttemptReport, Experiment
from py_experimenter.result_processor import ResultProcessor

if TYPE_CHECKING:
    from py_experimenter.db.database import Database

__all__ = ["OWNER_FILE", "TAIL_LINES", "AdapterOutcome", "AdapterUnavailableError", "AttemptFiles",
           "ExperimentAdapter", "table_scope"]

StopCheck = Callable[[], tuple[str, str] | None]
#: How many lines of output an ``error`` outcome quotes.
TAIL_LINES = 40
#: Placeholders every template may use besides the keyfields and custom keys.
BUILTIN_PLACEHOLDERS: tuple[str, ...] = (
    "params", "params_file", "results_dir", "data_dir", "experiment_id", "attempt",
)
_LOG_BATCH = 500
_OOM_MARKERS = ("memoryerror", "bad_alloc", "cannot allocate memory", "out of memory")


@dataclass(frozen=True)
class AdapterOutcome:
    """How one attempt ended.

    ``kind`` is ``"done"``, ``"error"``, ``"timeout"``, ``"oom"`` or ``"stopped"``; ``error`` the reason
    or the output's tail; ``stop_kind`` the kind ``should_stop`` returned (``"cancelled"`` / ``"lost"``)
    when ``kind == "stopped"``; ``report`` what the attempts table records.
    """

    kind: str
    error: str | None = None
    stop_kind: str | None = None
    report: AttemptReport = field(default_factory=AttemptReport)


class AdapterUnavailableError(PyExperimenterError):
    """The container engine stopped answering during a run (not the experiment's fault)."""


class ExperimentAdapter(ABC):
    """Runs one claimed experiment outside the executor's process (see the module docstring)."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.execution = config.execution
        #: The stable id of the table this adapter runs for (:func:`table_scope`), once bound.
        self.scope: str | None = None
        self._scope_text = ""
        self._table_folder: Path | None = None

    def bind(self, db: Database) -> None:
        """Tie the adapter to the table whose experiments it runs (the executor does this).

        Tables of the same name in other databases (another SQLite file, server, port or
        database) share containers' labels and ``results_dir`` with this one: the scope keeps
        :meth:`remove_orphans` and :meth:`attempt_folder` to what belongs to this table.
        """
        self.scope, self._scope_text = table_scope(db)
        self._table_folder = None

    @abstractmethod
    def check(self) -> None:
        """Check the settings (and the engine) before any experiment is claimed.

        :raises ConfigError: one message saying what is wrong and how to fix it.
        """

    @abstractmethod
    def run(
        self,
        experiment: Experiment,
        processor: ResultProcessor,
        custom: Mapping[str, Any],
        should_stop: StopCheck | None,
    ) -> AdapterOutcome:
        """Run one attempt of ``experiment``; results and logs go through ``processor``."""

    def remove_orphans(self, is_live: Callable[[int, int], bool]) -> int:
        """Remove what attempts that are no longer running left behind (an executor killed with
        ``kill -9`` cannot clean up); ``is_live(experiment_id, attempt)`` says which still run.
        Only what carries this table's scope (:meth:`bind`) is considered; an unbound adapter
        removes nothing. Returns how many were removed. Nothing to do for most adapters."""
        return 0

    # -- shared steps ---------------------------------------------------------------------

    def placeholder_names(self) -> list[str]:
        """Every name a template may use."""
        names = dict.fromkeys(str(k) for k in self.config.custom)
        names.update(dict.fromkeys(self.config.table.keyfield_names))
        names.update(dict.fromkeys(BUILTIN_PLACEHOLDERS))
        return list(names)

    def check_templates(self) -> None:
        """Reject unknown placeholders or malformed braces in ``command`` and ``env``.

        :raises ConfigError: naming the template, the placeholder and the valid names.
        """
        valid = set(self.placeholder_names())
        for where, template in self._templates():
            for name in _fields(template, where, self.config.source):
                if name not in valid:
                    raise ConfigError(
                        f"unknown placeholder {{{name}}} in {template!r}; valid: "
                        f"{', '.join(sorted(valid))} (write {{{{ and }}}} for literal braces)",
                        source=self.config.source, key_path=f"PY_EXPERIMENTER.Execution.{where}",
                    )

    def _templates(self) -> list[tuple[str, str]]:
        """(key path under Execution, template) of every command part and env value."""
        templates = [(f"command[{i}]", t) for i, t in enumerate(self.execution.command or ())]
        return templates + [(f"env.{k}", v) for k, v in (self.execution.env or {}).items()]

    def check_folders(self) -> None:
        """``Execution.datasets`` must be an existing folder; ``results_dir`` is created and must be writable."""
        source, path = self.config.source, "PY_EXPERIMENTER.Execution"
        datasets, results = self.execution.datasets, self.execution.results_dir
        if datasets is not None and not os.path.isdir(datasets):
            raise ConfigError(f"datasets folder {datasets!r} does not exist (relative to {os.getcwd()})",
                              source=source, key_path=f"{path}.datasets")
        if results is not None:
            try:
                os.makedirs(results, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the results folder {results!r}: {exc.strerror}",
                                  source=source, key_path=f"{path}.results_dir") from None
            if not os.access(results, os.W_OK | os.X_OK):
                raise ConfigError(f"the results folder {results!r} is not writable", source=source,
                                  key_path=f"{path}.results_dir")

    @contextmanager
    def attempt_folder(self, experiment: Experiment) -> Iterator[Path]:
        """A fresh folder for one attempt; a temporary one (removed afterwards) without results_dir.

        With ``results_dir`` it is ``<results_dir>/<table>/<experiment_id>/attempt-<n>``, where
        ``<table>`` belongs to the first database whose table used it (see :data:`OWNER_FILE`);
        a table of the same name in another database gets ``<table>.<scope>`` instead, so it
        never replaces another table's attempt folders.
        """
        parts = (self.config.table.name, str(experiment.id), f"attempt-{experiment.attempt}")
        if self.execution.results_dir is not None:
            table_folder = self._results_table_folder(Path(os.path.abspath(self.execution.results_dir)))
            folder = table_folder.joinpath(*parts[1:])
            if folder.exists():  # an attempt of this very table that left it behind
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            yield folder
            return
        top = tempfile.mkdtemp(prefix="py-experimenter-")
        try:
            folder = Path(top).joinpath(*parts)
            folder.mkdir(parents=True)
            yield folder
        finally:
            shutil.rmtree(top, ignore_errors=True)

    def _results_table_folder(self, root: Path) -> Path:
        """This table's folder under ``results_dir`` (claimed for its scope on first use)."""
        if self.scope is None:  # an adapter used on its own, outside an executor
            return root / self.config.table.name
        if self._table_folder is None:
            self._table_folder = results_folder(root, self.config.table.name, self.scope, self._scope_text,
                                                self.config.source)
        return self._table_folder

    def prepare(self, experiment: Experiment, custom: Mapping[str, Any], folder: Path, *,
                results_dir: str, data_dir: str | None) -> AttemptFiles:
        """Write ``params.json`` and fill in the command and environment templates.

        :raises ConfigError: a template does not fit this experiment's values (``{dataset:03d}`` for a string).
        """
        params = {
            "experiment_id": experiment.id, "attempt": experiment.attempt, "table": self.config.table.name,
            "keyfields": dict(experiment.keyfields), "custom": dict(custom),
            "results_dir": results_dir, "data_dir": data_dir,
        }
        text = json.dumps(params, default=_json_default)
        (folder / "params.json").write_text(text, encoding="utf-8")
        params_file = str(Path(results_dir) / "params.json")
        values: dict[str, Any] = {**custom, **experiment.keyfields, "params": text, "params_file": params_file,
                                  "results_dir": results_dir, "data_dir": data_dir or "",
                                  "experiment_id": experiment.id, "attempt": experiment.attempt}
        filled: dict[str, str] = {}
        for where, template in self._templates():
            try:
                filled[where] = template.format_map(values)
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                raise ConfigError(f"cannot fill in {template!r} for experiment {experiment.id}: "
                                  f"{type(exc).__name__}: {exc}", source=self.config.source,
                                  key_path=f"PY_EXPERIMENTER.Execution.{where}") from None
        command = None
        if self.execution.command is not None:
            command = [filled[f"command[{i}]"] for i in range(len(self.execution.command))]
        env = {name: filled[f"env.{name}"] for name in self.execution.env or {}}
        env.update({"PY_EXPERIMENTER_PARAMS": text, "PY_EXPERIMENTER_RESULTS_DIR": results_dir,
                    "PY_EXPERIMENTER_EXPERIMENT_ID": str(experiment.id),
                    "PY_EXPERIMENTER_ATTEMPT": str(experiment.attempt)})
        if data_dir is not None:
            env["PY_EXPERIMENTER_DATA_DIR"] = data_dir
        return AttemptFiles(folder, text, command, env)

    def read_back(self, folder: Path, processor: ResultProcessor) -> str | None:
        """Write ``results.json`` and ``logs.jsonl`` through ``processor``; the problem, or None."""
        results = folder / "results.json"
        if results.exists():
            try:
                data = json.loads(results.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                return f"results.json: not a valid JSON file: {exc}"
            if not isinstance(data, dict):
                return f"results.json: expected one JSON object of resultfield values, got {type(data).__name__}"
            problem = _write(processor.process_results, data)
            if problem:
                return f"results.json: {problem}"
        logs = folder / "logs.jsonl"
        return self._read_logs(logs, processor) if logs.exists() else None

    def _read_logs(self, path: Path, processor: ResultProcessor) -> str | None:
        columns = {log.name: {f.name for f in log.fields} for log in self.config.table.logtables}
        batch: dict[str, list[Any]] = {}
        size = 0
        problem = None
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                rows, problem = _log_line(line, columns)
                if problem:
                    problem = f"logs.jsonl line {number}: {problem}"
                    break
                for logtable, entries in rows.items():
                    batch.setdefault(logtable, []).extend(entries)
                size += 1
                if size >= _LOG_BATCH:
                    problem = _write(processor.process_logs, batch)
                    batch, size = {}, 0
                    if problem:
                        return f"logs.jsonl: {problem}"
        if batch:
            written = _write(processor.process_logs, batch)
            if written:
                return f"logs.jsonl: {written}"
        return problem

    def limits_json(self, **limits: Any) -> str:
        """The limits applied to an attempt, as the attempts table stores them."""
        return json.dumps(limits)

    def timeout_message(self) -> str:
        """The reason of a ``timeout`` outcome."""
        return f"the experiment exceeded its timeout of {self.execution.timeout:g} s (Execution.timeout) and was killed"


@dataclass(frozen=True)
class AttemptFiles:
    """What :meth:`ExperimentAdapter.prepare` produced: the folder, the params JSON, command, env."""

    folder: Path
    params: str
    command: list[str] | None
    env: dict[str, str]


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def says_out_of_memory(output_tail: str) -> bool:
    """Whether the last lines of an output report running out of memory (MemoryError, bad_alloc, ...)."""
    last = [line.lower() for line in output_tail.splitlines() if line.strip()][-3:]
    return any(marker in line for line in last for marker in _OOM_MARKERS)


def _fields(template: str, where: str, source: str) -> Iterator[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"malformed template {template!r}: {exc} (write {{{{ and }}}} for literal braces)",
                          source=source, key_path=f"PY_EXPERIMENTER.Execution.{where}") from None
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        base = name.split(".", 1)[0].split("[", 1)[0]
        yield base
        if spec:
            yield from _fields(spec, where, source)


def _log_line(line: str, columns: Mapping[str, set[str]]) -> tuple[dict[str, list[Any]], str | None]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        return {}, f"not valid JSON: {exc}"
    if not isinstance(data, dict):
        return {}, f'expected a JSON object {{"logtable": {{"column": value}}}}, got {type(data).__name__}'
    rows: dict[str, list[Any]] = {}
    for logtable, entries in data.items():
        if logtable not in columns:
            return {}, f"{logtable!r} is not a logtable; the logtables are {sorted(columns)}"
        entries = [entries] if isinstance(entries, dict) else entries
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return {}, f"logtable {logtable!r}: expected an object of column values (or a list of them)"
        for entry in entries:
            unknown = sorted(set(entry) - columns[logtable])
            if unknown:
                return {}, (f"{unknown} are not columns of logtable {logtable!r}; "
                            f"its columns are {sorted(columns[logtable])}")
        rows[logtable] = entries
    return rows, None


def _write(write: Callable[[Any], None], data: Any) -> str | None:
    """Run a processor write; a rejected value becomes a message, a lost lease or database propagates."""
    try:
        write(data)
    except (LeaseLostError, DatabaseUnavailableError):
        raise
    except Exception as exc:
        return first_line(exc)
    return None


def _json_default(value: Any) -> Any:
    plain = plain_value(value)
    return plain if plain is not value else str(value)
